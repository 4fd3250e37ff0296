//! Counters and their Prometheus text rendering (`GET /metrics`).
//!
//! [`ClusterMetrics`] is what the core path counts (filled by [`Cluster`]); [`DaemonMetrics`] is
//! what the loop around it counts. [`render`] writes both, plus gauges from a status snapshot,
//! in the Prometheus text exposition format 0.0.4.
//!
//! [`Cluster`]: crate::engine::cluster::Cluster

use std::fmt::Write;

use crate::engine::counters::{ClusterMetrics, DropReason};
use crate::engine::status::{state_name, Role, StatusSnapshot, MEMBER_STATES};
use crate::engine::Engine;
use crate::resp::server::RespServer;

/// Counted by the daemon's loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonMetrics {
    pub loop_iterations: u64,
    /// Wake-ups caused by a deadline rather than an event.
    pub loop_timeouts: u64,
    /// recvmmsg calls that returned at least one datagram, and the datagrams they returned.
    pub recv_batches: u64,
    pub recv_datagrams: u64,
    pub recv_batch_max: u64,
    /// Datagrams too large for a slot: never handed to the cluster.
    pub recv_truncated: u64,
    pub send_batches: u64,
    pub send_datagrams: u64,
    /// Datagrams the kernel did not take (socket buffer full) or send errors.
    pub send_dropped: u64,
    /// Datagrams the kernel took, by destination (every peer, or one node).
    pub sent_to: crate::io::net::SentTo,
    /// Microseconds spent handling events (not waiting in poll).
    pub busy_us: u64,
    /// Largest lateness of a deadline wake-up, microseconds.
    pub timer_late_max_us: u64,
    /// Sum of deadline wake-up lateness, microseconds (mean = this / loop_timeouts).
    pub timer_late_us: u64,
    /// Wake-ups at least [`crate::event_loop::STALL`] late: the loop was not running.
    pub loop_stalls: u64,
    /// Longest slice of bulk work (receiving datagrams, serving state-transfer chunks),
    /// microseconds: bounded by [`crate::event_loop::SLICE`] plus one batch.
    pub slice_max_us: u64,
    /// Longest loop turn (everything between two waits), microseconds.
    pub turn_max_us: u64,
    /// Microseconds spent polling without sleeping (`--busy-poll`).
    pub spin_us: u64,
    /// Busy-poll windows that caught an event before they closed.
    pub spin_hits: u64,
    pub hooks_started: u64,
    pub hooks_failed: u64,
    pub hooks_dropped: u64,
    pub http_requests: u64,
    pub http_rejected: u64,
    /// Failed HTTP `accept` calls (out of descriptors or memory).
    pub http_accept_errors: u64,
    pub key_reloads: u64,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: u64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "counter", help);
    sample(out, name, "", value);
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "gauge", help);
    sample(out, name, "", value);
}

/// A family in seconds (Prometheus' base unit) from a count of microseconds.
fn seconds(out: &mut String, name: &str, kind: &str, help: &str, micros: u64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {}", micros as f64 / 1e6);
}

