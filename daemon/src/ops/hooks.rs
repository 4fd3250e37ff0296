//! `--on-change CMD`: run `sh -c CMD` on every membership or role change and VIP move.
//!
//! Never blocks the loop: a hook is spawned, never waited for; exited children are reaped with
//! `try_wait` when SIGCHLD arrives. Hooks run one at a time, in event order (scripts usually
//! assume "dead" comes before "leader"); later events wait in a bounded queue, and when it is
//! full the oldest queued event is dropped and counted (the newest state matters most). A hook
//! still running after [`HOOK_TIMEOUT`] is killed, so one hung script cannot stop the rest.
//!
//! Environment of a hook:
//! - `TANDEM_EVENT`: member_alive, member_suspect, member_dead, member_left, role_changed,
//!   quorum_lost, quorum_regained, vip_acquired, vip_released;
//! - `TANDEM_VIP`: the address (`ADDR/PREFIX`), for VIP events only;
//! - `TANDEM_NODE`: the member concerned (this node for role and quorum events);
//! - `TANDEM_STATE`, `TANDEM_INCARNATION`: the member's, for member events only;
//! - `TANDEM_ROLE`: this node's role after the event (leader, follower, witness, joining,
//!   left); `TANDEM_LEADER`: the leader's id, empty if none; `TANDEM_VIEW`;
//! - `TANDEM_SELF`: this node's id.

use std::collections::VecDeque;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tandem_core::{Instant, NodeId};
use tracing::{debug, error, info, warn};

use crate::engine::cluster::ClusterEvent;
use crate::engine::status::{state_name, Role};
use crate::vip::floating::VipEvent;

pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_QUEUED: usize = 32;

/// The values one hook run sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEnv {
    pub event: &'static str,
    pub node: NodeId,
    pub state: Option<&'static str>,
    pub incarnation: Option<u32>,
    pub role: Role,
    pub leader: Option<NodeId>,
    pub view: u64,
    pub this_node: NodeId,
    /// The VIP (`ADDR/PREFIX`) of a VIP event.
    pub vip: Option<String>,
}

impl HookEnv {
    /// Builds the environment for `event`, with this node's role/leader/view after it.
    pub fn new(
        event: &ClusterEvent,
        this_node: NodeId,
        role: Role,
        leader: Option<NodeId>,
        view: u64,
    ) -> HookEnv {
        let (node, state, incarnation) = match *event {
            ClusterEvent::Member {
                node,
                incarnation,
                state,
            } => (node, Some(state_name(state)), Some(incarnation.0)),
            ClusterEvent::Role { .. } | ClusterEvent::Quorum { .. } => (this_node, None, None),
        };
        HookEnv {
            event: event.name(),
            node,
            state,
            incarnation,
            role,
            leader,
            view,
            this_node,
            vip: None,
        }
    }

    /// A VIP this node acquired or released, with this node's role/leader/view.
    pub fn vip(
        event: &VipEvent,
        this_node: NodeId,
        role: Role,
        leader: Option<NodeId>,
        view: u64,
    ) -> HookEnv {
        HookEnv {
            event: event.name(),
            node: this_node,
            state: None,
            incarnation: None,
            role,
            leader,
            view,
            this_node,
            vip: Some(event.vip.cidr()),
        }
    }

    pub fn vars(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("TANDEM_EVENT", self.event.to_string()),
            ("TANDEM_NODE", self.node.0.to_string()),
            ("TANDEM_ROLE", self.role.as_str().to_string()),
            (
                "TANDEM_LEADER",
                self.leader.map(|l| l.0.to_string()).unwrap_or_default(),
            ),
            ("TANDEM_VIEW", self.view.to_string()),
            ("TANDEM_SELF", self.this_node.0.to_string()),
        ];
        if let Some(s) = self.state {
            v.push(("TANDEM_STATE", s.to_string()));
        }
        if let Some(i) = self.incarnation {
            v.push(("TANDEM_INCARNATION", i.to_string()));
        }
        if let Some(a) = &self.vip {
            v.push(("TANDEM_VIP", a.clone()));
        }
        v
    }
}

struct Running {
    child: Child,
    event: &'static str,
    deadline: Instant,
}

/// Counters the loop copies into its metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookStats {
    pub started: u64,
    pub failed: u64,
    pub dropped: u64,
}

pub struct Hooks {
    cmd: Option<String>,
    running: Option<Running>,
    queue: VecDeque<HookEnv>,
    stats: HookStats,
}

impl Hooks {
    pub fn new(cmd: Option<String>) -> Hooks {
        Hooks {
            cmd,
            running: None,
            queue: VecDeque::with_capacity(MAX_QUEUED),
            stats: HookStats::default(),
        }
    }

    /// Runs the hook for `env` now, or queues it behind the running one.
    pub fn fire(&mut self, env: HookEnv, now: Instant) {
        if self.cmd.is_none() {
            return;
        }
        if self.queue.len() == MAX_QUEUED {
            if let Some(old) = self.queue.pop_front() {
                warn!(
                    event = %old.event,
                    "hook queue full: dropped the oldest queued event"
                );
                self.stats.dropped += 1;
            }
        }
        self.queue.push_back(env);
        self.start_next(now);
    }

