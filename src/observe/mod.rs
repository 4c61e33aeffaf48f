//! Observability as data: every notable event of the daemon is a small type
//! that logs and counts itself (`SomeEvent { .. }.emit()`); business code only
//! emits. The counts live in one process-wide [`Observer`]: Prometheus
//! metrics (`/metrics`), the per-table health behind `/readyz`, shard states
//! and lag. Labels are per table, never per shard: shards rotate every few
//! hours, and a label per shard id would grow without bound.
//!
//! - `http`   — the listener on `[observability] listen`: /metrics, /healthz, /readyz;
//!   and the `healthcheck` client.
//! - `emf`    — CloudWatch Embedded Metric Format lines on stdout.
//! - `stream` — a `StreamApi` decorator counting every stream call by outcome.
//! - `attribution` — the CloudTrail reader's counts and lag, read at each scrape.

pub mod attribution;
pub mod emf;
pub mod health;
pub mod http;
pub mod stream;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tracing::{debug, error, info, warn};

use health::TableState;

/// The states a shard is counted in (`ddb_audit_shards{table,state}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardState {
    /// Known, not being read: its parent is not drained yet, or it waits
    /// for a slot among the closed shards drained at once.
    Waiting,
    /// A task is reading it.
    Reading,
    /// Its last read failed with an error retrying cannot fix; it is
    /// restarted from its checkpoint after a cool-down.
    Failing,
    /// Read to its end, and still tracked (drained shards are forgotten once
    /// their children run: `ShardForgotten`).
    Drained,
}

