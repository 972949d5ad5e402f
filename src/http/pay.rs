//! The paywall's web pages. This module owns:
//!
//! - `GET /pay/{token}`: the pay page of a held message, opened by the stranger whose
//!   email waits (the link is in the SMTP reply and the payment-request email): the
//!   amount, the recipient, the invoice as a QR code, text and `lightning:` link, and a
//!   status line that a small inline script keeps current.
//! - `GET /pay/{token}/status`: the same state as JSON, which that script polls.
//! - `GET /confirm/{token}` and `POST /confirm/{token}`: a user confirms paying a
//!   relay's invoice above their auto-pay cap from their balance.
//!
//! Every page is self-contained (inline CSS and one inline script, allowed by their
//! SHA-256 hashes in the Content-Security-Policy; no other resource), works without
//! JavaScript except for the live status, and escapes everything it shows.

use super::HttpState;
use crate::lightning::LightningError;
use crate::paywall::autopay::ConfirmView;
use crate::paywall::{PayView, PaywallError};
use crate::store::held::HeldState;
use crate::store::ledger::LedgerError;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// The one stylesheet of every page.
const STYLE: &str = r#":root{color-scheme:light dark;--fg:#1c1c21;--bg:#f4f4f6;--card:#fff;--line:#dcdce2;--muted:#62626b;--accent:#e8870f;--ok:#1f7a3a;--okbg:#e5f5ea;--no:#9b2c2c;--nobg:#fbeaea;--wait:#7a5a00;--waitbg:#fff6dc}
@media (prefers-color-scheme:dark){:root{--fg:#ececf0;--bg:#151518;--card:#202025;--line:#38383f;--muted:#a4a4ae;--ok:#8fdca6;--okbg:#1b3324;--no:#f0a3a3;--nobg:#3a1f1f;--wait:#f3d27a;--waitbg:#352d14}}
*{box-sizing:border-box}
[hidden]{display:none!important}
body{margin:0;padding:1rem;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:30rem;margin:1rem auto;padding:1.5rem;background:var(--card);border:1px solid var(--line);border-radius:12px}
h1{font-size:1.35rem;margin:0 0 .75rem}
p{margin:.6rem 0}
.amount{font-size:2rem;font-weight:700;margin:.25rem 0 .75rem}
.status{padding:.7rem .9rem;border-radius:8px;font-weight:600;background:var(--waitbg);color:var(--wait)}
.status.delivered{background:var(--okbg);color:var(--ok)}
.status.refused,.status.expired,.status.error{background:var(--nobg);color:var(--no)}
.qr{display:block;max-width:300px;margin:1rem auto;padding:6px;background:#fff;border-radius:8px}
.qr svg{display:block;width:100%;height:auto}
label{display:block;font-size:.9rem;color:var(--muted);margin-top:.5rem}
textarea{width:100%;margin:.25rem 0 .5rem;padding:.5rem;font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;word-break:break-all;resize:none;color:var(--fg);background:var(--bg);border:1px solid var(--line);border-radius:6px}
.row{display:flex;flex-wrap:wrap;gap:.5rem}
button,.button{display:inline-block;padding:.6rem 1rem;font:inherit;font-weight:600;text-decoration:none;text-align:center;border:0;border-radius:8px;cursor:pointer;color:#fff;background:var(--accent)}
button.secondary{color:var(--fg);background:var(--bg);border:1px solid var(--line)}
button:disabled{opacity:.6;cursor:default}
dl{display:grid;grid-template-columns:auto 1fr;gap:.25rem 1rem;margin:1rem 0}
dt{color:var(--muted)}
dd{margin:0;font-weight:600}
code{font:.9em ui-monospace,Menlo,Consolas,monospace}
.muted{color:var(--muted);font-size:.9rem}
.warn{color:var(--no)}"#;

/// The one script of every page: the copy button, local times, the pay page's live
/// status, and a confirm button that is pressed once.
const SCRIPT: &str = r#"(function(){
"use strict";
var texts={delivered:"Delivered \u2014 thank you",refused:"The recipient declined this message",expired:"This message was not paid for in time and was deleted"};
document.querySelectorAll("time[datetime]").forEach(function(e){var d=new Date(e.getAttribute("datetime"));if(!isNaN(d.getTime())){e.textContent=d.toLocaleString();}});
var invoice=document.getElementById("invoice");
var copy=document.getElementById("copy");
if(copy&&invoice){copy.hidden=false;copy.addEventListener("click",function(){
function done(){copy.textContent="Copied";setTimeout(function(){copy.textContent="Copy";},2000);}
invoice.select();
if(navigator.clipboard&&navigator.clipboard.writeText){navigator.clipboard.writeText(invoice.value).then(done,function(){});}});}
var form=document.getElementById("confirm");
if(form){form.addEventListener("submit",function(){var b=form.querySelector("button");if(b){setTimeout(function(){b.disabled=true;},0);}});}
var status=document.getElementById("status");
if(!status||status.getAttribute("data-state")!=="held"||!status.getAttribute("data-poll")){return;}
var url=status.getAttribute("data-poll");
var shown=invoice?invoice.value:"";
status.textContent="Waiting for payment\u2026";
function later(){setTimeout(tick,2000);}
function tick(){
fetch(url,{cache:"no-store",headers:{"Accept":"application/json"}}).then(function(r){return r.ok?r.json():null;}).then(function(j){
if(!j||typeof j.state!=="string"){later();return;}
if(j.state==="held"){if(j.bolt11&&j.bolt11!==shown){location.reload();return;}later();return;}
status.textContent=texts[j.state]||j.state;
status.setAttribute("data-state",j.state);
status.className="status "+j.state;
var pay=document.getElementById("pay");if(pay){pay.hidden=true;}
var h=document.getElementById("heading");if(h){h.textContent=j.state==="delivered"?"Your message was delivered":"Your message was not delivered";}
var e=document.getElementById("explain");if(e){e.hidden=true;}
}).catch(later);}
later();
})();"#;

/// `'sha256-…'` of an inline script or style, as CSP names it.
fn csp_hash(content: &str) -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(content.as_bytes()))
    )
}

