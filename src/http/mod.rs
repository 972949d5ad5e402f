//! The HTTP front, on one port: the address lookup, encrypted blobs, health, metrics,
//! the paywall's pages (the pay page of held mail and its live status, the page where a
//! user confirms paying above their auto-pay cap) and every user's Lightning Address
//! (LNURL-pay). HTTPS with the daemon's certificate by default; plain HTTP when a
//! reverse proxy terminates TLS.

pub mod autoconfig;
mod blobs;
mod lnurl;
mod lookup;
mod pay;

use crate::custody::Custody;
use crate::metrics::{HttpLabels, Metrics};
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[derive(Clone)]
pub struct HttpState {
    pub custody: Custody,
    pub blobs: crate::blob::BlobStore,
    pub metrics: Arc<Metrics>,
    pub paywall: Arc<crate::paywall::Paywall>,
}

/// Limits of the HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

pub fn router(state: HttpState, limits: &HttpLimits) -> Router {
    let timeout = limits.request_timeout;
    Router::new()
        .route("/.well-known/lnmp.json", get(lookup::lookup))
        .route("/ipfs/{cid}", get(blobs::blob))
        .route("/pay/{token}", get(pay::pay_page))
        .route("/pay/{token}/status", get(pay::pay_status))
        .route(
            "/confirm/{token}",
            get(pay::confirm_page).post(pay::confirm_submit),
        )
        .route("/.well-known/lnurlp/{username}", get(lnurl::pay_request))
        .route("/lnurlp/{username}/callback", get(lnurl::callback))
        .route(autoconfig::PATHS[0], get(autoconfig::config_v11))
        .route(autoconfig::PATHS[1], get(autoconfig::config_v11))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(middleware::from_fn(
            move |req: Request, next: Next| async move {
                match tokio::time::timeout(timeout, next.run(req)).await {
                    Ok(r) => r,
                    Err(_) => (StatusCode::REQUEST_TIMEOUT, "request timed out\n").into_response(),
                }
            },
        ))
        .with_state(state)
}

async fn count_requests(State(state): State<HttpState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let response = next.run(req).await;
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn healthz(State(state): State<HttpState>) -> Response {
    match sqlx::query("SELECT 1")
        .execute(state.custody.store().pool())
        .await
    {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    if let Ok(n) = crate::store::users::count(state.custody.store()).await {
        state.metrics.users.set(n);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Accepts connections until `shutdown` is cancelled, then lets in-flight requests
/// finish for up to the grace period.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        // Hold a slot before accepting, so excess clients wait in the kernel's queue.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let Some((tcp, peer)) = crate::net::accept(&listener, &shutdown, "http").await else {
            break;
        };
        let app = app.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let span = tracing::info_span!("http", %peer);
        tokio::spawn(
            async move {
                let _permit = permit;
                match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(stream)) => serve_connection(stream, app, watcher).await,
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                    None => serve_connection(tcp, app, watcher).await,
                }
            }
            .instrument(span),
        );
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the grace period; closing them");
    }
}

async fn serve_connection<I>(io: I, app: Router, watcher: hyper_util::server::graceful::Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    // Slow clients may not hold a connection open by trickling headers.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(20));
    let service = TowerToHyperService::new(app);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}
