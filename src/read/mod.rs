//! The read side: questions asked of the audit trail.
//!
//! - this file: filters → index choice → paged, merged Query ([`query`],
//!   [`last_entries`]), TIME and TYPE:VALUE arguments, opaque cursors;
//! - `asof`: the item as it was at a time, net diffs, revert plans;
//! - `cli`: what the commands print, page by page, quiet on a closed pipe;
//! - `snapshot`: SNAPSHOT baselines from a paced, resumable parallel Scan.
//!
//! Everything reaches DynamoDB through [`ReadStore`], so the CLI and the HTTP
//! API are two faces of the same functions.

pub mod asof;
pub mod cli;
pub mod verify;

use std::collections::BTreeSet;

use base64::Engine as _;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};

use crate::entry::{AuditEntry, Change};
use crate::store::{
    entry_ts, format_ts, HistoryRequest, Index, IndexHit, IndexRequest, Position, ReadStore,
    StoreError, TsRange,
};
use crate::value::{parse_typed_value, same_value, AttrValue, Item};

/// A query that filters hard still returns within this many reads of each
/// lane per call, with a cursor to go on (so one HTTP request stays short).
const MAX_ROUNDS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bad argument: which flag, and what is wrong with it.
    #[error("{flag}: {message}")]
    BadArg { flag: String, message: String },
    #[error("invalid cursor: {0} (pass back the `next` value of the previous page unchanged)")]
    BadCursor(String),
    #[error("{0}")]
    Refused(String),
    /// A bad argument, in words that already name it as the caller does
    /// (the API's `` `order=up` must be … ``).
    #[error("{0}")]
    BadParam(String),
}

