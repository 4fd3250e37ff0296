//! Log output: every line is a message plus named fields (`event=role_changed role=leader
//! leader=2 view=1`), never a Rust Debug structure, in one of two formats (`--log-format`):
//! text for people and `journalctl`, or one JSON object per line for log shippers.
//!
//! Field values are written with Display (`%`) so text lines carry bare words; a missing
//! value (no leader) leaves its field out.

use std::io::IsTerminal;

use tracing::info;

use crate::config::LogFormat;
use crate::engine::cluster::ClusterEvent;
use crate::engine::status::state_name;

/// Installs the global subscriber: stderr, no colours unless stderr is a terminal, and no
/// timestamps in text under systemd (the journal stamps each line itself).
pub fn init(level: &str, format: LogFormat) {
    // Validated by Config::resolve; a fallback keeps logging on regardless.
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        LogFormat::Text => {
            let builder = builder.with_ansi(std::io::stderr().is_terminal());
            if std::env::var_os("JOURNAL_STREAM").is_some() {
                builder.without_time().init();
            } else {
                builder.init();
            }
        }
    }
}

/// One line for a membership, role or quorum change; the field names are the hook's
/// variables' (`TANDEM_EVENT`, `TANDEM_NODE`, ...) in lower case.
pub(crate) fn cluster_event(ev: &ClusterEvent) {
    let event = ev.name();
    match *ev {
        ClusterEvent::Member {
            node,
            incarnation,
            state,
        } => info!(
            event = %event,
            node = node.0,
            state = %state_name(state),
            incarnation = incarnation.0,
            "cluster change"
        ),
        ClusterEvent::Role { role, leader, view } => info!(
            event = %event,
            role = %role.as_str(),
            leader = leader.map(|l| l.0),
            view,
            "cluster change"
        ),
        ClusterEvent::Quorum { isolated } => {
            info!(event = %event, isolated, "cluster change")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::engine::status::{MemberState, Role};
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use tandem_core::{Incarnation, NodeId};

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn events() -> [ClusterEvent; 3] {
        [
            ClusterEvent::Role {
                role: Role::Leader,
                leader: Some(NodeId(2)),
                view: 1,
            },
            ClusterEvent::Member {
                node: NodeId(2),
                incarnation: Incarnation(1_796_002_814),
                state: MemberState::Dead,
            },
            ClusterEvent::Quorum { isolated: true },
        ]
    }

    fn logged(json: bool) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let make = move || out.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(make)
            .with_ansi(false)
            .with_target(false)
            .without_time();
        let dispatch: tracing::Dispatch = if json {
            builder.json().flatten_event(true).finish().into()
        } else {
            builder.finish().into()
        };
        tracing::dispatcher::with_default(&dispatch, || {
            for ev in &events() {
                cluster_event(ev);
            }
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn text_lines_are_named_fields_not_debug_structs() {
        let text = logged(false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].ends_with("cluster change event=role_changed role=leader leader=2 view=1"),
            "{text}"
        );
        assert!(
            lines[1].ends_with(
                "cluster change event=member_dead node=2 state=dead incarnation=1796002814"
            ),
            "{text}"
        );
        assert!(
            lines[2].ends_with("event=quorum_lost isolated=true"),
            "{text}"
        );
        for bad in ["{", "Some(", "NodeId", "\""] {
            assert!(!text.contains(bad), "{bad} in {text}");
        }
    }

    #[test]
    fn json_lines_are_one_object_each() {
        let text = logged(true);
        let objs: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(objs.len(), 3, "{text}");
        assert_eq!(objs[0]["event"], "role_changed");
        assert_eq!(objs[0]["leader"], 2);
        assert_eq!(objs[0]["message"], "cluster change");
        assert_eq!(objs[1]["state"], "dead");
        assert_eq!(objs[1]["incarnation"], 1_796_002_814u64);
        assert_eq!(objs[2]["isolated"], true);
        assert_eq!(objs[2]["level"], "INFO");
    }
}
