//! The `/api/` handlers: parameters in, the library's answer out as JSON.
//! Every handler checks the caller's table scope before reading anything.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::auth::Principal;
use super::cursor;
use super::App;
use crate::read::verify::{verify_trail, CheckError, EvidenceStore, VerifyRequest};
use crate::read::{self, asof, ArgNames, Cursor, Order, QueryFilter, ReadError};
use crate::report;
use crate::store::{CheckpointStore, ReadStore, StoreError};
use crate::value::Item;

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

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> ApiError {
        match e {
            ReadError::Store(e) => e.into(),
            // The read side names CLI flags (`--since`); here they are parameters.
            ReadError::BadArg { flag, message } => {
                ApiError::bad_request(format!("`{}`: {message}", flag.trim_start_matches("--")))
            }
            ReadError::BadCursor(_) => ApiError::bad_request(
                "`cursor` is not valid here; pass back the `next` value unchanged",
            ),
            ReadError::BadParam(message) => ApiError::bad_request(message),
            ReadError::Refused(message) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message,
            },
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

/// What a parameterised handler starts from: the app, the caller the token
/// check let in, and the query parameters as sent. Each part is extracted as
/// its own extractor would be, in that order, with the same rejections.
pub struct Call<S> {
    app: Arc<App<S>>,
    principal: Principal,
    params: Params,
}

impl<S: Send + Sync + 'static> FromRequestParts<Arc<App<S>>> for Call<S> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<App<S>>,
    ) -> Result<Self, Self::Rejection> {
        let Extension(principal) = Extension::<Principal>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Query(params) = Query::<Params>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Call {
            app: Arc::clone(state),
            principal,
            params,
        })
    }
}

impl<S> Call<S> {
    /// The configured tables this caller may read.
    fn readable_tables(&self) -> impl Iterator<Item = &String> {
        self.app
            .tables
            .iter()
            .filter(|t| self.principal.may_read(t))
    }
}

/// An answer as JSON; one that cannot be serialized is the server's fault
/// (500), never a 200 with `null`.
fn json_of(value: &impl serde::Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| {
        tracing::error!(error = %e, "cannot serialize an API answer");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("cannot serialize the answer: {e}"),
        }
    })
}

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

/// The `key` parameters (required: they name the item).
fn parse_key(args: &[&str]) -> Result<Item, ApiError> {
    if args.is_empty() {
        return Err(ApiError::bad_request(
            "`key` is required, as NAME=TYPE:VALUE (e.g. key=pk=S:u1); repeat it for a sort key",
        ));
    }
    Ok(read::parse_key_as(ArgNames::Params, args)?)
}

/// `name=N`, a count from 1 to `max`, as the CLI's counts are parsed.
fn parse_count(name: &str, raw: Option<&str>, max: usize) -> Result<Option<usize>, ApiError> {
    raw.map(|v| {
        read::parse_count(v, max)
            .map_err(|why| ApiError::bad_request(format!("`{name}={v}` {why}")))
    })
    .transpose()
}

/// How much one paged request returns: `limit` bounds the entries in all
/// (as `query --limit` does), `page_size` each page.
struct Paging {
    limit: Option<usize>,
    page_size: usize,
}

impl Paging {
    fn take<S>(p: &mut Taken<'_>, app: &App<S>) -> Result<Paging, ApiError> {
        Ok(Paging {
            limit: parse_count("limit", p.one("limit")?, usize::MAX)?,
            page_size: parse_count("page_size", p.one("page_size")?, app.serve.max_page_size)?
                .unwrap_or(app.serve.page_size),
        })
    }
}

fn parse_time(name: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|t| read::parse_time(name, t, Utc::now()))
        .transpose()
        .map_err(Into::into)
}

fn required_time(p: &mut Taken<'_>, name: &str) -> Result<DateTime<Utc>, ApiError> {
    let raw = p.required(name, &format!("{name}=2026-11-23T19:05:00Z or {name}=2h"))?;
    Ok(read::parse_time(name, raw, Utc::now())?)
}

/// One page of a read-side query as `{"entries", "next"}`, the read side's
/// cursor wrapped to bind it to this request and to carry what is left of
/// its `limit`.
async fn query_page<S: ReadStore>(
    store: &S,
    filter: &QueryFilter,
    params: &Params,
    raw_cursor: Option<&str>,
    paging: Paging,
) -> ApiResult {
    let fp = cursor::fingerprint(params);
    let (inner, left) = match raw_cursor {
        Some(c) => {
            let page = cursor::decode(c, &fp)?;
            (Some(Cursor::parse(&page.inner)?), page.left)
        }
        None => (None, paging.limit),
    };
    let want = left.map_or(paging.page_size, |l| l.min(paging.page_size));
    // A scoped token asking by actor, principal or correlation (no table
    // named) sees only its tables' entries: `filter.readable` says which.
    let page = read::query(store, filter, inner.as_ref(), want).await?;
    let left = left.map(|l| l.saturating_sub(page.entries.len()));
    let next = match (page.next, left) {
        (_, Some(0)) | (None, _) => None,
        (Some(c), left) => Some(cursor::encode(&fp, c.as_str(), left)),
    };
    Ok(Json(json!({ "entries": page.entries, "next": next })))
}