fn bad(flag: &str, message: impl Into<String>) -> ReadError {
    ReadError::BadArg {
        flag: flag.to_string(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------- arguments

/// A count of entries (`--limit`, `--last`, the API's `limit` and
/// `page_size`): a whole number from 1 to `max`. 0 is refused: it would
/// answer nothing and look like an empty trail. `Err` says why, in words
/// that follow the argument's name.
pub fn parse_count(text: &str, max: usize) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (0 would answer nothing)".into()),
        Ok(n) if n <= max => Ok(n),
        Ok(_) => Err(format!("must be at most {max}")),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// TIME: RFC 3339 (`2026-11-23T19:05:00Z`) or an age before `now`
/// (`90s`, `15m`, `2h`, `7d`).
pub fn parse_time(flag: &str, text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ReadError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    let t = text.trim();
    let unit = t.chars().last().unwrap_or(' ');
    let digits = &t[..t.len().saturating_sub(unit.len_utf8())];
    let amount: Option<i64> = digits.parse().ok().filter(|n| *n >= 0);
    let age = match (amount, unit) {
        (Some(n), 's') => ChronoDuration::try_seconds(n),
        (Some(n), 'm') => ChronoDuration::try_minutes(n),
        (Some(n), 'h') => ChronoDuration::try_hours(n),
        (Some(n), 'd') => ChronoDuration::try_days(n),
        _ => None,
    };
    age.and_then(|a| now.checked_sub_signed(a)).ok_or_else(|| {
        bad(
            flag,
            format!(
                "{text:?} is not a TIME: give RFC 3339 (2026-11-23T19:05:00Z) or an age \
                 such as 90s, 15m, 2h, 7d"
            ),
        )
    })
}

/// TYPE:VALUE as in `--key` (`S:pro`, `N:900`, `B:aGk=`), plus `BOOL:true`,
/// `NULL:true`, and `redacted:hmac-sha256:<hex>` (a `[redaction]`
/// commitment, as `redaction commit` prints it), which matches a redacted
/// value with that commitment.
pub fn parse_value(flag: &str, text: &str) -> Result<AttrValue, ReadError> {
    match text.split_once(':') {
        Some(("BOOL", "true")) => Ok(AttrValue::Bool(true)),
        Some(("BOOL", "false")) => Ok(AttrValue::Bool(false)),
        Some(("NULL", "true")) => Ok(AttrValue::Null),
        Some(("redacted", c)) if crate::redact::is_commitment(c) => {
            Ok(AttrValue::Redacted(c.to_string()))
        }
        Some(("redacted", c)) => Err(bad(
            flag,
            format!("{c:?} is not a commitment: expected redacted:hmac-sha256:<64 hex digits>, as `ddb-audit redaction commit` prints it"),
        )),
        _ => parse_typed_value(text).map_err(|e| {
            bad(
                flag,
                format!("{e}; BOOL:true, BOOL:false, NULL:true and redacted:hmac-sha256:<hex> are accepted too"),
            )
        }),
    }
}

/// How a caller names its arguments in error messages: the CLI's flags
/// (`--key pk=S:x`, `--order`) or the HTTP API's parameters (`key=pk=S:x`,
/// `order`). The parsers below are shared; only the wording follows this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgNames {
    Flags,
    Params,
}

impl ArgNames {
    /// The argument `name` as the caller spells it: `--since` or `since`.
    pub fn name(self, name: &str) -> String {
        match self {
            ArgNames::Flags => format!("--{name}"),
            ArgNames::Params => name.to_string(),
        }
    }

    /// The argument with the value given: `--key pk=X` or `key=pk=X`.
    fn given(self, name: &str, value: &str) -> String {
        match self {
            ArgNames::Flags => format!("--{name} {value}"),
            ArgNames::Params => format!("{name}={value}"),
        }
    }
}

/// `--key NAME=TYPE:VALUE`, repeated for a sort key.
pub fn parse_key(args: &[String]) -> Result<Item, ReadError> {
    parse_key_as(ArgNames::Flags, args)
}

/// A key as NAME=TYPE:VALUE arguments (repeated for a sort key), errors
/// naming the argument as the caller does.
pub fn parse_key_as(names: ArgNames, args: &[impl AsRef<str>]) -> Result<Item, ReadError> {
    let mut key = Item::new();
    for arg in args {
        let arg = arg.as_ref();
        let (name, value) = crate::value::parse_key_arg(arg)
            .map_err(|e| bad(&names.given("key", arg), e.to_string()))?;
        // A key has each attribute once: a second value would silently win.
        if key.contains_key(&name) {
            return Err(bad(
                &names.given("key", arg),
                format!(
                    "`{name}` is given twice; give each key attribute once (a partition key, \
                     then a sort key), and ask about one item at a time"
                ),
            ));
        }
        key.insert(name, value);
    }
    Ok(key)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

impl Order {
    /// `--order` / `order`: asc (also when not given) or desc.
    pub fn parse_as(names: ArgNames, text: Option<&str>) -> Result<Order, ReadError> {
        match text {
            None | Some("asc") => Ok(Order::Asc),
            Some("desc") => Ok(Order::Desc),
            Some(other) => Err(match names {
                ArgNames::Flags => bad("--order", format!("{other:?}: expected asc or desc")),
                ArgNames::Params => ReadError::BadParam(format!(
                    "`order={other}` must be asc (oldest first) or desc (newest first)"
                )),
            }),
        }
    }
}

pub const EVENTS: [&str; 4] = ["INSERT", "MODIFY", "REMOVE", "SNAPSHOT"];

// ---------------------------------------------------------------- filters

/// The `query` filters (product.md); they combine with AND.
#[derive(Clone, Default, PartialEq)]
pub struct QueryFilter {
    pub table: Option<String>,
    /// Needs `table`.
    pub key: Option<Item>,
    pub actor: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// A change at this document path or below it.
    pub field: Option<String>,
    /// That change's old value (needs `field`).
    pub from: Option<AttrValue>,
    /// That change's new value (needs `field`).
    pub to: Option<AttrValue>,
    pub event: Option<String>,
    pub correlation: Option<String>,
    /// Changes CloudTrail attributes to this IAM principal ARN (`principal.arn`).
    pub principal: Option<String>,
    pub order: Order,
    /// Searched when `table` is not given: the configured tables.
    pub tables: Vec<String>,
    /// Only entries of these tables (an API token's scope); `None`: any.
    /// Applied to the index rows, before paging, so a page is never short
    /// for rows the caller may not see.
    pub readable: Option<BTreeSet<String>>,
}

/// The Debug form names the query in its cursors ([`query_id`]). `readable`
/// is left out when `None`, so the form (and so every cursor) is what it
/// was before the field existed; a position is valid whatever the scope.
impl std::fmt::Debug for QueryFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("QueryFilter");
        d.field("table", &self.table)
            .field("key", &self.key)
            .field("actor", &self.actor)
            .field("since", &self.since)
            .field("until", &self.until)
            .field("field", &self.field)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("event", &self.event)
            .field("correlation", &self.correlation)
            .field("principal", &self.principal)
            .field("order", &self.order)
            .field("tables", &self.tables);
        if let Some(readable) = &self.readable {
            d.field("readable", readable);
        }
        d.finish()
    }
}

/// The `query` filters as given, before parsing: the CLI's flags or the
/// API's parameters. [`QueryText::parse`] is the one place either becomes a
/// [`QueryFilter`]; the caller adds `tables` (and `readable`).
#[derive(Clone, Debug, Default)]
pub struct QueryText<'a> {
    pub table: Option<&'a str>,
    /// NAME=TYPE:VALUE, repeated for a sort key; none: no key.
    pub keys: Vec<&'a str>,
    pub actor: Option<&'a str>,
    /// TIME ([`parse_time`]).
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
    pub field: Option<&'a str>,
    /// TYPE:VALUE ([`parse_value`]).
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub event: Option<&'a str>,
    pub correlation: Option<&'a str>,
    pub principal: Option<&'a str>,
    /// asc or desc; none: asc.
    pub order: Option<&'a str>,
}