/// Only [`STYLE`] and [`SCRIPT`] run; the script may fetch from this origin and forms
/// post only to it.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let policy = format!(
        "default-src 'none'; style-src {}; script-src {}; connect-src 'self'; \
         form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        csp_hash(STYLE),
        csp_hash(SCRIPT)
    );
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// Text made safe to put in HTML, in element content and in quoted attributes.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The state word of the pay page and its JSON: a message the recipient let in for
/// free is as delivered to its sender as a paid one.
pub(super) fn state_word(state: HeldState) -> &'static str {
    match state {
        HeldState::Held => "held",
        HeldState::Paid | HeldState::Accepted => "delivered",
        HeldState::Refused => "refused",
        HeldState::Expired => "expired",
    }
}

/// What the status line says in `word`'s state (the script has the same texts).
fn status_text(word: &str) -> &'static str {
    match word {
        "held" => "Waiting for payment. Reload this page once you have paid.",
        "delivered" => "Delivered \u{2014} thank you",
        "refused" => "The recipient declined this message",
        "expired" => "This message was not paid for in time and was deleted",
        _ => "Unknown",
    }
}

/// The QR code of `lightning:<bolt11>` as an inline `<svg>` element. All upper case,
/// so the whole payload is QR alphanumeric (denser than bytes); wallets read the
/// scheme and the invoice case-insensitively. None if it does not fit a QR code.
pub(super) fn qr_svg(bolt11: &str) -> Option<String> {
    let payload = format!("lightning:{bolt11}").to_ascii_uppercase();
    let code = qrcode::QrCode::new(payload.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(256, 256)
        .build();
    // Inside HTML the XML declaration is noise: keep the <svg> element only.
    let start = svg.find("<svg")?;
    Some(svg[start..].to_owned())
}

/// "1 sat", "21,000 sats".
fn sats(n: u64) -> String {
    let digits = n.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{grouped} {}", if n == 1 { "sat" } else { "sats" })
}

/// A `<time>` element for unix seconds `t`, in UTC (the script shows local time).
fn time_html(t: i64) -> String {
    match chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0) {
        Some(d) => format!(
            "<time datetime=\"{}\">{}</time>",
            d.format("%Y-%m-%dT%H:%M:%SZ"),
            d.format("%Y-%m-%d %H:%M UTC")
        ),
        None => "later".to_owned(),
    }
}

