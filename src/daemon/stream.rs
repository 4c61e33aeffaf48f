//! One stream's supervisor: list its shards once, then start shards as
//! their parents drain, find children with the cheap CHILD_SHARDS filter,
//! and re-list the whole stream only on a slow timer. A stream read under a
//! lease stops when the lease is lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::daemon::engine::{Engine, Shutdown};
use crate::daemon::leases::Replica;
use crate::daemon::shard::{
    lost_after, put_gap_in_chain, run_shard, saved_checkpoint, LineageTail, ShardFailure,
    ShardOutcome, ShardStart,
};
use crate::daemon::shards::Shards;
use crate::entry::Gap;
use crate::lineage::{Lineage, NodeState};
use crate::observe::{self, Event, ShardState};
use crate::retry::{retry, Retried};
use crate::store::{AuditStore, CheckpointStore, Fence, ShardCheckpoint, ShardStatus};
use crate::stream::{DescribeStreamRequest, Shard, StreamApi, StreamError, StreamStatus};

/// After a shard fails with a non-retryable error (or its task panics), wait
/// this long before starting it again from its last saved checkpoint.
pub(super) const FAILED_SHARD_COOLDOWN: Duration = Duration::from_secs(30);

/// A stream read under a lease: the fence its writes carry, and the replica
/// to tell when a write is refused.
#[derive(Clone)]
pub struct StreamLease {
    pub fence: Fence,
    pub replica: Arc<Replica>,
}

/// One stream. Returns true when the stream is finished (disabled or gone,
/// and every shard drained), false when stopped.
pub async fn run_stream<S, C, A>(
    engine: Arc<Engine<S, C, A>>,
    table: String,
    stream_arn: String,
    shutdown: Shutdown,
    lease: Option<StreamLease>,
) -> bool
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    let mut sup = StreamSupervisor {
        lease,
        engine,
        table,
        stream_arn,
        trimmed_checked: false,
        shutdown,
        lineage: Lineage::new(),
        shards: Shards::default(),
        read_before: false,
        stream_open: true,
    };
    let finished = sup.run().await;
    sup.engine.health.set_tracked(&sup.stream_arn, 0);
    finished
}

type ShardTasks = JoinSet<ShardOutcome>;

struct StreamSupervisor<S, C, A> {
    engine: Arc<Engine<S, C, A>>,
    /// The stream's lease, when replicas share the work.
    lease: Option<StreamLease>,
    table: String,
    stream_arn: String,
    /// Whether a listing has been compared with our checkpoints yet, to find
    /// shards trimmed away while we were not reading them.
    trimmed_checked: bool,
    shutdown: Shutdown,
    /// The shard graph: parents, children, which may start.
    lineage: Lineage,
    /// Everything else known of each shard: row, cooldown, task, tail.
    shards: Shards,
    /// We had read this stream before this start (it had checkpoints).
    read_before: bool,
    /// False once the stream is disabled or gone: it gets no new shards.
    stream_open: bool,
}

/// What a full listing found.
enum Listing {
    Listed(HashSet<String>),
    /// The stream is gone; what it had is accounted for.
    Gone,
    Failed,
    Stopped,
}

