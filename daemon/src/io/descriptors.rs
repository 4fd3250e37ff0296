//! File descriptors: how many clients the process can hold, and what a listener does when
//! `accept` fails for lack of descriptors or memory.
//!
//! At start, [`fit_clients`] raises the soft `RLIMIT_NOFILE` toward the hard limit as far as
//! `--max-clients` plus [`RESERVED`] needs (as redis-server does) and, if that is not enough,
//! lowers the client cap to what fits. The reserve keeps the cluster sockets, the HTTP
//! endpoint (all of its [`HTTP_CONNS`] connections), the timer,
//! signals, hooks and the refusal of one client over the cap working whatever the clients do.
//!
//! [`AcceptPause`] is a listener's answer to an `accept` error (EMFILE, ENFILE, ENOBUFS, any
//! but a connection the peer already gave up):
//! count it, log at most once a second, stop accepting (the loop must not spin on a listener
//! that stays readable) and retry after [`ACCEPT_RETRY_MS`] or as soon as a connection of the
//! process closes, whichever comes first. A listener is never left dead.

use std::io;

use rlimit::Resource;
use tracing::{info, warn};

/// Descriptors kept for everything but RESP clients: stdio, epoll, the cluster sockets, the
/// timerfd, the signal pipe, the listeners, hooks' pipes, the notify socket (Redis keeps 32),
/// plus every HTTP connection.
pub const RESERVED: u64 = 32 + HTTP_CONNS as u64;

/// Connections the HTTP endpoint holds at once (more are accepted and closed at once); part
/// of the reserve, so the endpoint answers whatever the RESP clients do.
pub const HTTP_CONNS: usize = 64;

/// Retry delay of a listener whose `accept` failed.
pub const ACCEPT_RETRY_MS: u64 = 10;

/// The descriptor limits the daemon runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fit {
    /// The soft `RLIMIT_NOFILE` after raising it.
    pub soft: u64,
    pub hard: u64,
    /// The client cap that fits: `--max-clients`, or fewer.
    pub max_clients: usize,
}

/// Raises the soft descriptor limit for `max_clients` RESP clients and returns the client cap
/// that fits, logging the numbers (one line; a warning if the cap was lowered). Fails only if
/// not even one client fits.
pub fn fit_clients(max_clients: usize) -> Result<Fit, String> {
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE)
        .map_err(|e| format!("getrlimit(RLIMIT_NOFILE): {e}"))?;
    let soft = raise(soft, hard, want(max_clients));
    let fit = plan(max_clients, soft, hard)?;
    if fit.max_clients < max_clients {
        warn!(
            soft,
            hard,
            reserved = RESERVED,
            max_clients = fit.max_clients,
            wanted = max_clients,
            "max clients lowered to what the descriptor limit allows: raise LimitNOFILE (systemd) or ulimit -n to at least {}",
            want(max_clients)
        );
    } else {
        info!(
            soft,
            hard,
            reserved = RESERVED,
            max_clients,
            "file descriptor limit"
        );
    }
    Ok(fit)
}

/// Descriptors needed for `max_clients` clients.
fn want(max_clients: usize) -> u64 {
    (max_clients as u64).saturating_add(RESERVED)
}

/// Sets the soft limit to `want` (at most `hard`) if it is lower; returns the soft limit in
/// force afterwards.
fn raise(soft: u64, hard: u64, want: u64) -> u64 {
    if soft >= want {
        return soft;
    }
    let target = want.min(hard);
    match rlimit::setrlimit(Resource::NOFILE, target, hard) {
        Ok(()) => target,
        Err(e) => {
            warn!(error = %e, soft, target, "could not raise RLIMIT_NOFILE");
            soft
        }
    }
}

