//! Seal (encrypt + sign) and open (verify + decrypt) throughput for 1 KiB and 1 MiB
//! bodies to 1 and 10 recipients. `cargo bench --bench seal`; figures go in the README.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lnmp_bridge::lnmp::{Draft, Identity, Kind, Limits, Message, MessageContent, Priority};
use rand_core::OsRng;
use std::hint::black_box;

fn draft(body_len: usize, recipients: &[Identity]) -> Draft {
    Draft {
        to: recipients.iter().map(Identity::public_key).collect(),
        kind: Kind::Text,
        timestamp: 1_767_225_600,
        content: MessageContent {
            subject: Some("benchmark".into()),
            body: "x".repeat(body_len),
            ..MessageContent::default()
        },
        relays: vec!["wss://relay.example.com:7138".into()],
        expiry: None,
        priority: Priority::Normal,
    }
}

fn bench(c: &mut Criterion) {
    let sender = Identity::generate(&mut OsRng);
    let limits = Limits::default();
    for (label, size) in [("1KiB", 1024), ("1MiB", 1024 * 1024)] {
        for n in [1usize, 10] {
            let recipients: Vec<Identity> =
                (0..n).map(|_| Identity::generate(&mut OsRng)).collect();
            let d = draft(size, &recipients);
            let id = format!("{label}/{n}rcpt");

            let mut group = c.benchmark_group("seal");
            group.throughput(Throughput::Elements(1));
            if size > 64 * 1024 {
                group.sample_size(20);
            }
            group.bench_function(BenchmarkId::from_parameter(&id), |b| {
                b.iter(|| Message::seal(&sender, black_box(&d), &mut OsRng).unwrap())
            });
            group.finish();

            let m = Message::seal(&sender, &d, &mut OsRng).unwrap();
            let mut group = c.benchmark_group("open");
            group.throughput(Throughput::Elements(1));
            if size > 64 * 1024 {
                group.sample_size(20);
            }
            group.bench_function(BenchmarkId::from_parameter(&id), |b| {
                b.iter(|| black_box(&m).open(&recipients[0], &limits).unwrap())
            });
            group.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
