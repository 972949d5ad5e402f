//! The LNbits backend: one LNbits wallet over its REST API (shapes as of LNbits 1.6).
//! It owns the HTTP client and the wallet's keys: the invoice key issues and reads
//! invoices, the admin key (optional) pays. Every invoice LNbits returns is decoded and
//! checked against what was asked before it is handed on. LNbits has no hold invoices.

use super::{
    Backend, Description, Invoice, InvoiceRequest, InvoiceState, LightningError, Paid, Result,
    decode,
};
use anyhow::Context;
use futures_util::future::BoxFuture;
use reqwest::header::HeaderValue;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The most of an answer read: LNbits' answers are a few kilobytes.
const MAX_ANSWER: usize = 1 << 20;

/// The wallet. See the module documentation.
pub struct Lnbits {
    http: reqwest::Client,
    /// The base URL, without a trailing slash.
    url: String,
    invoice_key: HeaderValue,
    admin_key: Option<HeaderValue>,
    /// How long a payment LNbits reports pending is followed before giving up on
    /// knowing its outcome.
    timeout: Duration,
    /// How often a pending payment is looked at.
    pay_poll: Duration,
}

/// Why a call did not return a JSON answer.
#[derive(Debug)]
enum CallError {
    /// The request never reached LNbits (no connection).
    NotSent(String),
    /// Sent, but no answer came (timeout, dropped connection): it may have been acted on.
    Lost(String),
    /// LNbits answered with an error status and this detail.
    Status(StatusCode, String),
    /// LNbits answered something that is not the JSON expected.
    Protocol(String),
}

impl From<CallError> for LightningError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::NotSent(m) | CallError::Lost(m) => LightningError::Unreachable(m),
            CallError::Status(s, detail) if s.is_client_error() => LightningError::Refused(detail),
            // A server error says LNbits or its funding source is in trouble, for now.
            CallError::Status(s, detail) => {
                LightningError::Unreachable(format!("LNbits answered {s}: {detail}"))
            }
            CallError::Protocol(m) => LightningError::Protocol(m),
        }
    }
}

fn api_key(key: &str, name: &str) -> anyhow::Result<HeaderValue> {
    let mut v = HeaderValue::from_str(key.trim())
        .with_context(|| format!("[lightning] {name} is not a valid API key"))?;
    v.set_sensitive(true);
    Ok(v)
}

