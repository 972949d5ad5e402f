//! The Lightning Address of every user (LUD-16 over LUD-06's payRequest). This module
//! owns:
//!
//! - `GET /.well-known/lnurlp/{username}`: the payRequest of `username@domain`, with
//!   the callback, the amounts accepted and the metadata.
//! - `GET /lnurlp/{username}/callback?amount=<msat>`: a deposit invoice for that many
//!   millisatoshis, whose description hash is the SHA-256 of the exact metadata string
//!   the payRequest served ([`metadata`] makes both). Paid, it credits the user's
//!   balance (see [`crate::paywall::Paywall::deposit_invoice`]).
//!
//! Errors are LNURL's `{"status":"ERROR","reason":...}`. Both answers are open to any
//! origin, as web wallets fetch them.

use super::HttpState;
use crate::custody::UserInfo;
use crate::lightning::Description;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The smallest payment accepted: 1 sat.
pub(super) const MIN_SENDABLE_MSAT: u64 = 1_000;
/// The largest payment accepted: 1 BTC.
pub(super) const MAX_SENDABLE_MSAT: u64 = 100_000_000_000;

/// The LUD-06 metadata of a payment to `email`: a JSON array of `[mime, content]`
/// pairs, as a string. The payRequest serves it and the callback's invoice commits to
/// its SHA-256, so both must come from here.
pub(super) fn metadata(email: &str) -> String {
    serde_json::json!([
        ["text/plain", format!("Payment to {email}")],
        ["text/identifier", email],
    ])
    .to_string()
}

/// What a callback invoice commits to.
pub(super) fn description(metadata: &str) -> Description {
    Description::Hash(Sha256::digest(metadata.as_bytes()).into())
}

fn callback_url(public_url: &str, username: &str) -> String {
    format!(
        "{}/lnurlp/{username}/callback",
        public_url.trim_end_matches('/')
    )
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn error(status: StatusCode, reason: &str) -> Response {
    answer(
        status,
        serde_json::json!({"status": "ERROR", "reason": reason}),
    )
}

/// The user a Lightning Address names, or the answer to give instead: 404 for a name
/// that is not a valid user name or not a user here, 503 when the store fails.
async fn user(state: &HttpState, username: &str) -> Result<UserInfo, Response> {
    let name = username.to_ascii_lowercase();
    if crate::lnmp::address::validate_username(&name).is_err() {
        return Err(error(StatusCode::NOT_FOUND, "no such user"));
    }
    match state.paywall.custody().find_user(&name).await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(error(StatusCode::NOT_FOUND, "no such user")),
        Err(e) => {
            tracing::error!(error = %e, "lightning address: cannot look up the user");
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily unavailable, try again later",
            ))
        }
    }
}

/// `GET /.well-known/lnurlp/{username}`.
pub(super) async fn pay_request(
    State(state): State<HttpState>,
    Path(username): Path<String>,
) -> Response {
    let user = match user(&state, &username).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    answer(
        StatusCode::OK,
        serde_json::json!({
            "tag": "payRequest",
            "callback": callback_url(&state.paywall.settings().public_url, &user.username),
            "minSendable": MIN_SENDABLE_MSAT,
            "maxSendable": MAX_SENDABLE_MSAT,
            "metadata": metadata(&user.email),
            "commentAllowed": 0,
        }),
    )
}

#[derive(Deserialize)]
pub(super) struct CallbackQuery {
    amount: Option<String>,
}

/// The amount a callback asks for, in millisatoshis, or why it cannot be paid.
pub(super) fn parse_amount(amount: Option<&str>) -> Result<u64, String> {
    let Some(amount) = amount else {
        return Err("the amount parameter (millisatoshis) is required".into());
    };
    let msat: u64 = amount
        .parse()
        .map_err(|_| format!("the amount {amount:?} is not a whole number of millisatoshis"))?;
    if !(MIN_SENDABLE_MSAT..=MAX_SENDABLE_MSAT).contains(&msat) {
        return Err(format!(
            "the amount must be between {MIN_SENDABLE_MSAT} and {MAX_SENDABLE_MSAT} millisatoshis"
        ));
    }
    Ok(msat)
}

