//! The LND backend: one LND node over its REST API (the gRPC gateway, proto3 JSON:
//! 64-bit integers as strings, bytes as standard base64). It owns the HTTP client, which
//! sends the macaroon on every request and trusts LND's own TLS certificate, and the
//! task that follows LND's invoice subscription to report settlements as they happen.
//! Every invoice LND returns is decoded and checked against what was asked.

use super::{
    Backend, Description, Invoice, InvoiceRequest, InvoiceState, LightningError, Paid, Result,
    decode,
};
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use futures_util::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{RequestBuilder, StatusCode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The most of a unary answer, or of one line of a stream, read.
const MAX_ANSWER: usize = 1 << 20;
/// How long LND may look for a route for a payment we make.
const PAY_TIMEOUT_SECONDS: u64 = 60;
/// The longest wait between reconnections of the invoice subscription.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The node. See the module documentation. Cheap to clone.
#[derive(Clone)]
pub struct Lnd {
    http: reqwest::Client,
    /// The REST base URL, without a trailing slash.
    url: String,
    /// Allowed for each unary request.
    timeout: Duration,
    /// The first wait before reconnecting the invoice subscription; it doubles on each
    /// failure up to [`MAX_BACKOFF`].
    backoff: Duration,
}

impl Lnd {
    pub fn new(config: &crate::config::Lightning) -> anyhow::Result<Lnd> {
        let url = config.lnd_url.trim().trim_end_matches('/').to_owned();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            anyhow::bail!(
                "[lightning] lnd_url must be LND's REST URL (https://host:8080), not {url:?}"
            );
        }
        if config.lnd_macaroon_file.as_os_str().is_empty() {
            anyhow::bail!("[lightning] lnd_macaroon_file is required with backend = \"lnd\"");
        }
        let macaroon = std::fs::read(&config.lnd_macaroon_file).with_context(|| {
            format!(
                "cannot read the LND macaroon {}",
                config.lnd_macaroon_file.display()
            )
        })?;
        let mut header = HeaderValue::from_str(&hex::encode(&macaroon))
            .context("the macaroon does not fit in a header")?;
        header.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert("Grpc-Metadata-macaroon", header);
        // Bounded so that deadlines computed from it cannot overflow.
        let timeout = Duration::from_secs(config.timeout_seconds.clamp(1, 86_400));
        // No overall timeout on the client: the subscription and payments are streams.
        // Unary calls set theirs per request.
        let mut http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(timeout)
            .tcp_keepalive(Duration::from_secs(60));
        if !config.lnd_cert_file.as_os_str().is_empty() {
            let pem = std::fs::read(&config.lnd_cert_file).with_context(|| {
                format!(
                    "cannot read LND's TLS certificate {}",
                    config.lnd_cert_file.display()
                )
            })?;
            http = http.use_preconfigured_tls(pinned_tls(&pem).with_context(|| {
                format!(
                    "LND's TLS certificate {} is unusable",
                    config.lnd_cert_file.display()
                )
            })?);
        }
        Ok(Lnd {
            http: http
                .build()
                .context("cannot set up the HTTP client for LND")?,
            url,
            timeout,
            backoff: Duration::from_secs(1),
        })
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.http.get(format!("{}{path}", self.url))
    }

    fn post(&self, path: &str, body: &Value) -> RequestBuilder {
        self.http.post(format!("{}{path}", self.url)).json(body)
    }

    /// A unary call: sends `request` and reads the JSON answer. `what` names it in errors.
    async fn call(
        &self,
        request: RequestBuilder,
        what: &str,
    ) -> std::result::Result<Value, Failure> {
        let response = request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| Failure::Other(transport_error(&e, what)))?;
        let status = response.status();
        let mut body = Vec::new();
        let mut response = response;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_ANSWER => {
                    body.extend_from_slice(&chunk);
                }
                Ok(Some(_)) => {
                    return Err(Failure::Other(LightningError::Protocol(format!(
                        "LND {what}: the answer is larger than {MAX_ANSWER} bytes"
                    ))));
                }
                Ok(None) => break,
                Err(e) => return Err(Failure::Other(transport_error(&e, what))),
            }
        }
        if !status.is_success() {
            return Err(status_error(status, &body, what));
        }
        serde_json::from_slice(&body).map_err(|e| {
            Failure::Other(LightningError::Protocol(format!(
                "LND {what} answered {status} with no JSON: {e}"
            )))
        })
    }

    /// Opens a stream call and checks its status.
    async fn open_stream(&self, request: RequestBuilder, what: &str) -> Result<JsonLines> {
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&e, what))?;
        let status = response.status();
        if !status.is_success() {
            let mut lines = JsonLines::new(response, what);
            let body = lines.rest().await;
            return Err(status_error(status, &body, what).into());
        }
        Ok(JsonLines::new(response, what))
    }

    async fn create(&self, hash: Option<[u8; 32]>, request: &InvoiceRequest) -> Result<Invoice> {
        if request.amount_msat == 0 {
            return Err(LightningError::InvalidInvoice(
                "an invoice needs an amount".into(),
            ));
        }
        let mut body = json!({
            "value_msat": request.amount_msat.to_string(),
            "expiry": request.expiry.as_secs().to_string(),
        });
        match &request.description {
            Description::Memo(memo) => body["memo"] = json!(memo),
            Description::Hash(h) => body["description_hash"] = json!(STANDARD.encode(h)),
        }
        let answer = match hash {
            None => {
                self.call(self.post("/v1/invoices", &body), "add invoice")
                    .await?
            }
            Some(h) => {
                body["hash"] = json!(STANDARD.encode(h));
                self.call(self.post("/v2/invoices/hodl", &body), "add hold invoice")
                    .await?
            }
        };
        let payment_hash = match hash {
            Some(h) => h,
            None => bytes32(&answer["r_hash"], "r_hash")?,
        };
        let bolt11 = answer["payment_request"].as_str().ok_or_else(|| {
            LightningError::Protocol("LND's new invoice has no payment_request".into())
        })?;
        let decoded = decode(bolt11).map_err(|e| {
            LightningError::Protocol(format!("LND returned an unreadable invoice: {e}"))
        })?;
        if decoded.payment_hash != payment_hash {
            return Err(LightningError::Protocol(format!(
                "LND's invoice pays hash {}, not {}",
                hex::encode(decoded.payment_hash),
                hex::encode(payment_hash)
            )));
        }
        if decoded.amount_msat != Some(request.amount_msat) {
            return Err(LightningError::Protocol(format!(
                "LND's invoice asks for {:?} msat, not the {} asked",
                decoded.amount_msat, request.amount_msat
            )));
        }
        if decoded.description != request.description {
            return Err(LightningError::Protocol(
                "LND's invoice does not carry the description asked".into(),
            ));
        }
        Ok(Invoice {
            bolt11: bolt11.to_owned(),
            payment_hash,
            amount_msat: request.amount_msat,
            expires_at: decoded.expires_at,
        })
    }

    async fn state(&self, payment_hash: &[u8; 32]) -> Result<InvoiceState> {
        let answer = self
            .call(
                self.get(&format!("/v1/invoice/{}", hex::encode(payment_hash))),
                "look up invoice",
            )
            .await
            .map_err(Failure::not_found_is_unknown)?;
        Ok(match invoice_state(&answer)? {
            State::Open => InvoiceState::Open,
            State::Accepted => InvoiceState::Accepted,
            State::Canceled => InvoiceState::Canceled,
            State::Settled => {
                // LND shows the preimage of an ordinary invoice before it is paid too:
                // it counts only once the state says settled.
                let preimage = bytes32(&answer["r_preimage"], "r_preimage")?;
                check_preimage(&preimage, payment_hash)?;
                let amount_msat = uint(&answer["amt_paid_msat"])
                    .filter(|a| *a > 0)
                    .or_else(|| uint(&answer["value_msat"]))
                    .ok_or_else(|| {
                        LightningError::Protocol(format!(
                            "LND's settled invoice {} has no amount",
                            hex::encode(payment_hash)
                        ))
                    })?;
                InvoiceState::Settled {
                    preimage,
                    amount_msat,
                }
            }
        })
    }

    async fn send(&self, bolt11: &str, max_fee_msat: u64) -> Result<Paid> {
        let invoice = decode(bolt11)?;
        let amount_msat = invoice.amount_msat.ok_or_else(|| {
            LightningError::InvalidInvoice("the invoice has no amount to pay".into())
        })?;
        let hash = hex::encode(invoice.payment_hash);
        let body = json!({
            "payment_request": bolt11.trim().trim_start_matches("lightning:").to_lowercase(),
            "timeout_seconds": PAY_TIMEOUT_SECONDS,
            "fee_limit_msat": max_fee_msat.to_string(),
            "no_inflight_updates": true,
        });
        // LND gives up looking for routes after PAY_TIMEOUT_SECONDS; an HTLC already out
        // can take longer to resolve, and then the outcome is reported as unknown.
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(PAY_TIMEOUT_SECONDS)
            + self.timeout * 2;
        let follow = async {
            let mut lines = self
                .open_stream(self.post("/v2/router/send", &body), "send payment")
                .await?;
            while let Some(line) = lines.next().await? {
                let payment = stream_result(line, "send payment")?;
                match payment["status"].as_str().unwrap_or("") {
                    "SUCCEEDED" => {
                        let text = payment["payment_preimage"].as_str().unwrap_or("");
                        let mut preimage = [0u8; 32];
                        hex::decode_to_slice(text, &mut preimage).map_err(|_| {
                            LightningError::Protocol(format!(
                                "LND paid {hash} but its preimage {text:?} is not 32 bytes of hex"
                            ))
                        })?;
                        check_preimage(&preimage, &invoice.payment_hash)?;
                        return Ok(Paid {
                            preimage,
                            amount_msat: uint(&payment["value_msat"])
                                .filter(|v| *v > 0)
                                .unwrap_or(amount_msat),
                            fee_msat: uint(&payment["fee_msat"]).unwrap_or(0),
                        });
                    }
                    "FAILED" => {
                        let reason = payment["failure_reason"]
                            .as_str()
                            .unwrap_or("FAILURE_REASON_NONE");
                        return Err(LightningError::PaymentFailed(format!(
                            "LND could not pay {hash}: {reason}"
                        )));
                    }
                    // IN_FLIGHT, INITIATED: wait for the outcome.
                    _ => {}
                }
            }
            Err(LightningError::Unreachable(format!(
                "LND's payment stream for {hash} ended before the outcome; it is not known yet"
            )))
        };
        tokio::time::timeout_at(deadline, follow)
            .await
            .unwrap_or_else(|_| {
                Err(LightningError::Unreachable(format!(
                    "no outcome from LND for payment {hash} in time; it is not known yet"
                )))
            })
    }

    async fn settle(&self, preimage: &[u8; 32]) -> Result<()> {
        self.call(
            self.post(
                "/v2/invoices/settle",
                &json!({ "preimage": STANDARD.encode(preimage) }),
            ),
            "settle hold invoice",
        )
        .await
        .map_err(Failure::not_found_is_unknown)?;
        Ok(())
    }

    async fn cancel(&self, payment_hash: &[u8; 32]) -> Result<()> {
        self.call(
            self.post(
                "/v2/invoices/cancel",
                &json!({ "payment_hash": STANDARD.encode(payment_hash) }),
            ),
            "cancel hold invoice",
        )
        .await
        .map_err(Failure::not_found_is_unknown)?;
        Ok(())
    }

    /// Follows the invoice subscription until `tx`'s receiver is dropped, sending the
    /// hash of each invoice that settles. A broken stream is reopened after a wait that
    /// grows while it keeps failing; on reopening, LND replays the settlements after the
    /// last one seen, so none is missed.
    async fn follow_settlements(self, tx: mpsc::Sender<[u8; 32]>) {
        let mut settle_index: Option<u64> = None;
        let mut backoff = self.backoff;
        loop {
            let mut delivered = false;
            let outcome = tokio::select! {
                _ = tx.closed() => return,
                r = self.subscription(&tx, &mut settle_index, &mut delivered) => r,
            };
            if tx.is_closed() {
                return;
            }
            if delivered {
                backoff = self.backoff;
            }
            match outcome {
                Ok(()) => tracing::info!(
                    retry_in = ?backoff,
                    "LND's invoice subscription ended; reopening it"
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    retry_in = ?backoff,
                    "LND's invoice subscription failed; reopening it"
                ),
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection of the subscription; returns when it ends.
    async fn subscription(
        &self,
        tx: &mpsc::Sender<[u8; 32]>,
        settle_index: &mut Option<u64>,
        delivered: &mut bool,
    ) -> Result<()> {
        let path = match settle_index {
            Some(i) => format!("/v1/invoices/subscribe?settle_index={i}"),
            None => "/v1/invoices/subscribe".to_owned(),
        };
        let mut lines = self
            .open_stream(self.get(&path), "invoice subscription")
            .await?;
        while let Some(line) = lines.next().await? {
            let invoice = stream_result(line, "invoice subscription")?;
            *delivered = true;
            if !matches!(invoice_state(&invoice), Ok(State::Settled)) {
                continue;
            }
            let hash = match bytes32(&invoice["r_hash"], "r_hash") {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a settled invoice LND sent without a hash");
                    continue;
                }
            };
            if let Some(i) = uint(&invoice["settle_index"]).filter(|i| *i > 0) {
                *settle_index = Some(settle_index.map_or(i, |s| s.max(i)));
            }
            if tx.send(hash).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

impl Backend for Lnd {
    fn name(&self) -> &'static str {
        "lnd"
    }

    /// `GET /v1/getinfo`: LND answers, the macaroon is accepted, and whether it is
    /// synced.
    fn health(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let answer = self.call(self.get("/v1/getinfo"), "node info").await?;
            let field = |k: &str| {
                answer
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let synced = answer
                .get("synced_to_chain")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let mut text = format!("LND node {} ({})", field("identity_pubkey"), field("alias"));
            if !synced {
                text.push_str(", not synced to the chain yet");
            }
            Ok(text)
        })
    }

    fn create_invoice<'a>(&'a self, request: &'a InvoiceRequest) -> BoxFuture<'a, Result<Invoice>> {
        Box::pin(self.create(None, request))
    }

    fn invoice_state<'a>(
        &'a self,
        payment_hash: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<InvoiceState>> {
        Box::pin(self.state(payment_hash))
    }

    fn pay<'a>(&'a self, bolt11: &'a str, max_fee_msat: u64) -> BoxFuture<'a, Result<Paid>> {
        Box::pin(self.send(bolt11, max_fee_msat))
    }

    fn create_hold_invoice<'a>(
        &'a self,
        payment_hash: [u8; 32],
        request: &'a InvoiceRequest,
    ) -> BoxFuture<'a, Result<Invoice>> {
        Box::pin(self.create(Some(payment_hash), request))
    }

    fn settle_hold<'a>(&'a self, preimage: &'a [u8; 32]) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.settle(preimage))
    }

    fn cancel_hold<'a>(&'a self, payment_hash: &'a [u8; 32]) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.cancel(payment_hash))
    }

    fn settlements(&self) -> Option<mpsc::Receiver<[u8; 32]>> {
        // Outside a runtime there is nowhere to run the follower: the caller polls.
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = mpsc::channel(256);
        runtime.spawn(self.clone().follow_settlements(tx));
        Some(rx)
    }
}

