//! The relay server (docs/PROTOCOL.md §9): WebSocket connections, AUTH, subscriptions
//! and queries restricted to the authenticated key, and the PUBLISH pipeline — verify,
//! refuse what is expired, duplicated or not for this relay, ask the gate (where the
//! payments part charges strangers), commit, deliver live, and only then answer OK.

use super::gate::{Gate, GateVerdict};
use crate::lnmp::frame::{ErrorCode, Reason, ReasonCode};
use crate::lnmp::{ClientFrame, Filter, Limits, Message, PublicKey, RelayFrame};
use crate::ratelimit::TokenBucket;
use crate::store::relay::{Incoming, Stored};
use crate::store::{self, Store};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Everything the relay needs to know, taken from the config.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The URL AUTH answers must name.
    pub public_url: String,
    pub limits: Limits,
    pub max_subscriptions: usize,
    pub max_connections: usize,
    pub max_stored_per_query: u32,
    pub publish_rate: f64,
    pub publish_burst: u32,
    pub frame_rate: f64,
    pub frame_burst: u32,
    pub retention: Duration,
    pub auth_skew: u64,
    pub future_skew: u64,
    pub ping_interval: Duration,
}

impl RelaySettings {
    pub fn from_config(c: &crate::config::Config) -> RelaySettings {
        let r = &c.relay;
        RelaySettings {
            public_url: c.relay_url(),
            limits: Limits {
                max_message_bytes: r.max_message_bytes,
                ..Limits::default()
            },
            max_subscriptions: r.max_subscriptions,
            max_connections: r.max_connections,
            max_stored_per_query: r.max_stored_per_query,
            publish_rate: f64::from(r.publish_rate),
            publish_burst: r.publish_burst,
            frame_rate: f64::from(r.frame_rate),
            frame_burst: r.frame_burst,
            retention: Duration::from_secs(u64::from(r.retention_days) * 86_400),
            auth_skew: r.auth_skew_seconds,
            future_skew: r.future_skew_seconds,
            ping_interval: Duration::from_secs(r.ping_interval_seconds),
        }
    }
}

/// A stored message on its way to live subscribers, with its JSON as committed.
pub struct Delivery {
    pub message: Message,
    pub json: String,
}

/// Live subscribers by the key they authenticated as. A message goes only to the
/// connections of its sender and recipients, which keeps fan-out proportional to the
/// people involved rather than to everyone connected.
#[derive(Default)]
pub struct Hub {
    next_id: AtomicU64,
    by_key: RwLock<HashMap<PublicKey, Vec<Listener>>>,
}

struct Listener {
    conn: u64,
    tx: mpsc::Sender<Arc<Delivery>>,
    lagged: Arc<AtomicBool>,
}

impl Hub {
    fn register(
        &self,
        key: PublicKey,
        tx: mpsc::Sender<Arc<Delivery>>,
        lagged: Arc<AtomicBool>,
    ) -> u64 {
        let conn = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut map = self.by_key.write().unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_default()
            .push(Listener { conn, tx, lagged });
        conn
    }

    fn unregister(&self, key: &PublicKey, conn: u64) {
        let mut map = self.by_key.write().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = map.get_mut(key) {
            v.retain(|l| l.conn != conn);
            if v.is_empty() {
                map.remove(key);
            }
        }
    }