impl Lnbits {
    pub fn new(config: &crate::config::Lightning) -> anyhow::Result<Lnbits> {
        let url = config.lnbits_url.trim().trim_end_matches('/').to_owned();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            anyhow::bail!(
                "[lightning] lnbits_url must be the LNbits server's http(s):// URL, not {url:?}"
            );
        }
        if config.lnbits_invoice_key.trim().is_empty() {
            anyhow::bail!("[lightning] lnbits_invoice_key is required with backend = \"lnbits\"");
        }
        let invoice_key = api_key(&config.lnbits_invoice_key, "lnbits_invoice_key")?;
        let admin_key = match config.lnbits_admin_key.trim() {
            "" => None,
            k => Some(api_key(k, "lnbits_admin_key")?),
        };
        // Bounded so that deadlines computed from it cannot overflow.
        let timeout = Duration::from_secs(config.timeout_seconds.clamp(1, 86_400));
        let mut http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout);
        if !config.ca_file.as_os_str().is_empty() {
            let pem = std::fs::read(&config.ca_file).with_context(|| {
                format!(
                    "cannot read [lightning] ca_file {}",
                    config.ca_file.display()
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!(
                    "[lightning] ca_file {} holds no PEM certificate",
                    config.ca_file.display()
                )
            })?;
            if certs.is_empty() {
                anyhow::bail!(
                    "[lightning] ca_file {} holds no PEM certificate",
                    config.ca_file.display()
                );
            }
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        Ok(Lnbits {
            http: http
                .build()
                .context("cannot set up the HTTP client for LNbits")?,
            url,
            invoice_key,
            admin_key,
            timeout,
            pay_poll: Duration::from_secs(1),
        })
    }

    fn admin_key(&self) -> Result<&HeaderValue> {
        self.admin_key.as_ref().ok_or_else(|| {
            LightningError::Refused(
                "no LNbits admin key is configured ([lightning] lnbits_admin_key): this wallet cannot pay"
                    .into(),
            )
        })
    }

    /// Sends `request` with `key` and reads a JSON answer. `what` names the call in errors.
    async fn call(
        &self,
        request: RequestBuilder,
        key: &HeaderValue,
        what: &str,
    ) -> std::result::Result<Value, CallError> {
        let response = request
            .header("X-Api-Key", key.clone())
            .send()
            .await
            .map_err(|e| transport_error(&e, what))?;
        let status = response.status();
        let body = read_limited(response)
            .await
            .map_err(|e| CallError::Lost(format!("LNbits {what}: {e}")))?;
        if !status.is_success() {
            return Err(CallError::Status(status, error_detail(&body)));
        }
        serde_json::from_slice(&body).map_err(|e| {
            CallError::Protocol(format!("LNbits {what} answered {status} with no JSON: {e}"))
        })
    }

    fn payment_url(&self, payment_hash: &[u8; 32]) -> String {
        format!("{}/api/v1/payments/{}", self.url, hex::encode(payment_hash))
    }

    /// One look at a payment: its status, or None if LNbits does not know it.
    async fn status(
        &self,
        payment_hash: &[u8; 32],
        key: &HeaderValue,
    ) -> std::result::Result<Option<Status>, CallError> {
        let answer = self
            .call(
                self.http.get(self.payment_url(payment_hash)),
                key,
                "payment status",
            )
            .await;
        let answer = match answer {
            Err(CallError::Status(StatusCode::NOT_FOUND, _)) => return Ok(None),
            a => a?,
        };
        Status::read(&answer, payment_hash)
            .map(Some)
            .map_err(|e| match e {
                LightningError::Protocol(m) => CallError::Protocol(m),
                other => CallError::Protocol(other.to_string()),
            })
    }

    /// Follows a payment until it is paid or failed, for at most the configured timeout.
    /// `missing` is the answer if LNbits does not know the payment at all.
    async fn follow(
        &self,
        payment_hash: &[u8; 32],
        amount_msat: u64,
        missing: LightningError,
    ) -> Result<Paid> {
        let key = self.admin_key()?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut missing = Some(missing);
        let mut last_error = None;
        loop {
            match self.status(payment_hash, key).await {
                Ok(Some(s)) => {
                    if let Some(paid) = s.outcome(payment_hash, amount_msat)? {
                        return Ok(paid);
                    }
                }
                Ok(None) => {
                    return Err(missing.take().unwrap_or(LightningError::UnknownInvoice));
                }
                // Look again: LNbits may be restarting while the payment goes on.
                Err(e @ (CallError::NotSent(_) | CallError::Lost(_) | CallError::Status(..))) => {
                    last_error = Some(LightningError::from(e).to_string());
                }
                Err(e @ CallError::Protocol(_)) => return Err(e.into()),
            }
            if tokio::time::Instant::now() + self.pay_poll > deadline {
                return Err(LightningError::Unreachable(format!(
                    "the payment {} is still pending after {} s, so its outcome is not known yet; \
                     look in the LNbits wallet before paying again{}",
                    hex::encode(payment_hash),
                    self.timeout.as_secs(),
                    last_error
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                )));
            }
            tokio::time::sleep(self.pay_poll).await;
        }
    }

    async fn create(&self, request: &InvoiceRequest) -> Result<Invoice> {
        // LNbits bills whole satoshis: an amount with a fraction of a satoshi is rounded
        // up, and the invoice returned says the amount actually billed.
        let sats = request.amount_msat.div_ceil(1000);
        let billed = sats.checked_mul(1000).filter(|_| sats > 0).ok_or_else(|| {
            LightningError::InvalidInvoice(format!(
                "{} msat cannot be billed in whole sats",
                request.amount_msat
            ))
        })?;
        let mut body = json!({
            "out": false,
            "amount": sats,
            "expiry": request.expiry.as_secs(),
        });
        match &request.description {
            Description::Memo(memo) => body["memo"] = json!(memo),
            Description::Hash(h) => body["description_hash"] = json!(hex::encode(h)),
        }
        let answer = self
            .call(
                self.http
                    .post(format!("{}/api/v1/payments", self.url))
                    .json(&body),
                &self.invoice_key,
                "create invoice",
            )
            .await?;
        let hash_hex = answer["payment_hash"].as_str().ok_or_else(|| {
            LightningError::Protocol("LNbits' new invoice has no payment_hash".into())
        })?;
        let mut payment_hash = [0u8; 32];
        hex::decode_to_slice(hash_hex, &mut payment_hash).map_err(|_| {
            LightningError::Protocol(format!("LNbits' payment_hash {hash_hex:?} is not 32 bytes"))
        })?;
        // "bolt11" since LNbits 1.0, "payment_request" before.
        let bolt11 = answer["bolt11"]
            .as_str()
            .or_else(|| answer["payment_request"].as_str())
            .ok_or_else(|| LightningError::Protocol("LNbits' new invoice has no bolt11".into()))?;
        let decoded = decode(bolt11).map_err(|e| {
            LightningError::Protocol(format!("LNbits returned an unreadable invoice: {e}"))
        })?;
        if decoded.payment_hash != payment_hash {
            return Err(LightningError::Protocol(format!(
                "LNbits' invoice pays hash {} but LNbits said {hash_hex}",
                hex::encode(decoded.payment_hash)
            )));
        }
        if decoded.amount_msat != Some(billed) {
            return Err(LightningError::Protocol(format!(
                "LNbits' invoice asks for {:?} msat, not the {billed} asked",
                decoded.amount_msat
            )));
        }
        // The hash is what relay and LNURL invoices commit to: it must be the one asked.
        // A memo is not compared: some funding sources rewrite it.
        if let Description::Hash(_) = request.description
            && decoded.description != request.description
        {
            return Err(LightningError::Protocol(
                "LNbits' invoice does not commit to the description hash asked".into(),
            ));
        }
        Ok(Invoice {
            bolt11: bolt11.to_owned(),
            payment_hash,
            amount_msat: billed,
            expires_at: decoded.expires_at,
        })
    }

    async fn state(&self, payment_hash: &[u8; 32]) -> Result<InvoiceState> {
        let status = self
            .status(payment_hash, &self.invoice_key)
            .await?
            .ok_or(LightningError::UnknownInvoice)?;
        Ok(match status.paid {
            Some(preimage) => InvoiceState::Settled {
                preimage,
                amount_msat: status.amount_msat.ok_or_else(|| {
                    LightningError::Protocol(format!(
                        "LNbits says payment {} is paid but gives no amount",
                        hex::encode(payment_hash)
                    ))
                })?,
            },
            None => InvoiceState::Open,
        })
    }

    /// Pays `bolt11`. LNbits takes no fee limit per payment (its own fee reserve
    /// applies), so `max_fee_msat` can only be checked afterwards, and a payment over it
    /// is reported in the log.
    async fn send(&self, bolt11: &str, max_fee_msat: u64) -> Result<Paid> {
        let paid = self.send_unlimited(bolt11).await?;
        if paid.fee_msat > max_fee_msat {
            tracing::warn!(
                fee_msat = paid.fee_msat,
                max_fee_msat,
                "LNbits paid more in routing fees than allowed ([lightning] max_fee_sats)"
            );
        }
        Ok(paid)
    }

    async fn send_unlimited(&self, bolt11: &str) -> Result<Paid> {
        let key = self.admin_key()?;
        let invoice = decode(bolt11)?;
        let amount_msat = invoice.amount_msat.ok_or_else(|| {
            LightningError::InvalidInvoice("the invoice has no amount to pay".into())
        })?;
        let hash = invoice.payment_hash;
        let bolt11 = bolt11
            .trim()
            .trim_start_matches("lightning:")
            .to_lowercase();
        let answer = self
            .call(
                self.http
                    .post(format!("{}/api/v1/payments", self.url))
                    .json(&json!({"out": true, "bolt11": bolt11})),
                key,
                "pay",
            )
            .await;
        let answer = match answer {
            Ok(a) => a,
            // Never sent, or refused outright: nothing was paid.
            Err(e @ (CallError::NotSent(_) | CallError::Protocol(_))) => return Err(e.into()),
            Err(CallError::Status(s, detail)) if s.is_client_error() => {
                return Err(LightningError::Refused(detail));
            }
            // The payment may be on its way: find out from LNbits rather than guess.
            Err(e) => {
                let missing = LightningError::from(e);
                return self.follow(&hash, amount_msat, missing).await;
            }
        };
        if let Some(h) = answer["payment_hash"].as_str()
            && !h.eq_ignore_ascii_case(&hex::encode(hash))
        {
            return Err(LightningError::Protocol(format!(
                "LNbits paid hash {h}, not the invoice's {}",
                hex::encode(hash)
            )));
        }
        let status = Status::read(&answer, &hash)?;
        if let Some(paid) = status.outcome(&hash, amount_msat)? {
            return Ok(paid);
        }
        self.follow(
            &hash,
            amount_msat,
            LightningError::Protocol(format!(
                "LNbits accepted payment {} but then did not know it",
                hex::encode(hash)
            )),
        )
        .await
    }
}