/// A unary call's failure: LND's own error (with its gRPC code), or anything else.
#[derive(Debug)]
enum Failure {
    Lnd { code: Option<i64>, message: String },
    Other(LightningError),
}

impl Failure {
    /// gRPC NOT_FOUND (5) about an invoice means we named one LND does not have.
    fn not_found_is_unknown(self) -> LightningError {
        match self {
            Failure::Lnd { code: Some(5), .. } => LightningError::UnknownInvoice,
            f => f.into(),
        }
    }
}

impl From<Failure> for LightningError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Lnd { message, .. } => LightningError::Refused(message),
            Failure::Other(e) => e,
        }
    }
}

/// LND's error answer `{"code": n, "message": "..."}`; something else (a proxy's error
/// page) means LND was not reached.
fn status_error(status: StatusCode, body: &[u8], what: &str) -> Failure {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // Some gateway versions wrap it as {"error": {...}}.
    let e = if v["error"].is_object() {
        &v["error"]
    } else {
        &v
    };
    match e["message"].as_str() {
        Some(message) => Failure::Lnd {
            code: e["code"].as_i64(),
            message: clip(message),
        },
        None => Failure::Other(LightningError::Unreachable(format!(
            "LND {what}: answered {status}: {}",
            clip(&String::from_utf8_lossy(body))
        ))),
    }
}

