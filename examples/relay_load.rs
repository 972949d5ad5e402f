//! Relay load: publish-to-delivery latency and sustained throughput with many subscribed
//! connections on loopback.
//!
//!   cargo run --release --example relay_load -- --subscribers 1000 --rate 2000 --seconds 10
//!
//! Starts a relay in this process on a temporary SQLite store (the daemon's default),
//! unless --url names a running one (whose public URL it must be, with rate limits high
//! enough). Opens the subscriber connections, each authenticated as its own key and
//! subscribed to its mail; seals every message beforehand; then publishes at a fixed
//! rate, each message to a random subscriber, and times each from the moment its PUBLISH
//! is written to the moment its subscriber holds it. Prints the figures and exits.

use clap::Parser;
use lnmp_bridge::config::{Config, RelayAccept};
use lnmp_bridge::lnmp::{
    Draft, Filter, Identity, Kind, Limits, Message, MessageContent, MessageId, Priority,
};
use lnmp_bridge::relay::gate::AcceptGate;
use lnmp_bridge::relay::tls::{Trust, client_config};
use lnmp_bridge::relay::{
    ClientOptions, Connection, PublishOutcome, Relay, RelaySettings, SubEvent,
};
use lnmp_bridge::store::{Store, StoreOptions};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Messages per second, in total.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Connections the messages are published over.
    #[arg(long, default_value_t = 8)]
    publishers: usize,
    /// Bytes of body per message.
    #[arg(long, default_value_t = 512)]
    body: usize,
    /// A running relay to load instead of an in-process one.
    #[arg(long)]
    url: Option<String>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _dir = tempfile::tempdir()?;
    let url = match &args.url {
        Some(u) => u.clone(),
        None => {
            let store_url = format!(
                "sqlite://{}?mode=rwc",
                _dir.path().join("relay.db").display()
            );
            let store = Store::open(&store_url, &StoreOptions::default()).await?;
            store.migrate().await?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("ws://{}", listener.local_addr()?);
            let mut config = Config::default();
            config.relay.public_url = url.clone();
            config.relay.max_connections = args.subscribers + args.publishers + 16;
            let mut settings = RelaySettings::from_config(&config);
            settings.publish_rate = 1e9;
            settings.publish_burst = u32::MAX;
            settings.frame_rate = 1e9;
            settings.frame_burst = u32::MAX;
            let relay = Relay::new(
                settings,
                store.clone(),
                Arc::new(AcceptGate::new(store, RelayAccept::All)),
            );
            tokio::spawn(relay.serve(listener, None, tokio_util::sync::CancellationToken::new()));
            url
        }
    };
    let opts = ClientOptions {
        tls: client_config(Trust::Insecure)?,
        connect_timeout: Duration::from_secs(30),
        limits: Limits::default(),
    };

    // Subscribers.
    let sent_at: Arc<Mutex<HashMap<MessageId, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut keys = Vec::with_capacity(args.subscribers);
    let started = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..args.subscribers {
        let id = Identity::generate(&mut rand_core::OsRng);
        let conn = Connection::connect(&url, Some(&id), &opts).await?;
        let since = lnmp_bridge::store::now() as u64;
        let filter = Filter {
            to: Some(vec![id.public_key()]),
            since: Some(since),
            ..Filter::default()
        };
        let mut events = conn.subscribe("load", vec![filter]).await?;
        let (sent_at, latencies) = (sent_at.clone(), latencies.clone());
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if let SubEvent::Message(m) = ev {
                    let t0 = sent_at.lock().unwrap().remove(&m.id);
                    if let Some(t0) = t0 {
                        latencies.lock().unwrap().push(t0.elapsed());
                    }
                }
            }
        });
        keys.push(id.public_key());
        conns.push(conn);
    }
    println!(
        "{} subscribers connected and authenticated in {:.1} s",
        args.subscribers,
        started.elapsed().as_secs_f64()
    );

    // Messages, sealed beforehand so sealing is not what is measured.
    let total = (args.rate * args.seconds) as usize;
    let sender = Identity::generate(&mut rand_core::OsRng);
    let body = "x".repeat(args.body);
    let now = lnmp_bridge::store::now() as u64;
    let t = Instant::now();
    let messages: Vec<Message> = (0..total)
        .map(|i| {
            let to =
                keys[(rand_core::RngCore::next_u32(&mut rand_core::OsRng) as usize) % keys.len()];
            let d = Draft {
                to: vec![to],
                kind: Kind::Text,
                timestamp: now,
                content: MessageContent {
                    subject: Some(format!("load {i}")),
                    body: body.clone(),
                    ..MessageContent::default()
                },
                relays: vec![],
                expiry: None,
                priority: Priority::Normal,
            };
            Message::seal(&sender, &d, &mut rand_core::OsRng).expect("seal")
        })
        .collect();
    println!(
        "{total} messages sealed in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let mut publishers = Vec::new();
    for _ in 0..args.publishers {
        publishers.push(Connection::connect(&url, None, &opts).await?);
    }

    // Publish at the fixed rate.
    let acks: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let start = Instant::now();
    let mut pending = Vec::with_capacity(total);
    for (i, m) in messages.into_iter().enumerate() {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let conn = publishers[i % publishers.len()].clone();
        let (sent_at, acks, refused) = (sent_at.clone(), acks.clone(), refused.clone());
        pending.push(tokio::spawn(async move {
            let t0 = Instant::now();
            sent_at.lock().unwrap().insert(m.id, t0);
            match conn.publish(&m, Duration::from_secs(30)).await {
                Ok(PublishOutcome::Accepted) => acks.lock().unwrap().push(t0.elapsed()),
                other => {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    eprintln!("not accepted: {other:?}");
                }
            }
        }));
    }
    for p in pending {
        p.await?;
    }
    let publish_secs = start.elapsed().as_secs_f64();
    // Let the last deliveries land.
    let drain = Instant::now();
    while latencies.lock().unwrap().len()
        < total - refused.load(std::sync::atomic::Ordering::Relaxed)
        && drain.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();

    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let mut ack = acks.lock().unwrap().clone();
    ack.sort();
    println!();
    println!("subscribers              {}", args.subscribers);
    println!(
        "target rate              {} msg/s for {} s ({} B bodies)",
        args.rate, args.seconds, args.body
    );
    println!(
        "published                {total} in {publish_secs:.2} s = {:.0} msg/s",
        total as f64 / publish_secs
    );
    println!(
        "delivered                {} ({:.0} msg/s sustained)",
        lat.len(),
        lat.len() as f64 / elapsed
    );
    println!(
        "refused or failed        {}",
        refused.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "publish -> delivery      p50 {}  p90 {}  p99 {}  max {}",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.9)),
        ms(percentile(&lat, 0.99)),
        ms(percentile(&lat, 1.0))
    );
    println!(
        "publish -> OK            p50 {}  p99 {}",
        ms(percentile(&ack, 0.5)),
        ms(percentile(&ack, 0.99))
    );
    drop(conns);
    Ok(())
}