/// `GET /api/history?table=T&key=NAME=TYPE:VALUE[&key=…][&since][&until][&order][&limit][&page_size][&cursor]`
pub async fn history<S: ReadStore + CheckpointStore>(call: Call<S>) -> ApiResult {
    let mut p = Taken::new(&call.params);
    let table = p.required("table", "table=orders")?;
    let key = parse_key(&p.all("key"))?;
    let since = parse_time("since", p.one("since")?)?;
    let until = parse_time("until", p.one("until")?)?;
    let paging = Paging::take(&mut p, &call.app)?;
    let order = Order::parse_as(ArgNames::Params, p.one("order")?)?;
    let raw_cursor = p.one("cursor")?;
    p.finish("table, key (repeatable), since, until, order, limit, page_size, cursor")?;
    scoped(&call.principal, table)?;
    let filter = QueryFilter {
        table: Some(table.to_string()),
        key: Some(key),
        since,
        until,
        order,
        ..QueryFilter::default()
    };
    query_page(&call.app.store, &filter, &call.params, raw_cursor, paging).await
}

/// `GET /api/query?…`: the `query` command's filters as parameters; `limit`
/// bounds the total as `query --limit` does, `page_size` each page (follow
/// `next` for more).
pub async fn query<S: ReadStore + CheckpointStore>(call: Call<S>) -> ApiResult {
    let mut p = Taken::new(&call.params);
    // A form sends empty fields: an empty name is no filter (values and
    // times are parsed, so an empty one is refused).
    fn text(raw: Option<&str>) -> Option<&str> {
        raw.filter(|v| !v.is_empty())
    }
    let given = read::QueryText {
        table: text(p.one("table")?),
        keys: p.all("key"),
        actor: text(p.one("actor")?),
        since: p.one("since")?,
        until: p.one("until")?,
        field: text(p.one("field")?),
        from: p.one("from")?,
        to: p.one("to")?,
        event: text(p.one("event")?),
        correlation: text(p.one("correlation")?),
        principal: text(p.one("principal")?),
        order: p.one("order")?,
    };
    let filter = QueryFilter {
        tables: call.readable_tables().cloned().collect(),
        readable: call.principal.tables.clone(),
        ..given.parse(ArgNames::Params, Utc::now())?
    };
    let paging = Paging::take(&mut p, &call.app)?;
    let raw_cursor = p.one("cursor")?;
    p.finish(
        "table, key (repeatable), actor, since, until, field, from, to, event, correlation, \
         principal, order, limit, page_size, cursor",
    )?;
    if let Some(t) = given.table {
        scoped(&call.principal, t)?;
    }
    query_page(&call.app.store, &filter, &call.params, raw_cursor, paging).await
}

/// The `table` and `key` parameters naming one item the caller may read.
fn item_params<'a>(p: &mut Taken<'a>, principal: &Principal) -> Result<(&'a str, Item), ApiError> {
    let table = p.required("table", "table=orders")?;
    let key = parse_key(&p.all("key"))?;
    scoped(principal, table)?;
    Ok((table, key))
}

/// `GET /api/item?table=T&key=…&at=TIME`: the item as it was (`show --json`).
pub async fn item<S: ReadStore + CheckpointStore>(call: Call<S>) -> ApiResult {
    let mut p = Taken::new(&call.params);
    let (table, key) = item_params(&mut p, &call.principal)?;
    let at = required_time(&mut p, "at")?;
    p.finish("table, key (repeatable), at")?;
    let shown = asof::show(&call.app.store, table, &key, at).await?;
    Ok(Json(json_of(&shown)?))
}

/// `GET /api/diff?table=T&key=…&from=TIME&to=TIME` (`diff --json`).
pub async fn diff<S: ReadStore + CheckpointStore>(call: Call<S>) -> ApiResult {
    let mut p = Taken::new(&call.params);
    let (table, key) = item_params(&mut p, &call.principal)?;
    let from = required_time(&mut p, "from")?;
    let to = required_time(&mut p, "to")?;
    p.finish("table, key (repeatable), from, to")?;
    let diffed = asof::diff(&call.app.store, table, &key, from, to).await?;
    Ok(Json(json_of(&diffed)?))
}

