//! `tandemd keygen`: fresh AES-128 keys from the OS random generator (a control key and a
//! data key), a witness's control-only file, and key file rotation.
//!
//! A rotation rewrites the file atomically (a temporary file beside it, fsync, rename, fsync of
//! the directory), mode 0600, owned like the file it replaces, so a daemon reloading on SIGHUP
//! never reads half a file and the key never exists with looser permissions.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use tandem_core::KeyId;

use crate::config::load_keys;
use crate::engine::cluster::{Key, KeySet};

const ROTATION_HELP: &str = "\
Without --rotate: prints a fresh key file (comment lines, then `id:control:32 hex digits` and
`id:data:32 hex digits`). The control key seals heartbeats and leaves, the data key every frame
that carries or steers session data. Make it readable by the daemon's user only, and put the
same file on every data node:
  (umask 077; tandemd keygen --id 1 > /etc/tandem/key); chown tandem:tandem /etc/tandem/key
A witness gets the control key only (it refuses to start with a data key):
  (umask 077; tandemd keygen --witness /etc/tandem/key > witness.key)
A file of `id:hex` lines (written before the split) is one key in both roles: data nodes keep
reading it; run --rotate on it first to give a witness a control key of its own.
Replace a key file by writing a new one beside it and renaming it over the old one (as
--rotate does), never by editing it in place: a reload must never read half a file.

Rotating the key of a running cluster (docs/PROTOCOL.md, \"Key rotation\"):
  1. tandemd keygen --rotate /etc/tandem/key --stage   on one node: a fresh key is added
     second (accepted, not yet sending); copy the file to every node, reload each
     (systemctl reload tandemd);
  2. tandemd keygen --activate /etc/tandem/key         the fresh key first (sending), the old
     one second (still accepted); copy the file to every node, reload each;
  3. the next rotation drops the old key (a file holds at most two).
Every node accepts both keys before any node sends with the new one, so nodes reloaded minutes
apart keep hearing each other. `--rotate FILE` alone does steps 1 and 2 at once (new key first,
old second): only safe if every node reloads within one detection span. Each step rotates both
roles (a new control key and a new data key); rotate a data node's file and give the witness
`tandemd keygen --witness FILE` of it at each step.";

#[derive(Debug, clap::Args)]
#[command(after_help = ROTATION_HELP)]
pub struct KeygenArgs {
    /// Key id of the new key, 0..=255 [default: 1; with --rotate, the current key's id + 1].
    #[arg(long)]
    pub id: Option<u8>,
    /// Rewrite FILE with a fresh key first (sending) and FILE's current sending key second
    /// (still accepted); atomically, mode 0600.
    #[arg(long, value_name = "FILE", conflicts_with = "activate")]
    pub rotate: Option<PathBuf>,
    /// With --rotate: add the fresh key second (accepted, not sending yet) instead.
    #[arg(long, requires = "rotate")]
    pub stage: bool,
    /// Rewrite FILE with its second key first: the staged key starts sending.
    #[arg(long, value_name = "FILE", conflicts_with = "id")]
    pub activate: Option<PathBuf>,
    /// Print a witness's key file: the control keys of data node key file FILE, no data key.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["id", "rotate", "activate"])]
    pub witness: Option<PathBuf>,
}

/// Runs `tandemd keygen`: what to print on stdout, or the error line.
pub fn run(args: &KeygenArgs) -> Result<String, String> {
    if let Some(path) = &args.witness {
        return witness_file(&load_keys(path).map_err(|e| e.to_string())?)
            .map_err(|e| format!("{}: {e}", path.display()));
    }
    if let Some(path) = &args.activate {
        let keys = load_keys(path).map_err(|e| e.to_string())?;
        let swap = |keys: &[Key]| -> Vec<Key> { keys.iter().rev().cloned().collect() };
        if keys.control.len() < 2 && keys.data.len() < 2 {
            return Err(format!(
                "{}: holds one key per role; nothing staged to activate (use --rotate FILE --stage first)",
                path.display()
            ));
        }
        let next = KeySet {
            control: swap(&keys.control),
            data: swap(&keys.data),
        };
        write_key_file(path, &render(&next, "tandemd keygen --activate", ""))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(after_rotation(path, &next));
    }
    let rng = SystemRandom::new();
    let Some(path) = &args.rotate else {
        let id = KeyId(args.id.unwrap_or(1));
        let keys = KeySet {
            control: vec![fresh_key(&rng, id)?],
            data: vec![fresh_key(&rng, id)?],
        };
        // The advice comes with the keys, as comments: the output is itself a key file.
        let how = "#   (umask 077; tandemd keygen > /etc/tandem/key); chown tandem:tandem /etc/tandem/key\n\
                   # A witness gets the control key only: tandemd keygen --witness /etc/tandem/key\n";
        return Ok(render(&keys, "tandemd keygen", how));
    };
    let old = load_keys(path).map_err(|e| e.to_string())?;
    let Some(data) = old.data.first().cloned() else {
        return Err(format!(
            "{}: a witness's file (control keys only); rotate the data nodes' file, then give the witness `tandemd keygen --witness` of it",
            path.display()
        ));
    };
    let control = old.active().clone();
    let taken = [control.id, data.id];
    let id = match args.id {
        Some(id) if taken.contains(&KeyId(id)) => {
            return Err(format!(
                "--id {id}: a current key has that id; a new key needs another"
            ))
        }
        Some(id) => KeyId(id),
        None => {
            let mut id = next_id(control.id);
            while taken.contains(&id) {
                id = next_id(id);
            }
            id
        }
    };
    let pair = |current: Key, new: Key| {
        if args.stage {
            vec![current, new]
        } else {
            vec![new, current]
        }
    };
    let next = KeySet {
        control: pair(control, fresh_key(&rng, id)?),
        data: pair(data, fresh_key(&rng, id)?),
    };
    write_key_file(path, &render(&next, "tandemd keygen --rotate", ""))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(after_rotation(path, &next))
}

/// The key file of a witness: `keys`' control keys, no data key. A control key that is also
/// a data key (a line `id:hex` without a role) would hand the witness the data key: refused
/// when it sends, left out when it is only still accepted.
fn witness_file(keys: &KeySet) -> Result<String, String> {
    let shared = |k: &Key| keys.data.iter().any(|d| d.bytes == k.bytes);
    if shared(keys.active()) {
        return Err(format!(
            "control key {} is also the data key (a line `id:hex` is one key in both roles); run `tandemd keygen --rotate` on this file first, copy it to the data nodes, then make the witness's file",
            keys.active().id.0
        ));
    }
    let witness = KeySet {
        control: keys
            .control
            .iter()
            .filter(|k| !shared(k))
            .cloned()
            .collect(),
        data: Vec::new(),
    };
    Ok(render(
        &witness,
        "tandemd keygen --witness",
        "# A witness's file: control keys only (no data key: a witness never reads sessions).\n",
    ))
}

/// The id after `id`, skipping 0 (the id of a bare key line).
fn next_id(id: KeyId) -> KeyId {
    match id.0.wrapping_add(1) {
        0 => KeyId(1),
        n => KeyId(n),
    }
}

fn fresh_key(rng: &SystemRandom, id: KeyId) -> Result<Key, String> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes)
        .map_err(|_| "the OS random generator failed".to_string())?;
    Ok(Key { id, bytes })
}

