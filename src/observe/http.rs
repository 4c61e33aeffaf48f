//! The observability listener (`[observability] listen`): `/metrics`
//! (Prometheus text, OpenMetrics flavour), `/healthz` (the daemon's loops
//! are alive) and `/readyz` (every configured table is audited; else 503
//! with a JSON body naming each table that is not, and why). Also the
//! client side of `ddb-audit healthcheck`, for images without curl.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::Observer;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("`observability.listen` = {addr:?}: cannot listen there: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot reach ddb-audit at http://{addr}{path}: {message} (is `ddb-audit run` up, with the same [observability] listen?)")]
    Unreachable {
        addr: SocketAddr,
        path: String,
        message: String,
    },
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn router(observer: &'static Observer) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(observer)
}

async fn metrics(State(o): State<&'static Observer>) -> Response {
    ([(header::CONTENT_TYPE, OPENMETRICS)], o.render()).into_response()
}

async fn healthz(State(o): State<&'static Observer>) -> Response {
    if o.alive() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "stopped\n").into_response()
    }
}

async fn readyz(State(o): State<&'static Observer>) -> Response {
    let r = o.readiness();
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(r)).into_response()
}

/// Binds the listener now, so a bad address fails `run` at once.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, HttpError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Serves until `stop` is cancelled.
pub fn spawn(
    listener: tokio::net::TcpListener,
    observer: &'static Observer,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let addr = listener.local_addr().ok();
    tracing::info!(listen = ?addr, "observability listener: /metrics /healthz /readyz");
    tokio::spawn(async move {
        let served = axum::serve(listener, router(observer))
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "observability listener failed");
        }
    })
}

/// Where a client reaches a listener bound to `listen`: an unspecified
/// address (0.0.0.0, ::) is reached on loopback.
pub fn client_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// GET `path` from a listener bound to `listen`: the status code and body.
/// Plain HTTP/1.1 on a socket, so the image needs no HTTP client.
pub async fn get_status(
    listen: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), HttpError> {
    let addr = client_addr(listen);
    let fail = |message: String| HttpError::Unreachable {
        addr,
        path: path.to_string(),
        message,
    };
    let exchange = async {
        let mut socket = tokio::net::TcpStream::connect(addr).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ddb-audit-healthcheck\r\nConnection: close\r\n\r\n"
        );
        socket.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        socket.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| fail(format!("no answer within {timeout:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| fail("not an HTTP response".into()))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readyz_is_503_naming_the_table_until_it_is_audited() {
        let o: &'static Observer = Box::leak(Box::new(Observer::new()));
        o.register_tables(&["orders".into()], Duration::from_secs(30));
        o.set_alive(true);
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = spawn(listener, o, stop.clone());
        let t = Duration::from_secs(5);
        let (code, body) = get_status(addr, "/readyz", t).await.unwrap();
        assert_eq!(code, 503);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["tables"][0]["table"], "orders");
        assert_eq!(v["tables"][0]["ready"], false);
        super::super::Event::emit_to(
            super::super::TableStateChanged {
                table: "orders",
                state: &crate::observe::health::TableState::Auditing,
            },
            o,
        );
        assert_eq!(get_status(addr, "/readyz", t).await.unwrap().0, 200);
        assert_eq!(get_status(addr, "/healthz", t).await.unwrap().0, 200);
        let (code, metrics) = get_status(addr, "/metrics", t).await.unwrap();
        assert_eq!(code, 200);
        assert!(metrics.contains("ddb_audit_records_read_total{table=\"orders\"} 0"));
        o.set_alive(false);
        assert_eq!(get_status(addr, "/healthz", t).await.unwrap().0, 503);
        stop.cancel();
        task.await.unwrap();
        assert!(matches!(
            get_status(addr, "/readyz", t).await,
            Err(HttpError::Unreachable { .. })
        ));
    }

    #[test]
    fn unspecified_listen_addresses_are_reached_on_loopback() {
        assert_eq!(
            client_addr("0.0.0.0:9090".parse().unwrap()),
            "127.0.0.1:9090".parse().unwrap()
        );
        assert_eq!(
            client_addr("[::]:9090".parse().unwrap()),
            "[::1]:9090".parse().unwrap()
        );
        assert_eq!(
            client_addr("10.0.0.5:9090".parse().unwrap()),
            "10.0.0.5:9090".parse().unwrap()
        );
    }
}