impl ShardState {
    pub const ALL: [ShardState; 4] = [
        ShardState::Waiting,
        ShardState::Reading,
        ShardState::Failing,
        ShardState::Drained,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            ShardState::Waiting => "waiting",
            ShardState::Reading => "reading",
            ShardState::Failing => "failing",
            ShardState::Drained => "drained",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardsLabel {
    table: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabel {
    operation: String,
    outcome: String,
}

type HistogramFamily = Family<TableLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 5 ms .. ~82 s: a write takes milliseconds, a catch-up hours (the top
    // bucket and +Inf hold those).
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

struct Metrics {
    records_read: Family<TableLabel, Counter>,
    entries_written: Family<TableLabel, Counter>,
    duplicates: Family<TableLabel, Counter>,
    gaps: Family<TableLabel, Counter>,
    lag_seconds: Family<TableLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    shards: Family<ShardsLabel, Gauge>,
    failing_shards: Family<TableLabel, Gauge>,
    table_ready: Family<TableLabel, Gauge>,
    stream_calls: Family<CallLabel, Counter>,
    retries: Family<OperationLabel, Counter>,
    write_seconds: HistogramFamily,
    entry_latency_seconds: HistogramFamily,
}

/// What is known of how far behind a shard's reading is.
#[derive(Clone, Debug)]
struct ShardLag {
    /// When its last page came back (or when reading began).
    last_page: DateTime<Utc>,
    /// The last page was empty: nothing more to read as of `last_page`.
    caught_up: bool,
    /// Creation time of the newest record handled.
    newest_record: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct ShardObs {
    state: ShardState,
    /// Present while the shard is not drained.
    lag: Option<ShardLag>,
    error: Option<String>,
}

#[derive(Debug)]
struct TableObs {
    /// As the supervisor last set it (`Engine::health`).
    health: TableState,
    /// Keyed by (stream ARN, shard id).
    shards: HashMap<(String, String), ShardObs>,
    /// Shards per state, kept with `shards`: a table tracks thousands of
    /// shards and every state change publishes, so counting must not scan.
    counts: HashMap<ShardState, i64>,
}

impl TableObs {
    fn new() -> Self {
        TableObs {
            health: TableState::Starting,
            shards: HashMap::new(),
            counts: HashMap::new(),
        }
    }

    /// The shard's observation, created in `state` if new (and counted).
    fn shard_entry(&mut self, key: (String, String), state: ShardState) -> &mut ShardObs {
        let counts = &mut self.counts;
        self.shards.entry(key).or_insert_with(|| {
            *counts.entry(state).or_default() += 1;
            ShardObs {
                state,
                lag: None,
                error: None,
            }
        })
    }

    fn set_state(&mut self, key: (String, String), state: ShardState) -> &mut ShardObs {
        let counts = &mut self.counts;
        match self.shards.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let obs = e.into_mut();
                if obs.state != state {
                    *counts.entry(obs.state).or_default() -= 1;
                    *counts.entry(state).or_default() += 1;
                    obs.state = state;
                }
                obs
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                *counts.entry(state).or_default() += 1;
                e.insert(ShardObs {
                    state,
                    lag: None,
                    error: None,
                })
            }
        }
    }

    fn remove(&mut self, stream: &str, shard: Option<&str>) {
        match shard {
            Some(id) => {
                if let Some(obs) = self.shards.remove(&(stream.to_string(), id.to_string())) {
                    *self.counts.entry(obs.state).or_default() -= 1;
                }
            }
            None => {
                let counts = &mut self.counts;
                self.shards.retain(|(s, _), obs| {
                    let keep = s != stream;
                    if !keep {
                        *counts.entry(obs.state).or_default() -= 1;
                    }
                    keep
                });
            }
        }
    }

    fn count(&self, state: ShardState) -> i64 {
        self.counts.get(&state).copied().unwrap_or(0)
    }
}

/// One table's readiness, as `/readyz` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableReadiness {
    pub table: String,
    pub ready: bool,
    /// `starting`, `auditing`, `draining` (deleted or stream disabled: its
    /// old streams are read) or `failing`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The `/readyz` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub tables: Vec<TableReadiness>,
}

/// The process's metrics, table health, shard states and lags.
pub struct Observer {
    registry: Registry,
    metrics: Metrics,
    state: Mutex<State>,
    attribution: attribution::AttributionCollector,
}

struct State {
    tables: BTreeMap<String, TableObs>,
    /// A shard whose last page is older than this is not "caught up" any
    /// more: its lag counts from that page, so a stalled reader shows.
    stale_after: Duration,
    /// The daemon's loops are running (`/healthz`).
    alive: bool,
}

/// Idle shards poll every `idle_poll_max_ms` (5 s by default); this much
/// more than that without a page means reading has stalled.
const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30);

impl Default for Observer {
    fn default() -> Self {
        Observer::new()
    }
}

impl Observer {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ddb_audit");
        let metrics = Metrics {
            records_read: Family::default(),
            entries_written: Family::default(),
            duplicates: Family::default(),
            gaps: Family::default(),
            lag_seconds: Family::default(),
            shards: Family::default(),
            failing_shards: Family::default(),
            table_ready: Family::default(),
            stream_calls: Family::default(),
            retries: Family::default(),
            write_seconds: Family::new_with_constructor(latency_histogram),
            entry_latency_seconds: Family::new_with_constructor(latency_histogram),
        };
        let m = &metrics;
        registry.register(
            "records_read",
            "Stream records read, per audited table",
            m.records_read.clone(),
        );
        registry.register(
            "entries_written",
            "Audit entries written (new ones; re-deliveries are counted as duplicates)",
            m.entries_written.clone(),
        );
        registry.register(
            "duplicates",
            "Records delivered again whose entry was already written, so not written twice",
            m.duplicates.clone(),
        );
        registry.register(
            "gaps",
            "Gaps recorded: stream records trimmed before they could be read",
            m.gaps.clone(),
        );
        registry.register(
            "lag_seconds",
            "Seconds behind the stream: 0 when caught up, else now minus the creation time \
             of the newest record handled (max over the table's shards); grows when reading stalls",
            m.lag_seconds.clone(),
        );
        registry.register(
            "shards",
            "Shards known, by state: waiting, reading, failing, drained",
            m.shards.clone(),
        );
        registry.register(
            "failing_shards",
            "Shards whose reading failed with an error retrying cannot fix",
            m.failing_shards.clone(),
        );
        registry.register(
            "table_ready",
            "1 when the table is being audited, else 0 (see /readyz for why)",
            m.table_ready.clone(),
        );
        registry.register(
            "stream_calls",
            "DynamoDB Streams and DescribeTable calls, by operation and outcome",
            m.stream_calls.clone(),
        );
        registry.register(
            "retries",
            "Calls retried after a throttle or a transient error (stream and tables), by operation",
            m.retries.clone(),
        );
        registry.register(
            "write_seconds",
            "Time to write one page's audit entries durably, retries included",
            m.write_seconds.clone(),
        );
        registry.register(
            "entry_latency_seconds",
            "From a record's creation in the stream (the item write) to its audit entry written",
            m.entry_latency_seconds.clone(),
        );
        let attribution = attribution::AttributionCollector::default();
        registry.register_collector(Box::new(attribution.clone()));
        Observer {
            registry,
            metrics,
            attribution,
            state: Mutex::new(State {
                tables: BTreeMap::new(),
                stale_after: DEFAULT_STALE_AFTER,
                alive: false,
            }),
        }
    }