impl QueryText<'_> {
    /// Parses each argument, in the order of the fields; an error names the
    /// argument as `names` says. Ages are taken before `now`.
    pub fn parse(&self, names: ArgNames, now: DateTime<Utc>) -> Result<QueryFilter, ReadError> {
        let time = |name: &str, raw: Option<&str>| {
            raw.map(|t| parse_time(&names.name(name), t, now))
                .transpose()
        };
        let typed = |name: &str, raw: Option<&str>| {
            raw.map(|v| parse_value(&names.name(name), v)).transpose()
        };
        let text = |raw: Option<&str>| raw.map(str::to_string);
        Ok(QueryFilter {
            table: text(self.table),
            key: (!self.keys.is_empty())
                .then(|| parse_key_as(names, &self.keys))
                .transpose()?,
            actor: text(self.actor),
            since: time("since", self.since)?,
            until: time("until", self.until)?,
            field: text(self.field),
            from: typed("from", self.from)?,
            to: typed("to", self.to)?,
            event: text(self.event),
            correlation: text(self.correlation),
            principal: text(self.principal),
            order: Order::parse_as(names, self.order)?,
            tables: Vec::new(),
            readable: None,
        })
    }
}

impl QueryFilter {
    pub fn validate(&self) -> Result<(), ReadError> {
        if self.key.is_some() && self.table.is_none() {
            return Err(bad(
                "--key",
                "needs --table (a key names an item of one table)",
            ));
        }
        if (self.from.is_some() || self.to.is_some()) && self.field.is_none() {
            return Err(bad(
                if self.from.is_some() {
                    "--from"
                } else {
                    "--to"
                },
                "needs --field PATH: it is the old/new value of the change at that path",
            ));
        }
        if let Some(field) = &self.field {
            crate::diff::parse_path(field).map_err(|e| {
                bad(
                    "--field",
                    format!("{field:?} is not a document path such as a.b[2].c: {e}"),
                )
            })?;
        }
        if let Some(e) = &self.event {
            if !EVENTS.contains(&e.as_str()) {
                return Err(bad(
                    "--event",
                    format!("{e:?}: expected one of {}", EVENTS.join(", ")),
                ));
            }
        }
        if let (Some(s), Some(u)) = (self.since, self.until) {
            if s > u {
                return Err(bad(
                    "--since",
                    format!("{} is after --until {}", format_ts(s), format_ts(u)),
                ));
            }
        }
        if self.principal.as_deref() == Some("") {
            return Err(bad(
                "--principal",
                "empty: give an IAM principal ARN such as arn:aws:sts::123456789012:assumed-role/NAME/SESSION",
            ));
        }
        if self.table.is_none()
            && self.actor.is_none()
            && self.correlation.is_none()
            && self.principal.is_none()
            && self.tables.is_empty()
        {
            return Err(bad(
                "--table",
                "no table to search: give --table, --actor, --principal or --correlation",
            ));
        }
        Ok(())
    }

    fn range(&self) -> TsRange {
        TsRange {
            since: self.since.map(format_ts),
            until: self.until.map(format_ts),
        }
    }

    fn may_read(&self, table: &str) -> bool {
        self.readable.as_ref().is_none_or(|r| r.contains(table))
    }