/// What LNbits says of a payment (the answer to a status look-up or to paying).
struct Status {
    /// The preimage, once paid.
    paid: Option<[u8; 32]>,
    failed: bool,
    /// In msat, without a sign (LNbits counts outgoing amounts negative).
    amount_msat: Option<u64>,
    fee_msat: u64,
}

impl Status {
    fn read(v: &Value, payment_hash: &[u8; 32]) -> Result<Status> {
        let details = &v["details"];
        let status = v["status"].as_str().or_else(|| details["status"].as_str());
        // LNbits answers a zero preimage for what is not paid: only "paid" (or, when
        // paying, status "success") means paid.
        let paid = v["paid"].as_bool() == Some(true) || status == Some("success");
        let paid = if paid {
            let text = v["preimage"]
                .as_str()
                .or_else(|| details["preimage"].as_str())
                .unwrap_or("");
            let mut preimage = [0u8; 32];
            hex::decode_to_slice(text, &mut preimage).map_err(|_| {
                LightningError::Protocol(format!(
                    "LNbits says payment {} is paid but its preimage {text:?} is not 32 bytes",
                    hex::encode(payment_hash)
                ))
            })?;
            if <[u8; 32]>::from(Sha256::digest(preimage)) != *payment_hash {
                return Err(LightningError::Protocol(format!(
                    "LNbits' preimage for payment {} does not hash to it",
                    hex::encode(payment_hash)
                )));
            }
            Some(preimage)
        } else {
            None
        };
        let number = |key: &str| int(&details[key]).or_else(|| int(&v[key]));
        Ok(Status {
            paid,
            failed: status == Some("failed"),
            amount_msat: number("amount").map(i64::unsigned_abs),
            // LNbits records the fee of a payment made as negative.
            fee_msat: number("fee").map_or(0, i64::unsigned_abs),
        })
    }