    /// Exports the CloudTrail reader's counts and lag from now on (once per
    /// process: one reader per daemon).
    pub fn watch_attribution(&self, stats: std::sync::Arc<attribution::Stats>) {
        if self.attribution.0.set(stats).is_err() {
            warn!("a second CloudTrail reader's counts are not exported; the first one's are");
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counts, not invariants, behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Declares the configured tables: every series of each exists from now
    /// on, at 0 (a missing series cannot be alerted on), and each table is
    /// not ready until the supervisor says it is audited.
    pub fn register_tables(&self, tables: &[String], stale_after: Duration) {
        let mut st = self.lock();
        st.stale_after = stale_after;
        for table in tables {
            st.tables.entry(table.clone()).or_insert_with(TableObs::new);
            self.touch_table(table);
        }
        for table in tables {
            self.publish_table(&st, table);
        }
        // Not per table, but alertable from the start too.
        for operation in stream::OPERATIONS {
            for outcome in stream::OUTCOMES {
                let _ = self.metrics.stream_calls.get_or_create(&CallLabel {
                    operation: operation.to_string(),
                    outcome: outcome.to_string(),
                });
            }
        }
    }

    fn touch_table(&self, table: &str) {
        let l = label(table);
        let m = &self.metrics;
        let _ = m.records_read.get_or_create(&l);
        let _ = m.entries_written.get_or_create(&l);
        let _ = m.duplicates.get_or_create(&l);
        let _ = m.gaps.get_or_create(&l);
        let _ = m.lag_seconds.get_or_create(&l);
        let _ = m.failing_shards.get_or_create(&l);
        let _ = m.table_ready.get_or_create(&l);
        let _ = m.write_seconds.get_or_create(&l);
        let _ = m.entry_latency_seconds.get_or_create(&l);
        for s in ShardState::ALL {
            let _ = m.shards.get_or_create(&shards_label(table, s));
        }
    }

    fn table_mut<'a>(&self, st: &'a mut State, table: &str) -> &'a mut TableObs {
        if !st.tables.contains_key(table) {
            self.touch_table(table);
        }
        st.tables
            .entry(table.to_string())
            .or_insert_with(TableObs::new)
    }

    /// Recomputes the table's derived gauges (shard counts, failing, ready).
    fn publish_table(&self, st: &State, table: &str) {
        let Some(t) = st.tables.get(table) else {
            return;
        };
        for s in ShardState::ALL {
            self.metrics
                .shards
                .get_or_create(&shards_label(table, s))
                .set(t.count(s));
        }
        let failing = t.count(ShardState::Failing);
        self.metrics
            .failing_shards
            .get_or_create(&label(table))
            .set(failing);
        // As `table_readiness` decides, without listing the failing shards.
        let ready = t.health == TableState::Auditing && failing == 0;
        self.metrics
            .table_ready
            .get_or_create(&label(table))
            .set(i64::from(ready));
    }

    /// Returns the previous health when it changed.
    fn set_health(&self, table: &str, health: TableState) -> Option<TableState> {
        let mut st = self.lock();
        let t = self.table_mut(&mut st, table);
        if t.health == health {
            return None;
        }
        let before = std::mem::replace(&mut t.health, health);
        self.publish_table(&st, table);
        Some(before)
    }

