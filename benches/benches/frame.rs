//! Frame benches: emit, parse, seal, open and the whole receive path (open + parse + replay
//! check) of a heartbeat and of a SessionUpdate carrying a 1 KiB value.
//!
//! `cargo bench -p tandem-benches --bench frame`. Time per frame is criterion's estimate;
//! `thrpt` is frames per second (one element = one frame). open and receive copy the sealed
//! datagram into a stack buffer first (they decrypt in place); `copy` measures that copy.
//! `parse_view` (heartbeat only) is the borrowed `HeartbeatView` plus the fields a detector
//! reads.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tandem_core::crypto::{open, seal, Aes128Gcm, Keyring, Receiver, Sealer};
use tandem_core::frame::{
    Body, EntryRepr, Frame, HeaderRepr, HeartbeatRepr, HeartbeatView, Kind, Op, Role,
    SessionUpdateRepr, StateFlags, MAX_DATAGRAM,
};
use tandem_core::{ClusterId, Incarnation, KeyId, NodeId};

const CLUSTER: ClusterId = ClusterId(0xbeef);
/// Distinct sealed datagrams for the receive path (each seq is accepted once).
const BATCH: usize = 4096;

/// Keeps `value` alive without reading it back. criterion's own `black_box` on a returned
/// value does a volatile read of every byte, which for a 112-byte `Result<Frame>` costs more
/// than the parse itself.
fn sink<T>(value: T) {
    black_box(&value);
}

fn heartbeat() -> Body<'static> {
    Body::Heartbeat(HeartbeatRepr {
        interval_us: 10_000,
        multiplier: 3,
        role: Role::Leader,
        priority: 100,
        state: StateFlags(0),
        leader: Some(NodeId(1)),
        view: 5,
        repl_hwm: 42,
    })
}

fn session_update(value: &[u8]) -> Body<'_> {
    Body::SessionUpdate(SessionUpdateRepr {
        rseq: 9,
        entry: EntryRepr {
            op: Op::Put,
            version: 0x11,
            origin: NodeId(1),
            expires_at_ms: 1_700_000_000_000,
            key: b"spring:session:sessions:0c7a5d9e-4a38-4b6e-9d53-1e0f6a2b7c41",
            total_len: value.len() as u32,
            offset: 0,
            value,
        },
    })
}

fn header(kind: Kind) -> HeaderRepr {
    HeaderRepr {
        kind,
        flags: 0,
        key_id: KeyId(1),
        cluster: CLUSTER,
        sender: NodeId(1),
        incarnation: Incarnation(0x6553_f100),
        salt: tandem_core::Salt([0x5a; 6]),
        seq: 7,
    }
}

