//! The web page: hand-written HTML, CSS and JS compiled into the binary, so
//! nothing is fetched from anywhere else and the page works offline behind
//! any proxy. It holds no data; everything comes from `/api/` with the token.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");
const ICON: &str = include_str!("ui/icon.svg");

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse + Clone {
    ([(header::CONTENT_TYPE, content_type)], body)
}

pub fn routes() -> Router {
    let page = asset("text/html; charset=utf-8", INDEX);
    Router::new()
        .route("/", get(move || async move { page }))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/icon.svg", get(|| async { asset("image/svg+xml", ICON) }))
}