    fn set_shard_state(
        &self,
        table: &str,
        stream: &str,
        shard: &str,
        state: ShardState,
        error: Option<String>,
        only_if_new: bool,
    ) {
        let mut st = self.lock();
        let t = self.table_mut(&mut st, table);
        let key = (stream.to_string(), shard.to_string());
        if only_if_new && t.shards.contains_key(&key) {
            return;
        }
        let obs = t.set_state(key, state);
        obs.error = error;
        match state {
            ShardState::Drained => obs.lag = None,
            ShardState::Reading if obs.lag.is_none() => {
                obs.lag = Some(ShardLag {
                    last_page: Utc::now(),
                    caught_up: false,
                    newest_record: None,
                })
            }
            _ => {}
        }
        self.publish_table(&st, table);
    }

    /// Drops one shard (or, `None`, every shard of the stream) from the counts.
    fn forget(&self, table: &str, stream: &str, shard: Option<&str>) {
        let mut st = self.lock();
        let t = self.table_mut(&mut st, table);
        t.remove(stream, shard);
        self.publish_table(&st, table);
    }

    fn page(
        &self,
        table: &str,
        stream: &str,
        shard: &str,
        newest: Option<DateTime<Utc>>,
        n: usize,
    ) {
        let mut st = self.lock();
        let t = self.table_mut(&mut st, table);
        let obs = t.shard_entry((stream.to_string(), shard.to_string()), ShardState::Reading);
        let lag = obs.lag.get_or_insert(ShardLag {
            last_page: Utc::now(),
            caught_up: false,
            newest_record: None,
        });
        lag.last_page = Utc::now();
        lag.caught_up = n == 0;
        if newest.is_some() {
            lag.newest_record = newest;
        }
    }

    /// The table's lag now: the largest of its shards' (see `lag_seconds`).
    fn table_lag(&self, st: &State, table: &str, now: DateTime<Utc>) -> f64 {
        let Some(t) = st.tables.get(table) else {
            return 0.0;
        };
        let stale = chrono::Duration::from_std(st.stale_after).unwrap_or(chrono::Duration::MAX);
        let secs = |d: chrono::Duration| (d.num_milliseconds().max(0) as f64) / 1000.0;
        t.shards
            .values()
            .filter_map(|s| s.lag.as_ref())
            .map(|lag| {
                let since_page = now - lag.last_page;
                if lag.caught_up {
                    if since_page <= stale {
                        0.0
                    } else {
                        secs(since_page)
                    }
                } else if let Some(t) = lag.newest_record {
                    secs(now - t)
                } else if since_page > stale {
                    // Reading began and no page ever came back.
                    secs(since_page)
                } else {
                    0.0
                }
            })
            .fold(0.0, f64::max)
    }

    /// Brings the time-dependent gauges (lag) up to now.
    fn refresh(&self) {
        let st = self.lock();
        let now = Utc::now();
        for table in st.tables.keys() {
            let lag = self.table_lag(&st, table, now);
            self.metrics
                .lag_seconds
                .get_or_create(&label(table))
                .set(lag);
        }
    }

