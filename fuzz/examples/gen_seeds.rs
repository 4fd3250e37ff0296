//! Writes the committed seed corpora: `cargo run --example gen_seeds` from fuzz/.
//!
//! parse/valid-*.bin: plaintext frames of every kind; open/valid-aes-*.bin and
//! open/valid-insecure-*.bin: the same frames sealed under the fixed test key of
//! docs/PROTOCOL.md (cluster 0xbeef, key id 1, key 00 01 .. 0f) or the insecure provider;
//! roundtrip/: the plaintext bytes again (any bytes are an input to `arbitrary`).
//! core/tests/fuzz_seeds.rs replays them in `cargo test`.

use std::fs;
use std::path::Path;

use tandem_core::crypto::{seal, Aes128Gcm, Insecure, Keyring};
use tandem_core::frame::*;
use tandem_core::{ClusterId, Incarnation, KeyId, NodeId, Salt};

const TEST_KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let key = [b'k'; MAX_KEY_LEN];
    let value: Vec<u8> = (0..MAX_VALUE_CHUNK).map(|i| (i * 7) as u8).collect();
    let entry = EntryRepr {
        op: Op::Put,
        version: 0x11,
        origin: NodeId(2),
        expires_at_ms: 1_700_000_000_000,
        key: b"sess:42",
        total_len: 5,
        offset: 0,
        value: b"hello",
    };
    let big = EntryRepr {
        key: &key,
        total_len: 3 * MAX_VALUE_CHUNK as u32,
        offset: MAX_VALUE_CHUNK as u32,
        value: &value,
        ..entry
    };
    let bodies: Vec<(&str, Body)> = vec![
        (
            "heartbeat",
            Body::Heartbeat(HeartbeatRepr {
                interval_us: 10_000,
                multiplier: 3,
                role: Role::Leader,
                priority: 100,
                state: StateFlags(StateFlags::SYNCING),
                leader: Some(NodeId(1)),
                view: 5,
                repl_hwm: 42,
            }),
        ),
        (
            "session-update",
            Body::SessionUpdate(SessionUpdateRepr { rseq: 9, entry }),
        ),
        (
            "session-update-delete",
            Body::SessionUpdate(SessionUpdateRepr {
                rseq: 10,
                entry: EntryRepr {
                    op: Op::Delete,
                    total_len: 0,
                    value: b"",
                    ..entry
                },
            }),
        ),
        (
            "session-update-max",
            Body::SessionUpdate(SessionUpdateRepr {
                rseq: 11,
                entry: big,
            }),
        ),
        (
            "ack",
            Body::Ack(AckRepr {
                origin: NodeId(2),
                origin_incarnation: Incarnation(7),
                rseq: 9,
            }),
        ),
        (
            "retransmit-request",
            Body::RetransmitRequest(RetransmitRequestRepr {
                target: NodeId(2),
                target_incarnation: Incarnation(7),
                from: 3,
                to: 9,
            }),
        ),
        (
            "sync-request",
            Body::SyncRequest(SyncRequestRepr {
                target: NodeId(2),
                sync_id: 1,
                cursor: 0,
            }),
        ),
        (
            "sync-chunk-max",
            Body::SyncChunk(SyncChunkRepr {
                target: NodeId(1),
                sync_id: 1,
                index: 0,
                entry: big,
            }),
        ),
        (
            "sync-done",
            Body::SyncDone(SyncDoneRepr {
                target: NodeId(1),
                sync_id: 1,
                chunks: 1,
                rseq: 11,
            }),
        ),
        ("leave", Body::Leave(LeaveRepr { reason: 0 })),
        (
            "challenge",
            Body::Challenge(ChallengeRepr {
                target: NodeId(1),
                target_incarnation: Incarnation(0x6553_f100),
                target_salt: Salt([0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6]),
                answers: None,
            }),
        ),
        (
            "challenge-answer",
            Body::Challenge(ChallengeRepr {
                target: NodeId(1),
                target_incarnation: Incarnation(0x6553_f100),
                target_salt: Salt([0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6]),
                answers: Some(7),
            }),
        ),
    ];
    let mut aes: Keyring<Aes128Gcm> = Keyring::new(KeyId(1), TEST_KEY);
    let mut insecure: Keyring<Insecure> = Keyring::new(KeyId(0), ());
    for dir in ["parse", "open", "roundtrip"] {
        fs::create_dir_all(root.join(dir))?;
    }
    for (i, (name, body)) in bodies.iter().enumerate() {
        let header = HeaderRepr {
            kind: body.kind(),
            flags: 0,
            key_id: KeyId(1),
            cluster: ClusterId(0xbeef),
            sender: NodeId(1),
            incarnation: Incarnation(0x6553_f100),
            salt: Salt([0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6]),
            seq: i as u64,
        };
        let frame = Frame {
            header,
            body: *body,
        };
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = frame.emit(&mut buf).expect("valid seed frame");
        fs::write(root.join(format!("parse/valid-{name}.bin")), &buf[..n])?;
        fs::write(root.join(format!("roundtrip/{name}.bin")), &buf[..n])?;
        let n = seal(&header, body, &mut aes, &mut buf).expect("valid seed frame");
        fs::write(root.join(format!("open/valid-aes-{name}.bin")), &buf[..n])?;
        let n = seal(&header, body, &mut insecure, &mut buf).expect("valid seed frame");
        fs::write(
            root.join(format!("open/valid-insecure-{name}.bin")),
            &buf[..n],
        )?;
    }
    Ok(())
}
