//! A fresh incarnation, strictly greater than any earlier run's of this node, kept so across
//! restarts by a state file rather than by trusting the wall clock.
//!
//! The incarnation is part of every AEAD nonce (node id, incarnation, seq), so a reused one
//! reuses nonces. It is `max(clock, floor + 1)`: `clock` is the next whole second (sleeping
//! until it begins, at most one second) so that a node without a state file still increases
//! across restarts while the clock does; `floor` is the last incarnation written to
//! `<state dir>/incarnation-<cluster>-<node>`. The new value is written there (temporary file,
//! fsync, rename, fsync of the directory) before the node sends anything, so a clock stepped
//! back across a restart (snapshot restore, NTP step at boot, a bad RTC) can never bring an
//! incarnation back.
//!
//! Without a state directory (`--state-dir`, or `$STATE_DIRECTORY` from the systemd unit's
//! `StateDirectory=tandem`) the daemon says so at start: only the clock then keeps
//! incarnations increasing.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tandem_core::{ClusterId, Incarnation, NodeId};

/// Largest state file read: one decimal u32 and a newline.
const MAX_STATE_BYTES: u64 = 64;

/// Where this node's incarnation floor lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFile(PathBuf);

impl StateFile {
    pub fn new(dir: &Path, cluster: ClusterId, node: NodeId) -> StateFile {
        StateFile(dir.join(format!("incarnation-{}-{}", cluster.0, node.0)))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The last incarnation written, or `None` when there is no file yet. A file that exists
    /// but cannot be read as one is an error: starting from the clock alone could go back.
    fn floor(&self) -> io::Result<Option<u32>> {
        let text = match fs::read(&self.0) {
            Ok(bytes) if bytes.len() as u64 <= MAX_STATE_BYTES => bytes,
            Ok(_) => return Err(invalid("larger than one incarnation")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        std::str::from_utf8(&text)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .map(Some)
            .ok_or_else(|| invalid("not a decimal incarnation"))
    }

    /// Writes `value` durably: a reader after a crash sees the old value or the new one.
    fn store(&self, value: u32) -> io::Result<()> {
        let dir = self.0.parent().unwrap_or(Path::new("."));
        let tmp = self.0.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        writeln!(f, "{value}")?;
        f.sync_all()?;
        fs::rename(&tmp, &self.0)?;
        File::open(dir)?.sync_all()
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// The next incarnation: after the clock's next second and after `state`'s floor, written
/// back to `state` before it is returned.
pub fn fresh(state: Option<&StateFile>) -> io::Result<Incarnation> {
    let clock = next_second();
    let Some(state) = state else {
        return Ok(Incarnation(clock));
    };
    let value = match state.floor()? {
        Some(u32::MAX) => return Err(invalid("incarnation space exhausted")),
        Some(floor) => clock.max(floor + 1),
        None => clock,
    };
    state.store(value)?;
    Ok(Incarnation(value))
}

/// Sleeps until the next whole second and returns it (u32 unix seconds last until 2106).
fn next_second() -> u32 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let next = now.as_secs() + 1;
    std::thread::sleep(Duration::from_secs(next).saturating_sub(now));
    u32::try_from(next).unwrap_or(u32::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tandem-inc-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn strictly_increasing_and_at_a_second_boundary() {
        let a = fresh(None).unwrap();
        let b = fresh(None).unwrap();
        assert!(b > a);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(u64::from(b.0) <= now);
    }

    #[test]
    fn a_floor_ahead_of_the_clock_wins_and_is_written_back() {
        let dir = scratch("ahead");
        let state = StateFile::new(&dir, ClusterId(7), NodeId(3));
        assert_eq!(state.path(), dir.join("incarnation-7-3"));
        // As if an earlier run happened under a clock an hour ahead of this one.
        let ahead = next_second() + 3600;
        fs::write(state.path(), format!("{ahead}\n")).unwrap();
        let a = fresh(Some(&state)).unwrap();
        assert_eq!(a.0, ahead + 1);
        assert_eq!(state.floor().unwrap(), Some(ahead + 1));
        let b = fresh(Some(&state)).unwrap();
        assert_eq!(b.0, ahead + 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn first_run_takes_the_clock_and_records_it() {
        let dir = scratch("first");
        let state = StateFile::new(&dir, ClusterId(1), NodeId(1));
        let a = fresh(Some(&state)).unwrap();
        assert_eq!(state.floor().unwrap(), Some(a.0));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unreadable_floor_is_an_error_not_a_restart_from_the_clock() {
        let dir = scratch("bad");
        let state = StateFile::new(&dir, ClusterId(1), NodeId(2));
        fs::write(state.path(), "yesterday\n").unwrap();
        assert!(fresh(Some(&state)).is_err());
        fs::write(state.path(), vec![b'1'; 100]).unwrap();
        assert!(fresh(Some(&state)).is_err());
        fs::write(state.path(), format!("{}\n", u32::MAX)).unwrap();
        assert!(fresh(Some(&state)).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