    /// The Prometheus text (OpenMetrics) exposition of every metric.
    pub fn render(&self) -> String {
        self.refresh();
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            warn!(error = %e, "cannot encode the metrics");
        }
        out
    }

    pub fn readiness(&self) -> Readiness {
        let st = self.lock();
        let tables: Vec<TableReadiness> = st
            .tables
            .iter()
            .map(|(name, t)| table_readiness(name, t))
            .collect();
        Readiness {
            ready: !tables.is_empty() && tables.iter().all(|t| t.ready),
            tables,
        }
    }

    pub fn alive(&self) -> bool {
        self.lock().alive
    }

    pub fn set_alive(&self, alive: bool) {
        self.lock().alive = alive;
    }

    /// Per-table values for the EMF writer: counters (totals) and gauges.
    pub(crate) fn snapshot(&self) -> Vec<TableSnapshot> {
        self.refresh();
        let st = self.lock();
        let m = &self.metrics;
        st.tables
            .iter()
            .map(|(table, t)| {
                let l = label(table);
                TableSnapshot {
                    table: table.clone(),
                    records_read: m.records_read.get_or_create(&l).get(),
                    entries_written: m.entries_written.get_or_create(&l).get(),
                    duplicates: m.duplicates.get_or_create(&l).get(),
                    gaps: m.gaps.get_or_create(&l).get(),
                    lag_seconds: m.lag_seconds.get_or_create(&l).get(),
                    failing_shards: m.failing_shards.get_or_create(&l).get(),
                    ready: table_readiness(table, t).ready,
                }
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TableSnapshot {
    pub table: String,
    pub records_read: u64,
    pub entries_written: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub lag_seconds: f64,
    pub failing_shards: i64,
    pub ready: bool,
}

fn table_readiness(name: &str, t: &TableObs) -> TableReadiness {
    let failing: Vec<String> = {
        let mut v: Vec<String> = t
            .shards
            .iter()
            .filter(|(_, s)| s.state == ShardState::Failing)
            .map(|((_, shard), s)| {
                format!(
                    "shard {shard} failing: {}",
                    s.error.as_deref().unwrap_or("unknown error")
                )
            })
            .collect();
        v.sort();
        v
    };
    let (state, reason) = match &t.health {
        TableState::Starting => (
            "starting",
            Some("starting: checking the table and its stream".to_string()),
        ),
        TableState::Auditing if !failing.is_empty() => ("failing", Some(failing.join("; "))),
        TableState::Auditing => ("auditing", None),
        other => (
            other.name(),
            Some(other.reason().unwrap_or("not audited").to_string()),
        ),
    };
    TableReadiness {
        table: name.to_string(),
        ready: reason.is_none(),
        state,
        reason,
    }
}

fn label(table: &str) -> TableLabel {
    TableLabel {
        table: table.to_string(),
    }
}

fn shards_label(table: &str, state: ShardState) -> ShardsLabel {
    ShardsLabel {
        table: table.to_string(),
        state: state.as_str().to_string(),
    }
}

/// The process-wide observer that events count into.
pub fn global() -> &'static Observer {
    static GLOBAL: OnceLock<Observer> = OnceLock::new();
    GLOBAL.get_or_init(Observer::new)
}

/// Something notable that happened: it logs and counts itself.
pub trait Event {
    fn emit_to(self, observer: &Observer);
    fn emit(self)
    where
        Self: Sized,
    {
        self.emit_to(global())
    }
}

/// The supervisor set a table's state (`Engine::health`, which logs it).
pub struct TableStateChanged<'a> {
    pub table: &'a str,
    pub state: &'a TableState,
}

impl Event for TableStateChanged<'_> {
    fn emit_to(self, o: &Observer) {
        o.set_health(self.table, self.state.clone());
    }
}

/// A shard left the supervisor's memory (drained and no longer needed):
/// it is no longer counted.
pub struct ShardForgotten<'a> {
    pub table: &'a str,
    pub stream: &'a str,
    pub shard: &'a str,
}

impl Event for ShardForgotten<'_> {
    fn emit_to(self, o: &Observer) {
        o.forget(self.table, self.stream, Some(self.shard));
    }
}

/// A stream is gone: none of its shards is counted any more.
pub struct StreamForgotten<'a> {
    pub table: &'a str,
    pub stream: &'a str,
}

impl Event for StreamForgotten<'_> {
    fn emit_to(self, o: &Observer) {
        o.forget(self.table, self.stream, None);
    }
}

/// A shard became known (listed). Counts it as waiting, or drained if its
/// checkpoint says so; a shard already known keeps its state.
pub struct ShardSeen<'a> {
    pub table: &'a str,
    pub stream: &'a str,
    pub shard: &'a str,
    pub drained: bool,
}

impl Event for ShardSeen<'_> {
    fn emit_to(self, o: &Observer) {
        let state = if self.drained {
            ShardState::Drained
        } else {
            ShardState::Waiting
        };
        o.set_shard_state(self.table, self.stream, self.shard, state, None, true);
    }
}

/// A shard moved to another state.
pub struct ShardStateChanged<'a> {
    pub table: &'a str,
    pub stream: &'a str,
    pub shard: &'a str,
    pub state: ShardState,
}

