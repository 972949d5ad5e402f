//! A connection to one relay: connect (TLS by rustls), answer AUTH, then publish with an
//! OK awaited, subscribe, and query. One task owns the socket; callers talk to it through
//! channels, and every pending call fails cleanly when the connection drops.

use crate::lnmp::frame::{Reason, ReasonCode};
use crate::lnmp::{
    AuthProof, ClientFrame, Filter, Identity, Limits, Message, MessageId, RelayFrame,
};
use futures_util::{SinkExt, StreamExt};
use rustls::ClientConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("the relay closed the connection")]
    Closed,
    #[error("the relay broke the protocol: {0}")]
    Protocol(String),
    #[error("the relay refused AUTH: {0}")]
    Auth(String),
}

/// How a relay answered a PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    Accepted,
    /// The relay has the message already: as good as accepted.
    Duplicate,
    /// The recipient charges for it; the INVOICE that came before the OK.
    PaymentRequired {
        invoice: Option<Box<RelayFrame>>,
        reason: Reason,
    },
    Refused(Reason),
}

impl PublishOutcome {
    pub fn delivered(&self) -> bool {
        matches!(self, PublishOutcome::Accepted | PublishOutcome::Duplicate)
    }

    /// Whether sending the same message again may succeed (as opposed to a refusal that
    /// will not change: invalid, expired, too large, blocked, restricted).
    pub fn retryable(&self) -> bool {
        match self {
            PublishOutcome::Refused(r) => matches!(
                r.code,
                ReasonCode::RateLimited | ReasonCode::Error | ReasonCode::AuthRequired
            ),
            _ => false,
        }
    }
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubEvent {
    Message(Box<Message>),
    /// Stored messages are done; live ones follow.
    Eose,
    /// The relay ended the subscription or the connection dropped.
    Closed(String),
}

#[derive(Clone)]
pub struct ClientOptions {
    pub tls: Arc<ClientConfig>,
    pub connect_timeout: Duration,
    pub limits: Limits,
}

#[derive(Default)]
struct Pending {
    publishes: HashMap<String, (oneshot::Sender<PublishOutcome>, Option<Box<RelayFrame>>)>,
    subs: HashMap<String, mpsc::Sender<SubEvent>>,
    auth: Option<(String, oneshot::Sender<Result<(), String>>)>,
    closed: bool,
}

/// A live connection; clones share it.
#[derive(Clone)]
pub struct Connection {
    url: String,
    out: mpsc::Sender<String>,
    pending: Arc<Mutex<Pending>>,
}

impl Connection {
    /// Connects to `url` and, with an identity, authenticates as it.
    pub async fn connect(
        url: &str,
        identity: Option<&Identity>,
        opts: &ClientOptions,
    ) -> Result<Connection, ClientError> {
        let connect_err = |reason: String| ClientError::Connect {
            url: url.to_owned(),
            reason,
        };
        let max = opts.limits.max_message_bytes.saturating_add(64 * 1024);
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let connecting = tokio_tungstenite::connect_async_tls_with_config(
            url,
            Some(ws_config),
            false,
            Some(Connector::Rustls(opts.tls.clone())),
        );
        let (mut ws, _) = tokio::time::timeout(opts.connect_timeout, connecting)
            .await
            .map_err(|_| ClientError::Timeout("connecting"))?
            .map_err(|e| connect_err(e.to_string()))?;

        // The relay speaks first, with the challenge.
        let challenge = loop {
            let next = tokio::time::timeout(opts.connect_timeout, ws.next())
                .await
                .map_err(|_| ClientError::Timeout("waiting for the relay's AUTH challenge"))?;
            match next {
                Some(Ok(WsMessage::Text(t))) => {
                    match RelayFrame::from_json(t.as_bytes(), &opts.limits) {
                        Ok(RelayFrame::Auth { challenge }) => break challenge,
                        Ok(RelayFrame::Notice { message, .. }) => {
                            tracing::info!(relay = url, "notice: {message}")
                        }
                        Ok(other) => {
                            return Err(ClientError::Protocol(format!(
                                "expected AUTH first, got {}",
                                frame_type(&other)
                            )));
                        }
                        Err(e) => return Err(ClientError::Protocol(e.to_string())),
                    }
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(connect_err(e.to_string())),
                None => return Err(ClientError::Closed),
            }
        };

        let (out, out_rx) = mpsc::channel::<String>(256);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let conn = Connection {
            url: url.to_owned(),
            out,
            pending: pending.clone(),
        };
        tokio::spawn(run(
            ws,
            out_rx,
            pending,
            opts.limits.clone(),
            url.to_owned(),
        ));

        if let Some(id) = identity {
            let mut aux = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut aux);
            let proof = AuthProof::sign(id, url, &challenge, crate::store::unix_now(), &aux);
            let (tx, rx) = oneshot::channel();
            conn.lock().auth = Some((challenge, tx));
            conn.send(ClientFrame::Auth(proof).to_json()).await?;
            match tokio::time::timeout(opts.connect_timeout, rx).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(reason))) => return Err(ClientError::Auth(reason)),
                Ok(Err(_)) => return Err(ClientError::Closed),
                Err(_) => return Err(ClientError::Timeout("AUTH")),
            }
        }
        Ok(conn)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed || self.out.is_closed()
    }

    async fn send(&self, text: String) -> Result<(), ClientError> {
        self.out.send(text).await.map_err(|_| ClientError::Closed)
    }

    /// Publishes and waits for the relay's OK.
    pub async fn publish(
        &self,
        m: &Message,
        timeout: Duration,
    ) -> Result<PublishOutcome, ClientError> {
        let id = m.id.to_hex();
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.lock();
            if p.closed {
                return Err(ClientError::Closed);
            }
            p.publishes.insert(id.clone(), (tx, None));
        }
        let frame = ClientFrame::Publish {
            message: Box::new(m.clone()),
        };
        if let Err(e) = self.send(frame.to_json()).await {
            self.lock().publishes.remove(&id);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                self.lock().publishes.remove(&id);
                Err(ClientError::Timeout("waiting for OK"))
            }
        }
    }

    /// Starts a subscription: stored messages, then [`SubEvent::Eose`], then live ones.
    pub async fn subscribe(
        &self,
        sub: &str,
        filters: Vec<Filter>,
    ) -> Result<mpsc::Receiver<SubEvent>, ClientError> {
        let (tx, rx) = mpsc::channel(1024);
        {
            let mut p = self.lock();
            if p.closed {
                return Err(ClientError::Closed);
            }
            p.subs.insert(sub.to_owned(), tx);
        }
        self.send(
            ClientFrame::Sub {
                sub: sub.to_owned(),
                filters,
            }
            .to_json(),
        )
        .await?;
        Ok(rx)
    }

    pub async fn unsubscribe(&self, sub: &str) -> Result<(), ClientError> {
        self.lock().subs.remove(sub);
        self.send(
            ClientFrame::Unsub {
                sub: sub.to_owned(),
            }
            .to_json(),
        )
        .await
    }

    /// The stored messages matching `filters`, until EOSE.
    pub async fn query(
        &self,
        filters: Vec<Filter>,
        timeout: Duration,
    ) -> Result<Vec<Message>, ClientError> {
        let mut n = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut n);
        let sub = format!("q{}", hex::encode(n));
        let (tx, mut rx) = mpsc::channel(1024);
        self.lock().subs.insert(sub.clone(), tx);
        self.send(
            ClientFrame::Query {
                sub: sub.clone(),
                filters,
            }
            .to_json(),
        )
        .await?;
        let mut found = Vec::new();
        let collect = async {
            while let Some(ev) = rx.recv().await {
                match ev {
                    SubEvent::Message(m) => found.push(*m),
                    SubEvent::Eose => return Ok(()),
                    SubEvent::Closed(reason) => return Err(ClientError::Protocol(reason)),
                }
            }
            Err(ClientError::Closed)
        };
        let result = tokio::time::timeout(timeout, collect).await;
        self.lock().subs.remove(&sub);
        result.map_err(|_| ClientError::Timeout("query"))??;
        Ok(found)
    }
}