    /// Hands a committed message to every connection of its sender and recipients. A
    /// connection too slow to take it is marked lagged and will be closed: its client
    /// resubscribes and catches up from storage.
    pub fn deliver(&self, d: Arc<Delivery>) {
        let map = self.by_key.read().unwrap_or_else(|p| p.into_inner());
        let mut sent = Vec::new();
        for key in std::iter::once(&d.message.from).chain(d.message.to.iter()) {
            for l in map.get(key).into_iter().flatten() {
                if sent.contains(&l.conn) {
                    continue;
                }
                sent.push(l.conn);
                if l.tx.try_send(d.clone()).is_err() {
                    l.lagged.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The relay: settings, storage, live subscribers, and the gate that prices messages.
pub struct Relay {
    pub settings: RelaySettings,
    store: Store,
    hub: Hub,
    gate: Arc<dyn Gate>,
    connections: AtomicU64,
}

impl Relay {
    pub fn new(settings: RelaySettings, store: Store, gate: Arc<dyn Gate>) -> Arc<Relay> {
        Arc::new(Relay {
            settings,
            store,
            hub: Hub::default(),
            gate,
            connections: AtomicU64::new(0),
        })
    }

    /// The PUBLISH pipeline of docs/PROTOCOL.md §9.6. Returns the frames to answer with:
    /// an INVOICE before a payment-required OK, else just the OK.
    pub async fn publish(&self, message: Message, json: String) -> Vec<RelayFrame> {
        let id = message.id.to_hex();
        let refuse = |code, text: String| {
            vec![RelayFrame::Ok {
                id: id.clone(),
                accepted: false,
                reason: Some(Reason::new(code, text)),
            }]
        };
        if let Err(e) = message.verify() {
            return refuse(ReasonCode::Invalid, e.to_string());
        }
        let now = store::unix_now();
        if message.is_expired(now) {
            return refuse(ReasonCode::Expired, "the message has expired".into());
        }
        if message.timestamp > now + self.settings.future_skew {
            return refuse(ReasonCode::Invalid, "timestamp is in the future".into());
        }
        match store::relay::contains(&self.store, &id).await {
            Ok(true) => return refuse(ReasonCode::Duplicate, "already have it".into()),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "relay store unavailable");
                return refuse(ReasonCode::Error, "storage unavailable; try again".into());
            }
        }
        let (local_recipients, legacy_recipients, payment) = match self.gate.check(&message).await {
            GateVerdict::Accept {
                local_recipients,
                legacy_recipients,
                payment,
            } => (local_recipients, legacy_recipients, payment),
            GateVerdict::Refuse(reason) => {
                return vec![RelayFrame::Ok {
                    id,
                    accepted: false,
                    reason: Some(reason),
                }];
            }
            GateVerdict::Invoice(invoice) => {
                let text = match &*invoice {
                    RelayFrame::Invoice { amount, .. } => {
                        format!("pay {amount} sats, then publish again with the proof")
                    }
                    _ => "pay the invoice, then publish again with the proof".to_owned(),
                };
                let mut frames = vec![*invoice];
                frames.extend(refuse(ReasonCode::PaymentRequired, text));
                return frames;
            }
        };
        // The proof as this relay vouches for it: the invoiced amount, or none at all.
        let (mut message, mut json) = (message, json);
        let shown = payment.as_ref().map(|p| p.amount);
        if message.payment.as_ref().map(|p| p.amount) != shown {
            match (&mut message.payment, shown) {
                (Some(p), Some(amount)) => p.amount = amount,
                (p, _) => *p = None,
            }
            json = message.to_json();
        }
        let redeem = payment.map(|p| p.redemption);
        let received_at = now as i64;
        let retention_end = received_at.saturating_add(self.settings.retention.as_secs() as i64);
        let expires_at = message.expiry.map_or(retention_end, |e| {
            retention_end.min(i64::try_from(e).unwrap_or(i64::MAX))
        });
        let has_legacy = !legacy_recipients.is_empty();
        let delivery = Arc::new(Delivery {
            message: message.clone(),
            json: json.clone(),
        });
        let incoming = Incoming {
            message,
            json,
            received_at,
            expires_at,
            local_recipients: local_recipients.clone(),
            legacy_recipients,
            file_in_inbox: true,
            redeem,
        };
        match store::relay::insert(&self.store, incoming).await {
            Ok(Stored::New) => {}
            Ok(Stored::Duplicate) => {
                return refuse(ReasonCode::Duplicate, "already have it".into());
            }
            Ok(Stored::ProofUsed) => {
                return refuse(
                    ReasonCode::PaymentRequired,
                    "the payment proof was used before".into(),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store a message");
                return refuse(ReasonCode::Error, "storage unavailable; try again".into());
            }
        }
        for user in local_recipients {
            self.store.mail_changed(user).await;
        }
        if has_legacy {
            self.store.work_queued();
        }
        self.hub.deliver(delivery);
        vec![RelayFrame::Ok {
            id,
            accepted: true,
            reason: None,
        }]
    }

    /// Accepts WebSocket connections until `shutdown`, each in its own task.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        shutdown: CancellationToken,
    ) {
        let tracker = tokio_util::task::TaskTracker::new();
        loop {
            let Some((tcp, peer)) = crate::net::accept(&listener, &shutdown, "relay").await else {
                break;
            };
            if self.connections.load(Ordering::Relaxed) >= self.settings.max_connections as u64 {
                tracing::warn!(%peer, "relay connection limit reached; refusing");
                drop(tcp);
                continue;
            }
            let relay = self.clone();
            let tls = tls.clone();
            let shutdown = shutdown.clone();
            let span = tracing::info_span!("relay", %peer);
            tracker.spawn(
                async move {
                    relay.connections.fetch_add(1, Ordering::Relaxed);
                    match tls {
                        Some(acceptor) => match tokio::time::timeout(
                            Duration::from_secs(10),
                            acceptor.accept(tcp),
                        )
                        .await
                        {
                            Ok(Ok(s)) => relay.connection(s, shutdown).await,
                            _ => tracing::debug!("TLS handshake failed or timed out"),
                        },
                        None => relay.connection(tcp, shutdown).await,
                    }
                    relay.connections.fetch_sub(1, Ordering::Relaxed);
                }
                .instrument(span),
            );
        }
        tracker.close();
        tracker.wait().await;
    }

    async fn connection<S>(self: &Arc<Self>, stream: S, shutdown: CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // tungstenite enforces a hard ceiling a little above the relay's own limit, so a
        // frame over the limit but under the ceiling gets a reasoned answer instead of a
        // dropped connection.
        let hard = self
            .settings
            .limits
            .max_message_bytes
            .saturating_mul(2)
            .max(64 * 1024);
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(hard))
            .max_frame_size(Some(hard));
        let ws = match tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::accept_async_with_config(stream, Some(ws_config)),
        )
        .await
        {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "WebSocket handshake failed");
                return;
            }
            Err(_) => return,
        };
        let mut conn = Connection::new(self.clone());
        if let Err(e) = conn.run(ws, shutdown).await {
            tracing::debug!(error = %e, "relay connection ended");
        }
        conn.close();
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Hands a message committed by another part of the daemon (local mail delivery)
    /// to the live subscribers of its sender and recipients.
    pub fn announce(&self, message: Message, json: String) {
        self.hub.deliver(Arc::new(Delivery { message, json }));
    }