fn bench_kind(c: &mut Criterion, name: &str, body: Body<'_>) {
    let mut keyring: Keyring<Aes128Gcm> = Keyring::new(KeyId(1), [0x42; 16]);
    let frame = Frame {
        header: header(body.kind()),
        body,
    };
    let mut plain = [0u8; MAX_DATAGRAM];
    let plain_len = frame.emit(&mut plain).expect("valid frame");
    let plain = &plain[..plain_len];
    let mut sealed = [0u8; MAX_DATAGRAM];
    let sealed_len = seal(&frame.header, &frame.body, &mut keyring, &mut sealed).expect("seal");
    let sealed = &sealed[..sealed_len];

    // Distinct seqs for the receive path.
    let mut sealer = Sealer::new(
        CLUSTER,
        NodeId(1),
        Incarnation(0x6553_f100),
        tandem_core::Salt([0x5a; 6]),
    );
    let batch: Vec<Vec<u8>> = (0..BATCH)
        .map(|_| {
            let mut out = [0u8; MAX_DATAGRAM];
            let n = sealer
                .seal(&frame.body, &mut keyring, &mut out)
                .expect("seal");
            out[..n].to_vec()
        })
        .collect();

    let mut g = c.benchmark_group(format!("frame/{name}"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("emit", |b| {
        let mut out = [0u8; MAX_DATAGRAM];
        b.iter(|| sink(black_box(frame).emit(black_box(&mut out))))
    });
    g.bench_function("parse", |b| b.iter(|| sink(Frame::parse(black_box(plain)))));
    if frame.header.kind == Kind::Heartbeat {
        // The borrowed view: same checks as parse, then the fields the detector reads.
        g.bench_function("parse_view", |b| {
            b.iter(|| {
                sink(
                    HeartbeatView::new(black_box(plain))
                        .map(|v| (v.sender(), v.incarnation(), v.interval_us(), v.multiplier())),
                )
            })
        });
    }
    // The zerocopy header alone (what the brief's ~1 ns anchor measures).
    g.bench_function("parse_header", |b| {
        b.iter(|| {
            sink(HeaderRepr::check(black_box(plain)).and_then(|(h, _, _)| HeaderRepr::from_wire(h)))
        })
    });
    g.bench_function("seal", |b| {
        let mut out = [0u8; MAX_DATAGRAM];
        b.iter(|| {
            sink(seal(
                &frame.header,
                &frame.body,
                &mut keyring,
                black_box(&mut out),
            ))
        })
    });
    // A run key's first use (or a forged frame with a new salt): the KDF and the AES-GCM key
    // setup of the derived key, what the keyring's cache saves on every other frame.
    g.bench_function("derive", |b| {
        use tandem_core::crypto::{Aead, Run};
        let run = Run::of(&frame.header);
        b.iter(|| sink(Aes128Gcm::derive(black_box(&[0x42; 16]), black_box(&run))))
    });
    // Baseline in the same run: the bare RustCrypto AES-128-GCM call on the same sizes
    // (32-byte AAD, this body), so seal/open overhead over the library is visible.
    g.bench_function("aead_floor", |b| {
        use aes_gcm::aead::{AeadInPlace, KeyInit};
        let cipher = aes_gcm::Aes128Gcm::new(&[0x42; 16].into());
        let body_len = sealed_len - 32 - 16;
        let mut buf = [0u8; MAX_DATAGRAM];
        let (aad, body) = buf.split_at_mut(32);
        aad.copy_from_slice(&plain[..32]);
        let nonce = [7u8; 12];
        b.iter(|| {
            let tag = cipher.encrypt_in_place_detached(
                &nonce.into(),
                black_box(&*aad),
                &mut body[..body_len],
            );
            sink(tag)
        })
    });
    g.bench_function("copy", |b| {
        let mut buf = [0u8; MAX_DATAGRAM];
        b.iter(|| {
            buf[..sealed_len].copy_from_slice(black_box(sealed));
            black_box(&mut buf);
        })
    });
    g.bench_function("open", |b| {
        let mut buf = [0u8; MAX_DATAGRAM];
        b.iter(|| {
            let d = &mut buf[..sealed_len];
            d.copy_from_slice(black_box(sealed));
            sink(open(d, CLUSTER, &mut keyring))
        })
    });
    g.bench_function("receive", |b| {
        b.iter_custom(|iters| {
            let mut rx: Receiver<16> = Receiver::new(CLUSTER);
            let mut buf = [0u8; MAX_DATAGRAM];
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(BATCH as u64) as usize;
                // A fresh window per pass, so every datagram is new to it.
                *rx.replay() = Default::default();
                let start = Instant::now();
                for d in &batch[..n] {
                    let dst = &mut buf[..d.len()];
                    dst.copy_from_slice(d);
                    let r = rx.receive(dst, &mut keyring);
                    debug_assert!(r.is_ok());
                    sink(r);
                }
                elapsed += start.elapsed();
                left -= n as u64;
            }
            elapsed
        })
    });
    g.finish();
}

fn frames(c: &mut Criterion) {
    bench_kind(c, "heartbeat", heartbeat());
    let value = vec![0x5a; 1024];
    bench_kind(c, "session_update_1k", session_update(&value));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = frames
}
criterion_main!(benches);
