//! Issue 11 item 4: a state transfer never starves heartbeats. A (host 1) restarts and pulls
//! 100,000 sessions of 1 KiB from B (host 2) on `--profile fast` (10 ms detection), several
//! times; neither side may suspect or declare dead its live peer, and A holds every session
//! after each sync. The bench (`cargo bench -p tandem-tests --bench transfer`) runs the full
//! 20 restarts; CI runs fewer to stay within its time budget.
// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tandem_tests::transfer::{false_alarms, fill, loop_figures, restart_a, start_pair};

const SESSIONS: usize = 100_000;
/// Restarts in CI (the bench does 20).
const RESTARTS: usize = 4;

#[test]
fn restarts_during_large_transfers_never_suspect_the_live_peer() {
    let Some(mut c) = start_pair() else {
        return;
    };
    let t = std::time::Instant::now();
    fill(&c, SESSIONS);
    println!("filled {SESSIONS} sessions in {:?}", t.elapsed());
    // B's counts from here on: the transfers, not the writes that filled it.
    let b = c.node(2);
    let b_alarms = false_alarms(&c, b).len();
    let b_suspicions = c.metric(2, "tandem_suspicions_total");
    let b_detections = c.metric(2, "tandem_detections_total");
    for round in 0..RESTARTS {
        let r = restart_a(&mut c, SESSIONS, 97);
        println!("restart {round}: {r:?}");
        let a = c.node(1);
        let alarms = [false_alarms(&c, a), false_alarms(&c, b).split_off(b_alarms)].concat();
        assert!(
            r.suspicions == 0 && r.detections == 0 && alarms.is_empty(),
            "restart {round}: A suspected B {} times, declared it dead {} times\n{}\n{}\nlog lines:\n{}",
            r.suspicions,
            r.detections,
            loop_figures(&c, 1),
            loop_figures(&c, 2),
            alarms.join("\n")
        );
    }
    assert_eq!(
        (
            c.metric(2, "tandem_suspicions_total"),
            c.metric(2, "tandem_detections_total")
        ),
        (b_suspicions, b_detections),
        "B suspected or declared A dead during the transfers\n{}",
        loop_figures(&c, 2)
    );
}
