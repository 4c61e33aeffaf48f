//! Observability as data: every notable event of the daemon is a small type
//! that logs and counts itself (`SomeEvent { .. }.emit()`); business code only
//! emits. The counts live in one process-wide [`Observer`]: Prometheus
//! metrics (`/metrics`), the per-table health behind `/readyz`, shard states
//! and lag. Labels are per table, never per shard: shards rotate every few
//! hours, and a label per shard id would grow without bound.
//!
//! Here: the [`Observer`] (what an event changes) and the process-wide one.
//!
//! - `events` — the event types; each logs and counts itself.
//! - `metrics` — the metric families and labels, derived gauges, `/metrics` text.
//! - `state`  — per-table and per-shard state and lag; readiness from them.
//! - `health` — each table's state as the supervisor sets it.
//! - `http`   — the listener on `[observability] listen`: /metrics, /healthz, /readyz;
//!   and the `healthcheck` client.
//! - `emf`    — CloudWatch Embedded Metric Format lines on stdout.
//! - `attribution` — the CloudTrail reader's counts and lag, read at each scrape.

pub mod attribution;
pub mod emf;
pub mod health;
pub mod http;

mod events;
mod metrics;
mod state;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::registry::Registry;
use tracing::warn;

pub use events::{
    EntriesWritten, Event, GapClosed, GapRecorded, LeaseLost, LeaseScan, PageHandled, Retrying,
    ShardAt, ShardFailed, ShardForgotten, ShardSeen, ShardStateChanged, StreamCall,
    StreamForgotten, TableStateChanged, TableUnselected, TablesListed, TaskFailed, WriteUnfinished,
};
use health::TableState;
use metrics::{CallLabel, Metrics};
// `attribution` labels its series as the families here do.
use metrics::TableLabel;
pub(crate) use metrics::TableSnapshot;
use state::{table_readiness, ShardLag, State, TableObs, DEFAULT_STALE_AFTER};
pub use state::{Readiness, ReplicaView, ShardState, TableReadiness};

/// The operations counted (`operation` label).
pub const OPERATIONS: [&str; 7] = [
    "DescribeTable",
    "ListStreams",
    "DescribeStream",
    "GetShardIterator",
    "GetRecords",
    "ListTables",
    "ListTagsOfResource",
];

/// Every `outcome` label [`outcome`] gives.
pub const OUTCOMES: [&str; 7] = [
    "ok",
    "throttled",
    "transient",
    "trimmed",
    "expired_iterator",
    "not_found",
    "error",
];

/// The process's metrics, table health, shard states and lags.
pub struct Observer {
    registry: Registry,
    metrics: Metrics,
    state: Mutex<State>,
    attribution: attribution::AttributionCollector,
}

impl Default for Observer {
    fn default() -> Self {
        Observer::new()
    }
}

impl Observer {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ddb_audit");
        let metrics = Metrics::register(&mut registry);
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
                listed: false,
                listing_problem: None,
                replica: None,
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
        for operation in OPERATIONS {
            for outcome in OUTCOMES {
                let _ = self.metrics.stream_calls.get_or_create(&CallLabel {
                    operation: operation.to_string(),
                    outcome: outcome.to_string(),
                });
            }
        }
    }

    /// A listing's outcome: `None` when it succeeded, else why not.
    fn set_listed(&self, problem: Option<String>) {
        let mut st = self.lock();
        st.listed |= problem.is_none();
        st.listing_problem = problem;
    }

    /// A table no longer selected leaves `/readyz`, and its gauges leave
    /// `/metrics` (an alert on them would otherwise fire for ever); its
    /// counters stay, as counters do.
    fn unregister_table(&self, table: &str) {
        let mut st = self.lock();
        st.tables.remove(table);
        let l = metrics::label(table);
        let m = &self.metrics;
        m.table_ready.remove(&l);
        m.failing_shards.remove(&l);
        m.lag_seconds.remove(&l);
    }

    fn table_mut<'a>(&self, st: &'a mut State, table: &str) -> &'a mut TableObs {
        if !st.tables.contains_key(table) {
            self.touch_table(table);
        }
        st.tables
            .entry(table.to_string())
            .or_insert_with(TableObs::new)
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
        at: ShardAt,
        state: ShardState,
        error: Option<String>,
        only_if_new: bool,
    ) {
        let mut st = self.lock();
        let t = self.table_mut(&mut st, at.table);
        let key = (at.stream.to_string(), at.shard.to_string());
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
        self.publish_table(&st, at.table);
    }

    /// Drops one shard (or, `None`, every shard of the stream) from the counts.
    fn forget(&self, table: &str, stream: &str, shard: Option<&str>) {
        let mut st = self.lock();
        let t = self.table_mut(&mut st, table);
        t.remove(stream, shard);
        self.publish_table(&st, table);
    }

    fn page(&self, at: ShardAt, newest: Option<DateTime<Utc>>, n: usize) {
        let mut st = self.lock();
        let t = self.table_mut(&mut st, at.table);
        let obs = t.shard_entry(
            (at.stream.to_string(), at.shard.to_string()),
            ShardState::Reading,
        );
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

    pub fn readiness(&self) -> Readiness {
        let st = self.lock();
        let tables: Vec<TableReadiness> = st
            .tables
            .iter()
            .map(|(name, t)| table_readiness(name, t))
            .collect();
        Readiness {
            ready: (!tables.is_empty() || st.listed)
                && st.listing_problem.is_none()
                && tables.iter().all(|t| t.ready),
            tables,
            discovery: st.listing_problem.clone(),
            replica: st.replica.clone(),
        }
    }

    pub fn alive(&self) -> bool {
        self.lock().alive
    }

    pub fn set_alive(&self, alive: bool) {
        self.lock().alive = alive;
    }
}

