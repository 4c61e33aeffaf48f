//! The Prometheus side: the metric families and their labels (per table,
//! never per shard), registered with their help text; the gauges derived
//! from the state; and the text exposition (`/metrics`) and the EMF snapshot.

use chrono::Utc;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tracing::warn;

use super::state::{table_readiness, ShardState, State};
use super::Observer;

/// Label sets, one struct each (a metric's labels are its type).
macro_rules! label_sets {
    ($($name:ident { $($field:ident),+ })+) => {$(
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        pub(super) struct $name {
            $(pub(super) $field: String,)+
        }
    )+};
}

label_sets! {
    TableLabel { table }
    ShardsLabel { table, state }
    OperationLabel { operation }
    CallLabel { operation, outcome }
    UnfinishedLabel { table, what }
    TaskLabel { task }
}

type HistogramFamily = Family<TableLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 5 ms .. ~82 s: a write takes milliseconds, a catch-up hours (the top
    // bucket and +Inf hold those).
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

pub(super) struct Metrics {
    pub(super) records_read: Family<TableLabel, Counter>,
    pub(super) entries_written: Family<TableLabel, Counter>,
    pub(super) duplicates: Family<TableLabel, Counter>,
    pub(super) gaps: Family<TableLabel, Counter>,
    pub(super) lag_seconds: Family<TableLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub(super) shards: Family<ShardsLabel, Gauge>,
    pub(super) failing_shards: Family<TableLabel, Gauge>,
    pub(super) table_ready: Family<TableLabel, Gauge>,
    pub(super) stream_calls: Family<CallLabel, Counter>,
    pub(super) retries: Family<OperationLabel, Counter>,
    pub(super) write_seconds: HistogramFamily,
    pub(super) entry_latency_seconds: HistogramFamily,
    pub(super) unfinished_writes: Family<UnfinishedLabel, Counter>,
    pub(super) task_failures: Family<TaskLabel, Counter>,
    pub(super) streams_owned: Gauge,
    pub(super) replicas_live: Gauge,
    pub(super) streams_unowned: Gauge,
    pub(super) leases_lost: Counter,
}

impl Metrics {
    /// Every family, registered with its help text (the order of `/metrics`).
    pub(super) fn register(registry: &mut Registry) -> Metrics {
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
            unfinished_writes: Family::default(),
            task_failures: Family::default(),
            streams_owned: Gauge::default(),
            replicas_live: Gauge::default(),
            streams_unowned: Gauge::default(),
            leases_lost: Counter::default(),
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
        registry.register(
            "unfinished_writes",
            "Writes given up after their retries, each logged and tried again later \
             (what: gap, checkpoint, stream_row)",
            m.unfinished_writes.clone(),
        );
        registry.register(
            "task_failures",
            "Background tasks (digests, CloudTrail reader, metrics endpoints) that panicked",
            m.task_failures.clone(),
        );
        registry.register(
            "streams_owned",
            "Streams whose lease this replica holds (it alone reads them)",
            m.streams_owned.clone(),
        );
        registry.register(
            "replicas_live",
            "Replicas on this config whose heartbeat moves, this one included",
            m.replicas_live.clone(),
        );
        registry.register(
            "streams_unowned",
            "Streams of the configured tables that no live replica owns (a cluster view: \
             every replica reports the same; above 0 for long, nothing reads them)",
            m.streams_unowned.clone(),
        );
        registry.register(
            "leases_lost",
            "Streams this replica stopped reading because another took them over \
             (a fenced write refused, or its lease found moved)",
            m.leases_lost.clone(),
        );
        metrics
    }
}

impl Observer {
    pub(super) fn touch_table(&self, table: &str) {
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

    /// Recomputes the table's derived gauges (shard counts, failing, ready).
    pub(super) fn publish_table(&self, st: &State, table: &str) {
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
        let ready = super::health::Health::is_ready(&t.health) && failing == 0;
        self.metrics
            .table_ready
            .get_or_create(&label(table))
            .set(i64::from(ready));
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
                    streams_unowned: m.streams_unowned.get(),
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
    /// The cluster's count, the same in every table's document: the
    /// dimensionless Maximum is what the alarm watches.
    pub streams_unowned: i64,
}

pub(super) fn label(table: &str) -> TableLabel {
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
