//! The router in process, over the memory store: auth, headers, paging,
//! scopes, and the OpenAPI document against the routes.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tower::ServiceExt as _;

use super::*;
use crate::config::ServeToken;
use crate::entry::AuditEntry;
use crate::store::memory::MemoryStore;
use crate::store::AuditStore as _;

const TOKEN: &str = "s3cret-token";
const SCOPED: &str = "only-flags";

fn digest(t: &str) -> String {
    hex::encode(Sha256::digest(t.as_bytes()))
}

/// Built from its JSON form, so fields other branches add keep their defaults.
fn entry(table: &str, pk: &str, seq: u64) -> AuditEntry {
    let mut change = serde_json::json!({"path": "balance", "new": {"N": seq.to_string()}});
    if seq > 1 {
        change["old"] = serde_json::json!({"N": (seq - 1).to_string()});
    }
    let mut e: AuditEntry = serde_json::from_value(serde_json::json!({
        "table": table,
        "key": {"pk": {"S": pk}},
        "event": if seq == 1 { "INSERT" } else { "MODIFY" },
        "sequence_number": format!("{}", 1000 + seq),
        "shard_id": "shardId-0001",
        "event_time": format!("2026-11-23T19:{:02}:{:02}Z", seq / 60, seq % 60),
        "actor": if seq % 2 == 0 { "alice" } else { "bob" },
        "changes": [change],
    }))
    .unwrap();
    e.stream_arn = format!("arn:aws:dynamodb:us-east-1:1:table/{table}/stream/L");
    e
}

async fn store(entries: usize) -> MemoryStore {
    let store = MemoryStore::new();
    for seq in 1..=entries as u64 {
        store.put_entry(&entry("orders", "u1", seq)).await.unwrap();
    }
    store.put_entry(&entry("flags", "f1", 1)).await.unwrap();
    store
}

async fn app(entries: usize) -> Router {
    app_over(store(entries).await)
}

fn app_over(store: MemoryStore) -> Router {
    let serve = Serve {
        token_sha256: vec![digest(TOKEN)],
        tokens: vec![ServeToken {
            name: "flags-reader".into(),
            sha256: digest(SCOPED),
            tables: Some(vec!["flags".into()]),
        }],
        page_size: 7,
        ..Serve::default()
    };
    let tokens = Arc::new(Tokens::new(&serve, None).unwrap());
    let app = Arc::new(App {
        store,
        serve,
        tables: vec!["orders".into(), "flags".into()],
        actor_attribute: Some("updated_by".into()),
        verify: Verifier::default(),
    });
    router(app, tokens).unwrap()
}

async fn get(
    router: &Router,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let mut req = Request::get(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body, headers)
}

/// `get` with the full token, which must answer 200: the body.
async fn get_ok(router: &Router, uri: &str) -> Value {
    let (s, body, _) = get(router, uri, Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body
}

/// The text `field` of each object in the JSON array `list`.
fn each<'a>(list: &'a Value, field: &'a str) -> impl Iterator<Item = &'a str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(move |v| v[field].as_str().unwrap())
}