impl Event for ShardStateChanged<'_> {
    fn emit_to(self, o: &Observer) {
        debug!(table = %self.table, stream = %self.stream, shard = %self.shard,
            state = self.state.as_str(), "shard state");
        o.set_shard_state(self.table, self.stream, self.shard, self.state, None, false);
    }
}

/// A shard's reading failed with an error that retrying cannot fix.
pub struct ShardFailed<'a> {
    pub table: &'a str,
    pub stream: &'a str,
    pub shard: &'a str,
    pub error: &'a str,
}

/// Counted only: the supervisor logs it with its cool-down.
impl Event for ShardFailed<'_> {
    fn emit_to(self, o: &Observer) {
        o.set_shard_state(
            self.table,
            self.stream,
            self.shard,
            ShardState::Failing,
            Some(self.error.to_string()),
            false,
        );
    }
}

/// A GetRecords page was read and handled (its entries written and the
/// checkpoint saved). An empty page means the shard is caught up.
pub struct PageHandled<'a> {
    pub table: &'a str,
    pub stream: &'a str,
    pub shard: &'a str,
    pub records: usize,
    /// Creation time of the newest record in the page.
    pub newest_record: Option<DateTime<Utc>>,
}

impl Event for PageHandled<'_> {
    fn emit_to(self, o: &Observer) {
        if self.records > 0 {
            o.metrics
                .records_read
                .get_or_create(&label(self.table))
                .inc_by(self.records as u64);
        }
        o.page(
            self.table,
            self.stream,
            self.shard,
            self.newest_record,
            self.records,
        );
    }
}

/// One page's entries were written durably.
pub struct EntriesWritten<'a> {
    pub table: &'a str,
    /// New entries.
    pub written: usize,
    /// Re-delivered records whose entry was already there.
    pub duplicates: usize,
    /// How long the writes took, retries included.
    pub elapsed: Duration,
    /// The records' creation times (for the write → entry latency).
    pub created: &'a [Option<DateTime<Utc>>],
}

impl Event for EntriesWritten<'_> {
    fn emit_to(self, o: &Observer) {
        let l = label(self.table);
        let m = &o.metrics;
        m.entries_written
            .get_or_create(&l)
            .inc_by(self.written as u64);
        if self.duplicates > 0 {
            info!(
                table = %self.table,
                duplicates = self.duplicates,
                "records delivered again were already written; not written twice"
            );
            m.duplicates
                .get_or_create(&l)
                .inc_by(self.duplicates as u64);
        }
        debug!(table = %self.table, entries = self.written, "entries written");
        m.write_seconds
            .get_or_create(&l)
            .observe(self.elapsed.as_secs_f64());
        let now = Utc::now();
        let latency = m.entry_latency_seconds.get_or_create(&l);
        for t in self.created.iter().flatten() {
            let ms = (now - *t).num_milliseconds().max(0);
            latency.observe(ms as f64 / 1000.0);
        }
    }
}

/// A gap was recorded: records trimmed before they could be read.
pub struct GapRecorded<'a> {
    pub table: &'a str,
    pub shard: &'a str,
    pub after_sequence_number: Option<&'a str>,
    pub resumed_at_sequence_number: Option<&'a str>,
}

impl Event for GapRecorded<'_> {
    fn emit_to(self, o: &Observer) {
        error!(
            table = %self.table,
            shard = %self.shard,
            after_sequence_number = self.after_sequence_number.unwrap_or("none"),
            resumed_at_sequence_number = self.resumed_at_sequence_number.unwrap_or("none"),
            "gap recorded"
        );
        o.metrics.gaps.get_or_create(&label(self.table)).inc();
    }
}

/// The retry layer waits before calling again (throttled, or a transient
/// error). `operation` is one of the retry layer's fixed names. Counted only:
/// the retry layer logs, the first failures and then at growing intervals.
pub struct Retrying {
    pub operation: &'static str,
}

impl Event for Retrying {
    fn emit_to(self, o: &Observer) {
        o.metrics
            .retries
            .get_or_create(&OperationLabel {
                operation: self.operation.to_string(),
            })
            .inc();
    }
}