/// `GET /lnurlp/{username}/callback?amount=<msat>`.
pub(super) async fn callback(
    State(state): State<HttpState>,
    Path(username): Path<String>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
) -> Response {
    let user = match user(&state, &username).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let amount = query.ok().and_then(|q| q.0.amount);
    let msat = match parse_amount(amount.as_deref()) {
        Ok(msat) => msat,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    if !state.paywall.address_invoice_allowed() {
        tracing::warn!(user = %user.username, "lightning address: invoice rate limit reached");
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many invoices asked for; try again in a minute",
        );
    }
    let metadata = metadata(&user.email);
    match state
        .paywall
        .deposit_invoice(&user, msat, description(&metadata))
        .await
    {
        Ok(invoice) => {
            tracing::info!(user = %user.username, msat, "lightning address invoice issued");
            answer(
                StatusCode::OK,
                serde_json::json!({"pr": invoice.bolt11, "routes": []}),
            )
        }
        Err(e) => {
            tracing::error!(user = %user.username, error = %e, "lightning address: cannot make an invoice");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot make an invoice right now, try again later",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::pay::tests::{call, test_app};

    #[test]
    fn metadata_is_lud06() {
        let m = metadata("alice@example.com");
        assert_eq!(
            m,
            r#"[["text/plain","Payment to alice@example.com"],["text/identifier","alice@example.com"]]"#
        );
        let parsed: Vec<Vec<String>> = serde_json::from_str(&m).unwrap();
        assert!(parsed.iter().all(|pair| pair.len() == 2));
        assert!(parsed.contains(&vec![
            "text/identifier".to_owned(),
            "alice@example.com".to_owned()
        ]));
        // Quotes in what it carries stay inside their JSON strings.
        let odd: serde_json::Value = serde_json::from_str(&metadata("a\"b@example.com")).unwrap();
        assert_eq!(odd[1][1], "a\"b@example.com");
    }

    #[test]
    fn amounts() {
        assert_eq!(parse_amount(Some("1000")), Ok(1000));
        assert_eq!(parse_amount(Some("100000000000")), Ok(100_000_000_000));
        for bad in [
            None,
            Some("999"),
            Some("100000000001"),
            Some("-5"),
            Some("1e6"),
            Some(""),
        ] {
            assert!(parse_amount(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn callback_urls() {
        assert_eq!(
            callback_url("https://pay.example.com", "alice"),
            "https://pay.example.com/lnurlp/alice/callback"
        );
        assert_eq!(
            callback_url("https://pay.example.com/", "alice"),
            "https://pay.example.com/lnurlp/alice/callback"
        );
    }

    #[tokio::test]
    async fn pay_request_then_callback_then_paid() {
        let t = test_app().await;
        let (status, headers, body) = call(&t.app, "GET", "/.well-known/lnurlp/Alice").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let req: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(req["tag"], "payRequest");
        assert_eq!(
            req["callback"],
            "https://pay.example.com/lnurlp/alice/callback"
        );
        assert_eq!(req["minSendable"], 1000);
        assert_eq!(req["maxSendable"], 100_000_000_000u64);
        assert_eq!(req["commentAllowed"], 0);
        let meta = req["metadata"].as_str().unwrap().to_owned();
        assert_eq!(meta, metadata("alice@example.com"));

        let (status, _, body) = call(&t.app, "GET", "/lnurlp/alice/callback?amount=21000").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let cb: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(cb["routes"], serde_json::json!([]));
        let pr = cb["pr"].as_str().unwrap();
        let decoded = crate::lightning::decode(pr).unwrap();
        assert_eq!(decoded.amount_msat, Some(21_000));
        let expected: [u8; 32] = Sha256::digest(meta.as_bytes()).into();
        assert_eq!(decoded.description, Description::Hash(expected));

        // Paying it credits alice.
        let alice = t.state.custody.user("alice").await.unwrap();
        assert_eq!(t.state.paywall.balance(&alice).await.unwrap(), 0);
        t.wallet.present(pr).await.unwrap();
        t.state.paywall.settle_paid().await.unwrap();
        assert_eq!(t.state.paywall.balance(&alice).await.unwrap(), 21_000);
        t.state.custody.store().close().await;
    }

    #[tokio::test]
    async fn bad_amounts_are_400() {
        let t = test_app().await;
        for query in [
            "",
            "?amount=999",
            "?amount=100000000001",
            "?amount=lots",
            "?amount=1&amount=2",
        ] {
            let (status, _, body) =
                call(&t.app, "GET", &format!("/lnurlp/bob/callback{query}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
            let j: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(j["status"], "ERROR", "{query}");
            assert!(j["reason"].as_str().is_some_and(|r| !r.is_empty()));
        }
        t.state.custody.store().close().await;
    }

    #[tokio::test]
    async fn unknown_users_are_404() {
        let t = test_app().await;
        for uri in [
            "/.well-known/lnurlp/carol",
            "/.well-known/lnurlp/-alice",
            "/.well-known/lnurlp/al%20ice",
            "/lnurlp/carol/callback?amount=1000",
            "/lnurlp/al!ce/callback?amount=1000",
        ] {
            let (status, _, body) = call(&t.app, "GET", uri).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&body).unwrap(),
                serde_json::json!({"status": "ERROR", "reason": "no such user"}),
                "{uri}"
            );
        }
        t.state.custody.store().close().await;
    }
}
