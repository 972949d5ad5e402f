//! `GET /.well-known/lnmp.json?name=<user>`: the address lookup of docs/PROTOCOL.md §4.
//! Open to any origin (CORS), never redirected.

use super::HttpState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

#[derive(Deserialize)]
pub(super) struct LookupQuery {
    name: Option<String>,
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

pub(super) async fn lookup(
    State(state): State<HttpState>,
    query: Result<Query<LookupQuery>, QueryRejection>,
) -> Response {
    let Some(name) = query.ok().and_then(|q| q.0.name) else {
        return answer(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "the name parameter is required"}),
        );
    };
    let name = name.to_ascii_lowercase();
    if let Err(e) = crate::lnmp::address::validate_username(&name) {
        return answer(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": e.to_string()}),
        );
    }
    match state.custody.lookup(&name).await {
        Ok(Some(doc)) => answer(
            StatusCode::OK,
            serde_json::to_value(&doc).unwrap_or_default(),
        ),
        Ok(None) => answer(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "no such user"}),
        ),
        Err(e) => {
            tracing::error!(error = %e, "lookup failed");
            answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"error": "lookup failed"}),
            )
        }
    }
}