    /// Whether an entry passes every filter (the index already applied some).
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        let ts = entry_ts(entry, DateTime::UNIX_EPOCH);
        self.table.as_ref().is_none_or(|t| &entry.table == t)
            && self.may_read(&entry.table)
            && self.key.as_ref().is_none_or(|k| same_key(k, &entry.key))
            && self
                .actor
                .as_ref()
                // A CloudTrail principal shown as the actor does not hide
                // the actor the entry was written (and indexed) with.
                .is_none_or(|a| {
                    entry.actor.as_ref() == Some(a) || entry.item_actor.as_ref() == Some(a)
                })
            && self
                .correlation
                .as_ref()
                .is_none_or(|c| entry.correlation.as_ref() == Some(c))
            && self.principal.as_ref().is_none_or(|p| {
                entry
                    .principal
                    .as_ref()
                    .is_some_and(|e| e.arn.as_ref() == Some(p))
            })
            && self.event.as_ref().is_none_or(|e| &entry.event == e)
            && self.range().contains(&ts)
            && self
                .field
                .as_ref()
                .is_none_or(|f| entry.changes.iter().any(|c| self.change_matches(f, c)))
    }

    fn change_matches(&self, field: &str, c: &Change) -> bool {
        at_or_below(&c.path, field)
            && self
                .from
                .as_ref()
                .is_none_or(|v| c.old.as_ref().is_some_and(|o| same_value(o, v)))
            && self
                .to
                .as_ref()
                .is_none_or(|v| c.new.as_ref().is_some_and(|n| same_value(n, v)))
    }

    /// The cheapest filters, on what the index row carries.
    fn hit_matches(&self, hit: &IndexHit) -> bool {
        self.table.as_ref().is_none_or(|t| hit.table() == t)
            && self.may_read(hit.table())
            && self
                .event
                .as_ref()
                .is_none_or(|e| hit.event.as_ref().is_none_or(|h| h == e))
    }
}

/// `path` is `field` or a path below it (`a.b` is below `a`, so is `a[0]`).
pub fn at_or_below(path: &str, field: &str) -> bool {
    path == field
        || path
            .strip_prefix(field)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

fn same_key(a: &Item, b: &Item) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
}

// ---------------------------------------------------------------- plans

/// Where a query reads. Shown in logs, so people see the index it chose.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// One item's partition, in stream order.
    Item { table: String, key: Item },
    /// Index partitions, merged by time.
    Lanes(Vec<(Index, String)>),
}

impl Plan {
    pub fn choose(filter: &QueryFilter) -> Plan {
        if let (Some(table), Some(key)) = (&filter.table, &filter.key) {
            return Plan::Item {
                table: table.clone(),
                key: key.clone(),
            };
        }
        // The most selective index first: a request id names a handful of
        // changes; a principal or an actor usually fewer than a whole table.
        let lanes = if let Some(c) = &filter.correlation {
            lanes(Index::Correlation, c)
        } else if let Some(p) = &filter.principal {
            lanes(Index::Principal, p)
        } else if let Some(a) = &filter.actor {
            lanes(Index::Actor, a)
        } else if let Some(t) = &filter.table {
            lanes(Index::Table, t)
        } else {
            filter
                .tables
                .iter()
                .flat_map(|t| lanes(Index::Table, t))
                .collect()
        };
        Plan::Lanes(lanes)
    }

    pub fn describe(&self) -> String {
        match self {
            Plan::Item { table, .. } => format!("item partition of {table}"),
            Plan::Lanes(l) => format!(
                "{} ({} partitions)",
                l.first().map(|(i, _)| i.name()).unwrap_or("nothing"),
                l.len()
            ),
        }
    }

    fn lane_count(&self) -> usize {
        match self {
            Plan::Item { .. } => 1,
            Plan::Lanes(l) => l.len(),
        }
    }
}

fn lanes(index: Index, value: &str) -> Vec<(Index, String)> {
    index
        .partitions(value)
        .into_iter()
        .map(|p| (index, p))
        .collect()
}