#[tokio::test]
async fn api_needs_a_known_bearer_token() {
    let r = app(3).await;
    let uri = "/api/history?table=orders&key=pk%3DS%3Au1";
    let (s, body, h) = get(&r, uri, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(body["error"].as_str().unwrap().contains("Bearer"));
    assert!(h["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    assert_eq!(
        get(&r, uri, Some("wrong")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&r, uri, Some(&digest(TOKEN))).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, body, _) = get(&r, uri, Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["entries"].as_array().unwrap().len(), 3);
    assert_eq!(body["next"], Value::Null);
    // Unknown API paths are behind the check too, then 404.
    assert_eq!(get(&r, "/api/nope", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&r, "/api/nope", Some(TOKEN)).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let r = app(1).await;
    for (uri, token) in [
        ("/", None),
        ("/app.js", None),
        ("/api/whoami", Some(TOKEN)),
        ("/api/whoami", None),
    ] {
        let (_, _, h) = get(&r, uri, token).await;
        assert_eq!(h["content-security-policy"], CSP, "{uri}");
        assert!(CSP.contains("frame-ancestors 'none'") && !CSP.contains("unsafe-inline"));
        assert_eq!(h["x-content-type-options"], "nosniff", "{uri}");
        assert!(
            !h.contains_key("access-control-allow-origin"),
            "CORS is off by default"
        );
    }
}

#[tokio::test]
async fn cursor_paging_returns_every_entry_exactly_once_in_either_order() {
    let r = app(23).await;
    for order in ["asc", "desc"] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut uri = format!("/api/history?table=orders&key=pk%3DS%3Au1&order={order}");
            if let Some(c) = &cursor {
                uri.push_str(&format!("&cursor={c}"));
            }
            let body = get_ok(&r, &uri).await;
            pages += 1;
            for e in body["entries"].as_array().unwrap() {
                seen.push(
                    e["sequence_number"]
                        .as_str()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap(),
                );
            }
            match body["next"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(pages, 4, "23 entries in pages of 7");
        let mut expected: Vec<u64> = (1001..=1023).collect();
        if order == "desc" {
            expected.reverse();
        }
        assert_eq!(seen, expected, "{order}");
    }
    // A cursor only pages the request that made it.
    let (_, body, _) = get(&r, "/api/history?table=orders&key=pk%3DS%3Au1", Some(TOKEN)).await;
    let c = body["next"].as_str().unwrap();
    let (s, body, _) = get(
        &r,
        &format!("/api/history?table=orders&key=pk%3DS%3Au2&cursor={c}"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("different request"),
        "{body}"
    );
}

#[tokio::test]
async fn bad_parameters_are_named() {
    let r = app(1).await;
    for (uri, needle) in [
        ("/api/history?key=pk%3DS%3Au1", "`table` is required"),
        ("/api/history?table=orders", "`key` is required"),
        ("/api/history?table=orders&key=pk%3DX%3A1", "key=pk=X:1"),
        (
            "/api/history?table=orders&key=pk%3DS%3Au1&limit=0",
            "`limit=0`",
        ),
        (
            "/api/history?table=orders&key=pk%3DS%3Au1&order=up",
            "`order=up`",
        ),
        (
            "/api/history?table=orders&key=pk%3DS%3Au1&colour=red",
            "`colour`",
        ),
        (
            "/api/history?table=orders&key=pk%3DS%3Au1&cursor=zzz",
            "`cursor`",
        ),
    ] {
        let (s, body, _) = get(&r, uri, Some(TOKEN)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{uri}: {body}"
        );
    }
}

#[tokio::test]
async fn a_scoped_token_reads_only_its_tables() {
    let r = app(2).await;
    let (s, body, _) = get(
        &r,
        "/api/history?table=orders&key=pk%3DS%3Au1",
        Some(SCOPED),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(body["error"].as_str().unwrap().contains("flags-reader"));
    let (s, body, _) = get(&r, "/api/history?table=flags&key=pk%3DS%3Af1", Some(SCOPED)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["entries"][0]["table"], "flags");
    let (_, me, _) = get(&r, "/api/whoami", Some(SCOPED)).await;
    assert_eq!(me["name"], "flags-reader");
    assert_eq!(me["tables"], serde_json::json!(["flags"]));
    let (_, status, _) = get(&r, "/api/status", Some(SCOPED)).await;
    let tables: Vec<&str> = each(&status["tables"], "table").collect();
    assert_eq!(tables, ["flags"]);
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_and_each_answers() {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let routed: BTreeSet<String> = api_routes::<MemoryStore>()
        .iter()
        .map(|(p, _)| p.to_string())
        .collect();
    assert_eq!(documented, routed);
    let r = app(1).await;
    for path in &documented {
        let (s, _, _) = get(&r, path, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path} without a token");
        let (s, body, _) = get(&r, path, Some(TOKEN)).await;
        let ok = doc["paths"][path]["get"]["responses"]
            .get(s.as_str())
            .is_some();
        assert!(
            ok && s != StatusCode::NOT_FOUND,
            "{path}: {s} is not a documented answer: {body}"
        );
    }
}

#[tokio::test]
async fn query_item_diff_and_revert_answer_as_the_commands_print() {
    let r = app(5).await;
    // query across items: bob's entries (odd sequence numbers) in orders.
    let mut page = get_ok(&r, "/api/query?table=orders&actor=bob&page_size=2").await;
    let mut seqs: Vec<String> = Vec::new();
    loop {
        for e in page["entries"].as_array().unwrap() {
            assert_eq!(e["actor"], "bob");
            seqs.push(e["sequence_number"].as_str().unwrap().to_string());
        }
        let Some(c) = page["next"].as_str() else {
            break;
        };
        page = get_ok(
            &r,
            &format!("/api/query?table=orders&actor=bob&page_size=2&cursor={c}"),
        )
        .await;
    }
    assert_eq!(seqs, ["1001", "1003", "1005"]);
    // `limit` is a total, as `query --limit`: two of bob's three entries,
    // over pages of one, and no cursor once they are given.
    let mut uri = "/api/query?table=orders&actor=bob&limit=2&page_size=1".to_string();
    let mut limited = Vec::new();
    loop {
        let page = get_ok(&r, &uri).await;
        assert_eq!(page["entries"].as_array().unwrap().len(), 1, "{page}");
        limited.push(page["entries"][0]["sequence_number"].clone());
        let Some(c) = page["next"].as_str() else {
            break;
        };
        uri = format!("/api/query?table=orders&actor=bob&limit=2&page_size=1&cursor={c}");
    }
    assert_eq!(limited, ["1001", "1003"]);
    let body = get_ok(&r, "/api/query?table=orders&field=balance&to=N%3A4").await;
    assert_eq!(body["entries"].as_array().unwrap().len(), 1);
    assert_eq!(body["entries"][0]["sequence_number"], "1004");

    // The item at the third entry's time, the diff from there to the end, the plan back.
    let item = "table=orders&key=pk%3DS%3Au1";
    let shown = get_ok(&r, &format!("/api/item?{item}&at=2026-11-23T19:00:03Z")).await;
    assert_eq!(shown["exists"], true);
    assert_eq!(shown["item"]["balance"], serde_json::json!({"N": "3"}));
    let d = get_ok(
        &r,
        &format!("/api/diff?{item}&from=2026-11-23T19:00:03Z&to=2026-11-23T19:00:05Z"),
    )
    .await;
    assert_eq!(d["changes"][0]["path"], "balance");
    assert_eq!(d["changes"][0]["old"], serde_json::json!({"N": "3"}));
    assert_eq!(d["changes"][0]["new"], serde_json::json!({"N": "5"}));
    let plan = get_ok(
        &r,
        &format!("/api/revert?{item}&to_time=2026-11-23T19:00:03Z&field=balance"),
    )
    .await;
    assert_eq!(plan["operation"], "UpdateItem");
    assert!(plan["input"]["ConditionExpression"].is_string(), "{plan}");

    // Parameters are named in errors, as the API calls them.
    let (s, body, _) = get(&r, &format!("/api/item?{item}&at=yesterday"), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().starts_with("`at`"),
        "{body}"
    );
    let (s, body, _) = get(&r, &format!("/api/item?{item}"), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("`at` is required"),
        "{body}"
    );
    // A scoped token may not read another table's item, nor find it by actor.
    let (s, _, _) = get(&r, &format!("/api/item?{item}&at=1d"), Some(SCOPED)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body, _) = get(&r, "/api/query?actor=bob", Some(SCOPED)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(
        body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["table"] == "flags"),
        "{body}"
    );
}

#[tokio::test]
async fn cors_answers_only_configured_origins() {
    let serve = Serve {
        token_sha256: vec![digest(TOKEN)],
        cors_origins: vec!["https://audit.example.com".into()],
        ..Serve::default()
    };
    let tokens = Arc::new(Tokens::new(&serve, None).unwrap());
    let app = Arc::new(App {
        store: MemoryStore::new(),
        serve,
        tables: vec!["orders".into()],
        actor_attribute: None,
        verify: Verifier::default(),
    });
    let r = router(app, tokens).unwrap();
    for (origin, allowed) in [
        ("https://audit.example.com", true),
        ("https://evil.example", false),
    ] {
        let req = Request::get("/api/whoami")
            .header("origin", origin)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let res = r.clone().oneshot(req).await.unwrap();
        let header = res.headers().get("access-control-allow-origin");
        assert_eq!(header.is_some(), allowed, "{origin}");
        if allowed {
            assert_eq!(header.unwrap(), origin);
        }
    }
}

#[tokio::test]
async fn verify_reports_what_the_verify_library_finds_within_the_token_scope() {
    // Entries written without chain links (before the chain began: not
    // provable, not tampering), and in flags one whose stored hash is not
    // its content's: altered.
    let store = store(3).await;
    let forged = crate::proof::Link {
        prev_hash: None,
        hash: [7u8; 32],
    };
    store
        .put_linked_entry(&entry("flags", "f1", 2), &forged)
        .await
        .unwrap();
    let r = app_over(store);
    assert_eq!(
        get(&r, "/api/verify", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let all = get_ok(&r, "/api/verify?limit=50").await;
    assert_eq!(all["summary"]["entries"], 5, "{all}");
    assert_eq!(all["summary"]["streams"], 2, "{all}");
    assert_eq!(all["summary"]["status"], "tampered", "{all}");
    assert_eq!(all["summary"]["exit_status"], 1);
    let total = all["findings_total"].as_u64().unwrap();
    assert_eq!(all["findings"].as_array().unwrap().len() as u64, total);
    let kinds: BTreeSet<&str> = each(&all["findings"], "kind").collect();
    assert!(kinds.contains("unchained") && kinds.len() >= 2, "{all}");

    // `limit` bounds the list, worst first, and still counts them all.
    let (_, one, _) = get(&r, "/api/verify?limit=1", Some(TOKEN)).await;
    assert_eq!(one["findings"].as_array().unwrap().len(), 1);
    assert_eq!(one["findings"][0]["severity"], "tamper", "{one}");
    assert_eq!(one["findings"][0]["table"], "flags", "{one}");
    assert_eq!(one["findings_total"].as_u64(), Some(total));

    // A scoped token checks its tables only, and may not name another.
    let (s, flags, _) = get(&r, "/api/verify", Some(SCOPED)).await;
    assert_eq!(s, StatusCode::OK, "{flags}");
    assert_eq!(flags["summary"]["entries"], 2, "{flags}");
    assert_eq!(flags["summary"]["status"], "tampered", "{flags}");
    for f in flags["findings"].as_array().unwrap() {
        assert_eq!(f["table"], "flags", "{f}");
    }
    assert_eq!(
        get(&r, "/api/verify?table=orders", Some(SCOPED)).await.0,
        StatusCode::FORBIDDEN
    );
    let (_, orders, _) = get(&r, "/api/verify?table=orders", Some(TOKEN)).await;
    assert_eq!(orders["summary"]["entries"], 3, "{orders}");
    assert_eq!(orders["summary"]["status"], "intact", "{orders}");
    let (s, bad, _) = get(&r, "/api/verify?limit=0&state=x", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
}
