//! `ddb-audit serve`: the read-only HTTP API over the audit trail and the web
//! page that reads it, in one process apart from `run` (it needs only the
//! auditors' read role).
//!
//! Security model: every `/api/` request carries a bearer token, known here
//! only by its SHA-256 digest ([`auth`]); the page itself is static and holds
//! no data. Responses carry a strict CSP (no inline script, nothing from
//! elsewhere, no framing) and nosniff; CORS is off unless origins are
//! configured. The listener speaks plain HTTP on loopback by default: TLS is
//! the load balancer's (or a sidecar proxy's) job.

pub mod api;
pub mod auth;
pub mod cursor;
mod ui;

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, MethodRouter};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use crate::config::{Config, Serve};
use crate::proof::sign::PublicKey;
use crate::proof::ProofError;
use crate::read::verify::EvidenceStore;
use crate::store::{CheckpointStore, ReadStore};

pub use auth::{Principal, Tokens, TOKENS_ENV};

/// The OpenAPI document served at `/api/openapi.json`; a test keeps it and
/// [`api_routes`] in step.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every response's Content-Security-Policy: scripts, styles and calls only
/// from this origin, no inline code, no plugins, no framing.
pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// What the handlers share.
pub struct App<S> {
    pub store: S,
    pub serve: Serve,
    /// The configured (audited) tables, for status and the page's table list.
    pub tables: Vec<String>,
    /// `[attribution] actor_attribute`: what a revert plan's `actor` writes.
    pub actor_attribute: Option<String>,
    pub verify: Verifier,
}

/// What `/api/verify` checks with, and the one check that may run at once.
pub struct Verifier {
    /// Checks the digests' signatures; `None`: the answer says they were not.
    pub public_key: Option<PublicKey>,
    /// `[proof] digest_interval_secs`: how stale a digest may be.
    pub interval_secs: u64,
    /// A verify holds its tables' evidence in memory (the library reads the
    /// trail in one pass); one at a time keeps `serve`'s memory to one trail's
    /// worth however many readers press the button.
    running: tokio::sync::Mutex<()>,
}

impl Verifier {
    pub fn new(public_key: Option<PublicKey>, interval_secs: u64) -> Verifier {
        Verifier {
            public_key,
            interval_secs,
            running: tokio::sync::Mutex::new(()),
        }
    }
}

impl Default for Verifier {
    fn default() -> Verifier {
        Verifier::new(None, crate::config::Proof::default().digest_interval_secs)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Auth(#[from] auth::AuthConfigError),
    #[error("cannot listen on {addr} ([serve] listen): {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid [serve] cors_origins entry {0:?}")]
    Cors(String),
    #[error("{0} (serve checks digests with it for /api/verify)")]
    Key(#[from] ProofError),
}

/// The API's routes, path → handler. The router is built from this list and
/// the OpenAPI document is checked against it, so neither can drift.
pub fn api_routes<S>() -> Vec<(&'static str, MethodRouter<Arc<App<S>>>)>
where
    S: ReadStore + CheckpointStore + EvidenceStore,
{
    vec![
        ("/api/history", get(api::history::<S>)),
        ("/api/query", get(api::query::<S>)),
        ("/api/item", get(api::item::<S>)),
        ("/api/diff", get(api::diff::<S>)),
        ("/api/revert", get(api::revert::<S>)),
        ("/api/gaps", get(api::gaps::<S>)),
        ("/api/status", get(api::status::<S>)),
        ("/api/verify", get(api::verify::<S>)),
        ("/api/whoami", get(api::whoami::<S>)),
        ("/api/openapi.json", get(api::openapi)),
    ]
}

/// The whole HTTP surface: the API behind the token check, the page, and the
/// security headers on everything.
pub fn router<S>(app: Arc<App<S>>, tokens: Arc<Tokens>) -> Result<Router, ServeError>
where
    S: ReadStore + CheckpointStore + EvidenceStore,
{
    let mut api = Router::new();
    for (path, route) in api_routes::<S>() {
        api = api.route(path, route);
    }
    let api = api
        .fallback(|| async {
            api::ApiError {
                status: axum::http::StatusCode::NOT_FOUND,
                message: "no such API endpoint; see /api/openapi.json".into(),
            }
        })
        .layer(middleware::from_fn(log_request))
        .layer(middleware::from_fn_with_state(tokens, auth::require_token))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .with_state(app.clone());
    let mut router =
        Router::new()
            .merge(ui::routes())
            .merge(api)
            .layer(TimeoutLayer::with_status_code(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                app.serve.request_timeout(),
            ));
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ] {
        router = router.layer(SetResponseHeaderLayer::overriding(
            name,
            HeaderValue::from_static(value),
        ));
    }
    if !app.serve.cors_origins.is_empty() {
        let origins = app
            .serve
            .cors_origins
            .iter()
            .map(|o| HeaderValue::from_str(o).map_err(|_| ServeError::Cors(o.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET])
                .allow_headers([header::AUTHORIZATION]),
        );
    }
    Ok(router)
}

/// Logs each authenticated API request with the token's name (never the
/// token): the trail's readers are audited too.
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let who = request
        .extensions()
        .get::<Principal>()
        .map(|p| p.name.clone())
        .unwrap_or_default();
    let table = request.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("table="))
            .map(str::to_string)
    });
    let response = next.run(request).await;
    tracing::info!(
        token = %who,
        method = %method,
        path = %path,
        table = table.as_deref().unwrap_or(""),
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "api request"
    );
    response
}

/// Serves until `shutdown` completes, then lets in-flight requests finish
/// for at most `grace` and returns. `public_key` checks the digests for
/// `/api/verify`, found as `ddb-audit verify` finds it (the binary resolves
/// it: a PEM file, or KMS GetPublicKey).
pub async fn serve<S>(
    config: &Config,
    store: S,
    public_key: Option<PublicKey>,
    env_tokens: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError>
where
    S: ReadStore + CheckpointStore + EvidenceStore,
{
    let tokens = Arc::new(Tokens::new(&config.serve, env_tokens)?);
    // Patterns are not tables: the ones found so far (a restart of `serve`
    // shows tables found since). Unreadable now: the exact names alone.
    let tables = match crate::report::known_tables(config, &store).await {
        Ok(tables) => tables,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the tables the daemon found; serving the configured names");
            config.exact_tables()
        }
    };
    let app = Arc::new(App {
        store,
        serve: config.serve.clone(),
        tables,
        actor_attribute: config.attribution.actor_attribute.clone(),
        verify: Verifier::new(public_key, config.proof.digest_interval_secs),
    });
    let router = router(app, tokens)?;
    let addr = config.serve.listen.clone();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = listener.local_addr()?;
    tracing::info!(listen = %local, "serving the audit trail API and page on http://{local}/");
    let grace = Duration::from_millis(config.shutdown.grace_ms);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    });
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result?,
        _ = async {
            let _ = stopping_rx.await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "requests still running after the grace time; stopping anyway");
        }
    }
    tracing::info!("serve stopped");
    Ok(())
}

#[cfg(test)]
mod tests;