/// A key file: comments naming its writer and how to keep it (plus `advice` lines), then one
/// `id:role:hex` line per key, control keys first.
fn render(keys: &KeySet, writer: &str, advice: &str) -> String {
    let mut out = format!(
        "# tandem cluster keys, written by `{writer}`. Per role (control: heartbeats and\n\
         # leaves; data: sessions, replication, state transfer) the first key sends and a\n\
         # second one is still accepted. Keep this file mode 0600, owned by the daemon's user,\n\
         # and the same on every data node; replace it by renaming a new file over it.\n"
    );
    out.push_str(advice);
    for (role, list) in [("control", &keys.control), ("data", &keys.data)] {
        for k in list {
            out.push_str(&key_line(role, k));
            out.push('\n');
        }
    }
    out
}

/// `id:role:32 hex digits`, the key file's line format.
pub(crate) fn key_line(role: &str, key: &Key) -> String {
    let mut line = format!("{}:{role}:", key.id.0);
    for b in key.bytes {
        line.push_str(&format!("{b:02x}"));
    }
    line
}

fn after_rotation(path: &Path, keys: &KeySet) -> String {
    let ids = |keys: &[Key]| -> (String, String) {
        let id = |i: usize| keys.get(i).map_or("-".into(), |k: &Key| k.id.0.to_string());
        (id(0), id(1))
    };
    let ((c0, c1), (d0, d1)) = (ids(&keys.control), ids(&keys.data));
    format!(
        "{}: control key {c0} and data key {d0} send, control key {c1} and data key {d1} still accepted. Copy the file to every data node (a witness: `tandemd keygen --witness {}`), then reload each (systemctl reload tandemd, or SIGHUP).\n",
        path.display(),
        path.display()
    )
}