fn frame_type(f: &RelayFrame) -> &'static str {
    match f {
        RelayFrame::Auth { .. } => "AUTH",
        RelayFrame::Msg { .. } => "MSG",
        RelayFrame::Eose { .. } => "EOSE",
        RelayFrame::Ok { .. } => "OK",
        RelayFrame::Notice { .. } => "NOTICE",
        RelayFrame::Error { .. } => "ERROR",
        RelayFrame::Invoice { .. } => "INVOICE",
    }
}

/// The socket's task: writes what callers send, reads and dispatches what the relay says.
async fn run<S>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    mut out: mpsc::Receiver<String>,
    pending: Arc<Mutex<Pending>>,
    limits: Limits,
    url: String,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let reason = loop {
        tokio::select! {
            next = out.recv() => match next {
                Some(text) => {
                    if let Err(e) = ws.send(WsMessage::Text(text.into())).await {
                        break e.to_string();
                    }
                }
                None => {
                    let _ = ws.close(None).await;
                    break "closed by the client".to_owned();
                }
            },
            incoming = ws.next() => match incoming {
                Some(Ok(WsMessage::Text(t))) => match RelayFrame::from_json(t.as_bytes(), &limits) {
                    Ok(f) => dispatch(&pending, f, &url),
                    Err(e) => tracing::warn!(relay = %url, error = %e, "ignoring a frame the relay sent"),
                },
                Some(Ok(WsMessage::Close(_))) | None => break "the relay closed the connection".to_owned(),
                Some(Ok(_)) => {}
                Some(Err(e)) => break e.to_string(),
            },
        }
    };
    let mut p = pending.lock().unwrap_or_else(|p| p.into_inner());
    p.closed = true;
    p.publishes.clear();
    p.auth = None;
    for (_, tx) in p.subs.drain() {
        let _ = tx.try_send(SubEvent::Closed(reason.clone()));
    }
}

