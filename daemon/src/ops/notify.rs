//! systemd readiness notification: one datagram to `$NOTIFY_SOCKET` (sd_notify protocol).
//!
//! Hand-written: the protocol is "send `READY=1` to a unix datagram socket", a path or, with a
//! leading `@`, an abstract name. Without `NOTIFY_SOCKET` (not under systemd) it does nothing.
//! Failures are logged and otherwise ignored: readiness is advisory.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use tracing::{debug, warn};

pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Notifier::from_path(std::env::var_os("NOTIFY_SOCKET").and_then(|p| p.into_string().ok()))
    }

    pub fn from_path(path: Option<String>) -> Notifier {
        let target = path.and_then(|p| {
            let addr = match p.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
                None => SocketAddr::from_pathname(&p),
            };
            match (UnixDatagram::unbound(), addr) {
                (Ok(s), Ok(a)) => Some((s, a)),
                (Err(e), _) | (_, Err(e)) => {
                    warn!(socket = %p, error = %e, "NOTIFY_SOCKET unusable");
                    None
                }
            }
        });
        Notifier { target }
    }

    /// Sends `state` (e.g. `READY=1`, `STOPPING=1`, `STATUS=...`).
    pub fn notify(&self, state: &str) {
        if let Some((sock, addr)) = &self.target {
            match sock.send_to_addr(state.as_bytes(), addr) {
                Ok(_) => debug!(state = %state, "sd_notify"),
                Err(e) => warn!(state = %state, error = %e, "sd_notify failed"),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn sends_to_path_socket() {
        let path = std::env::temp_dir().join(format!("tandem-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_path(Some(path.to_string_lossy().into_owned()));
        n.notify("READY=1");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(&buf[..len], b"READY=1");
    }

    #[test]
    fn abstract_socket_and_absent_env() {
        let name = format!("tandem-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        Notifier::from_path(Some(format!("@{name}"))).notify("STOPPING=1");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
        Notifier::from_path(None).notify("READY=1");
    }
}