/// One call to DynamoDB Streams (or DescribeTable) and how it ended.
pub struct StreamCall {
    pub operation: &'static str,
    pub outcome: &'static str,
}

impl Event for StreamCall {
    fn emit_to(self, o: &Observer) {
        if self.outcome == "throttled" {
            debug!(operation = self.operation, "throttled");
        }
        o.metrics
            .stream_calls
            .get_or_create(&CallLabel {
                operation: self.operation.to_string(),
                outcome: self.outcome.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
        let want = format!("{name}{{{labels}}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&want))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn every_series_of_a_configured_table_exists_at_zero() {
        let o = Observer::new();
        o.register_tables(&["orders".into()], DEFAULT_STALE_AFTER);
        let text = o.render();
        for name in [
            "ddb_audit_records_read_total",
            "ddb_audit_entries_written_total",
            "ddb_audit_duplicates_total",
            "ddb_audit_gaps_total",
            "ddb_audit_lag_seconds",
            "ddb_audit_failing_shards",
            "ddb_audit_table_ready",
        ] {
            assert_eq!(
                sample(&text, name, "table=\"orders\""),
                Some(0.0),
                "{name} in\n{text}"
            );
        }
        for state in ShardState::ALL {
            let l = format!("table=\"orders\",state=\"{}\"", state.as_str());
            assert_eq!(sample(&text, "ddb_audit_shards", &l), Some(0.0), "{text}");
        }
        let l = "operation=\"GetRecords\",outcome=\"throttled\"";
        assert_eq!(
            sample(&text, "ddb_audit_stream_calls_total", l),
            Some(0.0),
            "{text}"
        );
    }

    #[test]
    fn counts_lag_and_readiness_follow_events() {
        let o = Observer::new();
        o.register_tables(&["a".into(), "b".into()], Duration::from_secs(30));
        assert!(!o.readiness().ready);
        for table in ["a", "b"] {
            TableStateChanged {
                table,
                state: &TableState::Auditing,
            }
            .emit_to(&o);
        }
        assert!(o.readiness().ready);

        ShardSeen {
            table: "a",
            stream: "s",
            shard: "x",
            drained: false,
        }
        .emit_to(&o);
        ShardStateChanged {
            table: "a",
            stream: "s",
            shard: "x",
            state: ShardState::Reading,
        }
        .emit_to(&o);
        let old = Utc::now() - chrono::Duration::seconds(100);
        PageHandled {
            table: "a",
            stream: "s",
            shard: "x",
            records: 3,
            newest_record: Some(old),
        }
        .emit_to(&o);
        EntriesWritten {
            table: "a",
            written: 2,
            duplicates: 1,
            elapsed: Duration::from_millis(20),
            created: &[Some(old)],
        }
        .emit_to(&o);
        let text = o.render();
        assert_eq!(
            sample(&text, "ddb_audit_records_read_total", "table=\"a\""),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, "ddb_audit_entries_written_total", "table=\"a\""),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "ddb_audit_duplicates_total", "table=\"a\""),
            Some(1.0)
        );
        let lag = sample(&text, "ddb_audit_lag_seconds", "table=\"a\"").unwrap();
        assert!((99.0..120.0).contains(&lag), "{lag}");
        assert_eq!(
            sample(&text, "ddb_audit_shards", "table=\"a\",state=\"reading\""),
            Some(1.0)
        );

        // An empty page: caught up, lag 0.
        PageHandled {
            table: "a",
            stream: "s",
            shard: "x",
            records: 0,
            newest_record: None,
        }
        .emit_to(&o);
        assert_eq!(
            sample(&o.render(), "ddb_audit_lag_seconds", "table=\"a\""),
            Some(0.0)
        );

        ShardFailed {
            table: "b",
            stream: "s2",
            shard: "y",
            error: "AccessDenied",
        }
        .emit_to(&o);
        let r = o.readiness();
        assert!(!r.ready);
        let b = r.tables.iter().find(|t| t.table == "b").unwrap();
        assert!(
            !b.ready
                && b.reason
                    .as_deref()
                    .unwrap()
                    .contains("y failing: AccessDenied")
        );
        assert!(r.tables.iter().find(|t| t.table == "a").unwrap().ready);
        let text = o.render();
        assert_eq!(
            sample(&text, "ddb_audit_failing_shards", "table=\"b\""),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "ddb_audit_table_ready", "table=\"b\""),
            Some(0.0)
        );
        ShardStateChanged {
            table: "b",
            stream: "s2",
            shard: "y",
            state: ShardState::Reading,
        }
        .emit_to(&o);
        assert!(o.readiness().ready);
    }