/// "in about 59 minutes" from `now` to `t`.
fn from_now(t: i64, now: i64) -> String {
    let s = t - now;
    if s <= 0 {
        "now".to_owned()
    } else if s < 90 {
        "in about a minute".to_owned()
    } else if s < 90 * 60 {
        format!("in about {} minutes", (s + 30) / 60)
    } else if s < 36 * 3600 {
        format!("in about {} hours", (s + 1800) / 3600)
    } else {
        format!("in about {} days", (s + 43_200) / 86_400)
    }
}

/// A whole HTML5 page around `body` (already HTML).
fn document(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <meta name=\"robots\" content=\"noindex, nofollow\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n\
         <script>{SCRIPT}</script>\n</body>\n</html>\n",
        title = escape(title),
    )
}

/// The headers every answer of this module carries.
fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn html(status: StatusCode, page: String) -> Response {
    secure((status, Html(page)).into_response())
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    secure((status, Json(body)).into_response())
}

/// A short page: a heading and one paragraph of plain text.
fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    html(
        status,
        document(
            title,
            &format!("<h1>{}</h1>\n<p>{}</p>", escape(title), escape(text)),
        ),
    )
}

fn not_found(text: &str) -> Response {
    message_page(StatusCode::NOT_FOUND, "Not found", text)
}

fn unavailable() -> Response {
    message_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again shortly",
        "This page cannot be shown right now. Please reload it in a minute.",
    )
}

/// Tokens are short and alphanumeric ([`crate::paywall`] makes them); anything else is
/// unknown without asking the database.
fn plausible_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= 64 && token.bytes().all(|b| b.is_ascii_alphanumeric())
}

const UNKNOWN_PAY_LINK: &str = "This payment link is unknown. Check that it was copied whole; a message is forgotten some time after it was delivered or deleted.";
const UNKNOWN_CONFIRM_LINK: &str =
    "This link was used already, or the message it was for is no longer waiting.";

