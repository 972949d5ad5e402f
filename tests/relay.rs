//! The relay server and client in one process over loopback WebSockets: AUTH, who may read
//! what, live delivery, and the reason every refused frame gets.

use futures_util::{SinkExt, StreamExt};
use lnmp_bridge::config::RelayAccept;
use lnmp_bridge::lnmp::frame::ReasonCode;
use lnmp_bridge::lnmp::{
    Draft, Filter, Identity, Kind, Limits, Message, MessageContent, Priority, RelayFrame,
};
use lnmp_bridge::relay::gate::AcceptGate;
use lnmp_bridge::relay::tls::{Trust, client_config};
use lnmp_bridge::relay::{
    ClientOptions, Connection, PublishOutcome, Relay, RelaySettings, SubEvent,
};
use lnmp_bridge::store::{Store, StoreOptions, now};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_util::sync::CancellationToken;

struct TestRelay {
    url: String,
    opts: ClientOptions,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(tune: impl FnOnce(&mut RelaySettings)) -> TestRelay {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_url = format!("ws://{}", listener.local_addr().unwrap());
    let mut config = lnmp_bridge::config::Config::default();
    config.relay.public_url = relay_url.clone();
    let mut settings = RelaySettings::from_config(&config);
    tune(&mut settings);
    let relay = Relay::new(
        settings,
        store.clone(),
        Arc::new(AcceptGate::new(store, RelayAccept::All)),
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(relay.serve(listener, None, shutdown.clone()));
    TestRelay {
        url: relay_url,
        opts: ClientOptions {
            tls: client_config(Trust::Insecure).unwrap(),
            connect_timeout: Duration::from_secs(5),
            limits: Limits::default(),
        },
        shutdown,
        _dir: dir,
    }
}

fn id(n: u8) -> Identity {
    Identity::from_secret_bytes(&[n; 32]).unwrap()
}

fn message(from: &Identity, to: &Identity, body: &str, ts: u64, expiry: Option<u64>) -> Message {
    let d = Draft {
        to: vec![to.public_key()],
        kind: Kind::Text,
        timestamp: ts,
        content: MessageContent {
            body: body.into(),
            ..MessageContent::default()
        },
        relays: vec![],
        expiry,
        priority: Priority::Normal,
    };
    Message::seal(from, &d, &mut rand_core::OsRng).unwrap()
}

const T: Duration = Duration::from_secs(5);

fn unix() -> u64 {
    now() as u64
}

#[tokio::test]
async fn subscribers_get_stored_then_live_messages_meant_for_them() {
    let r = start(|_| {}).await;
    let (alice, bob, carol) = (id(1), id(2), id(3));
    let early = message(&bob, &alice, "stored", unix() - 10, None);
    let bob_conn = Connection::connect(&r.url, None, &r.opts).await.unwrap();
    assert_eq!(
        bob_conn.publish(&early, T).await.unwrap(),
        PublishOutcome::Accepted
    );

    let alice_conn = Connection::connect(&r.url, Some(&alice), &r.opts)
        .await
        .unwrap();
    let mut sub = alice_conn
        .subscribe(
            "in",
            vec![Filter {
                to: Some(vec![alice.public_key()]),
                ..Filter::default()
            }],
        )
        .await
        .unwrap();
    let first = tokio::time::timeout(T, sub.recv()).await.unwrap().unwrap();
    assert!(matches!(first, SubEvent::Message(m) if m.id == early.id));
    assert_eq!(
        tokio::time::timeout(T, sub.recv()).await.unwrap().unwrap(),
        SubEvent::Eose
    );

    let live = message(&bob, &alice, "live", unix(), None);
    assert_eq!(
        bob_conn.publish(&live, T).await.unwrap(),
        PublishOutcome::Accepted
    );
    match tokio::time::timeout(T, sub.recv()).await.unwrap().unwrap() {
        SubEvent::Message(m) => {
            assert_eq!(m.id, live.id);
            assert_eq!(m.open(&alice, &Limits::default()).unwrap().body, "live");
        }
        other => panic!("{other:?}"),
    }

    // Carol, authenticated as herself, sees nothing of Alice's mail, whatever she asks.
    let carol_conn = Connection::connect(&r.url, Some(&carol), &r.opts)
        .await
        .unwrap();
    let snoop = Filter {
        to: Some(vec![alice.public_key()]),
        ..Filter::default()
    };
    assert!(
        carol_conn
            .query(vec![snoop, Filter::default()], T)
            .await
            .unwrap()
            .is_empty()
    );
    // Bob, the sender, may read what he sent.
    let bob_reader = Connection::connect(&r.url, Some(&bob), &r.opts)
        .await
        .unwrap();
    assert_eq!(
        bob_reader
            .query(vec![Filter::default()], T)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn every_refusal_has_its_reason() {
    let r = start(|s| s.limits.max_message_bytes = 8 * 1024).await;
    let (alice, bob) = (id(1), id(2));
    let conn = Connection::connect(&r.url, None, &r.opts).await.unwrap();
    let code = |o: PublishOutcome| match o {
        PublishOutcome::Refused(reason) => reason.code,
        other => panic!("expected a refusal, got {other:?}"),
    };

    let mut tampered = message(&bob, &alice, "x", unix(), None);
    tampered.signature[0] ^= 1;
    assert_eq!(
        code(conn.publish(&tampered, T).await.unwrap()),
        ReasonCode::Invalid
    );

    let good = message(&bob, &alice, "x", unix(), None);
    assert_eq!(
        conn.publish(&good, T).await.unwrap(),
        PublishOutcome::Accepted
    );
    assert_eq!(
        conn.publish(&good, T).await.unwrap(),
        PublishOutcome::Duplicate,
        "a replay"
    );

    let expired = message(&bob, &alice, "x", unix() - 100, Some(unix() - 50));
    assert_eq!(
        code(conn.publish(&expired, T).await.unwrap()),
        ReasonCode::Expired
    );

    let future = message(&bob, &alice, "x", unix() + 3600, None);
    assert_eq!(
        code(conn.publish(&future, T).await.unwrap()),
        ReasonCode::Invalid
    );

    let big = message(&bob, &alice, &"y".repeat(20_000), unix(), None);
    assert_eq!(
        code(conn.publish(&big, T).await.unwrap()),
        ReasonCode::TooLarge
    );

    // AUTH naming another relay, or signed for another challenge, is refused.
    let wrong = Connection::connect(
        &r.url.replace("127.0.0.1", "localhost"),
        Some(&alice),
        &r.opts,
    )
    .await;
    assert!(
        matches!(wrong, Err(lnmp_bridge::relay::ClientError::Auth(_))),
        "{:?}",
        wrong.err()
    );

    // Without AUTH there is no reading.
    let mut sub = conn.subscribe("s", vec![Filter::default()]).await.unwrap();
    match tokio::time::timeout(T, sub.recv()).await.unwrap().unwrap() {
        SubEvent::Closed(reason) => assert!(reason.contains("AuthRequired"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // The connection is still good after all of that.
    let another = message(&bob, &alice, "still here", unix(), None);
    assert_eq!(
        conn.publish(&another, T).await.unwrap(),
        PublishOutcome::Accepted
    );
}

async fn raw(
    url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hello = next_frame(&mut ws).await;
    assert!(matches!(hello, RelayFrame::Auth { .. }));
    ws
}

async fn next_frame<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> RelayFrame
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(T, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Ws::Text(t) => return RelayFrame::from_json(t.as_bytes(), &Limits::default()).unwrap(),
            _ => continue,
        }
    }
}

fn error_code(f: RelayFrame) -> String {
    match f {
        RelayFrame::Error { code, .. } => format!("{code:?}"),
        other => panic!("expected ERROR, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_frames_get_errors_and_the_connection_lives_on() {
    let r = start(|_| {}).await;
    let mut ws = raw(&r.url).await;
    for (frame, want) in [
        (Ws::Text("junk".into()), "Malformed"),
        (Ws::Text(r#"{"type":"NOPE"}"#.into()), "Malformed"),
        (
            Ws::Text(r#"{"type":"SUB","sub":"s","filters":[]}"#.into()),
            "Malformed",
        ),
        (Ws::Binary(vec![1, 2, 3].into()), "Malformed"),
        (
            Ws::Text(r#"{"type":"QUERY","sub":"q","filters":[{}]}"#.into()),
            "AuthRequired",
        ),
        (
            Ws::Text(r#"{"type":"UNSUB","sub":"never"}"#.into()),
            "UnknownSubscription",
        ),
    ] {
        ws.send(frame).await.unwrap();
        assert_eq!(error_code(next_frame(&mut ws).await), want);
    }
    // A PUBLISH whose message is broken but names an id is answered with an OK.
    let id = "ab".repeat(32);
    ws.send(Ws::Text(
        format!(r#"{{"type":"PUBLISH","message":{{"id":"{id}"}}}}"#).into(),
    ))
    .await
    .unwrap();
    match next_frame(&mut ws).await {
        RelayFrame::Ok {
            id: got,
            accepted,
            reason,
        } => {
            assert_eq!(got, id);
            assert!(!accepted);
            assert_eq!(reason.unwrap().code, ReasonCode::Invalid);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn rate_and_subscription_limits() {
    let r = start(|s| {
        s.publish_burst = 2;
        s.publish_rate = 0.01;
        s.max_subscriptions = 1;
    })
    .await;
    let (alice, bob) = (id(1), id(2));
    let conn = Connection::connect(&r.url, Some(&alice), &r.opts)
        .await
        .unwrap();
    for i in 0..2 {
        let m = message(&alice, &bob, &format!("{i}"), unix(), None);
        assert_eq!(conn.publish(&m, T).await.unwrap(), PublishOutcome::Accepted);
    }
    let m = message(&alice, &bob, "3", unix(), None);
    match conn.publish(&m, T).await.unwrap() {
        PublishOutcome::Refused(r) => assert_eq!(r.code, ReasonCode::RateLimited),
        other => panic!("{other:?}"),
    }
    let mut first = conn.subscribe("a", vec![Filter::default()]).await.unwrap();
    assert!(matches!(
        tokio::time::timeout(T, first.recv())
            .await
            .unwrap()
            .unwrap(),
        SubEvent::Message(_)
    ));
    let mut second = conn.subscribe("b", vec![Filter::default()]).await.unwrap();
    match tokio::time::timeout(T, second.recv())
        .await
        .unwrap()
        .unwrap()
    {
        SubEvent::Closed(reason) => assert!(reason.contains("TooManySubscriptions"), "{reason}"),
        other => panic!("{other:?}"),
    }
}
