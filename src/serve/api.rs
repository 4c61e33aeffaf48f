//! The `/api/` handlers: parameters in, the library's answer out as JSON.
//! Every handler checks the caller's table scope before reading anything.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::auth::Principal;
use super::cursor::{self, Position};
use super::App;
use crate::entry::AuditEntry;
use crate::report;
use crate::store::{AuditStore, CheckpointStore, StoreError};
use crate::value::{parse_key_arg, Item};

/// A request's parameters as sent: repeatable, in order.
pub type Params = Vec<(String, String)>;

/// An error answer: `{"error": "..."}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let status = match e {
            StoreError::Transient(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        tracing::warn!(error = %e, "api request failed in the store");
        ApiError {
            status,
            message: e.to_string(),
        }
    }
}

impl From<cursor::CursorError> for ApiError {
    fn from(e: cursor::CursorError) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// Parameters of one request, each taken once; what is left over is an error.
struct Taken<'a> {
    params: &'a Params,
    used: Vec<bool>,
}

impl<'a> Taken<'a> {
    fn new(params: &'a Params) -> Self {
        Taken {
            params,
            used: vec![false; params.len()],
        }
    }

    fn all(&mut self, name: &str) -> Vec<&'a str> {
        let mut out = Vec::new();
        for (i, (k, v)) in self.params.iter().enumerate() {
            if k == name {
                self.used[i] = true;
                out.push(v.as_str());
            }
        }
        out
    }

    fn one(&mut self, name: &str) -> Result<Option<&'a str>, ApiError> {
        let all = self.all(name);
        match all.as_slice() {
            [] => Ok(None),
            [v] => Ok(Some(v)),
            _ => Err(ApiError::bad_request(format!(
                "`{name}` is given {} times; give it once",
                all.len()
            ))),
        }
    }

    fn required(&mut self, name: &str, example: &str) -> Result<&'a str, ApiError> {
        self.one(name)?
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::bad_request(format!("`{name}` is required, e.g. {example}")))
    }

    /// Rejects parameters nobody took, naming them.
    fn finish(self, known: &str) -> Result<(), ApiError> {
        let unknown: Vec<&str> = self
            .params
            .iter()
            .zip(&self.used)
            .filter(|(_, used)| !**used)
            .map(|((k, _), _)| k.as_str())
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(ApiError::bad_request(format!(
                "unknown parameter(s) {}; this endpoint takes {known}",
                unknown
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
}

fn scoped(principal: &Principal, table: &str) -> Result<(), ApiError> {
    if principal.may_read(table) {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "token `{}` may not read table `{table}`; ask for a token scoped to it",
                principal.name
            ),
        })
    }
}

fn parse_key(args: &[&str]) -> Result<Item, ApiError> {
    if args.is_empty() {
        return Err(ApiError::bad_request(
            "`key` is required, as NAME=TYPE:VALUE (e.g. key=pk=S:u1); repeat it for a sort key",
        ));
    }
    let mut key = Item::new();
    for arg in args {
        let (name, value) =
            parse_key_arg(arg).map_err(|e| ApiError::bad_request(format!("`key={arg}`: {e}")))?;
        key.insert(name, value);
    }
    Ok(key)
}

fn parse_limit<S>(app: &App<S>, raw: Option<&str>) -> Result<usize, ApiError> {
    let max = app.serve.max_page_size;
    match raw {
        None => Ok(app.serve.page_size),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "`limit={v}` must be a whole number in 1..={max}"
            ))),
        },
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    Asc,
    Desc,
}

fn parse_order(raw: Option<&str>) -> Result<Order, ApiError> {
    match raw {
        None | Some("asc") => Ok(Order::Asc),
        Some("desc") => Ok(Order::Desc),
        Some(other) => Err(ApiError::bad_request(format!(
            "`order={other}` must be asc (oldest first) or desc (newest first)"
        ))),
    }
}

fn position(entry: &AuditEntry) -> Position {
    Position {
        shard: entry.shard_id.clone(),
        seq: entry.sequence_number.clone(),
    }
}