/// The pay page of `view`, whose token is `token`, at unix time `now`.
pub(super) fn render_pay_page(view: &PayView, token: &str, now: i64) -> String {
    let word = state_word(view.state);
    let recipient = escape(&view.recipient);
    let amount = escape(&sats(view.amount_sats));
    let status = format!(
        "<p id=\"status\" class=\"status {word}\" data-state=\"{word}\" data-poll=\"{poll}\" \
         role=\"status\" aria-live=\"polite\">{text}</p>",
        poll = escape(&format!("{token}/status")),
        text = escape(status_text(word)),
    );
    if view.state != HeldState::Held {
        let (title, what) = match word {
            "delivered" => (
                "Message delivered",
                format!("Your message to <strong>{recipient}</strong> was delivered."),
            ),
            "refused" => (
                "Message declined",
                format!(
                    "<strong>{recipient}</strong> deleted your message without reading it. Nothing is owed."
                ),
            ),
            _ => (
                "Message expired",
                format!(
                    "Your message to <strong>{recipient}</strong> was held for payment of {amount} and is gone now. Send it again if you still want it read."
                ),
            ),
        };
        return document(
            title,
            &format!("<h1>{}</h1>\n{status}\n<p>{what}</p>", escape(title)),
        );
    }
    let invoice = if view.bolt11.is_empty() {
        "<p>No invoice is available right now. Reload this page in a minute.</p>".to_owned()
    } else {
        let bolt11 = escape(&view.bolt11);
        let qr = qr_svg(&view.bolt11)
            .map(|svg| {
                format!(
                    "<a class=\"qr\" href=\"lightning:{bolt11}\" title=\"Scan with a Lightning wallet\">{svg}</a>\n"
                )
            })
            .unwrap_or_default();
        let expires = if view.invoice_expires_at > now {
            format!(
                "This invoice expires {} ({}); reload the page after that for a new one.",
                from_now(view.invoice_expires_at, now),
                time_html(view.invoice_expires_at)
            )
        } else {
            "This invoice has expired; reload the page for a new one.".to_owned()
        };
        format!(
            "{qr}<label for=\"invoice\">Lightning invoice</label>\n\
             <textarea id=\"invoice\" rows=\"5\" readonly spellcheck=\"false\">{bolt11}</textarea>\n\
             <div class=\"row\"><button type=\"button\" id=\"copy\" class=\"secondary\" hidden>Copy</button>\
             <a class=\"button\" href=\"lightning:{bolt11}\">Open in wallet</a></div>\n\
             <p class=\"muted\">{expires}</p>"
        )
    };
    let deleted = if view.hold_expires_at > now {
        format!(
            "<p class=\"muted\">If it is not paid, the message is deleted {} ({}).</p>",
            from_now(view.hold_expires_at, now),
            time_html(view.hold_expires_at)
        )
    } else {
        String::new()
    };
    let held = view.state == HeldState::Held;
    let heading = heading_for(state_word(view.state));
    let explain_hidden = if held { "" } else { " hidden" };
    document(
        &format!("Pay {} to deliver your message", sats(view.amount_sats)),
        &format!(
            "<h1 id=\"heading\">{heading}</h1>\n\
             <p id=\"explain\"{explain_hidden}><strong>{recipient}</strong> reads email from new senders once it is paid for. \
             Pay this Lightning invoice and your message is delivered at once.</p>\n\
             <p class=\"amount\">{amount}</p>\n{status}\n\
             <section id=\"pay\">\n{invoice}\n{deleted}\n</section>"
        ),
    )
}

/// The page's heading for a state word (the script sets the same ones).
fn heading_for(state: &str) -> &'static str {
    match state {
        "held" => "Your message is waiting",
        "delivered" => "Your message was delivered",
        _ => "Your message was not delivered",
    }
}

/// The JSON the pay page polls.
pub(super) fn status_json(view: &PayView) -> serde_json::Value {
    serde_json::json!({
        "state": state_word(view.state),
        "amount_sats": view.amount_sats,
        "recipient": view.recipient,
        "bolt11": view.bolt11,
        "invoice_expires_at": view.invoice_expires_at,
    })
}

/// `GET /pay/{token}`.
pub(super) async fn pay_page(
    State(state): State<HttpState>,
    Path(token): Path<String>,
) -> Response {
    if !plausible_token(&token) {
        return not_found(UNKNOWN_PAY_LINK);
    }
    match state.paywall.pay_view(&token).await {
        Ok(Some(view)) => html(
            StatusCode::OK,
            render_pay_page(&view, &token, crate::store::now()),
        ),
        Ok(None) => not_found(UNKNOWN_PAY_LINK),
        Err(e) => {
            tracing::error!(error = %e, "pay page: the paywall is unavailable");
            unavailable()
        }
    }
}

/// `GET /pay/{token}/status`.
pub(super) async fn pay_status(
    State(state): State<HttpState>,
    Path(token): Path<String>,
) -> Response {
    if !plausible_token(&token) {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "unknown"}),
        );
    }
    match state.paywall.pay_view(&token).await {
        Ok(Some(view)) => json(StatusCode::OK, status_json(&view)),
        Ok(None) => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "unknown"}),
        ),
        Err(e) => {
            tracing::error!(error = %e, "pay status: the paywall is unavailable");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": "unavailable"}),
            )
        }
    }
}

