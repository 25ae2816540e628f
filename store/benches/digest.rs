//! sha256 throughput of the blob store's hashing (issue 3 asks for it next
//! to the pull benchmark): `cargo bench -p moor-store --bench digest`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use moor_store::Digest;

fn sha256(c: &mut Criterion) {
    let data = vec![0x5au8; 64 << 20];
    let mut g = c.benchmark_group("sha256");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("64 MiB", |b| {
        b.iter(|| Digest::of(std::hint::black_box(&data)))
    });
    g.finish();
}

criterion_group!(benches, sha256);
criterion_main!(benches);