    /// Deletes expired messages every hour until `shutdown`.
    pub async fn prune_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match store::relay::prune(&self.store, store::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "pruned expired relay messages"),
                Err(e) => tracing::warn!(error = %e, "pruning relay messages failed"),
            }
        }
    }
}

/// One client connection's state.
struct Connection {
    relay: Arc<Relay>,
    challenge: String,
    authed: Option<(PublicKey, u64)>,
    subs: HashMap<String, Vec<Filter>>,
    live_tx: mpsc::Sender<Arc<Delivery>>,
    live_rx: mpsc::Receiver<Arc<Delivery>>,
    lagged: Arc<AtomicBool>,
    publishes: TokenBucket,
    frames: TokenBucket,
}

type WsResult = Result<(), tokio_tungstenite::tungstenite::Error>;

impl Connection {
    fn new(relay: Arc<Relay>) -> Connection {
        let mut challenge = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut challenge);
        let (live_tx, live_rx) = mpsc::channel(1024);
        let s = &relay.settings;
        Connection {
            publishes: TokenBucket::new(s.publish_rate, s.publish_burst),
            frames: TokenBucket::new(s.frame_rate, s.frame_burst),
            relay,
            challenge: hex::encode(challenge),
            authed: None,
            subs: HashMap::new(),
            live_tx,
            live_rx,
            lagged: Arc::new(AtomicBool::new(false)),
        }
    }

    fn close(&mut self) {
        if let Some((key, id)) = self.authed.take() {
            self.relay.hub.unregister(&key, id);
        }
    }

    async fn run<S>(&mut self, mut ws: WebSocketStream<S>, shutdown: CancellationToken) -> WsResult
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        send(
            &mut ws,
            &RelayFrame::Auth {
                challenge: self.challenge.clone(),
            },
        )
        .await?;
        let ping_every = self.relay.settings.ping_interval;
        let mut ping = tokio::time::interval(ping_every);
        ping.tick().await;
        let mut last_heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = ws.close(None).await;
                    return Ok(());
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > ping_every * 3 {
                        tracing::debug!("client silent for three ping intervals; closing");
                        let _ = ws.close(None).await;
                        return Ok(());
                    }
                    ws.send(WsMessage::Ping(Vec::new().into())).await?;
                }
                Some(d) = self.live_rx.recv() => {
                    if self.lagged.load(Ordering::Relaxed) {
                        error(&mut ws, ErrorCode::RateLimited, "this connection fell behind live delivery; reconnect and resubscribe", None).await?;
                        let _ = ws.close(None).await;
                        return Ok(());
                    }
                    self.deliver_live(&mut ws, &d).await?;
                }
                incoming = ws.next() => {
                    let Some(incoming) = incoming else { return Ok(()) };
                    last_heard = tokio::time::Instant::now();
                    match incoming? {
                        WsMessage::Text(t) => self.frame(&mut ws, t.as_bytes()).await?,
                        WsMessage::Binary(_) => {
                            error(&mut ws, ErrorCode::Malformed, "binary messages are not LNMP frames; send JSON text", None).await?
                        }
                        WsMessage::Close(_) => return Ok(()),
                        _ => {}
                    }
                }
            }
        }
    }

    async fn deliver_live<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        d: &Delivery,
    ) -> WsResult {
        for (sub, filters) in &self.subs {
            if filters.iter().any(|f| f.matches(&d.message)) {
                ws.send(WsMessage::Text(msg_frame(sub, &d.json).into()))
                    .await?;
            }
        }
        Ok(())
    }

    async fn frame<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        text: &[u8],
    ) -> WsResult {
        if !self.frames.try_take() {
            return error(
                ws,
                ErrorCode::RateLimited,
                "too many frames; slow down",
                None,
            )
            .await;
        }
        let limits = &self.relay.settings.limits;
        let frame = match ClientFrame::from_json(text, limits) {
            Ok(f) => f,
            Err(e) => {
                // A PUBLISH that names its id gets an OK with the reason; anything else an ERROR.
                let too_large = matches!(e, crate::lnmp::Error::TooLarge { field: "frame", .. });
                if let Some(id) = publish_id(text) {
                    let code = if too_large {
                        ReasonCode::TooLarge
                    } else {
                        ReasonCode::Invalid
                    };
                    return send(
                        ws,
                        &RelayFrame::Ok {
                            id,
                            accepted: false,
                            reason: Some(Reason::new(code, e.to_string())),
                        },
                    )
                    .await;
                }
                let code = if too_large {
                    ErrorCode::TooLarge
                } else {
                    ErrorCode::Malformed
                };
                return error(ws, code, &e.to_string(), None).await;
            }
        };
        match frame {
            ClientFrame::Auth(proof) => {
                let ok = proof.verify(
                    &self.relay.settings.public_url,
                    &self.challenge,
                    store::unix_now(),
                    self.relay.settings.auth_skew,
                );
                let reason = match ok {
                    Ok(()) => {
                        if let Some((old, id)) = self.authed.take() {
                            self.relay.hub.unregister(&old, id);
                        }
                        let id = self.relay.hub.register(
                            proof.pubkey,
                            self.live_tx.clone(),
                            self.lagged.clone(),
                        );
                        self.authed = Some((proof.pubkey, id));
                        None
                    }
                    Err(e) => Some(Reason::new(ReasonCode::Invalid, e.to_string())),
                };
                send(
                    ws,
                    &RelayFrame::Ok {
                        id: self.challenge.clone(),
                        accepted: reason.is_none(),
                        reason,
                    },
                )
                .await
            }
            ClientFrame::Publish { message } => {
                if !self.publishes.try_take() {
                    return send(
                        ws,
                        &RelayFrame::Ok {
                            id: message.id.to_hex(),
                            accepted: false,
                            reason: Some(Reason::new(
                                ReasonCode::RateLimited,
                                "too many publishes; slow down",
                            )),
                        },
                    )
                    .await;
                }
                let json = message.to_json();
                for f in self.relay.publish(*message, json).await {
                    send(ws, &f).await?;
                }
                Ok(())
            }
            ClientFrame::Sub { sub, filters } => self.subscribe(ws, sub, filters, true).await,
            ClientFrame::Query { sub, filters } => self.subscribe(ws, sub, filters, false).await,
            ClientFrame::Unsub { sub } => {
                if self.subs.remove(&sub).is_none() {
                    return error(
                        ws,
                        ErrorCode::UnknownSubscription,
                        "no such subscription",
                        Some(sub),
                    )
                    .await;
                }
                Ok(())
            }
        }
    }

    async fn subscribe<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        sub: String,
        filters: Vec<Filter>,
        live: bool,
    ) -> WsResult {
        let Some((reader, _)) = self.authed else {
            return error(ws, ErrorCode::AuthRequired, "answer AUTH first", Some(sub)).await;
        };
        if live
            && !self.subs.contains_key(&sub)
            && self.subs.len() >= self.relay.settings.max_subscriptions
        {
            return error(
                ws,
                ErrorCode::TooManySubscriptions,
                "close a subscription first",
                Some(sub),
            )
            .await;
        }
        // Register before reading storage, so nothing committed in between is missed;
        // a message may then arrive twice, which clients drop by id.
        if live {
            self.subs.insert(sub.clone(), filters.clone());
        }
        let s = &self.relay.settings;
        let stored = store::relay::query(
            &self.relay.store,
            &reader,
            &filters,
            s.max_stored_per_query,
            &s.limits,
            store::now(),
        )
        .await;
        match stored {
            Ok(found) => {
                for (_, json) in &found {
                    ws.send(WsMessage::Text(msg_frame(&sub, json).into()))
                        .await?;
                }
                send(ws, &RelayFrame::Eose { sub }).await
            }
            Err(e) => {
                tracing::error!(error = %e, "relay query failed");
                self.subs.remove(&sub);
                error(
                    ws,
                    ErrorCode::Internal,
                    "storage unavailable; try again",
                    Some(sub),
                )
                .await
            }
        }
    }
}