/// The `result` of one line of a stream; an `error` line is LND refusing.
fn stream_result(mut line: Value, what: &str) -> Result<Value> {
    if let Some(error) = line.get("error").filter(|e| !e.is_null()) {
        let message = error["message"].as_str().unwrap_or("(no message)");
        return Err(LightningError::Refused(clip(message)));
    }
    match line.get_mut("result") {
        Some(result) if result.is_object() => Ok(result.take()),
        _ => Err(LightningError::Protocol(format!(
            "LND {what}: a stream line without a result: {}",
            clip(&line.to_string())
        ))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Settled,
    Canceled,
    Accepted,
}

/// An invoice's state, by name or by number (proto3 JSON allows both; OPEN, being
/// zero, may be left out).
fn invoice_state(invoice: &Value) -> Result<State> {
    match &invoice["state"] {
        Value::Null => Ok(State::Open),
        Value::String(s) if s == "OPEN" => Ok(State::Open),
        Value::String(s) if s == "SETTLED" => Ok(State::Settled),
        Value::String(s) if s == "CANCELED" => Ok(State::Canceled),
        Value::String(s) if s == "ACCEPTED" => Ok(State::Accepted),
        Value::Number(n) => match n.as_u64() {
            Some(0) => Ok(State::Open),
            Some(1) => Ok(State::Settled),
            Some(2) => Ok(State::Canceled),
            Some(3) => Ok(State::Accepted),
            _ => Err(LightningError::Protocol(format!(
                "unknown invoice state {n}"
            ))),
        },
        other => Err(LightningError::Protocol(format!(
            "unknown invoice state {}",
            clip(&other.to_string())
        ))),
    }
}

/// 32 bytes sent as base64 (standard, or the URL-safe alphabet some proxies use).
fn bytes32(v: &Value, field: &str) -> Result<[u8; 32]> {
    let text = v.as_str().unwrap_or("");
    let bytes = STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    bytes.ok_or_else(|| {
        LightningError::Protocol(format!(
            "LND's {field} {:?} is not 32 bytes of base64",
            clip(text)
        ))
    })
}

/// A uint64, which proto3 JSON sends as a string (numbers are read too).
fn uint(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn check_preimage(preimage: &[u8; 32], payment_hash: &[u8; 32]) -> Result<()> {
    if <[u8; 32]>::from(Sha256::digest(preimage)) != *payment_hash {
        return Err(LightningError::Protocol(format!(
            "LND's preimage for {} does not hash to it",
            hex::encode(payment_hash)
        )));
    }
    Ok(())
}

/// At most 300 characters of text from the network, for an error message.
fn clip(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

fn transport_error(e: &reqwest::Error, what: &str) -> LightningError {
    let mut text = format!("LND {what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    LightningError::Unreachable(text)
}

/// Newline-delimited JSON objects read from a streaming answer.
struct JsonLines {
    response: reqwest::Response,
    buffer: Vec<u8>,
    what: String,
    done: bool,
}

impl JsonLines {
    fn new(response: reqwest::Response, what: &str) -> JsonLines {
        JsonLines {
            response,
            buffer: Vec::new(),
            what: what.to_owned(),
            done: false,
        }
    }

    /// The next object, or None at the end of the stream.
    async fn next(&mut self) -> Result<Option<Value>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if let Some(v) = self.parse(&line)? {
                    return Ok(Some(v));
                }
                continue;
            }
            if self.done {
                let line = std::mem::take(&mut self.buffer);
                return self.parse(&line);
            }
            if self.buffer.len() > MAX_ANSWER {
                return Err(LightningError::Protocol(format!(
                    "LND {}: a stream line longer than {MAX_ANSWER} bytes",
                    self.what
                )));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => self.done = true,
                Err(e) => return Err(transport_error(&e, &self.what)),
            }
        }
    }

    fn parse(&self, line: &[u8]) -> Result<Option<Value>> {
        let line = line.trim_ascii();
        if line.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(line).map(Some).map_err(|e| {
            LightningError::Protocol(format!("LND {}: a stream line is not JSON: {e}", self.what))
        })
    }

    /// The rest of the body (at most [`MAX_ANSWER`] bytes), for an error answer.
    async fn rest(&mut self) -> Vec<u8> {
        while !self.done && self.buffer.len() <= MAX_ANSWER {
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                _ => self.done = true,
            }
        }
        std::mem::take(&mut self.buffer)
    }
}

/// TLS that trusts the certificate(s) in `pem`. LND's tls.cert is self-signed and marked
/// as a CA, which webpki refuses as a server's own certificate (CaUsedAsEndEntity), so a
/// server presenting exactly that certificate is accepted by the pin; any other is
/// verified with the file's certificates as the only roots (a proxy's private CA).
fn pinned_tls(pem: &[u8]) -> anyhow::Result<rustls::ClientConfig> {
    let pinned: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<_, _>>()
        .context("not PEM")?;
    if pinned.is_empty() {
        anyhow::bail!("it holds no PEM certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(pinned.iter().cloned());
    let webpki = if added > 0 {
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .ok()
    } else {
        None
    };
    let verifier = PinnedCertificate {
        pinned,
        webpki,
        provider: provider.clone(),
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("no TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

#[derive(Debug)]
struct PinnedCertificate {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        // The very certificate configured: trusted as given, whatever name LND was
        // reached by (its certificate names only the names LND knows itself by).
        if self
            .pinned
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.webpki {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        }
    }

    // The handshake is still signed by the certificate's key: checked as usual.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lightning::dev::build_bolt11;
    use axum::body::{Body, Bytes};
    use axum::extract::{Path, Query, State};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use secp256k1::SecretKey;
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::sync::Mutex;

    const MACAROON: &[u8] = &[0x02, 0x01, 0x03, 0xab, 0xff, 0x00, 0x10];

    struct Inv {
        preimage: Option<[u8; 32]>,
        bolt11: String,
        memo: String,
        value_msat: u64,
        state: &'static str,
        amt_paid_msat: u64,
        add_index: u64,
        settle_index: u64,
    }

    /// A fake LND: the REST calls the backend makes, in LND's documented shapes.
    #[derive(Default)]
    struct Node {
        invoices: HashMap<[u8; 32], Inv>,
        adds: u64,
        settles: u64,
        /// (path, body) of every POST.
        posts: Vec<(String, Value)>,
        subscribers: Vec<mpsc::UnboundedSender<String>>,
        /// The settle_index each subscription asked from.
        subscribe_queries: Vec<Option<String>>,
        /// Preimages of other nodes' invoices the fake can pay.
        payable: HashMap<[u8; 32], [u8; 32]>,
        paid: Vec<[u8; 32]>,
    }

    type Shared = Arc<Mutex<Node>>;

    fn b64(b: &[u8]) -> String {
        STANDARD.encode(b)
    }

    fn from_b64(v: &Value) -> Option<[u8; 32]> {
        STANDARD
            .decode(v.as_str()?)
            .ok()
            .and_then(|b| b.try_into().ok())
    }

    fn lnd_error(status: u16, code: i64, message: &str) -> Response {
        (
            StatusCode::from_u16(status).unwrap(),
            axum::Json(json!({"code": code, "message": message, "details": []})),
        )
            .into_response()
    }

    /// LND's answer to a request without the right macaroon, if this is one.
    fn rejected(headers: &axum::http::HeaderMap) -> Option<Response> {
        match headers.get("grpc-metadata-macaroon").map(|v| v.as_bytes()) {
            Some(v) if v == hex::encode(MACAROON).as_bytes() => None,
            _ => Some(lnd_error(
                500,
                2,
                "verification failed: signature mismatch after caveat verification",
            )),
        }
    }

    fn invoice_json(hash: &[u8; 32], inv: &Inv) -> Value {
        json!({
            "memo": inv.memo,
            // LND shows an ordinary invoice's preimage before it is paid.
            "r_preimage": inv.preimage.map(|p| b64(&p)).unwrap_or_default(),
            "r_hash": b64(hash),
            "value": (inv.value_msat / 1000).to_string(),
            "value_msat": inv.value_msat.to_string(),
            "settled": inv.state == "SETTLED",
            "payment_request": inv.bolt11,
            "add_index": inv.add_index.to_string(),
            "settle_index": inv.settle_index.to_string(),
            "amt_paid_msat": inv.amt_paid_msat.to_string(),
            "state": inv.state,
            "is_keysend": false,
        })
    }

    fn publish(node: &mut Node, hash: &[u8; 32]) {
        let line = json!({"result": invoice_json(hash, &node.invoices[hash])}).to_string() + "\n";
        node.subscribers.retain(|s| s.send(line.clone()).is_ok());
    }

    /// What a payer does to one of the node's invoices: settles an ordinary one, locks
    /// funds for a hold one.
    fn pay_invoice(node: &Shared, hash: &[u8; 32]) {
        let mut node = node.lock().unwrap();
        let settles = node.settles + 1;
        let inv = node.invoices.get_mut(hash).unwrap();
        inv.amt_paid_msat = inv.value_msat;
        if inv.preimage.is_some() {
            inv.state = "SETTLED";
            inv.settle_index = settles;
            node.settles = settles;
        } else {
            inv.state = "ACCEPTED";
        }
        publish(&mut node, hash);
    }

    fn stream(rx: mpsc::UnboundedReceiver<String>) -> Response {
        let lines = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|line| (Ok::<_, Infallible>(Bytes::from(line)), rx))
        });
        Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(lines))
            .unwrap()
    }

    async fn add_invoice(
        State(node): State<Shared>,
        headers: axum::http::HeaderMap,
        body: Bytes,
    ) -> Response {
        add(node, headers, body, false)
    }

    async fn add_hodl(
        State(node): State<Shared>,
        headers: axum::http::HeaderMap,
        body: Bytes,
    ) -> Response {
        add(node, headers, body, true)
    }

    fn add(node: Shared, headers: axum::http::HeaderMap, body: Bytes, hold: bool) -> Response {
        if let Some(r) = rejected(&headers) {
            return r;
        }
        let body: Value = serde_json::from_slice(&body).unwrap();
        let mut node = node.lock().unwrap();
        let path = if hold {
            "/v2/invoices/hodl"
        } else {
            "/v1/invoices"
        };
        node.posts.push((path.into(), body.clone()));
        // proto3 JSON: the gateway takes int64 as strings.
        let (Some(value_msat), Some(expiry)) = (
            body["value_msat"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok()),
            body["expiry"].as_str().and_then(|s| s.parse::<u64>().ok()),
        ) else {
            return lnd_error(400, 3, "value_msat and expiry must be int64 strings");
        };
        let description = match body.get("description_hash") {
            Some(h) => match from_b64(h) {
                Some(h) => Description::Hash(h),
                None => return lnd_error(400, 3, "description hash must be 32 bytes"),
            },
            None => Description::Memo(body["memo"].as_str().unwrap_or("").into()),
        };
        let (hash, preimage) = if hold {
            match from_b64(&body["hash"]) {
                Some(h) => (h, None),
                None => return lnd_error(400, 3, "invalid hash"),
            }
        } else {
            let mut p = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut p);
            (Sha256::digest(p).into(), Some(p))
        };
        if node.invoices.contains_key(&hash) {
            return lnd_error(409, 6, "invoice with payment hash already exists");
        }
        let request = InvoiceRequest {
            amount_msat: value_msat,
            description: description.clone(),
            expiry: Duration::from_secs(expiry),
        };
        let key = SecretKey::from_slice(&[0x41; 32]).unwrap();
        let (bolt11, _) = build_bolt11(&key, hash, &request, crate::store::now()).unwrap();
        node.adds += 1;
        let add_index = node.adds;
        node.invoices.insert(
            hash,
            Inv {
                preimage,
                bolt11: bolt11.clone(),
                memo: match description {
                    Description::Memo(m) => m,
                    Description::Hash(_) => String::new(),
                },
                value_msat,
                state: "OPEN",
                amt_paid_msat: 0,
                add_index,
                settle_index: 0,
            },
        );
        publish(&mut node, &hash);
        let mut answer = json!({
            "payment_request": bolt11,
            "add_index": add_index.to_string(),
            "payment_addr": b64(&[7; 32]),
        });
        if !hold {
            answer["r_hash"] = json!(b64(&hash));
        }
        axum::Json(answer).into_response()
    }

    async fn getinfo(headers: axum::http::HeaderMap) -> Response {
        if let Some(r) = rejected(&headers) {
            return r;
        }
        axum::Json(json!({"identity_pubkey": "02abc", "alias": "fake", "synced_to_chain": true}))
            .into_response()
    }

    async fn lookup(
        State(node): State<Shared>,
        headers: axum::http::HeaderMap,
        Path(hash): Path<String>,
    ) -> Response {
        if let Some(r) = rejected(&headers) {
            return r;
        }
        let mut h = [0u8; 32];
        if hex::decode_to_slice(&hash, &mut h).is_err() {
            return lnd_error(400, 3, "invalid hash");
        }
        let node = node.lock().unwrap();
        match node.invoices.get(&h) {
            Some(inv) => axum::Json(invoice_json(&h, inv)).into_response(),
            None => lnd_error(404, 5, "unable to locate invoice"),
        }
    }

    async fn settle(
        State(node): State<Shared>,
        headers: axum::http::HeaderMap,
        body: Bytes,
    ) -> Response {
        if let Some(r) = rejected(&headers) {
            return r;
        }
        let body: Value = serde_json::from_slice(&body).unwrap();
        let mut node = node.lock().unwrap();
        node.posts
            .push(("/v2/invoices/settle".into(), body.clone()));
        let Some(preimage) = from_b64(&body["preimage"]) else {
            return lnd_error(400, 3, "invalid preimage");
        };
        let hash: [u8; 32] = Sha256::digest(preimage).into();
        let settles = node.settles + 1;
        let Some(inv) = node.invoices.get_mut(&hash) else {
            return lnd_error(404, 5, "unable to locate invoice");
        };
        if inv.state != "ACCEPTED" {
            return lnd_error(500, 2, &format!("invoice is {}, not accepted", inv.state));
        }
        inv.state = "SETTLED";
        inv.preimage = Some(preimage);
        inv.settle_index = settles;
        node.settles = settles;
        publish(&mut node, &hash);
        axum::Json(json!({})).into_response()
    }

    async fn cancel(
        State(node): State<Shared>,
        headers: axum::http::HeaderMap,
        body: Bytes,
    ) -> Response {
        if let Some(r) = rejected(&headers) {
            return r;
        }
        let body: Value = serde_json::from_slice(&body).unwrap();
        let mut node = node.lock().unwrap();
        node.posts
            .push(("/v2/invoices/cancel".into(), body.clone()));
        let Some(hash) = from_b64(&body["payment_hash"]) else {
            return lnd_error(400, 3, "invalid hash");
        };
        let Some(inv) = node.invoices.get_mut(&hash) else {
            return lnd_error(404, 5, "unable to locate invoice");
        };
        if inv.state == "SETTLED" {
            return lnd_error(500, 2, "invoice already settled");
        }
        inv.state = "CANCELED";
        publish(&mut node, &hash);
        axum::Json(json!({})).into_response()
    }

    async fn subscribe(
        State(node): State<Shared>,
        headers: axum::http::HeaderMap,
        Query(query): Query<HashMap<String, String>>,
    ) -> Response {
        if let Some(r) = rejected(&headers) {
            return r;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut node = node.lock().unwrap();
        node.subscribe_queries
            .push(query.get("settle_index").cloned());
        // Replays the settlements after the index asked, as LND does.
        if let Some(after) = query
            .get("settle_index")
            .and_then(|s| s.parse::<u64>().ok())
        {
            let mut replay: Vec<_> = node
                .invoices
                .iter()
                .filter(|(_, i)| i.state == "SETTLED" && i.settle_index > after)
                .collect();
            replay.sort_by_key(|(_, i)| i.settle_index);
            for (h, i) in replay {
                let _ = tx.send(json!({"result": invoice_json(h, i)}).to_string() + "\n");
            }
        }
        node.subscribers.push(tx);
        stream(rx)
    }

    async fn send_payment(
        State(node): State<Shared>,
        headers: axum::http::HeaderMap,
        body: Bytes,
    ) -> Response {
        if let Some(r) = rejected(&headers) {
            return r;
        }
        let body: Value = serde_json::from_slice(&body).unwrap();
        let mut node = node.lock().unwrap();
        node.posts.push(("/v2/router/send".into(), body.clone()));
        let Ok(invoice) = decode(body["payment_request"].as_str().unwrap_or("")) else {
            return lnd_error(400, 3, "invalid payment request");
        };
        let hash = invoice.payment_hash;
        if node.paid.contains(&hash) {
            return lnd_error(409, 6, "invoice is already paid");
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let amount = invoice.amount_msat.unwrap_or(0).to_string();
        let line = |status: &str, extra: Value| {
            let mut p = json!({
                "payment_hash": hex::encode(hash),
                "value_msat": amount,
                "status": status,
                "creation_time_ns": "1700000000000000000",
            });
            for (k, v) in extra.as_object().unwrap() {
                p[k] = v.clone();
            }
            json!({ "result": p }).to_string() + "\n"
        };
        let _ = tx.send(line("IN_FLIGHT", json!({})));
        let last = match node.payable.get(&hash).copied() {
            Some(preimage) => {
                node.paid.push(hash);
                line(
                    "SUCCEEDED",
                    json!({"payment_preimage": hex::encode(preimage), "fee_msat": "12", "fee_sat": "0"}),
                )
            }
            None => line(
                "FAILED",
                json!({"failure_reason": "FAILURE_REASON_NO_ROUTE"}),
            ),
        };
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(last);
        });
        stream(rx)
    }

    fn app(node: Shared) -> axum::Router {
        axum::Router::new()
            .route("/v1/invoices", post(add_invoice))
            .route("/v1/invoices/subscribe", get(subscribe))
            .route("/v1/invoice/{hash}", get(lookup))
            .route("/v1/getinfo", get(getinfo))
            .route("/v2/invoices/hodl", post(add_hodl))
            .route("/v2/invoices/settle", post(settle))
            .route("/v2/invoices/cancel", post(cancel))
            .route("/v2/router/send", post(send_payment))
            .with_state(node)
    }

    async fn fake_lnd() -> (String, Shared) {
        let node: Shared = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = app(node.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/"), node)
    }

    /// A client of the LND at `url` with `macaroon`; the folder keeps its file.
    fn client(url: &str, macaroon: &[u8], cert: Option<&str>) -> (Lnd, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let macaroon_file = dir.path().join("admin.macaroon");
        std::fs::write(&macaroon_file, macaroon).unwrap();
        let cert_file = match cert {
            Some(pem) => {
                let path = dir.path().join("tls.cert");
                std::fs::write(&path, pem).unwrap();
                path
            }
            None => std::path::PathBuf::new(),
        };
        let config = crate::config::Lightning {
            backend: crate::config::LightningBackend::Lnd,
            lnd_url: url.into(),
            lnd_macaroon_file: macaroon_file,
            lnd_cert_file: cert_file,
            timeout_seconds: 5,
            ..Default::default()
        };
        let mut lnd = Lnd::new(&config).unwrap();
        lnd.backoff = Duration::from_millis(20);
        (lnd, dir)
    }

    fn memo(amount_msat: u64) -> InvoiceRequest {
        InvoiceRequest {
            amount_msat,
            description: Description::Memo("pay to reach bob".into()),
            expiry: Duration::from_secs(600),
        }
    }

    fn sha(b: &[u8; 32]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    fn last_post(node: &Shared) -> (String, Value) {
        node.lock().unwrap().posts.last().unwrap().clone()
    }

    #[tokio::test]
    async fn health_asks_getinfo_with_the_macaroon() {
        let (url, _node) = fake_lnd().await;
        let (lnd, _dir) = client(&url, MACAROON, None);
        assert_eq!(lnd.health().await.unwrap(), "LND node 02abc (fake)");
        let (wrong, _dir) = client(&url, b"not the macaroon", None);
        assert!(wrong.health().await.is_err());
    }

    #[tokio::test]
    async fn invoices_and_their_state() {
        let (url, node) = fake_lnd().await;
        let (lnd, _dir) = client(&url, MACAROON, None);
        assert_eq!(lnd.name(), "lnd");
        let invoice = lnd.create_invoice(&memo(21_000)).await.unwrap();
        assert_eq!(invoice.amount_msat, 21_000);
        assert!(invoice.expires_at > crate::store::now() + 590);
        assert_eq!(
            last_post(&node),
            (
                "/v1/invoices".into(),
                json!({"value_msat": "21000", "expiry": "600", "memo": "pay to reach bob"})
            )
        );
        // Open, though LND shows the preimage already.
        assert_eq!(
            lnd.invoice_state(&invoice.payment_hash).await.unwrap(),
            InvoiceState::Open
        );
        pay_invoice(&node, &invoice.payment_hash);
        let InvoiceState::Settled {
            preimage,
            amount_msat,
        } = lnd.invoice_state(&invoice.payment_hash).await.unwrap()
        else {
            panic!("settled");
        };
        assert_eq!(sha(&preimage), invoice.payment_hash);
        assert_eq!(amount_msat, 21_000);
        assert!(matches!(
            lnd.invoice_state(&[3; 32]).await,
            Err(LightningError::UnknownInvoice)
        ));

        let hashed = lnd
            .create_invoice(&InvoiceRequest {
                amount_msat: 1_500,
                description: Description::Hash([0xfe; 32]),
                expiry: Duration::from_secs(30),
            })
            .await
            .unwrap();
        assert_eq!(
            decode(&hashed.bolt11).unwrap().description,
            Description::Hash([0xfe; 32])
        );
        assert_eq!(
            last_post(&node).1,
            json!({"value_msat": "1500", "expiry": "30", "description_hash": b64(&[0xfe; 32])})
        );
    }

    #[tokio::test]
    async fn hold_invoices() {
        let (url, node) = fake_lnd().await;
        let (lnd, _dir) = client(&url, MACAROON, None);
        let preimage = [0x5c; 32];
        let hash = sha(&preimage);
        let invoice = lnd.create_hold_invoice(hash, &memo(7_000)).await.unwrap();
        assert_eq!(invoice.payment_hash, hash);
        assert_eq!(decode(&invoice.bolt11).unwrap().payment_hash, hash);
        assert_eq!(
            last_post(&node),
            (
                "/v2/invoices/hodl".into(),
                json!({"hash": b64(&hash), "value_msat": "7000", "expiry": "600", "memo": "pay to reach bob"})
            )
        );
        assert_eq!(lnd.invoice_state(&hash).await.unwrap(), InvoiceState::Open);
        // Not paid yet: LND refuses to settle.
        assert!(matches!(
            lnd.settle_hold(&preimage).await,
            Err(LightningError::Refused(_))
        ));
        pay_invoice(&node, &hash);
        assert_eq!(
            lnd.invoice_state(&hash).await.unwrap(),
            InvoiceState::Accepted
        );
        assert!(matches!(
            lnd.settle_hold(&[0x5d; 32]).await,
            Err(LightningError::UnknownInvoice)
        ));
        lnd.settle_hold(&preimage).await.unwrap();
        assert_eq!(
            last_post(&node),
            (
                "/v2/invoices/settle".into(),
                json!({"preimage": b64(&preimage)})
            )
        );
        assert_eq!(
            lnd.invoice_state(&hash).await.unwrap(),
            InvoiceState::Settled {
                preimage,
                amount_msat: 7_000
            }
        );
        assert!(matches!(
            lnd.cancel_hold(&hash).await,
            Err(LightningError::Refused(_))
        ));

        let other = sha(&[0x6c; 32]);
        lnd.create_hold_invoice(other, &memo(1_000)).await.unwrap();
        pay_invoice(&node, &other);
        lnd.cancel_hold(&other).await.unwrap();
        assert_eq!(
            last_post(&node),
            (
                "/v2/invoices/cancel".into(),
                json!({"payment_hash": b64(&other)})
            )
        );
        assert_eq!(
            lnd.invoice_state(&other).await.unwrap(),
            InvoiceState::Canceled
        );
        assert!(matches!(
            lnd.cancel_hold(&[1; 32]).await,
            Err(LightningError::UnknownInvoice)
        ));
        // The same hash twice is LND's error, passed on.
        let e = lnd
            .create_hold_invoice(other, &memo(1_000))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, LightningError::Refused(m) if m.contains("already exists")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn the_macaroon_is_sent() {
        let (url, _node) = fake_lnd().await;
        let (lnd, _dir) = client(&url, b"another macaroon", None);
        let e = lnd.create_invoice(&memo(1_000)).await.unwrap_err();
        assert!(
            matches!(&e, LightningError::Refused(m) if m.contains("verification failed")),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Lightning {
            lnd_url: url.clone(),
            lnd_macaroon_file: dir.path().join("missing.macaroon"),
            ..Default::default()
        };
        assert!(Lnd::new(&config).is_err());
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn next_hash(rx: &mut mpsc::Receiver<[u8; 32]>) -> [u8; 32] {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a settlement in time")
            .expect("the follower is running")
    }

    #[tokio::test]
    async fn settlements_are_streamed_and_survive_reconnection() {
        let (url, node) = fake_lnd().await;
        let (lnd, _dir) = client(&url, MACAROON, None);
        let mut rx = lnd.settlements().unwrap();
        until("the subscription", || {
            !node.lock().unwrap().subscribers.is_empty()
        })
        .await;
        let first = lnd.create_invoice(&memo(1_000)).await.unwrap();
        let second = lnd.create_invoice(&memo(2_000)).await.unwrap();
        // Both were streamed as OPEN; only the settled one is reported.
        pay_invoice(&node, &second.payment_hash);
        assert_eq!(next_hash(&mut rx).await, second.payment_hash);

        // The stream breaks; meanwhile the first invoice settles. The follower reconnects
        // from the last settlement it saw, and LND replays the one it missed.
        node.lock().unwrap().subscribers.clear();
        pay_invoice(&node, &first.payment_hash);
        assert_eq!(next_hash(&mut rx).await, first.payment_hash);
        let queries = node.lock().unwrap().subscribe_queries.clone();
        assert_eq!(queries[0], None);
        assert_eq!(queries.last().unwrap().as_deref(), Some("1"));

        // An error line, and garbage, are survived too.
        until("the new subscription", || {
            !node.lock().unwrap().subscribers.is_empty()
        })
        .await;
        for line in [
            "{\"error\":{\"code\":14,\"message\":\"shutting down\"}}\n",
            "not json\n",
        ] {
            let n = node.lock().unwrap().subscribe_queries.len();
            node.lock()
                .unwrap()
                .subscribers
                .retain(|s| s.send(line.into()).is_ok());
            until("a reconnection", || {
                node.lock().unwrap().subscribe_queries.len() > n
            })
            .await;
        }
        let third = lnd.create_invoice(&memo(3_000)).await.unwrap();
        until("the subscription", || {
            !node.lock().unwrap().subscribers.is_empty()
        })
        .await;
        pay_invoice(&node, &third.payment_hash);
        assert_eq!(next_hash(&mut rx).await, third.payment_hash);

        // Dropping the receiver stops the follower: no subscription is reopened.
        drop(rx);
        node.lock().unwrap().subscribers.clear();
        let n = node.lock().unwrap().subscribe_queries.len();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(node.lock().unwrap().subscribe_queries.len(), n);
    }

    #[tokio::test]
    async fn pays_through_the_router() {
        let (url, node) = fake_lnd().await;
        let (lnd, _dir) = client(&url, MACAROON, None);
        let preimage = [0x99; 32];
        let key = SecretKey::from_slice(&[0x52; 32]).unwrap();
        let (bolt11, _) =
            build_bolt11(&key, sha(&preimage), &memo(9_000), crate::store::now()).unwrap();
        node.lock()
            .unwrap()
            .payable
            .insert(sha(&preimage), preimage);
        let paid = lnd
            .pay(&format!("lightning:{bolt11}"), 5_000)
            .await
            .unwrap();
        assert_eq!(
            paid,
            Paid {
                preimage,
                amount_msat: 9_000,
                fee_msat: 12
            }
        );
        assert_eq!(
            last_post(&node),
            (
                "/v2/router/send".into(),
                json!({
                    "payment_request": bolt11,
                    "timeout_seconds": 60,
                    "fee_limit_msat": "5000",
                    "no_inflight_updates": true,
                })
            )
        );
        // Paying it again: LND refuses before streaming anything.
        let e = lnd.pay(&bolt11, 5_000).await.unwrap_err();
        assert!(
            matches!(&e, LightningError::Refused(m) if m == "invoice is already paid"),
            "{e}"
        );
        // No route.
        let (unpayable, _) =
            build_bolt11(&key, [0x10; 32], &memo(9_000), crate::store::now()).unwrap();
        let e = lnd.pay(&unpayable, 5_000).await.unwrap_err();
        assert!(
            matches!(&e, LightningError::PaymentFailed(m) if m.contains("FAILURE_REASON_NO_ROUTE")),
            "{e}"
        );
        assert!(matches!(
            lnd.pay("lnbc1nonsense", 0).await,
            Err(LightningError::InvalidInvoice(_))
        ));
    }

    /// LND's own certificate: self-signed and marked as a CA.
    fn lnd_like_certificate() -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[tokio::test]
    async fn trusts_lnds_own_certificate_only() {
        let (cert, key) = lnd_like_certificate();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tls.cert"), &cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), &key).unwrap();
        let tls = crate::tls::server_config(
            &dir.path().join("tls.cert"),
            &dir.path().join("tls.key"),
            &[b"http/1.1"],
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let node: Shared = Arc::default();
        let app = app(node.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(
                            hyper_util::rt::TokioIo::new(tls),
                            hyper_util::service::TowerToHyperService::new(app),
                        )
                        .await;
                    }
                });
            }
        });
        // Reached by address, not by the name in the certificate: the pin is what counts.
        let url = format!("https://{addr}");
        let (lnd, _d) = client(&url, MACAROON, Some(&cert));
        lnd.create_invoice(&memo(1_000)).await.unwrap();

        let (other, _) = lnd_like_certificate();
        let (stranger, _d) = client(&url, MACAROON, Some(&other));
        let e = stranger.create_invoice(&memo(1_000)).await.unwrap_err();
        assert!(matches!(e, LightningError::Unreachable(_)), "{e}");
        let (public_roots, _d) = client(&url, MACAROON, None);
        assert!(matches!(
            public_roots.create_invoice(&memo(1_000)).await,
            Err(LightningError::Unreachable(_))
        ));

        let config = crate::config::Lightning {
            lnd_url: url,
            lnd_macaroon_file: dir.path().join("tls.key"),
            lnd_cert_file: dir.path().join("tls.key"),
            ..Default::default()
        };
        assert!(Lnd::new(&config).is_err(), "a key is not a certificate");
    }
}