    /// Reaps an exited hook (call on SIGCHLD) and starts the next queued one.
    pub fn reap(&mut self, now: Instant) {
        if let Some(r) = &mut self.running {
            match r.child.try_wait() {
                Ok(Some(status)) => {
                    if status.success() {
                        debug!(event = %r.event, "hook done");
                    } else {
                        error!(event = %r.event, %status, "hook failed");
                        self.stats.failed += 1;
                    }
                    self.running = None;
                }
                Ok(None) => {}
                Err(e) => {
                    error!(event = %r.event, error = %e, "hook: wait failed");
                    self.running = None;
                }
            }
        }
        self.start_next(now);
    }

    /// Kills a hook past its deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(r) = &mut self.running {
            if now >= r.deadline {
                error!(
                    event = %r.event,
                    timeout_s = HOOK_TIMEOUT.as_secs(),
                    "hook ran too long: killed"
                );
                let _ = r.child.kill();
                // Killed with SIGKILL: the wait returns at once.
                let _ = r.child.wait();
                self.stats.failed += 1;
                self.running = None;
                self.start_next(now);
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.running.as_ref().map(|r| r.deadline)
    }

    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.running.is_none() && self.queue.is_empty()
    }

    pub fn stats(&self) -> HookStats {
        self.stats
    }

    fn start_next(&mut self, now: Instant) {
        let Some(cmd) = &self.cmd else { return };
        while self.running.is_none() {
            let Some(env) = self.queue.pop_front() else {
                return;
            };
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(cmd)
                .stdin(Stdio::null())
                .env_remove("NOTIFY_SOCKET");
            for (k, v) in env.vars() {
                c.env(k, v);
            }
            match c.spawn() {
                Ok(child) => {
                    info!(event = %env.event, node = env.node.0, "hook started");
                    self.stats.started += 1;
                    self.running = Some(Running {
                        child,
                        event: env.event,
                        deadline: now + HOOK_TIMEOUT,
                    });
                }
                Err(e) => {
                    error!(event = %env.event, error = %e, "hook could not start");
                    self.stats.failed += 1;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::engine::status::MemberState;
    use tandem_core::Incarnation;

    fn env(node: u16) -> HookEnv {
        HookEnv::new(
            &ClusterEvent::Member {
                node: NodeId(node),
                incarnation: Incarnation(9),
                state: MemberState::Dead,
            },
            NodeId(1),
            Role::Leader,
            Some(NodeId(1)),
            4,
        )
    }

    /// Waits (bounded: 500 x 10 ms) until every hook has run.
    fn drain(h: &mut Hooks) {
        for _ in 0..500 {
            h.reap(Instant::ZERO);
            if h.is_idle() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("hooks did not finish");
    }

    #[test]
    fn hook_sees_the_variables_in_order() {
        let dir = std::env::temp_dir().join(format!("tandem-hook-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let cmd = format!(
            "echo \"$TANDEM_EVENT $TANDEM_NODE $TANDEM_STATE $TANDEM_ROLE $TANDEM_LEADER $TANDEM_VIEW $TANDEM_INCARNATION\" >> {}",
            dir.display()
        );
        let mut h = Hooks::new(Some(cmd));
        h.fire(env(2), Instant::ZERO);
        h.fire(env(3), Instant::ZERO);
        drain(&mut h);
        let out = std::fs::read_to_string(&dir).unwrap();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(
            out,
            "member_dead 2 dead leader 1 4 9\nmember_dead 3 dead leader 1 4 9\n"
        );
        assert_eq!(h.stats().started, 2);
        assert_eq!(h.stats().failed, 0);
    }

    #[test]
    fn vip_events_carry_the_address() {
        let ev = VipEvent {
            vip: "198.18.0.100/24@1".parse().unwrap(),
            acquired: true,
        };
        let e = HookEnv::vip(&ev, NodeId(2), Role::Leader, Some(NodeId(2)), 5);
        let vars = e.vars();
        let get = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("TANDEM_EVENT"), Some("vip_acquired"));
        assert_eq!(get("TANDEM_VIP"), Some("198.18.0.100/24"));
        assert_eq!(get("TANDEM_NODE"), Some("2"));
        assert_eq!(get("TANDEM_STATE"), None);
        let released = VipEvent {
            acquired: false,
            ..ev
        };
        assert_eq!(released.name(), "vip_released");
        // Membership events have no TANDEM_VIP.
        assert!(env(3).vars().iter().all(|(n, _)| *n != "TANDEM_VIP"));
    }

    #[test]
    fn failing_hook_is_counted_and_queue_is_bounded() {
        let mut h = Hooks::new(Some("exit 3".into()));
        for i in 0..(MAX_QUEUED + 5) {
            h.fire(env(i as u16), Instant::ZERO);
        }
        // One started at once, MAX_QUEUED queued, the rest dropped.
        assert_eq!(h.stats().dropped, 4);
        drain(&mut h);
        assert_eq!(h.stats().started as usize, MAX_QUEUED + 1);
        assert_eq!(h.stats().failed as usize, MAX_QUEUED + 1);
    }

    #[test]
    fn hung_hook_is_killed_at_its_deadline() {
        let mut h = Hooks::new(Some("sleep 30".into()));
        h.fire(env(2), Instant::ZERO);
        assert_eq!(h.poll_timeout(), Some(Instant::ZERO + HOOK_TIMEOUT));
        h.handle_timeout(Instant::ZERO + HOOK_TIMEOUT);
        assert!(h.is_idle());
        assert_eq!(h.stats().failed, 1);
    }

    #[test]
    fn no_command_runs_nothing() {
        let mut h = Hooks::new(None);
        h.fire(env(2), Instant::ZERO);
        assert!(h.is_idle());
        assert_eq!(h.stats(), HookStats::default());
    }
}