impl<S, C, A> StreamSupervisor<S, C, A>
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    /// One of this stream's shards, as the shard events name it.
    fn shard_at<'a>(&'a self, shard: &'a str) -> observe::ShardAt<'a> {
        observe::ShardAt {
            table: &self.table,
            stream: &self.stream_arn,
            shard,
        }
    }

    async fn run(&mut self) -> bool {
        let policy = self.engine.settings.retry_policy();
        match retry(policy, &self.shutdown.stop, "Query(checkpoints)", || {
            self.engine.checkpoints.load_shards(&self.stream_arn)
        })
        .await
        {
            Ok(rows) => {
                self.read_before = !rows.is_empty();
                self.shards.load_rows(rows);
            }
            Err(Retried::Cancelled) => return false,
            Err(Retried::Failed(e)) => {
                error!(error = %e, "cannot load checkpoints");
                return false;
            }
        }
        if matches!(self.full_listing().await, Listing::Stopped) {
            return false;
        }
        let interval = self.engine.settings.polling.full_listing_interval();
        let max_running = self.engine.settings.polling.max_concurrent_shards;
        let mut next_listing = Instant::now() + interval;
        let mut tasks: ShardTasks = JoinSet::new();
        loop {
            if self.shutdown.stop.is_cancelled() {
                break;
            }
            self.start_ready(&mut tasks, max_running);
            self.engine
                .health
                .set_tracked(&self.stream_arn, self.lineage.len() + self.shards.held());
            if !self.stream_open && tasks.is_empty() && self.lineage.all_drained() {
                return true;
            }
            let next_cooldown = self.shards.next_cooldown_end();
            tokio::select! {
                biased;
                _ = self.shutdown.stop.cancelled() => break,
                Some(done) = tasks.join_next_with_id() => self.joined(done).await,
                _ = tokio::time::sleep_until(next_listing) => {
                    if matches!(self.full_listing().await, Listing::Stopped) {
                        break;
                    }
                    next_listing = Instant::now() + interval;
                }
                _ = sleep_until_opt(next_cooldown) => {
                    self.shards.end_cooldowns(Instant::now());
                }
            }
        }
        while let Some(done) = tasks.join_next_with_id().await {
            let (id, outcome) = split_join(done);
            if let Some(shard_id) = self.shards.ended(id) {
                if outcome == ShardOutcome::Drained {
                    self.lineage.set_state(&shard_id, NodeState::Drained);
                }
            }
        }
        false
    }

    /// A shard task ended, however: its saved checkpoint comes back here
    /// first, then its outcome decides what happens next.
    async fn joined(&mut self, done: Result<(tokio::task::Id, ShardOutcome), JoinError>) {
        let (id, outcome) = split_join(done);
        let Some(shard_id) = self.shards.ended(id) else {
            return;
        };
        self.finished(shard_id, outcome).await;
    }

    /// Starts every ready shard, but at most `max_draining` closed ones at
    /// once. Open shards are not bounded: each is read for as long as it is
    /// open, so counting them would leave open shards beyond the bound unread
    /// forever, and, once they fill it, every closed shard behind them.
    fn start_ready(&mut self, tasks: &mut ShardTasks, max_draining: usize) {
        let mut draining = self.lineage.running_closed();
        for shard in self.lineage.ready() {
            if self.shards.is_cooling(&shard.shard_id) {
                continue;
            }
            if self.lineage.is_closed(&shard.shard_id) {
                if draining >= max_draining {
                    continue;
                }
                draining += 1;
            }
            self.mark(&shard.shard_id, NodeState::Running, ShardState::Reading);
            let checkpoint = self.shards.row(&shard.shard_id).cloned();
            let parent = shard.parent_shard_id.as_deref();
            let parent_known = parent.is_some_and(|p| {
                self.shards.has_row(p) || self.lineage.contains(p) || self.shards.is_forgotten(p)
            });
            // A parent nobody saw, on a stream we were reading: it came and
            // went while we were away, and whatever it held is lost. A child
            // with a row settled that at its first start (the gap is written
            // before the row); its parent's row may have expired since.
            let unseen_parent =
                parent.filter(|_| !parent_known && self.read_before && checkpoint.is_none());
            let gap = unseen_parent.map(|p| {
                error!(shard = %shard.shard_id, parent = %p,
                    "a parent shard was trimmed away unseen while we were not reading: recording a gap");
                Gap::unseen_parent(&self.table, &self.stream_arn, &shard.shard_id, p)
            });
            // We followed this lineage if we read the parent — or if the
            // parent came and went unseen while we were away from a stream we
            // had been reading: either way its start must be readable.
            // A shard that took its lineage's tail over at an earlier start
            // continued the lineage then, and still does once its parent's
            // row has expired.
            let continues_lineage = parent.is_some_and(|p| {
                self.shards.has_row(p)
                    || self.lineage.state(p) == Some(NodeState::Drained)
                    || self.shards.is_forgotten(p)
                    || unseen_parent.is_some()
            }) || checkpoint
                .as_ref()
                .is_some_and(|c| c.lineage_tail.is_some());
            let start = ShardStart {
                checkpoint,
                continues_lineage,
                lineage_tail: parent.and_then(|p| self.tail_of(p)),
                gap,
                fence: self.fence().cloned(),
            };
            let saved = saved_checkpoint(start.checkpoint.clone());
            let engine = self.engine.clone();
            let table = self.table.clone();
            let arn = self.stream_arn.clone();
            let shutdown = self.shutdown.clone();
            let id = shard.shard_id.clone();
            let cell = saved.clone();
            let task = tasks.spawn(run_shard(engine, table, arn, shard, start, cell, shutdown));
            self.shards.started(task.id(), &id, saved);
        }
        self.forget_finished_parents();
    }

    /// The last record handled in the lineage ending at `shard_id`
    /// (`Shards::tail_of`, the one place that knows it).
    fn tail_of(&self, shard_id: &str) -> Option<LineageTail> {
        self.shards.tail_of(shard_id, |id| {
            self.lineage.parent_of(id).map(str::to_string)
        })
    }

    /// Drained shards whose children have all started leave memory (the
    /// lineage and the checkpoints), keeping only the tail they hand on.
    fn forget_finished_parents(&mut self) {
        for id in self.lineage.finished_parents() {
            let tail = self.tail_of(&id);
            observe::ShardForgotten {
                at: self.shard_at(&id),
            }
            .emit();
            self.lineage.remove(&id);
            self.shards.forget(&id, tail);
        }
    }

    fn fence(&self) -> Option<&Fence> {
        self.lease.as_ref().map(|l| &l.fence)
    }

    /// A write under our fence was refused: another replica owns the
    /// stream now. Stop reading it (the replica cancels our shutdown).
    fn lease_lost(&self) {
        if let Some(lease) = &self.lease {
            lease.replica.fenced(&lease.fence);
        }
    }

    async fn finished(&mut self, shard_id: String, outcome: ShardOutcome) {
        match outcome {
            ShardOutcome::Failed(ShardFailure::Store(e)) if e.is_fenced() => {
                self.mark(&shard_id, NodeState::Waiting, ShardState::Waiting);
                self.lease_lost();
            }
            ShardOutcome::Drained => {
                self.mark(&shard_id, NodeState::Drained, ShardState::Drained);
                if self.lineage.children_of(&shard_id).is_empty() && self.stream_open {
                    self.find_children(&shard_id).await;
                }
            }
            ShardOutcome::Stopped => {
                self.mark(&shard_id, NodeState::Waiting, ShardState::Waiting);
            }
            ShardOutcome::Failed(error) => self.cool_down(&shard_id, &error.to_string()),
            ShardOutcome::Vanished(message) => {
                // NotFound is believed only when a listing agrees.
                match self.full_listing().await {
                    Listing::Listed(ids) if ids.contains(&shard_id) => self.cool_down(
                        &shard_id,
                        &format!(
                            "the service said the shard does not exist, but lists it: {message}"
                        ),
                    ),
                    Listing::Listed(_) => {
                        self.record_trimmed_shards(&HashSet::new(), Some(&shard_id))
                            .await;
                        if self
                            .shards
                            .row(&shard_id)
                            .is_some_and(|c| c.status == ShardStatus::Drained)
                        {
                            self.mark(&shard_id, NodeState::Drained, ShardState::Drained);
                            if self.stream_open {
                                self.find_children(&shard_id).await;
                            }
                        } else {
                            self.cool_down(&shard_id, "could not record the vanished shard's gap");
                        }
                    }
                    Listing::Gone => {}
                    Listing::Failed | Listing::Stopped => self.cool_down(
                        &shard_id,
                        &format!("not found, and the listing to confirm it failed: {message}"),
                    ),
                }
            }
        }
    }

    /// A shard's new state, in the lineage and on `/metrics` at once.
    fn mark(&mut self, shard_id: &str, node: NodeState, shown: ShardState) {
        self.lineage.set_state(shard_id, node);
        observe::ShardStateChanged {
            at: self.shard_at(shard_id),
            state: shown,
        }
        .emit();
    }

    fn cool_down(&mut self, shard_id: &str, error: &str) {
        error!(shard = %shard_id, error, cooldown_secs = FAILED_SHARD_COOLDOWN.as_secs(),
            "shard failed; restarting it from its last saved checkpoint after a cooldown");
        self.lineage.set_state(shard_id, NodeState::Waiting);
        observe::ShardFailed {
            at: self.shard_at(shard_id),
            error,
        }
        .emit();
        self.shards
            .cool(shard_id, Instant::now() + FAILED_SHARD_COOLDOWN);
    }

    /// DescribeStream with ShardFilter CHILD_SHARDS: one call finds a drained
    /// shard's successors, so they start at once instead of at the next listing.
    async fn find_children(&mut self, shard_id: &str) {
        let request = DescribeStreamRequest {
            stream_arn: self.stream_arn.clone(),
            children_of: Some(shard_id.to_string()),
            ..Default::default()
        };
        match self.describe(&request).await {
            Ok(page) => {
                for shard in page.shards {
                    self.add_shard(shard);
                }
                self.note_status(page.status);
            }
            Err(Retried::Cancelled) => {}
            Err(Retried::Failed(e)) => {
                // Not in a minute at the next listing: list now.
                warn!(shard = %shard_id, error = %e, "child lookup failed; listing the stream instead");
                self.full_listing().await;
            }
        }
    }

    async fn describe(
        &self,
        request: &DescribeStreamRequest,
    ) -> Result<crate::stream::StreamDescription, Retried<StreamError>> {
        let engine = &self.engine;
        retry(
            engine.settings.retry_policy(),
            &self.shutdown.stop,
            "DescribeStream",
            || async {
                engine.describe_pacer.ready().await;
                engine.stream.describe_stream(request).await
            },
        )
        .await
    }

    /// Lists every shard (all pages).
    async fn full_listing(&mut self) -> Listing {
        let mut listed: Vec<Shard> = Vec::new();
        let mut start: Option<String> = None;
        let mut status;
        loop {
            let request = DescribeStreamRequest {
                stream_arn: self.stream_arn.clone(),
                exclusive_start_shard_id: start.clone(),
                ..Default::default()
            };
            match self.describe(&request).await {
                Ok(page) => {
                    status = page.status;
                    listed.extend(page.shards);
                    match page.last_evaluated_shard_id {
                        Some(last) => start = Some(last),
                        None => break,
                    }
                }
                Err(Retried::Cancelled) => return Listing::Stopped,
                Err(Retried::Failed(StreamError::NotFound(_))) => {
                    warn!("stream no longer exists");
                    self.stream_gone().await;
                    return Listing::Gone;
                }
                Err(Retried::Failed(e)) => {
                    error!(error = %e, "stream listing failed; retrying at the next listing");
                    return Listing::Failed;
                }
            }
        }
        let listed_ids: HashSet<String> = listed.iter().map(|s| s.shard_id.clone()).collect();
        // A parent is needed by a listed child that has no row of its own
        // yet (its start reads the parent's chain and tail, and must know
        // the parent was seen); a child with a row keeps both itself.
        let saved: HashSet<String> = self.shards.running_with_a_row().cloned().collect();
        let parents: HashSet<String> = listed
            .iter()
            .filter(|s| !self.shards.has_row(&s.shard_id) && !saved.contains(&s.shard_id))
            .filter_map(|s| s.parent_shard_id.clone())
            .collect();
        for shard in listed {
            self.add_shard(shard);
        }
        self.note_status(status);
        // At the first listing that succeeds: a failed one must not skip it.
        if !self.trimmed_checked {
            self.trimmed_checked = true;
            self.record_trimmed_shards(&listed_ids, None).await;
        }
        // What the stream no longer lists, nor names as the parent of a
        // child without a row, is needed by nothing: bounded memory and
        // rows whatever the uptime.
        let needed = |id: &String| listed_ids.contains(id) || parents.contains(id);
        let unneeded = self.shards.drop_forgotten(needed);
        let handing_on: Vec<(String, LineageTail)> = self
            .shards
            .rows()
            .filter(|c| c.sequence_no.is_none() && needed(&c.shard_id))
            .filter_map(|c| Some((c.shard_id.clone(), self.tail_of(&c.shard_id)?)))
            .collect();
        for (id, tail) in handing_on {
            self.shards.inherit(&id, tail);
        }
        self.shards.keep_inherited(needed);
        let stale: Vec<String> = self
            .shards
            .rows()
            .filter(|c| {
                c.status == ShardStatus::Drained
                    && !needed(&c.shard_id)
                    && !self.shards.is_running(&c.shard_id)
            })
            .map(|c| c.shard_id.clone())
            .collect();
        for id in &stale {
            observe::ShardForgotten {
                at: self.shard_at(id),
            }
            .emit();
            self.shards.drop_row(id);
            if self.lineage.state(id) == Some(NodeState::Drained) {
                self.lineage.remove(id);
            }
        }
        // Forgotten shards were drained too (they left memory once their
        // children started).
        self.release_rows(stale.into_iter().chain(unneeded).collect());
        self.forget_finished_parents();
        Listing::Listed(listed_ids)
    }

    /// Rows no listed shard needs any more expire a day from now instead of
    /// a week after draining, so what a stream start loads follows what the
    /// stream lists. In the background and best effort: a start after a long
    /// time may release thousands, and a row not released still expires on
    /// its own (`DRAINED_SHARD_ROW_TTL`).
    fn release_rows(&self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        let engine = self.engine.clone();
        let arn = self.stream_arn.clone();
        let table = self.table.clone();
        tokio::spawn(async move {
            let mut failed = 0usize;
            for id in &ids {
                if let Err(e) = engine
                    .checkpoints
                    .release_shard(&arn, id, crate::store::dynamo::RELEASED_SHARD_ROW_TTL)
                    .await
                {
                    failed += 1;
                    debug!(table = %table, stream = %arn, shard = %id, error = %e,
                        "could not shorten a drained shard row's TTL; it expires on its own");
                }
            }
            debug!(table = %table, stream = %arn, released = ids.len() - failed, failed,
                "drained shard rows no listed shard needs set to expire in a day");
        });
    }

    fn add_shard(&mut self, shard: Shard) {
        if self.shards.is_forgotten(&shard.shard_id) {
            return;
        }
        let drained = self
            .shards
            .row(&shard.shard_id)
            .is_some_and(|c| c.status == ShardStatus::Drained);
        observe::ShardSeen {
            at: self.shard_at(&shard.shard_id),
            drained,
        }
        .emit();
        self.lineage.insert(shard, drained);
    }

    fn note_status(&mut self, status: StreamStatus) {
        if matches!(status, StreamStatus::Disabled | StreamStatus::Disabling) && self.stream_open {
            info!("stream disabled: draining what remains");
            self.stream_open = false;
        }
    }

    /// Shards we were reading that the stream no longer lists were trimmed
    /// while we were away: what was left in them is lost, and we say so.
    /// `only`: just that shard (one that vanished while being read).
    async fn record_trimmed_shards(&mut self, listed: &HashSet<String>, only: Option<&str>) {
        let lost: Vec<ShardCheckpoint> = self
            .shards
            .rows()
            .filter(|c| c.status != ShardStatus::Drained && !listed.contains(&c.shard_id))
            .filter(|c| only.is_none_or(|o| o == c.shard_id))
            .filter(|c| only.is_some() || !self.shards.is_running(&c.shard_id))
            .cloned()
            .collect();
        for mut checkpoint in lost {
            // Its own row's tail, if it read nothing (it outlives the
            // ancestors' rows), else up the lineage.
            let tail = self.tail_of(&checkpoint.shard_id);
            let gap = lost_after(
                &self.table,
                &self.stream_arn,
                &checkpoint.shard_id,
                &checkpoint,
                tail.as_ref(),
            );
            error!(shard = %checkpoint.shard_id, after_sequence_number = ?gap.after_sequence_number,
                "shard trimmed before it was read to its end: recording a gap");
            // The shard's chain ends with the gap, and its children's start
            // from there.
            let before = checkpoint.chain.clone().unwrap_or_default();
            let chain = match put_gap_in_chain(
                &self.engine,
                &self.shutdown.abort,
                &gap,
                before,
                self.fence(),
            )
            .await
            {
                Ok(chain) => chain,
                Err(Retried::Failed(e)) if e.is_fenced() => {
                    self.lease_lost();
                    return;
                }
                Err(e) => {
                    // The row stays as it was, so the next listing finds the
                    // same loss and tries again.
                    let why =
                        "cannot write the gap of a trimmed shard; retried at the next listing";
                    self.write_unfinished("gap", &checkpoint.shard_id, &e, why);
                    continue;
                }
            };
            checkpoint.chain = Some(chain);
            // Nothing after it was read: its children's first record closes it.
            checkpoint.note_open_gap(gap.clone());
            let policy = self.engine.settings.retry_policy();
            let engine = &self.engine;
            observe::GapRecorded {
                table: &self.table,
                shard: &gap.shard_id,
                after_sequence_number: gap.after_sequence_number.as_deref(),
                resumed_at_sequence_number: None,
            }
            .emit();
            checkpoint.status = ShardStatus::Drained;
            checkpoint.updated_at = Utc::now();
            let fence = self.fence();
            let row = &checkpoint;
            let saved = retry(
                policy,
                &self.shutdown.abort,
                "PutItem(checkpoint)",
                || async move {
                    match fence {
                        Some(fence) => engine.checkpoints.save_fenced_shard(row, fence).await,
                        None => engine.checkpoints.save_shard(row).await,
                    }
                },
            )
            .await;
            match saved {
                Ok(()) => self.shards.set_row(checkpoint),
                Err(Retried::Failed(e)) if e.is_fenced() => {
                    self.lease_lost();
                    return;
                }
                // The gap is written and chained; the row still says the
                // shard was being read, so the next listing finds the gap
                // already present and links nothing twice.
                Err(e) => {
                    let why = "cannot save the checkpoint after the gap of a trimmed shard";
                    self.write_unfinished("checkpoint", &checkpoint.shard_id, &e, why);
                }
            }
        }
    }

    /// A write given up: logged and counted (`what`: gap, checkpoint…).
    fn write_unfinished(
        &self,
        what: &'static str,
        shard: &str,
        error: &dyn std::fmt::Display,
        why: &str,
    ) {
        error!(shard = %shard, error = %error, "{why}");
        observe::WriteUnfinished {
            table: &self.table,
            what,
        }
        .emit();
    }

    async fn stream_gone(&mut self) {
        self.stream_open = false;
        self.record_trimmed_shards(&HashSet::new(), None).await;
        // Nothing more can be read: every shard counts as drained.
        self.lineage = Lineage::new();
        observe::StreamForgotten {
            table: &self.table,
            stream: &self.stream_arn,
        }
        .emit();
    }
}

fn split_join(
    done: Result<(tokio::task::Id, ShardOutcome), JoinError>,
) -> (tokio::task::Id, ShardOutcome) {
    match done {
        Ok(pair) => pair,
        Err(e) => {
            let message = if e.is_panic() {
                format!("shard task panicked: {e}")
            } else {
                format!("shard task ended: {e}")
            };
            (e.id(), ShardOutcome::Failed(ShardFailure::Task(message)))
        }
    }
}

pub(super) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