/// Renders every metric in the Prometheus text format.
pub fn render(c: &ClusterMetrics, d: &DaemonMetrics, s: &StatusSnapshot) -> String {
    let mut o = String::with_capacity(4096);
    counter(
        &mut o,
        "tandem_frames_received_total",
        "Cluster datagrams received.",
        c.frames_received,
    );
    counter(
        &mut o,
        "tandem_frames_accepted_total",
        "Cluster frames accepted.",
        c.frames_accepted,
    );
    counter(
        &mut o,
        "tandem_frames_sent_total",
        "Cluster frames sent.",
        c.frames_sent,
    );
    family(
        &mut o,
        "tandem_frames_dropped_total",
        "counter",
        "Received frames dropped, by reason.",
    );
    for r in DropReason::ALL {
        let mut v = c.drops(r);
        if r == DropReason::Truncated {
            v += d.recv_truncated;
        }
        sample(
            &mut o,
            "tandem_frames_dropped_total",
            &format!("reason=\"{}\"", r.as_str()),
            v,
        );
    }
    family(
        &mut o,
        "tandem_members",
        "gauge",
        "Known members by state, this node included.",
    );
    for st in MEMBER_STATES {
        sample(
            &mut o,
            "tandem_members",
            &format!("state=\"{}\"", state_name(st)),
            s.count(st) as u64,
        );
    }
    counter(
        &mut o,
        "tandem_member_state_changes_total",
        "Member state transitions.",
        c.state_changes,
    );
    counter(
        &mut o,
        "tandem_suspicions_total",
        "Members suspected by the failure detector.",
        c.suspicions,
    );
    counter(
        &mut o,
        "tandem_detections_total",
        "Members declared dead by the failure detector.",
        c.detections,
    );
    counter(
        &mut o,
        "tandem_leader_changes_total",
        "Leader changes.",
        c.leader_changes,
    );
    gauge(
        &mut o,
        "tandem_is_leader",
        "1 if this node is the leader.",
        u64::from(s.role == Role::Leader),
    );
    gauge(
        &mut o,
        "tandem_view",
        "Current membership view number.",
        s.view,
    );
    gauge(
        &mut o,
        "tandem_incarnation",
        "This node's incarnation (unix seconds at start).",
        u64::from(s.incarnation.0),
    );
    gauge(
        &mut o,
        "tandem_healthy",
        "1 if /health answers 200.",
        u64::from(s.health().is_ok()),
    );
    counter(
        &mut o,
        "tandem_loop_iterations_total",
        "Event loop iterations.",
        d.loop_iterations,
    );
    counter(
        &mut o,
        "tandem_loop_timeouts_total",
        "Loop wake-ups by deadline.",
        d.loop_timeouts,
    );
    seconds(
        &mut o,
        "tandem_loop_busy_seconds_total",
        "counter",
        "Time spent handling events.",
        d.busy_us,
    );
    seconds(
        &mut o,
        "tandem_loop_busy_poll_seconds_total",
        "counter",
        "Time spent polling without sleeping after traffic (--busy-poll).",
        d.spin_us,
    );
    counter(
        &mut o,
        "tandem_loop_busy_poll_hits_total",
        "Busy-poll windows that caught an event before closing.",
        d.spin_hits,
    );
    seconds(
        &mut o,
        "tandem_loop_timer_late_seconds_total",
        "counter",
        "Summed lateness of deadline wake-ups (mean: divide by tandem_loop_timeouts_total).",
        d.timer_late_us,
    );
    seconds(
        &mut o,
        "tandem_loop_timer_late_max_seconds",
        "gauge",
        "Largest deadline lateness seen.",
        d.timer_late_max_us,
    );
    seconds(
        &mut o,
        "tandem_loop_slice_max_seconds",
        "gauge",
        "Longest slice of bulk work (receiving datagrams, serving state-transfer chunks) between two turns of the heartbeat path.",
        d.slice_max_us,
    );
    seconds(
        &mut o,
        "tandem_loop_turn_max_seconds",
        "gauge",
        "Longest event loop turn (all work between two waits).",
        d.turn_max_us,
    );
    counter(
        &mut o,
        "tandem_loop_stalls_total",
        "Wake-ups so late that the loop (likely the machine) was not running.",
        d.loop_stalls,
    );
    counter(
        &mut o,
        "tandem_duplicate_node_id_frames_total",
        "Authentic frames of another live process that claims this node's id.",
        c.twin_frames,
    );
    counter(
        &mut o,
        "tandem_stall_pardons_total",
        "Overdue peers given one more heartbeat interval after a stall of this node.",
        c.stall_pardons,
    );
    counter(
        &mut o,
        "tandem_recv_batches_total",
        "recvmmsg calls that returned datagrams.",
        d.recv_batches,
    );
    counter(
        &mut o,
        "tandem_recv_datagrams_total",
        "Datagrams returned by recvmmsg.",
        d.recv_datagrams,
    );
    gauge(
        &mut o,
        "tandem_recv_batch_max",
        "Largest recvmmsg batch seen.",
        d.recv_batch_max,
    );
    counter(
        &mut o,
        "tandem_send_batches_total",
        "sendmmsg batches.",
        d.send_batches,
    );
    counter(
        &mut o,
        "tandem_send_datagrams_total",
        "Datagrams taken by the kernel.",
        d.send_datagrams,
    );
    counter(
        &mut o,
        "tandem_send_dropped_total",
        "Datagrams not sent (buffer full or error).",
        d.send_dropped,
    );
    family(
        &mut o,
        "tandem_datagrams_sent_total",
        "counter",
        "Datagrams taken by the kernel, by destination: every peer (to=\"all\", once per unicast peer) or one node.",
    );
    sample(
        &mut o,
        "tandem_datagrams_sent_total",
        "to=\"all\"",
        d.sent_to.all,
    );
    for (node, n) in &d.sent_to.nodes {
        let labels = format!("to=\"node\",node=\"{}\"", node.0);
        sample(&mut o, "tandem_datagrams_sent_total", &labels, *n);
    }
    if d.sent_to.other_nodes > 0 {
        sample(
            &mut o,
            "tandem_datagrams_sent_total",
            "to=\"node\",node=\"other\"",
            d.sent_to.other_nodes,
        );
    }
    family(
        &mut o,
        "tandem_hooks_total",
        "counter",
        "--on-change hook runs by result.",
    );
    sample(
        &mut o,
        "tandem_hooks_total",
        "result=\"started\"",
        d.hooks_started,
    );
    sample(
        &mut o,
        "tandem_hooks_total",
        "result=\"failed\"",
        d.hooks_failed,
    );
    sample(
        &mut o,
        "tandem_hooks_total",
        "result=\"dropped\"",
        d.hooks_dropped,
    );
    counter(
        &mut o,
        "tandem_http_requests_total",
        "HTTP requests answered.",
        d.http_requests,
    );
    counter(
        &mut o,
        "tandem_http_rejected_total",
        "HTTP connections refused or requests rejected.",
        d.http_rejected,
    );
    counter(
        &mut o,
        "tandem_http_accept_errors_total",
        "HTTP accept calls failed for lack of descriptors or memory (the listener pauses and retries).",
        d.http_accept_errors,
    );
    counter(
        &mut o,
        "tandem_key_reloads_total",
        "Key file reloads (SIGHUP).",
        d.key_reloads,
    );
    o
}

