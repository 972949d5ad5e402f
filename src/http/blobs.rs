//! `GET /ipfs/<cid>`: the encrypted blobs attachments point at, as an IPFS path gateway
//! would serve them. The bytes are ciphertext; only a holder of the message's key can
//! read them, and the CID lets any client check it got the right bytes.

use super::HttpState;
use crate::lnmp::BlobId;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub(super) async fn blob(State(state): State<HttpState>, Path(cid): Path<String>) -> Response {
    let Ok(id) = cid.parse::<BlobId>() else {
        return (StatusCode::BAD_REQUEST, "not a CIDv1 raw sha2-256\n").into_response();
    };
    match state.blobs.get(&id).await {
        Ok(Some(bytes)) => {
            let mut r = bytes.into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            // Content-addressed: the bytes behind a CID never change.
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("\"{id}\"")) {
                h.insert(header::ETAG, v);
            }
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            r
        }
        Ok(None) => (StatusCode::NOT_FOUND, "no such blob\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "blob store unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "blob store unavailable\n").into_response()
        }
    }
}