/// `GET /api/revert?table=T&key=…&to_time=TIME[&field=PATH…][&actor=NAME]`:
/// the plan `revert` prints. Nothing is written: it is for a person to
/// review and apply.
pub async fn revert<S: ReadStore + CheckpointStore>(call: Call<S>) -> ApiResult {
    let mut p = Taken::new(&call.params);
    let (table, key) = item_params(&mut p, &call.principal)?;
    let to_time = required_time(&mut p, "to_time")?;
    let fields: Vec<String> = p.all("field").into_iter().map(str::to_string).collect();
    let name = p.one("actor")?;
    p.finish("table, key (repeatable), to_time, field (repeatable), actor")?;
    let actor = asof::RevertActor {
        attribute: call.app.actor_attribute.as_deref(),
        name,
    };
    let plan = asof::revert(&call.app.store, table, &key, to_time, &fields, actor).await?;
    Ok(Json(json_of(&plan)?))
}

/// `GET /api/gaps[?table=T]`: every gap of the tables the caller may read.
pub async fn gaps<S: ReadStore + CheckpointStore>(call: Call<S>) -> ApiResult {
    let mut p = Taken::new(&call.params);
    let table = p.one("table")?;
    p.finish("table")?;
    if let Some(t) = table {
        scoped(&call.principal, t)?;
    }
    let gaps: Vec<_> = crate::read::gaps_bracketed(call.app.store.gaps().await?)
        .into_iter()
        .filter(|g| call.principal.may_read(&g.table) && table.is_none_or(|t| g.table == t))
        .collect();
    Ok(Json(json!({ "gaps": gaps })))
}

/// `GET /api/status`: each configured table the caller may read, with its shards.
pub async fn status<S: ReadStore + CheckpointStore>(call: Call<S>) -> ApiResult {
    Taken::new(&call.params).finish("no parameters")?;
    let now = chrono::Utc::now();
    let mut tables = Vec::new();
    for table in call.readable_tables() {
        let (summary, shards) = report::table_status(&call.app.store, table, now).await?;
        let mut line = json_of(&summary)?;
        if let Value::Object(m) = &mut line {
            m.insert("shards".into(), json!(shards));
        }
        tables.push(line);
    }
    Ok(Json(json!({ "tables": tables })))
}

/// `GET /api/verify[?table=T][&since=TIME][&limit=N]`: what `ddb-audit verify
/// --json` reports, from the same library call, for the tables the caller
/// may read: `{"summary", "findings", "findings_total"}`. At most `limit`
/// findings are listed, the worst first, so a badly damaged trail still
/// answers in bounded space; `findings_total` says how many there were.
/// 200 whatever the verdict: a tampered trail is an answer, not an error.
pub async fn verify<S: ReadStore + CheckpointStore + EvidenceStore>(call: Call<S>) -> ApiResult {
    let mut p = Taken::new(&call.params);
    let table = p.one("table")?.filter(|t| !t.is_empty());
    let since = parse_time("since", p.one("since")?)?;
    // A list of findings is one answer, not pages: `limit` bounds it.
    let limit = parse_count("limit", p.one("limit")?, call.app.serve.max_page_size)?
        .unwrap_or(call.app.serve.page_size);
    p.finish("table, since, limit")?;
    let tables = match (table, &call.principal.tables) {
        (Some(t), _) => {
            scoped(&call.principal, t)?;
            Some(vec![t.to_string()])
        }
        (None, Some(allowed)) => Some(allowed.iter().cloned().collect()),
        (None, None) => None,
    };
    let request = VerifyRequest {
        tables,
        since,
        public_key: call.app.verify.public_key.clone(),
        // `serve` only reads: no state file (that is `verify --state`'s).
        state_file: None,
        interval_secs: call.app.verify.interval_secs,
    };
    let outcome = {
        let _one_at_a_time = call.app.verify.running.lock().await;
        verify_trail(&call.app.store, &request, |_| {}).await
    };
    let mut outcome = match outcome {
        Ok(o) => o,
        Err(CheckError::Store(e)) => return Err(e.into()),
        Err(e) => {
            return Err(ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: e.to_string(),
            })
        }
    };
    let total = outcome.findings.len();
    // Severity orders tamper < unverifiable < info: the worst first.
    outcome.findings.sort_by_key(|f| f.severity);
    outcome.findings.truncate(limit);
    Ok(Json(json!({
        "summary": outcome.summary,
        "findings": outcome.findings,
        "findings_total": total,
    })))
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
