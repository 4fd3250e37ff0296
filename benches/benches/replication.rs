//! Replication core costs, in process (no sockets, no crypto): the CPU floor under a
//! synchronous replicated write.
//!
//! - `write_1k_and_poll`: sender side of one 1 KiB write (copy into the ring, hand out).
//! - `deliver_and_ack`: receiver side of one update (in order) plus its coalesced ack.
//! - `round_trip_1k`: write on A, deliver on B, ack back, `committed` on A: everything the
//!   core does for one synchronous write between two nodes.
//! - `sync_1000_chunks`: server and requester bookkeeping for a 1000-chunk state transfer.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tandem_core::frame::{Body, EntryRepr, Op, SessionUpdateRepr, SyncChunkRepr};
use tandem_core::replication::{Config, Replicator, Slot, SyncDelivery};
use tandem_core::{Incarnation, Instant, NodeId};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const INC: Incarnation = Incarnation(1);

type Node = Replicator<Box<[Slot]>, 8>;

fn node(id: NodeId) -> Node {
    Replicator::new(
        id,
        INC,
        Config::default(),
        vec![Slot::EMPTY; 1024].into_boxed_slice(),
    )
}

fn entry(value: &[u8]) -> EntryRepr<'_> {
    EntryRepr {
        op: Op::Put,
        version: 1,
        origin: A,
        expires_at_ms: 0,
        key: b"session:0123456789abcdef",
        total_len: 0,
        offset: 0,
        value,
    }
}

fn bench(c: &mut Criterion) {
    let value = [0x5au8; 1024];
    let now = Instant::from_millis(1);
    let mut g = c.benchmark_group("replication");
    g.throughput(Throughput::Elements(1));

    let mut a = node(A);
    g.bench_function("write_1k_and_poll", |b| {
        b.iter(|| {
            a.write(now, black_box(&entry(&value))).ok();
            while let Some(t) = a.poll_transmit(now) {
                black_box(&t);
            }
        })
    });

    let mut rx = node(B);
    let mut rseq = 0;
    g.bench_function("deliver_and_ack", |b| {
        b.iter(|| {
            rseq += 1;
            let u = SessionUpdateRepr {
                rseq,
                entry: entry(&value),
            };
            black_box(rx.handle_update(now, A, INC, black_box(&u)));
            while let Some(t) = rx.poll_transmit(now) {
                black_box(&t);
            }
        })
    });

    let (mut a, mut bn) = (node(A), node(B));
    a.peer_up(now, B, INC).ok();
    g.bench_function("round_trip_1k", |b| {
        b.iter(|| {
            let id = a.write(now, &entry(&value)).ok();
            while let Some(t) = a.poll_transmit(now) {
                if let Body::SessionUpdate(u) = t.body {
                    bn.handle_update(now, A, INC, &u);
                }
            }
            while let Some(t) = bn.poll_transmit(now) {
                if let Body::Ack(ack) = t.body {
                    a.handle_ack(now, B, &ack);
                }
            }
            assert!(id.is_some_and(|id| a.committed([B]) >= id.0));
        })
    });

    g.throughput(Throughput::Elements(1000));
    g.bench_function("sync_1000_chunks", |b| {
        b.iter(|| {
            let (mut server, mut client) = (node(A), node(B));
            client.start_sync(now, A);
            let mut done = false;
            while !done {
                while let Some(t) = client.poll_transmit(now) {
                    if let Body::SyncRequest(r) = t.body {
                        server.handle_sync_request(now, B, INC, &r);
                    }
                }
                while server.poll_event().is_some() {}
                while let Some(s) = server.poll_sync_send(now) {
                    if s.index >= 1000 {
                        server.sync_exhausted(s.to, s.sync_id, 1000);
                        continue;
                    }
                    let chunk = SyncChunkRepr {
                        target: s.to,
                        sync_id: s.sync_id,
                        index: s.index,
                        entry: entry(&value),
                    };
                    let d = client.handle_sync_chunk(now, A, &chunk);
                    black_box(d == SyncDelivery::Apply);
                }
                while let Some(t) = server.poll_transmit(now) {
                    if let Body::SyncDone(d) = t.body {
                        client.handle_sync_done(now, A, INC, &d);
                    }
                }
                done = client.syncing().is_none();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