// ---------------------------------------------------------------- cursors

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Lane {
    #[serde(rename = "f")]
    Fresh,
    #[serde(rename = "a")]
    After(Position),
    #[serde(rename = "d")]
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct CursorState {
    /// Which query it belongs to (a hash of its filters): a cursor passed
    /// with other filters is refused rather than silently misread.
    q: u64,
    lanes: Vec<Lane>,
}

/// The identity of a query, for its cursors. Not its time range: an age
/// such as `2h` moves with the clock between one page and the next, and a
/// position stays valid in another range of the same lanes. Not the
/// caller's scope (`readable`) either: it does not choose the lanes.
fn query_id(filter: &QueryFilter) -> u64 {
    let timeless = QueryFilter {
        since: None,
        until: None,
        readable: None,
        ..filter.clone()
    };
    crate::value::fnv1a64(format!("{timeless:?}").as_bytes())
}

/// Where the next page starts: opaque text (URL-safe base64), to be passed
/// back unchanged with the same filters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(String);

impl Cursor {
    pub fn parse(text: &str) -> Result<Cursor, ReadError> {
        let c = Cursor(text.to_string());
        c.state()?;
        Ok(c)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn from_state(state: &CursorState) -> Cursor {
        let json = serde_json::to_vec(state).unwrap_or_default();
        Cursor(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
    }

    fn state(&self) -> Result<CursorState, ReadError> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&self.0)
            .map_err(|e| ReadError::BadCursor(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| ReadError::BadCursor(e.to_string()))
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One page of results: entries exactly as `history --json` prints them,
/// and where the next page starts (`None`: this was the last).
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub entries: Vec<AuditEntry>,
    pub next: Option<Cursor>,
}

// ---------------------------------------------------------------- query

/// One page of a query, in time order (`filter.order`), at most `page_size`
/// entries. Reads in proportion to what the chosen index holds within the
/// filters' time range, never the whole trail.
pub async fn query<S: ReadStore>(
    store: &S,
    filter: &QueryFilter,
    cursor: Option<&Cursor>,
    page_size: usize,
) -> Result<Page, ReadError> {
    filter.validate()?;
    let page_size = page_size.clamp(1, 1000);
    let plan = Plan::choose(filter);
    let mut lanes = match cursor {
        Some(c) => {
            let state = c.state()?;
            if state.q != query_id(filter) || state.lanes.len() != plan.lane_count() {
                return Err(ReadError::BadCursor(
                    "it belongs to a query with other filters".into(),
                ));
            }
            state.lanes
        }
        None => vec![Lane::Fresh; plan.lane_count()],
    };
    tracing::debug!(plan = %plan.describe(), "query plan");
    let mut out = Vec::new();
    // Index rows read but not yet merged: kept across rounds, so a lane's
    // rows are read once however the merge interleaves the lanes.
    let mut buffers: Vec<Buffered> = vec![Buffered::default(); lanes.len()];
    // Index rows merged per round: starts at the page size and doubles while
    // rounds yield less than half of that (filters on the entries, such as
    // `--field`, decide only after the fetch), so a selective query makes
    // few large rounds rather than many small ones.
    let mut per_round = page_size;
    for _ in 0..MAX_ROUNDS {
        let drained = lanes
            .iter()
            .zip(&buffers)
            .all(|(l, b)| *l == Lane::Done && b.hits.is_empty());
        if out.len() >= page_size || drained {
            break;
        }
        let want = page_size - out.len();
        match &plan {
            Plan::Item { table, key } => {
                item_round(store, filter, table, key, &mut lanes[0], want, &mut out).await?
            }
            Plan::Lanes(parts) => {
                let before = out.len();
                let round = Round {
                    want,
                    rows: per_round.max(want),
                };
                lanes_round(
                    store,
                    filter,
                    parts,
                    &mut lanes,
                    &mut buffers,
                    round,
                    &mut out,
                )
                .await?;
                if (out.len() - before) * 2 < round.rows {
                    per_round = (per_round * 2).min(MAX_ROUND_ROWS);
                }
            }
        }
    }
    // Rows read but not merged are read again from the cursor: a lane
    // resumes after the last row it gave.
    for (lane, buffer) in lanes.iter_mut().zip(buffers) {
        if let Some(resume) = buffer.resume {
            *lane = resume;
        }
    }
    let next = (!lanes.iter().all(|l| *l == Lane::Done)).then(|| {
        Cursor::from_state(&CursorState {
            q: query_id(filter),
            lanes,
        })
    });
    Ok(Page { entries: out, next })
}

async fn item_round<S: ReadStore>(
    store: &S,
    filter: &QueryFilter,
    table: &str,
    key: &Item,
    lane: &mut Lane,
    want: usize,
    out: &mut Vec<AuditEntry>,
) -> Result<(), ReadError> {
    let after = match lane {
        Lane::Done => return Ok(()),
        Lane::Fresh => None,
        Lane::After(p) => Some(p.clone()),
    };
    let desc = filter.order == Order::Desc;
    let request = HistoryRequest {
        table,
        key,
        descending: desc,
        after: after.as_ref(),
        limit: want,
    };
    let page = store.history_page(&request).await?;
    let range = filter.range();
    let mut taken = 0;
    for (entry, position) in page.entries {
        if taken == want {
            return Ok(());
        }
        let ts = entry_ts(&entry, DateTime::UNIX_EPOCH);
        // One item's entries are in stream order, which is time order:
        // past the range's far end there is nothing more to find.
        let beyond = entry.event != "SNAPSHOT"
            && if desc {
                range.since.as_deref().is_some_and(|s| ts.as_str() < s)
            } else {
                range.until.as_deref().is_some_and(|u| ts.as_str() > u)
            };
        if beyond {
            *lane = Lane::Done;
            return Ok(());
        }
        *lane = Lane::After(position);
        if filter.matches(&entry) {
            out.push(entry);
            taken += 1;
        }
    }
    *lane = match page.next {
        Some(p) => Lane::After(p),
        None => Lane::Done,
    };
    Ok(())
}

/// One lane's index rows fetched and not yet merged.
#[derive(Clone, Debug, Default)]
struct Buffered {
    hits: std::collections::VecDeque<IndexHit>,
    /// Where the lane resumes if the buffer is dropped: its state before the
    /// first row still buffered (`None`: the lane's own state holds).
    resume: Option<Lane>,
}

/// Most index rows one round merges (and fetches the entries of).
const MAX_ROUND_ROWS: usize = 1000;

/// How much one round of a sharded query takes on.
#[derive(Clone, Copy, Debug)]
struct Round {
    /// Entries still wanted for the page.
    want: usize,
    /// Index rows to merge (at least `want`).
    rows: usize,
}

/// One round of a sharded query: refill the lanes whose buffer ran dry, then
/// merge the lanes' rows by time (a k-way merge: a row is taken only while
/// every lane that may hold earlier rows has one buffered), fetch the
/// entries of the rows that pass the index-level filters, and keep those
/// that match, up to `want`; rows merged past the last one kept go back to
/// their lanes. Each lane reads about its share of the round, so a query
/// reads about what it merges (plus up to one page a lane), not a round a lane.
async fn lanes_round<S: ReadStore>(
    store: &S,
    filter: &QueryFilter,
    parts: &[(Index, String)],
    lanes: &mut [Lane],
    buffers: &mut [Buffered],
    round: Round,
    out: &mut Vec<AuditEntry>,
) -> Result<(), ReadError> {
    let desc = filter.order == Order::Desc;
    let range = filter.range();
    let per_lane = (round.rows.div_ceil(parts.len().max(1)) * 2 + 4).clamp(1, 1000);
    let reads = parts.iter().zip(lanes.iter()).zip(buffers.iter()).map(
        |(((index, partition), lane), buffer)| {
            let range = &range;
            async move {
                let after = match lane {
                    _ if !buffer.hits.is_empty() => return Ok(None),
                    Lane::Done => return Ok(None),
                    Lane::Fresh => None,
                    Lane::After(p) => Some(p),
                };
                let request = IndexRequest {
                    index: *index,
                    partition,
                    range,
                    descending: desc,
                    after,
                    limit: per_lane,
                };
                store.index_page(&request).await.map(Some)
            }
        },
    );
    let pages = futures_util::future::try_join_all(reads).await?;
    for ((page, lane), buffer) in pages
        .into_iter()
        .zip(lanes.iter_mut())
        .zip(buffers.iter_mut())
    {
        let Some(page) = page else { continue };
        if !page.hits.is_empty() && buffer.resume.is_none() {
            buffer.resume = Some(lane.clone());
        }
        buffer.hits.extend(page.hits);
        *lane = match page.next {
            Some(p) => Lane::After(p),
            None => Lane::Done,
        };
    }

    // Merge while no lane that may still hold an earlier row is empty. Each
    // merged row remembers its lane's `resume` before it, to be put back.
    let mut merged: Vec<(usize, IndexHit, Option<Lane>)> = Vec::new();
    while merged.len() < round.rows {
        let starved = lanes
            .iter()
            .zip(buffers.iter())
            .any(|(l, b)| b.hits.is_empty() && *l != Lane::Done);
        if starved {
            break;
        }
        let next = buffers
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.hits.front().map(|h| (i, h.ts.as_str())))
            .reduce(|best, cur| {
                let better = if desc { cur.1 > best.1 } else { cur.1 < best.1 };
                if better {
                    cur
                } else {
                    best
                }
            });
        let Some((i, _)) = next else { break };
        let Some(hit) = buffers[i].hits.pop_front() else {
            break;
        };
        let previous = buffers[i].resume.take();
        buffers[i].resume =
            (!buffers[i].hits.is_empty()).then(|| Lane::After(hit.position.clone()));
        merged.push((i, hit, previous));
    }

    let wanted: Vec<usize> = (0..merged.len())
        .filter(|&j| filter.hit_matches(&merged[j].1))
        .collect();
    let refs: Vec<(String, String)> = wanted
        .iter()
        .map(|&j| (merged[j].1.pk.clone(), merged[j].1.sk.clone()))
        .collect();
    let fetched = if refs.is_empty() {
        Vec::new()
    } else {
        store.fetch_entries(&refs).await?
    };
    // The merged rows up to (and with) the `want`-th match are consumed.
    let mut consumed = merged.len();
    let mut kept = 0;
    for (&j, entry) in wanted.iter().zip(fetched) {
        let Some(entry) = entry else { continue };
        if filter.matches(&entry) {
            out.push(entry);
            kept += 1;
            if kept == round.want {
                consumed = j + 1;
                break;
            }
        }
    }
    // Put the rest back, the last merged first, restoring each lane's resume.
    while merged.len() > consumed {
        let Some((i, hit, previous)) = merged.pop() else {
            break;
        };
        buffers[i].hits.push_front(hit);
        buffers[i].resume = previous;
    }
    Ok(())
}

/// `history --last N`: the newest `n` entries of one item within `range`
/// (either end open), oldest first. Reads about `n` entries from the newest
/// end, not the whole history.
pub async fn last_entries<S: ReadStore>(
    store: &S,
    table: &str,
    key: &Item,
    n: usize,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<AuditEntry>, ReadError> {
    let filter = QueryFilter {
        table: Some(table.to_string()),
        key: Some(key.clone()),
        since,
        until,
        order: Order::Desc,
        ..QueryFilter::default()
    };
    let mut out = Vec::new();
    let mut cursor = None;
    while out.len() < n {
        let page = query(store, &filter, cursor.as_ref(), n - out.len()).await?;
        out.extend(page.entries);
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    out.truncate(n);
    out.reverse();
    Ok(out)
}

/// The gaps as people read them: each open gap that a later gap closes
/// shows where reading resumed (`closed_by`). A written gap is never
/// updated, so its right bracket, unknown when it was written, is found in
/// the gap that names it in `closes` (of its shard, or of a later shard of
/// its lineage; after a split, each child closes it: the first it shows).
pub fn gaps_bracketed(mut gaps: Vec<crate::entry::Gap>) -> Vec<crate::entry::Gap> {
    use crate::entry::{GapClosure, GapRef};
    let closures: Vec<(String, String, GapRef, GapClosure)> = gaps
        .iter()
        .flat_map(|c| {
            c.closes.iter().map(move |named| {
                (
                    c.table.clone(),
                    c.stream_arn.clone(),
                    named.clone(),
                    GapClosure {
                        shard_id: c.shard_id.clone(),
                        resumed_at_sequence_number: c.resumed_at_sequence_number.clone(),
                        resumed_at_time: c.resumed_at_time.clone(),
                    },
                )
            })
        })
        .collect();
    for g in gaps
        .iter_mut()
        .filter(|g| g.resumed_at_sequence_number.is_none() && !g.is_closing())
    {
        let named = g.reference();
        g.closed_by = closures
            .iter()
            .find(|(table, arn, r, _)| *table == g.table && *arn == g.stream_arn && *r == named)
            .map(|(_, _, _, closure)| closure.clone());
    }
    gaps
}

#[cfg(test)]
mod tests;
