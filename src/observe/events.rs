//! The events: each a small struct that logs (when worth a line) and counts
//! itself into an [`Observer`]; business code only emits them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{debug, error, info, warn};

use super::health::TableState;
use super::metrics::{label, CallLabel, OperationLabel};
use super::state::ShardState;
use super::{global, Observer};

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

/// A table stopped matching the selection: no longer read nor reported.
pub struct TableUnselected<'a> {
    pub table: &'a str,
}

impl Event for TableUnselected<'_> {
    fn emit_to(self, o: &Observer) {
        o.unregister_table(self.table);
    }
}

/// A listing of the region's tables (patterns in `tables`) succeeded, or
/// failed for the reason given (shown in `/readyz` until one succeeds).
pub struct TablesListed {
    pub problem: Option<String>,
}

impl Event for TablesListed {
    fn emit_to(self, o: &Observer) {
        o.set_listed(self.problem);
    }
}

/// The shard a shard event is about.
#[derive(Clone, Copy, Debug)]
pub struct ShardAt<'a> {
    pub table: &'a str,
    pub stream: &'a str,
    pub shard: &'a str,
}

/// A shard left the supervisor's memory (drained and no longer needed):
/// it is no longer counted.
pub struct ShardForgotten<'a> {
    pub at: ShardAt<'a>,
}

impl Event for ShardForgotten<'_> {
    fn emit_to(self, o: &Observer) {
        o.forget(self.at.table, self.at.stream, Some(self.at.shard));
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
    pub at: ShardAt<'a>,
    pub drained: bool,
}

impl Event for ShardSeen<'_> {
    fn emit_to(self, o: &Observer) {
        let state = if self.drained {
            ShardState::Drained
        } else {
            ShardState::Waiting
        };
        o.set_shard_state(self.at, state, None, true);
    }
}

/// A shard moved to another state.
pub struct ShardStateChanged<'a> {
    pub at: ShardAt<'a>,
    pub state: ShardState,
}

impl Event for ShardStateChanged<'_> {
    fn emit_to(self, o: &Observer) {
        let at = self.at;
        debug!(table = %at.table, stream = %at.stream, shard = %at.shard,
            state = self.state.as_str(), "shard state");
        o.set_shard_state(at, self.state, None, false);
    }
}

/// A shard's reading failed with an error that retrying cannot fix.
pub struct ShardFailed<'a> {
    pub at: ShardAt<'a>,
    pub error: &'a str,
}

/// Counted only: the supervisor logs it with its cool-down.
impl Event for ShardFailed<'_> {
    fn emit_to(self, o: &Observer) {
        o.set_shard_state(
            self.at,
            ShardState::Failing,
            Some(self.error.to_string()),
            false,
        );
    }
}

/// A GetRecords page was read and handled (its entries written and the
/// checkpoint saved). An empty page means the shard is caught up.
pub struct PageHandled<'a> {
    pub at: ShardAt<'a>,
    pub records: usize,
    /// Creation time of the newest record in the page.
    pub newest_record: Option<DateTime<Utc>>,
}

impl Event for PageHandled<'_> {
    fn emit_to(self, o: &Observer) {
        if self.records > 0 {
            o.metrics
                .records_read
                .get_or_create(&label(self.at.table))
                .inc_by(self.records as u64);
        }
        o.page(self.at, self.newest_record, self.records);
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

/// Reading resumed after gaps recorded open: a gap closing them was
/// written. Not counted as a gap: the loss was counted when they were.
pub struct GapClosed<'a> {
    pub at: ShardAt<'a>,
    pub closes: usize,
    pub resumed_at_sequence_number: Option<&'a str>,
}

impl Event for GapClosed<'_> {
    fn emit_to(self, _: &Observer) {
        warn!(
            table = %self.at.table,
            stream = %self.at.stream,
            shard = %self.at.shard,
            closes = self.closes,
            resumed_at_sequence_number = self.resumed_at_sequence_number.unwrap_or("none"),
            "open gap closed: reading resumed after the loss"
        );
    }
}

/// A write given up after its retries (`what`: gap, checkpoint,
/// stream_row). The caller logs why, with what is tried again and when.
pub struct WriteUnfinished<'a> {
    pub table: &'a str,
    pub what: &'static str,
}

impl Event for WriteUnfinished<'_> {
    fn emit_to(self, o: &Observer) {
        o.metrics
            .unfinished_writes
            .get_or_create(&super::metrics::UnfinishedLabel {
                table: self.table.to_string(),
                what: self.what.to_string(),
            })
            .inc();
    }
}

/// A background task that ended abnormally (panicked or was cancelled).
pub struct TaskFailed<'a> {
    pub task: &'static str,
    pub error: &'a dyn std::fmt::Display,
}

impl Event for TaskFailed<'_> {
    fn emit_to(self, o: &Observer) {
        error!(task = self.task, error = %self.error, "a background task ended abnormally");
        o.metrics
            .task_failures
            .get_or_create(&super::metrics::TaskLabel {
                task: self.task.to_string(),
            })
            .inc();
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

/// A replica's lease scan: what it owns and what it sees of the others.
pub struct LeaseScan<'a> {
    pub replica: &'a str,
    pub owned: &'a [String],
    pub live_replicas: usize,
    pub streams: usize,
    pub unowned: usize,
    pub tasks: &'a [String],
}

impl Event for LeaseScan<'_> {
    fn emit_to(self, o: &Observer) {
        tracing::debug!(replica = %self.replica, owned = self.owned.len(), live_replicas = self.live_replicas,
            streams = self.streams, unowned = self.unowned, "lease scan");
        o.metrics.streams_owned.set(self.owned.len() as i64);
        o.metrics.replicas_live.set(self.live_replicas as i64);
        o.metrics.streams_unowned.set(self.unowned as i64);
        o.lock().replica = Some(super::ReplicaView {
            id: self.replica.to_string(),
            owned: self.owned.to_vec(),
            live_replicas: self.live_replicas,
            unowned_streams: self.unowned,
            tasks: self.tasks.to_vec(),
        });
    }
}

/// A stream this replica read was taken over by another.
pub struct LeaseLost<'a> {
    pub table: &'a str,
    pub stream: &'a str,
    pub epoch: u64,
}

impl Event for LeaseLost<'_> {
    fn emit_to(self, o: &Observer) {
        tracing::warn!(table = %self.table, stream = %self.stream, epoch = self.epoch,
            "lease lost to another replica: stopping this stream and letting go");
        o.metrics.leases_lost.inc();
    }
}