/// A MSG frame around stored JSON, without parsing and re-serializing the message.
fn msg_frame(sub: &str, message_json: &str) -> String {
    let sub = serde_json::to_string(sub).unwrap_or_else(|_| "\"\"".into());
    format!(r#"{{"type":"MSG","sub":{sub},"message":{message_json}}}"#)
}

/// The message id of a frame that looks like a PUBLISH, to answer it with an OK.
fn publish_id(text: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "type")]
        kind: String,
        message: ProbeMessage,
    }
    #[derive(serde::Deserialize)]
    struct ProbeMessage {
        id: String,
    }
    let p: Probe = serde_json::from_slice(text).ok()?;
    (p.kind == "PUBLISH"
        && p.message.id.len() == 64
        && p.message.id.bytes().all(|b| b.is_ascii_hexdigit()))
    .then_some(p.message.id)
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    f: &RelayFrame,
) -> WsResult {
    ws.send(WsMessage::Text(f.to_json().into())).await
}

async fn error<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    code: ErrorCode,
    message: &str,
    sub: Option<String>,
) -> WsResult {
    send(
        ws,
        &RelayFrame::Error {
            code,
            message: message.to_owned(),
            sub,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_frames_are_what_serde_would_write() {
        let json = r#"{"v":1}"#;
        assert_eq!(
            msg_frame("a\"b", json),
            r#"{"type":"MSG","sub":"a\"b","message":{"v":1}}"#
        );
    }

    #[test]
    fn publish_ids_are_probed_only_from_publish_frames() {
        let id = "ab".repeat(32);
        assert_eq!(
            publish_id(
                format!(r#"{{"type":"PUBLISH","message":{{"id":"{id}","x":1}}}}"#).as_bytes()
            ),
            Some(id.clone())
        );
        assert_eq!(
            publish_id(format!(r#"{{"type":"SUB","message":{{"id":"{id}"}}}}"#).as_bytes()),
            None
        );
        assert_eq!(
            publish_id(br#"{"type":"PUBLISH","message":{"id":"short"}}"#),
            None
        );
        assert_eq!(publish_id(b"junk"), None);
    }
}