    #[test]
    fn a_stalled_reader_does_not_freeze_at_zero() {
        let o = Observer::new();
        o.register_tables(&["a".into()], Duration::from_secs(30));
        PageHandled {
            table: "a",
            stream: "s",
            shard: "x",
            records: 0,
            newest_record: None,
        }
        .emit_to(&o);
        {
            let mut st = o.lock();
            let t = st.tables.get_mut("a").unwrap();
            let lag = t.shards.values_mut().next().unwrap().lag.as_mut().unwrap();
            lag.last_page = Utc::now() - chrono::Duration::seconds(90);
        }
        let lag = sample(&o.render(), "ddb_audit_lag_seconds", "table=\"a\"").unwrap();
        assert!(lag >= 90.0, "{lag}");
        // A drained shard no longer counts.
        ShardStateChanged {
            table: "a",
            stream: "s",
            shard: "x",
            state: ShardState::Drained,
        }
        .emit_to(&o);
        assert_eq!(
            sample(&o.render(), "ddb_audit_lag_seconds", "table=\"a\""),
            Some(0.0)
        );
    }

    #[test]
    fn retries_and_stream_calls_are_counted_by_operation() {
        let o = Observer::new();
        for _ in 0..3 {
            Retrying {
                operation: "GetRecords",
            }
            .emit_to(&o);
        }
        StreamCall {
            operation: "GetRecords",
            outcome: "throttled",
        }
        .emit_to(&o);
        let text = o.render();
        assert!(
            text.contains("ddb_audit_retries_total{operation=\"GetRecords\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(
                "ddb_audit_stream_calls_total{operation=\"GetRecords\",outcome=\"throttled\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn forgotten_shards_and_streams_are_no_longer_counted() {
        let o = Observer::new();
        o.register_tables(&["a".into()], DEFAULT_STALE_AFTER);
        for shard in ["x", "y"] {
            ShardSeen {
                table: "a",
                stream: "s",
                shard,
                drained: true,
            }
            .emit_to(&o);
        }
        ShardSeen {
            table: "a",
            stream: "s2",
            shard: "z",
            drained: false,
        }
        .emit_to(&o);
        let drained = "table=\"a\",state=\"drained\"";
        assert_eq!(sample(&o.render(), "ddb_audit_shards", drained), Some(2.0));
        ShardForgotten {
            table: "a",
            stream: "s",
            shard: "x",
        }
        .emit_to(&o);
        assert_eq!(sample(&o.render(), "ddb_audit_shards", drained), Some(1.0));
        StreamForgotten {
            table: "a",
            stream: "s",
        }
        .emit_to(&o);
        let text = o.render();
        assert_eq!(sample(&text, "ddb_audit_shards", drained), Some(0.0));
        let waiting = "table=\"a\",state=\"waiting\"";
        assert_eq!(
            sample(&text, "ddb_audit_shards", waiting),
            Some(1.0),
            "{text}"
        );
    }

    #[test]
    fn table_failing_names_the_reason() {
        let o = Observer::new();
        o.register_tables(&["a".into()], DEFAULT_STALE_AFTER);
        let r = o.readiness();
        assert_eq!(r.tables[0].state, "starting");
        TableStateChanged {
            table: "a",
            state: &TableState::Draining("table deleted".into()),
        }
        .emit_to(&o);
        let r = o.readiness();
        assert_eq!(r.tables[0].state, "draining");
        assert_eq!(r.tables[0].reason.as_deref(), Some("table deleted"));
        assert_eq!(serde_json::to_value(&r).unwrap()["tables"][0]["table"], "a");
    }
}