    /// Paid or failed for good; None while pending.
    fn outcome(&self, payment_hash: &[u8; 32], amount_msat: u64) -> Result<Option<Paid>> {
        if let Some(preimage) = self.paid {
            return Ok(Some(Paid {
                preimage,
                amount_msat,
                fee_msat: self.fee_msat,
            }));
        }
        if self.failed {
            return Err(LightningError::PaymentFailed(format!(
                "LNbits reports payment {} failed",
                hex::encode(payment_hash)
            )));
        }
        Ok(None)
    }
}

/// An integer LNbits may send as a number or a string.
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn transport_error(e: &reqwest::Error, what: &str) -> CallError {
    let message = format!("LNbits {what}: {}", error_chain(e));
    if e.is_connect() || e.is_builder() {
        CallError::NotSent(message)
    } else {
        CallError::Lost(message)
    }
}

/// An error with its causes, which reqwest's own message leaves out.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn read_limited(mut response: reqwest::Response) -> std::result::Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(format!("the answer is larger than {MAX_ANSWER} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The `detail` of an LNbits error answer (FastAPI's shape), else the start of the body.
fn error_detail(body: &[u8]) -> String {
    let detail = match serde_json::from_slice::<Value>(body) {
        Ok(v) => match &v["detail"] {
            Value::String(s) => s.clone(),
            Value::Null => v.to_string(),
            other => other.to_string(),
        },
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let detail = detail.trim();
    match detail.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &detail[..i]),
        None => detail.to_owned(),
    }
}

