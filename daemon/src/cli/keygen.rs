//! `tandemd keygen`: fresh AES-128 keys from the OS random generator, and key file rotation.
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

use crate::config::{load_keys, Key, KeySet};

const ROTATION_HELP: &str = "\
Without --rotate: prints a fresh key file (comment lines, then `id:32 hex digits`). Make it
readable by the daemon's user only, and put the same file on every node:
  (umask 077; tandemd keygen --id 1 > /etc/tandem/key); chown tandem:tandem /etc/tandem/key

Rotating the key of a running cluster (docs/PROTOCOL.md, \"Key rotation\"):
  1. tandemd keygen --rotate /etc/tandem/key --stage   on one node: a fresh key is added
     second (accepted, not yet sending); copy the file to every node, reload each
     (systemctl reload tandemd);
  2. tandemd keygen --activate /etc/tandem/key         the fresh key first (sending), the old
     one second (still accepted); copy the file to every node, reload each;
  3. the next rotation drops the old key (a file holds at most two).
Every node accepts both keys before any node sends with the new one, so nodes reloaded minutes
apart keep hearing each other. `--rotate FILE` alone does steps 1 and 2 at once (new key first,
old second): only safe if every node reloads within one detection span.";

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
}

/// Runs `tandemd keygen`: what to print on stdout, or the error line.
pub fn run(args: &KeygenArgs) -> Result<String, String> {
    if let Some(path) = &args.activate {
        let keys = load_keys(path).map_err(|e| e.to_string())?;
        let [active, staged] = keys.keys.as_slice() else {
            return Err(format!(
                "{}: holds one key; nothing staged to activate (use --rotate FILE --stage first)",
                path.display()
            ));
        };
        let next = KeySet {
            keys: vec![staged.clone(), active.clone()],
        };
        write_key_file(path, &render(&next, "tandemd keygen --activate", ""))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(after_rotation(path, &next));
    }
    let rng = SystemRandom::new();
    let Some(path) = &args.rotate else {
        let key = fresh_key(&rng, KeyId(args.id.unwrap_or(1)))?;
        // The advice comes with the key, as comments: the output is itself a key file.
        let how = "#   (umask 077; tandemd keygen > /etc/tandem/key); chown tandem:tandem /etc/tandem/key\n";
        let out = render(&KeySet { keys: vec![key] }, "tandemd keygen", how);
        return Ok(out);
    };
    let old = load_keys(path).map_err(|e| e.to_string())?;
    let current = old.active().clone();
    let id = match args.id {
        Some(id) if id == current.id.0 => {
            return Err(format!(
                "--id {id}: the current key has that id; a new key needs another"
            ))
        }
        Some(id) => KeyId(id),
        None => next_id(current.id),
    };
    let new = fresh_key(&rng, id)?;
    let next = KeySet {
        keys: if args.stage {
            vec![current, new]
        } else {
            vec![new, current]
        },
    };
    write_key_file(path, &render(&next, "tandemd keygen --rotate", ""))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(after_rotation(path, &next))
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
/// `id:hex` line per key.
fn render(keys: &KeySet, writer: &str, advice: &str) -> String {
    let mut out = format!(
        "# tandem cluster keys, written by `{writer}`. The first key sends; a second one is\n\
         # still accepted. Keep this file mode 0600, owned by the daemon's user, and the same\n\
         # on every node.\n"
    );
    out.push_str(advice);
    for k in &keys.keys {
        out.push_str(&key_line(k));
        out.push('\n');
    }
    out
}

/// `id:32 hex digits`, the key file's line format.
pub fn key_line(key: &Key) -> String {
    let mut line = format!("{}:", key.id.0);
    for b in key.bytes {
        line.push_str(&format!("{b:02x}"));
    }
    line
}

fn after_rotation(path: &Path, keys: &KeySet) -> String {
    let ids: Vec<String> = keys.keys.iter().map(|k| k.id.0.to_string()).collect();
    format!(
        "{}: key {} sends, key {} still accepted. Copy the file to every node, then reload each (systemctl reload tandemd, or SIGHUP).\n",
        path.display(),
        ids[0],
        ids.get(1).map_or("-", String::as_str)
    )
}

/// Replaces `path` with `text` atomically: mode 0600, the old file's owner and group kept.
pub fn write_key_file(path: &Path, text: &str) -> io::Result<()> {
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
        }
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
        assert_ne!(ka.active().bytes, kb.active().bytes);
        assert_ne!(ka.active().bytes, [0u8; 16]);
    }

    #[test]
    fn rotate_puts_the_new_key_first_and_keeps_the_old_second() {
        let old = "4:00112233445566778899aabbccddeeff\n3:ffeeddccbbaa99887766554433221100\n";
        let p = tmp_file("rotate", old);
        run(&args(Some(&p), false, None)).unwrap();
        let ks = load_keys(&p).unwrap();
        assert_eq!(ks.keys.len(), 2);
        assert_eq!(ks.keys[0].id, KeyId(5));
        assert_eq!(key_line(&ks.keys[1]), "4:00112233445566778899aabbccddeeff");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Nothing left beside it.
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
        // An id equal to the kept key's is refused and the file is untouched.
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
        let p = tmp_file("stage", "255:00112233445566778899aabbccddeeff\n");
        run(&args(Some(&p), true, None)).unwrap();
        let staged = load_keys(&p).unwrap();
        assert_eq!(
            staged.keys.iter().map(|k| k.id).collect::<Vec<_>>(),
            vec![KeyId(255), KeyId(1)],
            "the old key still sends; the new one (id wraps past 0) is accepted"
        );
        let out = run(&args(None, false, Some(&p))).unwrap();
        assert!(out.contains("key 1 sends, key 255 still accepted"), "{out}");
        let active = load_keys(&p).unwrap();
        assert_eq!(active.keys[0], staged.keys[1]);
        assert_eq!(active.keys[1], staged.keys[0]);
        // A one-key file has nothing to activate.
        let q = tmp_file("single", "1:00112233445566778899aabbccddeeff\n");
        assert!(run(&args(None, false, Some(&q))).is_err());
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