/// Replaces `path` with `text` atomically: mode 0600, the old file's owner and group kept.
pub(crate) fn write_key_file(path: &Path, text: &str) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let owner = fs::metadata(path).ok().map(|m| (m.uid(), m.gid()));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename itself survives a crash only once the directory is on disk.
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::config::parse_keys;
    use std::os::unix::fs::PermissionsExt;

    fn tmp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tandem-keygen-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("key");
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        p
    }

    fn args(rotate: Option<&Path>, stage: bool, activate: Option<&Path>) -> KeygenArgs {
        KeygenArgs {
            id: None,
            rotate: rotate.map(Path::to_path_buf),
            stage,
            activate: activate.map(Path::to_path_buf),
            witness: None,
        }
    }

    fn ids(keys: &[Key]) -> Vec<u8> {
        keys.iter().map(|k| k.id.0).collect()
    }

    #[test]
    fn fresh_keys_parse_and_differ() {
        let a = run(&KeygenArgs {
            id: Some(9),
            ..args(None, false, None)
        })
        .unwrap();
        let b = run(&args(None, false, None)).unwrap();
        assert!(a.contains("0600"), "{a}");
        let (ka, kb) = (
            parse_keys(a.as_bytes()).unwrap(),
            parse_keys(b.as_bytes()).unwrap(),
        );
        assert_eq!((ka.active().id, kb.active().id), (KeyId(9), KeyId(1)));
        assert_eq!((ids(&ka.data), ids(&kb.data)), (vec![9], vec![1]));
        assert_ne!(ka.active().bytes, kb.active().bytes);
        assert_ne!(ka.active().bytes, [0u8; 16]);
        assert_ne!(ka.active().bytes, ka.data[0].bytes, "one key in both roles");
        assert_eq!(ka.check_role(false), Ok(()));
    }

    #[test]
    fn rotate_puts_the_new_keys_first_and_keeps_the_old_second() {
        // A one-key file (both roles) rotates into split keys; the old key stays accepted.
        let old = "4:00112233445566778899aabbccddeeff\n3:ffeeddccbbaa99887766554433221100\n";
        let p = tmp_file("rotate", old);
        run(&args(Some(&p), false, None)).unwrap();
        let ks = load_keys(&p).unwrap();
        assert_eq!((ids(&ks.control), ids(&ks.data)), (vec![5, 4], vec![5, 4]));
        assert_ne!(ks.control[0].bytes, ks.data[0].bytes);
        assert_eq!(
            key_line("data", &ks.data[1]),
            "4:data:00112233445566778899aabbccddeeff"
        );
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Nothing left beside it.
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
        // An id equal to a kept key's is refused and the file is untouched.
        let before = fs::read(&p).unwrap();
        let e = run(&KeygenArgs {
            id: Some(5),
            ..args(Some(&p), false, None)
        })
        .unwrap_err();
        assert!(e.contains("--id 5"), "{e}");
        assert_eq!(fs::read(&p).unwrap(), before);
        fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }

    #[test]
    fn staged_rotation_then_activation() {
        let p = tmp_file(
            "stage",
            "255:control:00112233445566778899aabbccddeeff\n255:data:ffeeddccbbaa99887766554433221100\n",
        );
        run(&args(Some(&p), true, None)).unwrap();
        let staged = load_keys(&p).unwrap();
        assert_eq!(
            (ids(&staged.control), ids(&staged.data)),
            (vec![255, 1], vec![255, 1]),
            "the old keys still send; the new ones (id wraps past 0) are accepted"
        );
        let out = run(&args(None, false, Some(&p))).unwrap();
        assert!(
            out.contains("control key 1 and data key 1 send, control key 255 and data key 255 still accepted"),
            "{out}"
        );
        let active = load_keys(&p).unwrap();
        assert_eq!(active.control[0], staged.control[1]);
        assert_eq!(active.data[1], staged.data[0]);
        // A one-key file has nothing to activate.
        let q = tmp_file("single", "1:00112233445566778899aabbccddeeff\n");
        assert!(run(&args(None, false, Some(&q))).is_err());
        fs::remove_dir_all(p.parent().unwrap()).unwrap();
        fs::remove_dir_all(q.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_witness_file_holds_the_control_keys_only() {
        let witness = |p: &Path| {
            run(&KeygenArgs {
                witness: Some(p.to_path_buf()),
                ..args(None, false, None)
            })
        };
        // Right after rotating a one-key file: the old key (both roles) is left out.
        let p = tmp_file("witness", "4:00112233445566778899aabbccddeeff\n");
        let e = witness(&p).unwrap_err();
        assert!(e.contains("--rotate"), "{e}");
        run(&args(Some(&p), false, None)).unwrap();
        let data_node = load_keys(&p).unwrap();
        let w = parse_keys(witness(&p).unwrap().as_bytes()).unwrap();
        assert_eq!(w.control, data_node.control[..1]);
        assert!(w.data.is_empty());
        assert_eq!(w.check_role(true), Ok(()));
        // Split keys of both generations: both control keys.
        run(&args(Some(&p), false, None)).unwrap();
        let w = parse_keys(witness(&p).unwrap().as_bytes()).unwrap();
        assert_eq!(w.control, load_keys(&p).unwrap().control);
        // A witness's own file is not rotated (its control key must come from the data nodes).
        let q = tmp_file("witness-own", &witness(&p).unwrap());
        assert!(run(&args(Some(&q), false, None))
            .unwrap_err()
            .contains("witness"));
        fs::remove_dir_all(p.parent().unwrap()).unwrap();
        fs::remove_dir_all(q.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_broken_key_file_is_not_rotated() {
        let p = tmp_file("broken", "garbage\n");
        let e = run(&args(Some(&p), false, None)).unwrap_err();
        assert!(e.contains("--key-file"), "{e}");
        assert_eq!(fs::read_to_string(&p).unwrap(), "garbage\n");
        fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }
}