impl Backend for Lnbits {
    fn name(&self) -> &'static str {
        "lnbits"
    }

    /// `GET /api/v1/wallet` with the invoice key: LNbits answers and the key is a
    /// wallet's.
    fn health(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let answer = self
                .call(
                    self.http.get(format!("{}/api/v1/wallet", self.url)),
                    &self.invoice_key,
                    "wallet details",
                )
                .await?;
            let name = answer.get("name").and_then(Value::as_str).unwrap_or("");
            Ok(match answer.get("balance").and_then(Value::as_i64) {
                Some(msat) => format!("LNbits wallet {name:?}, balance {} sat", msat / 1000),
                None => format!("LNbits wallet {name:?}"),
            })
        })
    }

    fn create_invoice<'a>(&'a self, request: &'a InvoiceRequest) -> BoxFuture<'a, Result<Invoice>> {
        Box::pin(self.create(request))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lightning::dev::build_bolt11;
    use axum::extract::{Path, State};
    use axum::http::HeaderMap;
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use secp256k1::SecretKey;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    const INVOICE_KEY: &str = "inv0123456789";
    const ADMIN_KEY: &str = "adm9876543210";

    /// What the fake LNbits does with a payment it is asked to make.
    #[derive(Clone, Copy, PartialEq)]
    enum PayMode {
        /// Answers "success" with the preimage at once.
        Succeed,
        /// Answers "pending"; the payment succeeds after this many status look-ups.
        PendingThenSucceed(u32),
        /// Answers "pending", then "failed".
        PendingThenFail,
        /// Answers 520 (LNbits' PaymentError) but the payment goes through.
        ServerErrorButPaid,
    }

    struct Payment {
        preimage: [u8; 32],
        amount_msat: i64,
        fee_msat: i64,
        paid: bool,
        failed: bool,
        polls_left: u32,
    }

    struct Fake {
        payments: HashMap<String, Payment>,
        /// (api key, body) of every POST.
        posts: Vec<(String, Value)>,
        /// (api key, hash) of every status GET.
        gets: Vec<(String, String)>,
        pay_mode: PayMode,
        /// Answer "payment_request" (LNbits before 1.0) instead of "bolt11".
        old_field: bool,
        /// Answer an invoice for another hash than the one said.
        wrong_hash: bool,
        /// Preimages of invoices this fake can pay (another node's, made by the test).
        payable: HashMap<String, [u8; 32]>,
    }

    type Shared = Arc<Mutex<Fake>>;

    fn key_of(headers: &HeaderMap) -> String {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }

    fn detail(status: StatusCode, detail: &str) -> Response {
        (status, axum::Json(json!({ "detail": detail }))).into_response()
    }

    fn payment_json(hash: &str, p: &Payment) -> Value {
        let status = if p.paid {
            "success"
        } else if p.failed {
            "failed"
        } else {
            "pending"
        };
        json!({
            "paid": p.paid,
            "status": status,
            "preimage": if p.paid { hex::encode(p.preimage) } else { "0".repeat(64) },
            "details": {
                "payment_hash": hash,
                "amount": p.amount_msat,
                "fee": p.fee_msat,
                "status": status,
            }
        })
    }

    async fn create_or_pay(
        State(fake): State<Shared>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Response {
        let key = key_of(&headers);
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return detail(StatusCode::UNPROCESSABLE_ENTITY, "invalid JSON");
        };
        let mut fake = fake.lock().unwrap();
        fake.posts.push((key.clone(), body.clone()));
        if key != INVOICE_KEY && key != ADMIN_KEY {
            return detail(StatusCode::UNAUTHORIZED, "Invalid key.");
        }
        if body["out"] == json!(false) {
            let sats = body["amount"].as_u64().unwrap();
            let preimage: [u8; 32] = rand_bytes();
            let hash: [u8; 32] = Sha256::digest(preimage).into();
            let description = match body["description_hash"].as_str() {
                Some(h) => {
                    let mut b = [0u8; 32];
                    hex::decode_to_slice(h, &mut b).unwrap();
                    Description::Hash(b)
                }
                None => Description::Memo(body["memo"].as_str().unwrap_or("").into()),
            };
            let request = InvoiceRequest {
                amount_msat: sats * 1000,
                description,
                expiry: Duration::from_secs(body["expiry"].as_u64().unwrap()),
            };
            let key = SecretKey::from_slice(&[0x31; 32]).unwrap();
            let invoice_hash = if fake.wrong_hash { [0u8; 32] } else { hash };
            let (bolt11, _) =
                build_bolt11(&key, invoice_hash, &request, crate::store::now()).unwrap();
            let hash = hex::encode(hash);
            fake.payments.insert(
                hash.clone(),
                Payment {
                    preimage,
                    amount_msat: (sats * 1000) as i64,
                    fee_msat: 0,
                    paid: false,
                    failed: false,
                    polls_left: 0,
                },
            );
            let field = if fake.old_field {
                "payment_request"
            } else {
                "bolt11"
            };
            return (
                StatusCode::CREATED,
                axum::Json(json!({ "payment_hash": hash, field: bolt11, "checking_id": hash })),
            )
                .into_response();
        }
        if key != ADMIN_KEY {
            return detail(StatusCode::UNAUTHORIZED, "Invalid adminkey.");
        }
        let Ok(invoice) = decode(body["bolt11"].as_str().unwrap_or("")) else {
            return detail(StatusCode::BAD_REQUEST, "Invalid bolt11 invoice.");
        };
        let hash = hex::encode(invoice.payment_hash);
        let Some(preimage) = fake.payable.get(&hash).copied() else {
            return detail(StatusCode::BAD_REQUEST, "Insufficient balance.");
        };
        let mode = fake.pay_mode;
        let payment = Payment {
            preimage,
            amount_msat: -(invoice.amount_msat.unwrap() as i64),
            fee_msat: -2000,
            paid: mode == PayMode::Succeed || mode == PayMode::ServerErrorButPaid,
            failed: false,
            polls_left: match mode {
                PayMode::PendingThenSucceed(n) => n,
                _ => 1,
            },
        };
        let answer = payment_json(&hash, &payment);
        fake.payments.insert(hash.clone(), payment);
        match mode {
            PayMode::ServerErrorButPaid => detail(
                StatusCode::from_u16(520).unwrap(),
                "Payment failed: timeout",
            ),
            _ => {
                let mut answer = answer;
                answer["payment_hash"] = json!(hash);
                (StatusCode::CREATED, axum::Json(answer)).into_response()
            }
        }
    }

    async fn status(
        State(fake): State<Shared>,
        Path(hash): Path<String>,
        headers: HeaderMap,
    ) -> Response {
        let mut fake = fake.lock().unwrap();
        fake.gets.push((key_of(&headers), hash.clone()));
        let mode = fake.pay_mode;
        let Some(p) = fake.payments.get_mut(&hash) else {
            return detail(StatusCode::NOT_FOUND, "Payment does not exist.");
        };
        if p.amount_msat < 0 && !p.paid && !p.failed {
            p.polls_left = p.polls_left.saturating_sub(1);
            if p.polls_left == 0 {
                if mode == PayMode::PendingThenFail {
                    p.failed = true;
                } else {
                    p.paid = true;
                }
            }
        }
        axum::Json(payment_json(&hash, p)).into_response()
    }

    async fn wallet(headers: HeaderMap) -> Response {
        match key_of(&headers).as_str() {
            INVOICE_KEY | ADMIN_KEY => {
                axum::Json(json!({"id": "w1", "name": "bridge", "balance": 21_000})).into_response()
            }
            _ => detail(StatusCode::UNAUTHORIZED, "Invalid key"),
        }
    }

    fn rand_bytes() -> [u8; 32] {
        let mut b = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
        b
    }

    async fn fake_lnbits() -> (String, Shared) {
        let fake = Arc::new(Mutex::new(Fake {
            payments: HashMap::new(),
            posts: vec![],
            gets: vec![],
            pay_mode: PayMode::Succeed,
            old_field: false,
            wrong_hash: false,
            payable: HashMap::new(),
        }));
        let app = axum::Router::new()
            .route("/api/v1/payments", post(create_or_pay))
            .route("/api/v1/payments/{hash}", get(status))
            .route("/api/v1/wallet", get(wallet))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/"), fake)
    }

    fn client(url: &str, admin: bool) -> Lnbits {
        let config = crate::config::Lightning {
            backend: crate::config::LightningBackend::Lnbits,
            lnbits_url: url.into(),
            lnbits_invoice_key: INVOICE_KEY.into(),
            lnbits_admin_key: if admin {
                ADMIN_KEY.into()
            } else {
                String::new()
            },
            timeout_seconds: 5,
            ..Default::default()
        };
        let mut l = Lnbits::new(&config).unwrap();
        l.pay_poll = Duration::from_millis(20);
        l
    }

    /// An invoice of another node the fake can pay, and its preimage.
    fn payable_invoice(fake: &Shared, amount_msat: u64) -> (String, [u8; 32]) {
        let preimage = rand_bytes();
        let hash: [u8; 32] = Sha256::digest(preimage).into();
        let key = SecretKey::from_slice(&[0x77; 32]).unwrap();
        let request = InvoiceRequest {
            amount_msat,
            description: Description::Memo("withdrawal".into()),
            expiry: Duration::from_secs(600),
        };
        let (bolt11, _) = build_bolt11(&key, hash, &request, crate::store::now()).unwrap();
        fake.lock()
            .unwrap()
            .payable
            .insert(hex::encode(hash), preimage);
        (bolt11, preimage)
    }

    #[tokio::test]
    async fn health_reads_the_wallet_with_the_invoice_key() {
        let (url, _fake) = fake_lnbits().await;
        let health = client(&url, false).health().await.unwrap();
        assert_eq!(health, "LNbits wallet \"bridge\", balance 21 sat");
        let config = crate::config::Lightning {
            backend: crate::config::LightningBackend::Lnbits,
            lnbits_url: url.clone(),
            lnbits_invoice_key: "wrong".into(),
            timeout_seconds: 5,
            ..Default::default()
        };
        assert!(matches!(
            Lnbits::new(&config).unwrap().health().await,
            Err(LightningError::Refused(_))
        ));
    }

    #[tokio::test]
    async fn creates_invoices_and_reads_their_state() {
        let (url, fake) = fake_lnbits().await;
        let lnbits = client(&url, false);
        assert_eq!(lnbits.name(), "lnbits");
        let invoice = lnbits
            .create_invoice(&InvoiceRequest {
                amount_msat: 21_500,
                description: Description::Memo("pay to reach alice".into()),
                expiry: Duration::from_secs(600),
            })
            .await
            .unwrap();
        // 21.5 sats are billed as 22.
        assert_eq!(invoice.amount_msat, 22_000);
        assert!(invoice.expires_at > crate::store::now() + 590);
        {
            let f = fake.lock().unwrap();
            let (key, body) = &f.posts[0];
            assert_eq!(key, INVOICE_KEY);
            assert_eq!(
                body,
                &json!({"out": false, "amount": 22, "memo": "pay to reach alice", "expiry": 600})
            );
        }
        assert_eq!(
            lnbits.invoice_state(&invoice.payment_hash).await.unwrap(),
            InvoiceState::Open
        );
        let preimage = {
            let mut f = fake.lock().unwrap();
            let p = f
                .payments
                .get_mut(&hex::encode(invoice.payment_hash))
                .unwrap();
            p.paid = true;
            p.preimage
        };
        assert_eq!(
            lnbits.invoice_state(&invoice.payment_hash).await.unwrap(),
            InvoiceState::Settled {
                preimage,
                amount_msat: 22_000
            }
        );
        {
            let f = fake.lock().unwrap();
            assert!(
                f.gets
                    .iter()
                    .all(|(k, h)| k == INVOICE_KEY && *h == hex::encode(invoice.payment_hash))
            );
        }
        assert!(matches!(
            lnbits.invoice_state(&[1; 32]).await,
            Err(LightningError::UnknownInvoice)
        ));
        // A "paid" answer whose preimage does not match is not believed.
        fake.lock()
            .unwrap()
            .payments
            .get_mut(&hex::encode(invoice.payment_hash))
            .unwrap()
            .preimage = [5; 32];
        assert!(matches!(
            lnbits.invoice_state(&invoice.payment_hash).await,
            Err(LightningError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn description_hashes_and_older_answers() {
        let (url, fake) = fake_lnbits().await;
        fake.lock().unwrap().old_field = true;
        let lnbits = client(&url, false);
        let invoice = lnbits
            .create_invoice(&InvoiceRequest {
                amount_msat: 1_000,
                description: Description::Hash([0xee; 32]),
                expiry: Duration::from_secs(60),
            })
            .await
            .unwrap();
        assert_eq!(
            decode(&invoice.bolt11).unwrap().description,
            Description::Hash([0xee; 32])
        );
        let body = fake.lock().unwrap().posts[0].1.clone();
        assert_eq!(
            body,
            json!({"out": false, "amount": 1, "description_hash": hex::encode([0xee; 32]), "expiry": 60})
        );
        // An invoice for another hash than the one LNbits names is refused.
        fake.lock().unwrap().wrong_hash = true;
        let e = lnbits
            .create_invoice(&InvoiceRequest {
                amount_msat: 1_000,
                description: Description::Memo("x".into()),
                expiry: Duration::from_secs(60),
            })
            .await
            .unwrap_err();
        assert!(matches!(e, LightningError::Protocol(_)), "{e}");
    }

    #[tokio::test]
    async fn pays_with_the_admin_key() {
        let (url, fake) = fake_lnbits().await;
        let (bolt11, preimage) = payable_invoice(&fake, 10_000);
        assert!(matches!(
            client(&url, false).pay(&bolt11, 1000).await,
            Err(LightningError::Refused(_))
        ));
        assert!(fake.lock().unwrap().posts.is_empty());
        let lnbits = client(&url, true);
        let paid = lnbits.pay(&bolt11, 1000).await.unwrap();
        assert_eq!(
            paid,
            Paid {
                preimage,
                amount_msat: 10_000,
                fee_msat: 2_000
            }
        );
        let (key, body) = fake.lock().unwrap().posts[0].clone();
        assert_eq!(key, ADMIN_KEY);
        assert_eq!(body, json!({"out": true, "bolt11": bolt11}));

        // Pending, then paid after a few looks with the admin key.
        fake.lock().unwrap().pay_mode = PayMode::PendingThenSucceed(3);
        let (bolt11, preimage) = payable_invoice(&fake, 2_000);
        let paid = lnbits.pay(&bolt11, 1000).await.unwrap();
        assert_eq!((paid.preimage, paid.amount_msat), (preimage, 2_000));
        let gets = fake.lock().unwrap().gets.clone();
        assert_eq!(gets.len(), 3);
        assert!(gets.iter().all(|(k, _)| k == ADMIN_KEY));

        // Pending, then failed.
        fake.lock().unwrap().pay_mode = PayMode::PendingThenFail;
        let (bolt11, _) = payable_invoice(&fake, 2_000);
        assert!(matches!(
            lnbits.pay(&bolt11, 1000).await,
            Err(LightningError::PaymentFailed(_))
        ));

        // A server error, though the payment went through: LNbits is asked.
        fake.lock().unwrap().pay_mode = PayMode::ServerErrorButPaid;
        let (bolt11, preimage) = payable_invoice(&fake, 3_000);
        assert_eq!(lnbits.pay(&bolt11, 1000).await.unwrap().preimage, preimage);
    }

    #[tokio::test]
    async fn errors_say_what_went_wrong() {
        let (url, fake) = fake_lnbits().await;
        let lnbits = client(&url, true);
        // An invoice the fake has no preimage for: it answers 400 with a detail.
        let key = SecretKey::from_slice(&[0x78; 32]).unwrap();
        let request = InvoiceRequest {
            amount_msat: 1_000,
            description: Description::Memo("x".into()),
            expiry: Duration::from_secs(60),
        };
        let (bolt11, _) = build_bolt11(&key, [3; 32], &request, crate::store::now()).unwrap();
        let e = lnbits.pay(&bolt11, 0).await.unwrap_err();
        assert!(
            matches!(&e, LightningError::Refused(m) if m == "Insufficient balance."),
            "{e}"
        );
        assert!(matches!(
            lnbits.pay("lnbc1nonsense", 0).await,
            Err(LightningError::InvalidInvoice(_))
        ));
        // A wrong key.
        let mut bad = client(&url, false);
        bad.invoice_key = HeaderValue::from_static("nope");
        let e = bad.create_invoice(&request).await.unwrap_err();
        assert!(
            matches!(&e, LightningError::Refused(m) if m == "Invalid key."),
            "{e}"
        );
        drop(fake);

        // Nothing listening.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let e = client(&closed, true)
            .create_invoice(&request)
            .await
            .unwrap_err();
        assert!(matches!(e, LightningError::Unreachable(_)), "{e}");

        // Something that is not LNbits.
        let app = axum::Router::new().fallback(|| async { "<html>hello</html>" });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let e = client(&format!("http://{addr}"), true)
            .create_invoice(&request)
            .await
            .unwrap_err();
        assert!(matches!(e, LightningError::Protocol(_)), "{e}");
    }

    #[test]
    fn configuration_is_checked() {
        let config = crate::config::Lightning {
            lnbits_url: "lnbits.example".into(),
            lnbits_invoice_key: INVOICE_KEY.into(),
            ..Default::default()
        };
        assert!(Lnbits::new(&config).is_err());
        let config = crate::config::Lightning {
            lnbits_url: "https://lnbits.example".into(),
            ..Default::default()
        };
        assert!(Lnbits::new(&config).is_err());
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Lightning {
            lnbits_url: "https://lnbits.example".into(),
            lnbits_invoice_key: INVOICE_KEY.into(),
            ca_file: dir.path().join("missing.pem"),
            ..Default::default()
        };
        assert!(Lnbits::new(&config).is_err());
        std::fs::write(dir.path().join("empty.pem"), "not a certificate").unwrap();
        let config = crate::config::Lightning {
            ca_file: dir.path().join("empty.pem"),
            ..config
        };
        assert!(Lnbits::new(&config).is_err());
    }
}
