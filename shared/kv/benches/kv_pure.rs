//! CPU of the pure parts of the KV data plane (no I/O), with criterion:
//! - `plan`: `subkv_kv::plan::plan` for a blind write of 10 `set` mutations
//!   (100-byte values), the planning every commit does;
//! - `atomic_write decode`: the protobuf `AtomicWrite` of those 10 mutations
//!   decoded and converted to `denokv_proto::AtomicWrite`, as the handler does;
//! - `snapshot_read_output encode` / `decode`: a `SnapshotReadOutput` of one range
//!   with 100 entries (keys about 20 bytes, 100-byte values), as a `list` page
//!   answers (encode is the server's side, decode the client's).
//!
//! `cargo bench -p subkv-kv --bench kv_pure` (criterion options after `--`).

use criterion::{criterion_group, criterion_main, Criterion};
use denokv_proto::datapath as pb;
use denokv_proto::{encode_key, Key, KeyPart};
use prost::Message;
use std::collections::BTreeMap;
use std::hint::black_box;

fn key(i: usize) -> Vec<u8> {
    encode_key(&Key(vec![
        KeyPart::String("bench".into()),
        KeyPart::String(format!("{i:06}")),
    ]))
    .expect("encodable key")
}

fn write_of_10() -> pb::AtomicWrite {
    pb::AtomicWrite {
        mutations: (0..10)
            .map(|i| pb::Mutation {
                key: key(i),
                value: Some(pb::KvValue {
                    data: vec![b'x'; 100],
                    encoding: pb::ValueEncoding::VeBytes as i32,
                }),
                mutation_type: pb::MutationType::MSet as i32,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn output_of_100() -> pb::SnapshotReadOutput {
    pb::SnapshotReadOutput {
        ranges: vec![pb::ReadRangeOutput {
            values: (0..100)
                .map(|i| pb::KvEntry {
                    key: key(i),
                    value: vec![b'x'; 100],
                    encoding: pb::ValueEncoding::VeBytes as i32,
                    versionstamp: vec![0, 0, 0, 0, 0, 0, 0, i as u8, 0, 0],
                })
                .collect(),
        }],
        read_disabled: false,
        read_is_strongly_consistent: true,
        status: pb::SnapshotReadStatus::SrSuccess as i32,
    }
}

fn benches(c: &mut Criterion) {
    let wire = write_of_10().encode_to_vec();
    let write: denokv_proto::AtomicWrite = write_of_10()
        .try_into()
        .unwrap_or_else(|_| panic!("valid write"));
    let snapshot = BTreeMap::new();
    c.bench_function("plan (10 sets)", |b| {
        b.iter(|| subkv_kv::plan::plan(black_box(&write), &snapshot, 42, 1_700_000_000_000))
    });
    c.bench_function("atomic_write decode (10 sets)", |b| {
        b.iter(|| {
            let pb = pb::AtomicWrite::decode(black_box(wire.as_slice())).expect("decodes");
            let write: denokv_proto::AtomicWrite =
                pb.try_into().unwrap_or_else(|_| panic!("valid write"));
            write
        })
    });
    let output = output_of_100();
    let encoded = output.encode_to_vec();
    c.bench_function("snapshot_read_output encode (100 entries)", |b| {
        b.iter(|| black_box(&output).encode_to_vec())
    });
    c.bench_function("snapshot_read_output decode (100 entries)", |b| {
        b.iter(|| pb::SnapshotReadOutput::decode(black_box(encoded.as_slice())).expect("decodes"))
    });
}

criterion_group!(kv, benches);
criterion_main!(kv);