/// The protocol's `/metrics` families (cluster, sessions, RESP) after the loop's own.
pub fn render_engine(
    engine: &Engine,
    daemon: &DaemonMetrics,
    status: &StatusSnapshot,
    resp: Option<&RespServer>,
) -> String {
    let mut out = render(&engine.cluster_metrics(), daemon, status);
    render_sessions(&mut out, engine, resp);
    out
}

/// Appends the session store and replication metrics.
fn render_sessions(o: &mut String, engine: &Engine, resp: Option<&RespServer>) {
    let sessions = engine.sessions();
    let node = engine.node();
    let st = sessions.stats();
    let store = &sessions.store;
    gauge(
        o,
        "tandem_sessions",
        "Live sessions stored.",
        store.len() as u64,
    );
    gauge(
        o,
        "tandem_session_bytes",
        "Bytes charged against --max-bytes.",
        store.bytes() as u64,
    );
    gauge(
        o,
        "tandem_session_tombstones",
        "Deleted keys remembered for last-writer-wins.",
        store.tombstones() as u64,
    );
    gauge(
        o,
        "tandem_synced",
        "1 once this node holds the full session state.",
        u64::from(sessions.synced()),
    );
    let peers = node.live_data_peers() as u64;
    gauge(
        o,
        "tandem_replication_peers",
        "Live data peers every write is replicated to.",
        peers,
    );
    gauge(
        o,
        "tandem_unreplicated",
        "1 while no live data peer holds this node's writes.",
        u64::from(peers == 0 && !node.is_witness()),
    );
    gauge(
        o,
        "tandem_writes_held",
        "Client replies waiting for replication.",
        sessions.held() as u64,
    );
    gauge(
        o,
        "tandem_replication_outbox",
        "Records waiting for room in the retransmit ring.",
        sessions.outbox_len() as u64,
    );
    let r = node.replication();
    counter(
        o,
        "tandem_replication_written_total",
        "Chunks written to this node's replication stream.",
        r.written(),
    );
    counter(
        o,
        "tandem_replication_committed_total",
        "Chunks of this node's replication stream every live peer acknowledged.",
        node.committed(),
    );
    let rs = r.stats();
    counter(
        o,
        "tandem_replication_retransmits_total",
        "Chunks sent again (requests and tail probes).",
        rs.retransmits,
    );
    counter(
        o,
        "tandem_replication_requests_total",
        "Retransmit requests this node sent.",
        rs.retransmit_requests_sent,
    );
    for (name, help, v) in [
        (
            "tandem_remote_applied_total",
            "Peer writes stored.",
            st.remote_applied,
        ),
        (
            "tandem_remote_stale_total",
            "Peer writes older than the stored version (last writer won).",
            st.remote_stale,
        ),
        (
            "tandem_remote_refused_total",
            "Peer writes refused: over this node's memory bounds.",
            st.remote_oom,
        ),
        (
            "tandem_remote_malformed_total",
            "Peer writes refused: bad encoding or chunking.",
            st.remote_malformed,
        ),
        (
            "tandem_writes_replicated_total",
            "Local writes handed to replication.",
            st.writes_replicated,
        ),
        (
            "tandem_writes_committed_total",
            "Synchronous writes acknowledged after every live peer held them.",
            st.writes_committed,
        ),
        (
            "tandem_writes_failed_total",
            "Synchronous writes failed: quorum lost before the peers held them.",
            st.writes_failed,
        ),
        (
            "tandem_syncs_started_total",
            "State transfers pulled.",
            st.syncs_started,
        ),
        (
            "tandem_syncs_completed_total",
            "State transfers completed.",
            st.syncs_completed,
        ),
        (
            "tandem_syncs_failed_total",
            "State transfers failed.",
            st.syncs_failed,
        ),
        (
            "tandem_syncs_served_total",
            "State transfers served.",
            st.syncs_served,
        ),
        (
            "tandem_sync_chunks_sent_total",
            "State transfer chunks sent.",
            st.sync_chunks_sent,
        ),
        (
            "tandem_sync_chunks_received_total",
            "State transfer chunks received, whether for this node or not.",
            node.stats().sync_chunks_received,
        ),
    ] {
        counter(o, name, help, v);
    }
    if let Some(resp) = resp {
        gauge(
            o,
            "tandem_resp_connections",
            "Open RESP client connections.",
            resp.connections() as u64,
        );
        gauge(
            o,
            "tandem_resp_buffered_bytes",
            "Bytes buffered for RESP clients.",
            resp.buffered_bytes() as u64,
        );
        gauge(
            o,
            "tandem_resp_client_memory_bytes",
            "Bytes allocated to RESP client buffers, charged against --max-client-memory.",
            resp.client_memory() as u64,
        );
        gauge(
            o,
            "tandem_resp_max_clients",
            "RESP client cap in force (--max-clients, lowered to fit RLIMIT_NOFILE).",
            resp.max_connections() as u64,
        );
        let rs = resp.stats();
        family(
            o,
            "tandem_resp_clients_closed_total",
            "counter",
            "RESP clients refused or closed by the server, by reason.",
        );
        for reason in crate::resp::server::CloseReason::ALL {
            sample(
                o,
                "tandem_resp_clients_closed_total",
                &format!("reason=\"{}\"", reason.as_str()),
                rs.closed(reason),
            );
        }
        counter(
            o,
            "tandem_resp_accept_errors_total",
            "RESP accept calls failed for lack of descriptors or memory (the listener pauses and retries).",
            rs.accept_errors,
        );
        counter(
            o,
            "tandem_resp_oversized_requests_total",
            "RESP requests skipped unbuffered and refused: a value over --max-value-bytes.",
            rs.oversized,
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::engine::status::{MemberState, MemberStatus};
    use tandem_core::{ClusterId, Incarnation, NodeId};

    fn snapshot() -> StatusSnapshot {
        StatusSnapshot {
            node_id: NodeId(1),
            cluster_id: ClusterId(1),
            incarnation: Incarnation(9),
            state: MemberState::Alive,
            leader: Some(NodeId(1)),
            view: 2,
            role: Role::Leader,
            members: vec![MemberStatus {
                node_id: NodeId(1),
                state: MemberState::Alive,
                incarnation: Incarnation(9),
                ms_since_heard: 0,
            }],
            synced: true,
            isolated: false,
            duplicate_id: false,
            sync: Default::default(),
            backlog: Default::default(),
            vips: Vec::new(),
        }
    }

    #[test]
    fn prometheus_text() {
        let mut c = ClusterMetrics::default();
        c.drop(DropReason::Auth);
        c.drop(DropReason::Auth);
        c.frames_sent = 5;
        let d = DaemonMetrics {
            recv_truncated: 1,
            ..Default::default()
        };
        let text = render(&c, &d, &snapshot());
        assert!(text.contains("tandem_frames_dropped_total{reason=\"auth\"} 2\n"));
        assert!(text.contains("tandem_frames_dropped_total{reason=\"truncated\"} 1\n"));
        assert!(text.contains("tandem_frames_sent_total 5\n"));
        assert!(text.contains("tandem_members{state=\"alive\"} 1\n"));
        assert!(text.contains("tandem_is_leader 1\n"));
        // Seconds, Prometheus' base unit, from the loop's microsecond counts.
        let d = DaemonMetrics {
            busy_us: 1_500_000,
            slice_max_us: 250,
            ..Default::default()
        };
        let text = render(&c, &d, &snapshot());
        assert!(
            text.contains("tandem_loop_busy_seconds_total 1.5\n"),
            "{text}"
        );
        assert!(
            text.contains("tandem_loop_slice_max_seconds 0.00025\n"),
            "{text}"
        );
        assert!(!text.contains("microseconds"));
        // Every sample line belongs to a family declared by # TYPE before it.
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().unwrap_or("");
                let kind = it.next().unwrap_or("");
                assert!(kind == "counter" || kind == "gauge", "{line}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                declared.insert(name.to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                assert!(declared.contains(name), "undeclared: {line}");
            }
        }
    }
}