/// The confirmation page of `view`; `max_fee_msat` is the routing fee reserved with
/// the amount.
pub(super) fn render_confirm_page(view: &ConfirmView, max_fee_msat: u64) -> String {
    let amount = sats(view.amount_sats);
    let balance = view.balance_msat.div_euclid(1000);
    let balance_text = if balance < 0 {
        format!("-{}", sats(balance.unsigned_abs()))
    } else {
        sats(balance.unsigned_abs())
    };
    let fee_sats = max_fee_msat.div_ceil(1000);
    let needed = view
        .amount_sats
        .saturating_mul(1000)
        .saturating_add(max_fee_msat);
    let low = i128::from(view.balance_msat) < i128::from(needed);
    let fee = if fee_sats > 0 {
        format!(
            "<p class=\"muted\">A Lightning routing fee of at most {} is added; what is not spent stays in your balance.</p>\n",
            escape(&sats(fee_sats))
        )
    } else {
        String::new()
    };
    let warn = if low {
        "<p class=\"warn\">Your balance is too low for this payment. Top it up first, then press the button.</p>\n"
    } else {
        ""
    };
    let short: String = view.message_id.chars().take(16).collect();
    document(
        &format!("Pay {amount} to send your message"),
        &format!(
            "<h1>Confirm a payment</h1>\n\
             <p>The recipient's relay asks {amount_e} to accept your message <code>{short}</code>. \
             That is more than the bridge pays on its own, so the message waits for you.</p>\n\
             <dl><dt>Account</dt><dd>{user}</dd><dt>Price</dt><dd>{amount_e}</dd>\
             <dt>Your balance</dt><dd>{balance_e}</dd></dl>\n{fee}{warn}\
             <form id=\"confirm\" method=\"post\"><button type=\"submit\">Pay {amount_e} and send</button></form>\n\
             <p class=\"muted\">If you do nothing, the message is not sent.</p>",
            amount_e = escape(&amount),
            short = escape(&short),
            user = escape(&view.username),
            balance_e = escape(&balance_text),
        ),
    )
}

/// `GET /confirm/{token}`.
pub(super) async fn confirm_page(
    State(state): State<HttpState>,
    Path(token): Path<String>,
) -> Response {
    if !plausible_token(&token) {
        return not_found(UNKNOWN_CONFIRM_LINK);
    }
    match state.paywall.confirm_view(&token).await {
        Ok(Some(view)) => html(
            StatusCode::OK,
            render_confirm_page(&view, state.paywall.settings().max_fee_msat),
        ),
        Ok(None) => not_found(UNKNOWN_CONFIRM_LINK),
        Err(e) => {
            tracing::error!(error = %e, "confirm page: the paywall is unavailable");
            unavailable()
        }
    }
}

/// The status and plain words for a confirmation that failed.
fn confirm_error(e: &PaywallError) -> (StatusCode, String) {
    match e {
        PaywallError::Ledger(LedgerError::Insufficient { needed, available }) => (
            StatusCode::CONFLICT,
            format!(
                "Your balance is too low: this payment needs up to {} including the routing fee, \
                 and you have {}. Top up your balance, then open this link again.",
                sats(u64::try_from(*needed).unwrap_or(0).div_ceil(1000)),
                sats(u64::try_from((*available).max(0)).unwrap_or(0) / 1000),
            ),
        ),
        PaywallError::Invalid(why) => (
            StatusCode::BAD_REQUEST,
            format!("The payment was not made: {why}."),
        ),
        PaywallError::Lightning(LightningError::PaymentFailed(why)) => (
            StatusCode::BAD_GATEWAY,
            format!(
                "The payment failed: {why}. Nothing was taken from your balance; open this link again to retry."
            ),
        ),
        PaywallError::Lightning(LightningError::InvalidInvoice(why)) => (
            StatusCode::BAD_REQUEST,
            format!("The recipient's relay sent an invoice that cannot be paid: {why}."),
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The payment could not be made right now; nothing was taken from your balance. \
             Open this link again in a few minutes."
                .to_owned(),
        ),
    }
}