/// One page of `entries` (already in the requested order) after `after`.
fn page(
    entries: Vec<AuditEntry>,
    after: Option<Position>,
    limit: usize,
    fingerprint: &str,
) -> Result<Value, ApiError> {
    let start = match after {
        None => 0,
        Some(pos) => {
            entries
                .iter()
                .position(|e| position(e) == pos)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "`cursor` points at an entry this item's history does not hold",
                    )
                })?
                + 1
        }
    };
    let end = (start + limit).min(entries.len());
    let next = (end < entries.len() && end > start)
        .then(|| cursor::encode(fingerprint, position(&entries[end - 1])));
    let slice = &entries[start..end];
    Ok(json!({ "entries": slice, "next": next }))
}

/// `GET /api/history?table=T&key=NAME=TYPE:VALUE[&key=…][&order=asc|desc][&limit=N][&cursor=C]`
pub async fn history<S: AuditStore + CheckpointStore>(
    State(app): State<Arc<App<S>>>,
    Extension(principal): Extension<Principal>,
    Query(params): Query<Params>,
) -> ApiResult {
    let mut p = Taken::new(&params);
    let table = p.required("table", "table=orders")?;
    let key = parse_key(&p.all("key"))?;
    let limit = parse_limit(&app, p.one("limit")?)?;
    let order = parse_order(p.one("order")?)?;
    let raw_cursor = p.one("cursor")?;
    p.finish("table, key (repeatable), order, limit, cursor")?;
    scoped(&principal, table)?;
    let fp = cursor::fingerprint(&params);
    let after = raw_cursor.map(|c| cursor::decode(c, &fp)).transpose()?;
    let mut entries = app.store.history(table, &key).await?;
    if order == Order::Desc {
        entries.reverse();
    }
    Ok(Json(page(entries, after, limit, &fp)?))
}

/// `GET /api/gaps[?table=T]`: every gap of the tables the caller may read.
pub async fn gaps<S: AuditStore + CheckpointStore>(
    State(app): State<Arc<App<S>>>,
    Extension(principal): Extension<Principal>,
    Query(params): Query<Params>,
) -> ApiResult {
    let mut p = Taken::new(&params);
    let table = p.one("table")?;
    p.finish("table")?;
    if let Some(t) = table {
        scoped(&principal, t)?;
    }
    let gaps: Vec<_> = app
        .store
        .gaps()
        .await?
        .into_iter()
        .filter(|g| principal.may_read(&g.table) && table.is_none_or(|t| g.table == t))
        .collect();
    Ok(Json(json!({ "gaps": gaps })))
}

/// `GET /api/status`: each configured table the caller may read, with its shards.
pub async fn status<S: AuditStore + CheckpointStore>(
    State(app): State<Arc<App<S>>>,
    Extension(principal): Extension<Principal>,
    Query(params): Query<Params>,
) -> ApiResult {
    Taken::new(&params).finish("no parameters")?;
    let now = chrono::Utc::now();
    let mut tables = Vec::new();
    for table in app.tables.iter().filter(|t| principal.may_read(t)) {
        let (summary, shards) = report::table_status(&app.store, table, now).await?;
        let mut line = serde_json::to_value(&summary).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut line {
            m.insert("shards".into(), json!(shards));
        }
        tables.push(line);
    }
    Ok(Json(json!({ "tables": tables })))
}

/// `GET /api/whoami`: the token's name and scope, for the page's header.
pub async fn whoami<S>(
    State(app): State<Arc<App<S>>>,
    Extension(principal): Extension<Principal>,
) -> ApiResult {
    let tables: Vec<&String> = app
        .tables
        .iter()
        .filter(|t| principal.may_read(t))
        .collect();
    Ok(Json(json!({
        "name": principal.name,
        "tables": tables,
        "scoped": principal.tables.is_some(),
    })))
}

/// `GET /api/openapi.json`.
pub async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        super::OPENAPI,
    )
        .into_response()
}