/// The process-wide observer that events count into.
pub fn global() -> &'static Observer {
    static GLOBAL: OnceLock<Observer> = OnceLock::new();
    GLOBAL.get_or_init(Observer::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each `(name, labels, value)` is a sample of `text`.
    /// An observer of `tables`, each stale after `stale_after`.
    fn observing(tables: &[&str], stale_after: Duration) -> Observer {
        let o = Observer::new();
        let tables: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
        o.register_tables(&tables, stale_after);
        o
    }

    /// Shard `x` of stream `s` of table `a` read an empty page: caught up.
    fn empty_page(o: &Observer) {
        PageHandled {
            at: ShardAt {
                table: "a",
                stream: "s",
                shard: "x",
            },
            records: 0,
            newest_record: None,
        }
        .emit_to(o);
    }

    fn assert_samples(text: &str, want: &[(&str, &str, f64)]) {
        for (name, labels, value) in want {
            assert_eq!(
                sample(text, name, labels),
                Some(*value),
                "{name}{{{labels}}}"
            );
        }
    }

    fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
        let want = format!("{name}{{{labels}}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&want))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn every_series_of_a_configured_table_exists_at_zero() {
        let o = observing(&["orders"], DEFAULT_STALE_AFTER);
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
        let throttled = "operation=\"GetRecords\",outcome=\"throttled\"";
        assert_samples(&text, &[("ddb_audit_stream_calls_total", throttled, 0.0)]);
    }

    #[test]
    fn found_tables_come_and_go_and_elsewhere_is_ready() {
        let o = observing(&[], Duration::from_secs(30));
        // Nothing matched yet: not ready until the region has been listed.
        assert!(!o.readiness().ready);
        TablesListed {
            problem: Some("cannot list: AccessDenied".into()),
        }
        .emit_to(&o);
        let r = o.readiness();
        assert!(!r.ready && r.discovery.is_some(), "{r:?}");
        TablesListed { problem: None }.emit_to(&o);
        assert!(o.readiness().ready);
        let elsewhere = TableState::Elsewhere("audited in eu-west-1: …".into());
        for (table, state) in [("g", &elsewhere), ("t", &TableState::Auditing)] {
            TableStateChanged { table, state }.emit_to(&o);
        }
        let r = o.readiness();
        assert!(r.ready, "{r:?}");
        let g = r.tables.iter().find(|t| t.table == "g").unwrap();
        assert_eq!(g.state, "elsewhere");
        assert!(g
            .reason
            .as_deref()
            .unwrap()
            .starts_with("audited in eu-west-1"));
        assert_samples(
            &o.render(),
            &[("ddb_audit_table_ready", "table=\"g\"", 1.0)],
        );
        TableUnselected { table: "t" }.emit_to(&o);
        assert!(o.readiness().tables.iter().all(|x| x.table != "t"));
        assert_eq!(
            sample(&o.render(), "ddb_audit_table_ready", "table=\"t\""),
            None
        );
    }

    #[test]
    fn counts_lag_and_readiness_follow_events() {
        let o = observing(&["a", "b"], Duration::from_secs(30));
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
            at: ShardAt {
                table: "a",
                stream: "s",
                shard: "x",
            },
            drained: false,
        }
        .emit_to(&o);
        ShardStateChanged {
            at: ShardAt {
                table: "a",
                stream: "s",
                shard: "x",
            },
            state: ShardState::Reading,
        }
        .emit_to(&o);
        let old = Utc::now() - chrono::Duration::seconds(100);
        PageHandled {
            at: ShardAt {
                table: "a",
                stream: "s",
                shard: "x",
            },
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
        assert_samples(
            &text,
            &[
                ("ddb_audit_records_read_total", "table=\"a\"", 3.0),
                ("ddb_audit_entries_written_total", "table=\"a\"", 2.0),
                ("ddb_audit_duplicates_total", "table=\"a\"", 1.0),
                ("ddb_audit_shards", "table=\"a\",state=\"reading\"", 1.0),
            ],
        );
        let lag = sample(&text, "ddb_audit_lag_seconds", "table=\"a\"").unwrap();
        assert!((99.0..120.0).contains(&lag), "{lag}");

        // An empty page: caught up, lag 0.
        empty_page(&o);
        assert_eq!(
            sample(&o.render(), "ddb_audit_lag_seconds", "table=\"a\""),
            Some(0.0)
        );

        ShardFailed {
            at: ShardAt {
                table: "b",
                stream: "s2",
                shard: "y",
            },
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
        assert_samples(
            &o.render(),
            &[
                ("ddb_audit_failing_shards", "table=\"b\"", 1.0),
                ("ddb_audit_table_ready", "table=\"b\"", 0.0),
            ],
        );
        ShardStateChanged {
            at: ShardAt {
                table: "b",
                stream: "s2",
                shard: "y",
            },
            state: ShardState::Reading,
        }
        .emit_to(&o);
        assert!(o.readiness().ready);
    }

    #[test]
    fn a_stalled_reader_does_not_freeze_at_zero() {
        let o = observing(&["a"], Duration::from_secs(30));
        empty_page(&o);
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
            at: ShardAt {
                table: "a",
                stream: "s",
                shard: "x",
            },
            state: ShardState::Drained,
        }
        .emit_to(&o);
        assert_eq!(
            sample(&o.render(), "ddb_audit_lag_seconds", "table=\"a\""),
            Some(0.0)
        );
    }

    #[test]
    fn writes_given_up_and_failed_tasks_are_counted() {
        let o = Observer::new();
        for what in ["gap", "gap", "checkpoint"] {
            WriteUnfinished {
                table: "orders",
                what,
            }
            .emit_to(&o);
        }
        TaskFailed {
            task: "digests",
            error: &"panicked",
        }
        .emit_to(&o);
        let text = o.render();
        for line in [
            "ddb_audit_unfinished_writes_total{table=\"orders\",what=\"gap\"} 2",
            "ddb_audit_unfinished_writes_total{table=\"orders\",what=\"checkpoint\"} 1",
            "ddb_audit_task_failures_total{task=\"digests\"} 1",
        ] {
            assert!(text.contains(line), "no `{line}` in:\n{text}");
        }
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
        let o = observing(&["a"], DEFAULT_STALE_AFTER);
        for shard in ["x", "y"] {
            ShardSeen {
                at: ShardAt {
                    table: "a",
                    stream: "s",
                    shard,
                },
                drained: true,
            }
            .emit_to(&o);
        }
        ShardSeen {
            at: ShardAt {
                table: "a",
                stream: "s2",
                shard: "z",
            },
            drained: false,
        }
        .emit_to(&o);
        let drained = "table=\"a\",state=\"drained\"";
        assert_eq!(sample(&o.render(), "ddb_audit_shards", drained), Some(2.0));
        ShardForgotten {
            at: ShardAt {
                table: "a",
                stream: "s",
                shard: "x",
            },
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
        assert_samples(&text, &[("ddb_audit_shards", waiting, 1.0)]);
    }

    #[test]
    fn table_failing_names_the_reason() {
        let o = observing(&["a"], DEFAULT_STALE_AFTER);
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