/// `POST /confirm/{token}`: pays, once.
pub(super) async fn confirm_submit(
    State(state): State<HttpState>,
    Path(token): Path<String>,
) -> Response {
    if !plausible_token(&token) {
        return not_found(UNKNOWN_CONFIRM_LINK);
    }
    let view = match state.paywall.confirm_view(&token).await {
        Ok(Some(view)) => view,
        Ok(None) => return not_found(UNKNOWN_CONFIRM_LINK),
        Err(e) => {
            tracing::error!(error = %e, "confirm: the paywall is unavailable");
            return unavailable();
        }
    };
    match state.paywall.confirm(&token).await {
        Ok(()) => {
            tracing::info!(user = %view.username, sats = view.amount_sats, "payment confirmed");
            message_page(
                StatusCode::OK,
                "Paid",
                &format!(
                    "{} were paid from your balance and your message is on its way.",
                    sats(view.amount_sats)
                ),
            )
        }
        Err(e) => {
            let (status, text) = confirm_error(&e);
            if status.is_server_error() {
                tracing::error!(user = %view.username, error = %e, "confirmed payment failed");
            } else {
                tracing::info!(user = %view.username, error = %e, "confirmed payment refused");
            }
            html(
                status,
                document(
                    "Not paid",
                    &format!(
                        "<h1>Not paid</h1>\n<p class=\"status error\">{}</p>\n\
                         <p><a href=\"{}\">Back to the payment</a></p>",
                        escape(&text),
                        escape(&token)
                    ),
                ),
            )
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::http::{HttpLimits, HttpState};
    use crate::lightning::dev::DevWallet;
    use crate::paywall::{Paywall, PaywallSettings};
    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use std::sync::Arc;
    use std::time::Duration;
    use tower::ServiceExt;

    /// A router over a real store, custody and paywall on the dev wallet, with the
    /// users alice and bob at example.com; pay links under https://pay.example.com.
    pub(in crate::http) struct TestApp {
        pub app: Router,
        pub state: HttpState,
        pub wallet: Arc<DevWallet>,
        _dir: tempfile::TempDir,
    }

    pub(in crate::http) async fn test_app() -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::config::Config::default();
        config.server.domain = "example.com".into();
        config.server.hostname = "mx.example.com".into();
        config.server.data_dir = dir.path().join("data");
        config.paywall.public_url = "https://pay.example.com/".into();
        let custody = crate::custody::open(&config).await.unwrap();
        let wallet = Arc::new(
            DevWallet::open(custody.store().clone(), custody.master_key())
                .await
                .unwrap(),
        );
        let paywall = Arc::new(Paywall::new(
            custody.clone(),
            wallet.clone(),
            PaywallSettings::from_config(&config),
        ));
        for name in ["alice", "bob"] {
            custody.add_user(name, "correct horse").await.unwrap();
        }
        let state = HttpState {
            custody,
            blobs: crate::blob::BlobStore::new(dir.path().join("blobs")),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            paywall,
        };
        let limits = HttpLimits {
            request_timeout: Duration::from_secs(30),
            max_connections: 16,
            shutdown_grace: Duration::from_secs(1),
        };
        TestApp {
            app: crate::http::router(state.clone(), &limits),
            state,
            wallet,
            _dir: dir,
        }
    }

    /// The status, headers and body of one request.
    pub(in crate::http) async fn call(
        app: &Router,
        method: &str,
        uri: &str,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = app
            .clone()
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(uri)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    fn view(state: HeldState) -> PayView {
        PayView {
            recipient: "al<i>ce@example.com".into(),
            amount_sats: 21_000,
            bolt11: "lnbcrt210u1pexample0invoice0text".into(),
            invoice_expires_at: 1_000 + 3600,
            state,
            hold_expires_at: 1_000 + 7 * 86_400,
        }
    }

    /// The text between `open` and the next `close` after it.
    fn between<'a>(page: &'a str, open: &str, close: &str) -> &'a str {
        let start = page.find(open).unwrap() + open.len();
        let end = start + page[start..].find(close).unwrap();
        &page[start..end]
    }

    fn assert_secure(headers: &axum::http::HeaderMap) {
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert!(csp.contains("form-action 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x" title='y'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(escape("plain é text"), "plain é text");
        assert_eq!(escape(""), "");
    }

    #[test]
    fn state_words() {
        assert_eq!(state_word(HeldState::Held), "held");
        assert_eq!(state_word(HeldState::Paid), "delivered");
        assert_eq!(state_word(HeldState::Accepted), "delivered");
        assert_eq!(state_word(HeldState::Refused), "refused");
        assert_eq!(state_word(HeldState::Expired), "expired");
        assert_eq!(status_text("delivered"), "Delivered \u{2014} thank you");
    }

    #[test]
    fn qr_is_an_inline_svg_of_the_uppercase_uri() {
        let bolt11 = "lnbcrt10u1pjexampleexampleexampleexampleexampleexampleexampleexample";
        let svg = qr_svg(bolt11).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.ends_with("</svg>"));
        assert!(svg.len() > 2000, "a QR code of {} bytes", svg.len());
        // Upper case keeps the code alphanumeric: no larger than the byte-mode one.
        let lower = qrcode::QrCode::new(format!("lightning:{bolt11}").as_bytes()).unwrap();
        let upper = qrcode::QrCode::new(
            format!("lightning:{bolt11}")
                .to_ascii_uppercase()
                .as_bytes(),
        )
        .unwrap();
        assert!(upper.width() < lower.width());
        assert!(qr_svg(&"x".repeat(8000)).is_none());
    }

    #[test]
    fn amounts_read_well() {
        assert_eq!(sats(0), "0 sats");
        assert_eq!(sats(1), "1 sat");
        assert_eq!(sats(999), "999 sats");
        assert_eq!(sats(21_000), "21,000 sats");
        assert_eq!(sats(1_234_567), "1,234,567 sats");
    }

    #[test]
    fn held_page_shows_the_invoice_and_polls() {
        let page = render_pay_page(&view(HeldState::Held), "abcdefgh234567ij", 1_000);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("21,000 sats"));
        assert!(page.contains("al&lt;i&gt;ce@example.com"));
        assert!(!page.contains("al<i>ce"));
        assert!(page.contains("data-state=\"held\""));
        assert!(page.contains("id=\"status\""));
        assert!(page.contains("data-poll=\"abcdefgh234567ij/status\""));
        assert!(page.contains("<svg"));
        assert!(page.contains("href=\"lightning:lnbcrt210u1pexample0invoice0text\""));
        assert!(page.contains(">lnbcrt210u1pexample0invoice0text</textarea>"));
        assert!(page.contains("id=\"copy\""));
        assert!(page.contains("Open in wallet"));
        assert!(page.contains("in about 60 minutes"));
        assert!(page.contains("datetime=\"1970-01-01T01:16:40Z\""));
        // Nothing from elsewhere.
        for fetches in ["src=", "<link", "url(", "@import"] {
            assert!(!page.contains(fetches), "{fetches}");
        }
    }

    #[test]
    fn finished_pages_show_no_invoice() {
        for (state, word, text) in [
            (HeldState::Paid, "delivered", "Delivered \u{2014} thank you"),
            (
                HeldState::Accepted,
                "delivered",
                "Delivered \u{2014} thank you",
            ),
            (
                HeldState::Refused,
                "refused",
                "The recipient declined this message",
            ),
            (
                HeldState::Expired,
                "expired",
                "This message was not paid for in time and was deleted",
            ),
        ] {
            let page = render_pay_page(&view(state), "abcdefgh234567ij", 1_000);
            assert!(
                page.contains(&format!("data-state=\"{word}\"")),
                "{state:?}"
            );
            assert!(page.contains(text), "{state:?}");
            assert!(!page.contains("<svg"), "{state:?}");
            assert!(!page.contains("lightning:"), "{state:?}");
        }
    }

    #[test]
    fn csp_allows_exactly_the_inline_style_and_script() {
        let page = render_pay_page(&view(HeldState::Held), "abcdefgh234567ij", 1_000);
        let style = between(&page, "<style>", "</style>");
        let script = between(&page, "<script>", "</script>");
        let csp = CSP.to_str().unwrap();
        assert!(
            csp.contains(&format!("style-src {};", csp_hash(style))),
            "{csp}"
        );
        assert!(
            csp.contains(&format!("script-src {};", csp_hash(script))),
            "{csp}"
        );
        assert!(csp.contains("connect-src 'self'"));
        assert_eq!(page.matches("<script").count(), 1);
        assert_eq!(page.matches("<style").count(), 1);
        // No inline handlers or style attributes, which the hashes would not allow.
        assert!(!page.contains(" style=") && !page.contains(" onclick="));
    }

    #[test]
    fn status_json_has_the_fields() {
        let j = status_json(&view(HeldState::Accepted));
        assert_eq!(j["state"], "delivered");
        assert_eq!(j["amount_sats"], 21_000);
        assert_eq!(j["recipient"], "al<i>ce@example.com");
        assert_eq!(j["bolt11"], "lnbcrt210u1pexample0invoice0text");
        assert_eq!(j["invoice_expires_at"], 4_600);
    }

    #[test]
    fn confirm_page_has_the_form() {
        let v = ConfirmView {
            username: "alice".into(),
            amount_sats: 500,
            balance_msat: 100_999,
            message_id: "00112233445566778899aabbccddeeff".into(),
        };
        let page = render_confirm_page(&v, 10_000);
        assert!(page.contains("<form id=\"confirm\" method=\"post\">"));
        assert!(page.contains("Pay 500 sats and send"));
        assert!(page.contains("<dd>100 sats</dd>"));
        assert!(page.contains("0011223344556677"));
        assert!(page.contains("at most 10 sats"));
        assert!(page.contains("too low"));
        let rich = ConfirmView {
            balance_msat: 510_000,
            ..v
        };
        assert!(!render_confirm_page(&rich, 10_000).contains("too low"));
    }

    #[test]
    fn confirm_errors_in_plain_words() {
        let (status, text) = confirm_error(&PaywallError::Ledger(LedgerError::Insufficient {
            needed: 510_000,
            available: 100_999,
        }));
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(
            text.contains("510 sats") && text.contains("100 sats"),
            "{text}"
        );
        let (status, _) = confirm_error(&PaywallError::Invalid("the invoice has expired".into()));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, text) = confirm_error(&PaywallError::Lightning(LightningError::Unreachable(
            "10.0.0.1:8080 refused".into(),
        )));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!text.contains("10.0.0.1"));
    }

    #[tokio::test]
    async fn unknown_tokens_are_404() {
        let t = test_app().await;
        for uri in ["/pay/abcdefghijklmnop", "/pay/not%20a%20token"] {
            let (status, headers, body) = call(&t.app, "GET", uri).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert_secure(&headers);
            assert!(
                headers[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html")
            );
            assert!(body.starts_with("<!DOCTYPE html>") && body.contains("unknown"));
        }
        let (status, headers, body) = call(&t.app, "GET", "/pay/abcdefghijklmnop/status").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_secure(&headers);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"error": "unknown"})
        );
        for method in ["GET", "POST"] {
            let (status, headers, body) = call(&t.app, method, "/confirm/abcdefghijklmnop").await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
            assert_secure(&headers);
            assert!(body.contains("used already"), "{method}");
        }
        t.state.custody.store().close().await;
    }
}