fn dispatch(pending: &Mutex<Pending>, frame: RelayFrame, url: &str) {
    let mut p = pending.lock().unwrap_or_else(|p| p.into_inner());
    match frame {
        RelayFrame::Ok {
            id,
            accepted,
            reason,
        } => {
            if let Some((challenge, _)) = &p.auth
                && *challenge == id
            {
                let (_, tx) = p.auth.take().expect("checked above");
                let _ = tx.send(if accepted {
                    Ok(())
                } else {
                    Err(reason.map_or_else(|| "refused".into(), |r| r.to_string()))
                });
                return;
            }
            if let Some((tx, invoice)) = p.publishes.remove(&id) {
                let reason =
                    reason.unwrap_or_else(|| Reason::new(ReasonCode::Error, "no reason given"));
                let outcome = match (accepted, reason.code) {
                    (true, _) => PublishOutcome::Accepted,
                    (false, ReasonCode::Duplicate) => PublishOutcome::Duplicate,
                    (false, ReasonCode::PaymentRequired) => {
                        PublishOutcome::PaymentRequired { invoice, reason }
                    }
                    (false, _) => PublishOutcome::Refused(reason),
                };
                let _ = tx.send(outcome);
            }
        }
        RelayFrame::Invoice { ref id, .. } => {
            let key = id.to_hex();
            if let Some((_, slot)) = p.publishes.get_mut(&key) {
                *slot = Some(Box::new(frame));
            }
        }
        RelayFrame::Msg { sub, message } => {
            if let Some(tx) = p.subs.get(&sub)
                && tx.try_send(SubEvent::Message(message)).is_err()
            {
                tracing::warn!(
                    relay = url,
                    sub,
                    "subscriber is not keeping up; dropping its subscription"
                );
                p.subs.remove(&sub);
            }
        }
        RelayFrame::Eose { sub } => {
            if let Some(tx) = p.subs.get(&sub) {
                let _ = tx.try_send(SubEvent::Eose);
            }
        }
        RelayFrame::Error { code, message, sub } => match sub.and_then(|s| p.subs.remove(&s)) {
            Some(tx) => {
                let _ = tx.try_send(SubEvent::Closed(format!("{code:?}: {message}")));
            }
            None => tracing::warn!(relay = url, ?code, "relay error: {message}"),
        },
        RelayFrame::Notice { severity, message } => {
            tracing::info!(relay = url, ?severity, "relay notice: {message}")
        }
        RelayFrame::Auth { .. } => {}
    }
}

/// The message ids a subscriber has seen lately, to drop the duplicates a resubscription
/// or a second relay brings.
pub struct SeenIds {
    order: std::collections::VecDeque<MessageId>,
    set: std::collections::HashSet<MessageId>,
    cap: usize,
}

impl SeenIds {
    pub fn new(cap: usize) -> SeenIds {
        SeenIds {
            order: Default::default(),
            set: Default::default(),
            cap: cap.max(1),
        }
    }

    /// True the first time an id is seen.
    pub fn first_time(&mut self, id: MessageId) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }

    pub fn forget(&mut self, id: &MessageId) {
        if self.set.remove(id) {
            self.order.retain(|x| x != id);
        }
    }
}