/// The client cap for a soft limit of `soft` descriptors.
fn plan(max_clients: usize, soft: u64, hard: u64) -> Result<Fit, String> {
    let room = soft.saturating_sub(RESERVED);
    if room == 0 {
        return Err(format!(
            "RLIMIT_NOFILE is {soft} (hard {hard}): tandemd needs more than {RESERVED} file descriptors"
        ));
    }
    Ok(Fit {
        soft,
        hard,
        max_clients: max_clients.min(usize::try_from(room).unwrap_or(usize::MAX)),
    })
}

/// True for an `accept` error that concerns only the connection being taken (the peer gave
/// up first): the next one can be tried at once. Any other error (EMFILE, ENFILE, ENOBUFS,
/// ENOMEM, or one not foreseen) pauses the listener: the connection stays in the backlog,
/// and retrying at once would only spin.
pub fn per_connection(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM)
    )
}

/// A listener's back-off after a failed `accept`. Times are milliseconds on the caller's
/// monotonic clock.
#[derive(Debug, Default)]
pub struct AcceptPause {
    /// Accepting resumes at this time (`None`: not paused).
    until: Option<u64>,
    /// Failed accepts, all time (a metric).
    errors: u64,
    /// Failures not yet logged, and when the last log line was written.
    unlogged: u64,
    logged_at: Option<u64>,
}

impl AcceptPause {
    /// Records a failed `accept` of listener `what` at `now`: pauses it for
    /// [`ACCEPT_RETRY_MS`] and logs (at most once a second, with the count since).
    pub fn failed(&mut self, what: &str, e: &io::Error, now: u64) {
        self.errors += 1;
        self.unlogged += 1;
        self.until = Some(now.saturating_add(ACCEPT_RETRY_MS));
        if self.logged_at.is_none_or(|t| now.saturating_sub(t) >= 1000) {
            warn!(
                listener = what,
                error = %e,
                failures = self.unlogged,
                "accept failed; retrying in {ACCEPT_RETRY_MS} ms or when a connection closes"
            );
            self.unlogged = 0;
            self.logged_at = Some(now);
        }
    }

    /// True while accepting is paused at `now`.
    pub fn paused(&self, now: u64) -> bool {
        self.until.is_some_and(|t| now < t)
    }

    /// A descriptor was freed: retry at the next turn.
    pub fn resume(&mut self) {
        if self.until.is_some() {
            self.until = Some(0);
        }
    }

    /// Retries at `t` (a listener that stopped at its per-call bound with more waiting).
    pub fn retry_at(&mut self, t: u64) {
        self.until = Some(t);
    }

    /// When the paused listener must be retried.
    pub fn deadline(&self) -> Option<u64> {
        self.until
    }

    /// Called when the retry is taken.
    pub fn clear(&mut self) {
        self.until = None;
    }

    /// Failed accepts so far.
    pub fn errors(&self) -> u64 {
        self.errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_shrinks_to_what_the_limit_allows() {
        let ok = |m, soft| plan(m, soft, 4096).map(|f| f.max_clients);
        assert_eq!(ok(10_000, 20_000), Ok(10_000));
        assert_eq!(ok(10_000, 1024), Ok(1024 - RESERVED as usize));
        assert_eq!(ok(10, 1024), Ok(10));
        assert!(ok(10, RESERVED).is_err());
        assert_eq!(want(10_000), 10_000 + RESERVED);
    }

    #[test]
    fn a_pause_ends_at_its_deadline_or_when_a_descriptor_frees() {
        let mut p = AcceptPause::default();
        assert!(!p.paused(5));
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(!per_connection(&e));
        assert!(per_connection(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
        p.failed("resp", &e, 100);
        assert!(p.paused(100));
        assert_eq!(p.deadline(), Some(100 + ACCEPT_RETRY_MS));
        assert!(!p.paused(100 + ACCEPT_RETRY_MS));
        p.resume();
        assert!(!p.paused(101));
        p.clear();
        assert_eq!(p.deadline(), None);
        assert_eq!(p.errors(), 1);
    }
}
