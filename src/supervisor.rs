//! Discovery and scheduling. Per table: find its streams (the current one and
//! older ones still readable after a re-enable) and run one stream supervisor
//! each. Per stream: list shards once, then start shards as their parents
//! drain, find children with the cheap CHILD_SHARDS filter, and re-list the
//! whole stream only on a slow timer.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, info, warn, Instrument};

use crate::engine::{Engine, EngineError, Shutdown};
use crate::entry::Gap;
use crate::lineage::{Lineage, NodeState};
use crate::observe::{self, Event, ShardState};
use crate::retry::{retry, Retried};
use crate::shard::{run_shard, ShardOutcome};
use crate::store::{AuditStore, CheckpointStore, ShardCheckpoint, ShardStatus, StreamRow};
use crate::stream::{
    DescribeStreamRequest, Shard, StreamApi, StreamError, StreamStatus, TableStream,
};

/// After a shard fails with a non-retryable error, wait this long before
/// starting it again (from its checkpoint).
const FAILED_SHARD_COOLDOWN: Duration = Duration::from_secs(30);

/// Checks every table before anything starts: a table that is missing, has no
/// stream or the wrong view type is a configuration error, reported all at
/// once so that one run shows every fix to make.
pub async fn preflight<S, C, A>(
    engine: &Engine<S, C, A>,
    tables: &[String],
) -> Result<Vec<TableStream>, EngineError>
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    // Our own tables first: without them nothing can be kept.
    engine.checkpoints.load_streams(None).await?;
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for table in tables {
        match check_table(engine, table).await {
            Ok(ts) => found.push(ts),
            Err(e @ (EngineError::TableNotFound { .. } | EngineError::NoStream { .. })) => {
                // A table we were auditing that was deleted, or lost its
                // stream, while we were down: its old streams may still hold
                // records to read. Only a table we never read is an error.
                let undrained = engine
                    .checkpoints
                    .load_streams(Some(table))
                    .await?
                    .into_iter()
                    .filter(|r| !r.drained)
                    .count();
                if undrained > 0 {
                    warn!(table = %table, streams = undrained, error = %e, "draining the streams we were reading");
                } else {
                    problems.push(e);
                }
            }
            Err(e) => problems.push(e),
        }
    }
    match problems.len() {
        0 => Ok(found),
        1 => Err(problems.remove(0)),
        n => Err(EngineError::Several(
            n,
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n  "),
        )),
    }
}

async fn check_table<S, C, A>(
    engine: &Engine<S, C, A>,
    table: &str,
) -> Result<TableStream, EngineError>
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    let never = tokio_util::sync::CancellationToken::new();
    let ts = retry(
        engine.settings.retry_policy(),
        &never,
        "DescribeTable",
        || engine.stream.describe_table(table),
    )
    .await
    .map_err(|e| match e {
        Retried::Failed(StreamError::NotFound(_)) => EngineError::TableNotFound {
            table: table.to_string(),
        },
        Retried::Failed(source) => EngineError::Stream {
            table: table.to_string(),
            source,
        },
        Retried::Cancelled => EngineError::Stream {
            table: table.to_string(),
            source: StreamError::Other("cancelled".into()),
        },
    })?;
    if !ts.stream_enabled || ts.latest_stream_arn.is_none() {
        return Err(EngineError::NoStream {
            table: table.to_string(),
        });
    }
    match ts.view_type.as_deref() {
        Some("NEW_AND_OLD_IMAGES") => Ok(ts),
        other => Err(EngineError::WrongViewType {
            table: table.to_string(),
            view_type: other.unwrap_or("unknown").to_string(),
        }),
    }
}

/// The daemon: audits every table until `shutdown.stop`, then waits for
/// in-flight work. Fails only on startup (preflight) errors; later, a table
/// that is deleted or loses its stream is drained and logged, and the others
/// keep running.
pub async fn run<S, C, A>(
    engine: Arc<Engine<S, C, A>>,
    tables: Vec<String>,
    shutdown: Shutdown,
) -> Result<(), EngineError>
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    preflight(&engine, &tables).await?;
    info!(tables = ?tables, "auditing");
    let mut tasks = JoinSet::new();
    for table in tables {
        let span = tracing::info_span!("table", table = %table);
        tasks.spawn(run_table(engine.clone(), table, shutdown.clone()).instrument(span));
    }
    while let Some(result) = tasks.join_next().await {
        if let Err(e) = result {
            error!(error = %e, "table task panicked");
        }
    }
    info!("stopped");
    Ok(())
}

/// One table: follows its current stream, and drains older ones.
pub async fn run_table<S, C, A>(engine: Arc<Engine<S, C, A>>, table: String, shutdown: Shutdown)
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    let policy = engine.settings.retry_policy();
    let interval = engine.settings.polling.full_listing_interval();
    let mut running: HashSet<String> = HashSet::new();
    let mut streams: JoinSet<(String, bool)> = JoinSet::new();
    let mut table_gone = false;
    observe::TableAuditing { table: &table }.emit();
    loop {
        if !table_gone {
            match discover_streams(&engine, &table, &shutdown).await {
                Ok((arns, gone)) => {
                    if gone {
                        error!("table deleted: draining what is still readable of its streams");
                        observe::TableFailing {
                            table: &table,
                            reason: "table deleted: draining what is still readable of its streams"
                                .into(),
                        }
                        .emit();
                        table_gone = true;
                    }
                    for arn in arns {
                        if running.insert(arn.clone()) {
                            let span = tracing::info_span!("stream", stream = %arn);
                            let engine = engine.clone();
                            let table = table.clone();
                            let shutdown = shutdown.clone();
                            streams.spawn(
                                async move {
                                    let finished =
                                        run_stream(engine, table, arn.clone(), shutdown).await;
                                    (arn, finished)
                                }
                                .instrument(span),
                            );
                        }
                    }
                }
                Err(Retried::Cancelled) => break,
                Err(Retried::Failed(e)) => {
                    error!(error = %e, "cannot discover the table's streams");
                    observe::TableFailing {
                        table: &table,
                        reason: format!("cannot discover the table's streams: {e}"),
                    }
                    .emit();
                }
            }
        }
        if table_gone && streams.is_empty() {
            info!("table deleted and its streams drained: no more to audit");
            observe::TableFailing {
                table: &table,
                reason: "table deleted and its streams drained: nothing left to audit".into(),
            }
            .emit();
            return;
        }
        tokio::select! {
            biased;
            _ = shutdown.stop.cancelled() => break,
            Some(done) = streams.join_next() => {
                if let Ok((arn, finished)) = done {
                    if finished {
                        info!(stream = %arn, "stream drained");
                        let row = StreamRow { table_name: table.clone(), stream_arn: arn, is_enabled: false, drained: true, updated_at: Utc::now() };
                        let _ = retry(policy, &shutdown.abort, "PutItem(stream)", || engine.checkpoints.save_stream(&row)).await;
                    } else {
                        // Stopped or failed: allow a restart at the next discovery.
                        running.remove(&arn);
                    }
                }
            }
            _ = tokio::time::sleep(interval) => {}
        }
    }
    while streams.join_next().await.is_some() {}
}

/// The streams of a table that still need reading, and whether the table is
/// gone. Records what it finds in the streams table (which one is current).
async fn discover_streams<S, C, A>(
    engine: &Engine<S, C, A>,
    table: &str,
    shutdown: &Shutdown,
) -> Result<(Vec<String>, bool), Retried<StreamError>>
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    let policy = engine.settings.retry_policy();
    let (current, table_gone) = match retry(policy, &shutdown.stop, "DescribeTable", || {
        engine.stream.describe_table(table)
    })
    .await
    {
        Ok(ts) => (ts.latest_stream_arn.filter(|_| ts.stream_enabled), false),
        Err(Retried::Failed(StreamError::NotFound(_))) => (None, true),
        Err(e) => return Err(e),
    };
    if current.is_some() {
        observe::TableAuditing { table }.emit();
    } else if !table_gone {
        observe::TableFailing { table, reason: "the table's stream is disabled: draining what is still readable; enable a NEW_AND_OLD_IMAGES stream to audit it again".into() }.emit();
    }
    // A deleted table's streams stay listed while their records are retained.
    let listed = match retry(policy, &shutdown.stop, "ListStreams", || {
        engine.stream.list_streams(table)
    })
    .await
    {
        Ok(listed) => listed,
        Err(Retried::Failed(StreamError::NotFound(_))) => Vec::new(),
        Err(e) => return Err(e),
    };
    let stored = match engine.checkpoints.load_streams(Some(table)).await {
        Ok(rows) => rows,
        Err(e) => {
            warn!(error = %e, "cannot read the streams table");
            Vec::new()
        }
    };
    let drained: HashSet<&str> = stored
        .iter()
        .filter(|r| r.drained)
        .map(|r| r.stream_arn.as_str())
        .collect();
    let mut arns: Vec<String> = listed.into_iter().map(|s| s.stream_arn).collect();
    arns.extend(current.iter().cloned());
    arns.extend(
        stored
            .iter()
            .filter(|r| !r.drained)
            .map(|r| r.stream_arn.clone()),
    );
    arns.sort();
    arns.dedup();
    let mut result = Vec::new();
    for arn in arns {
        if drained.contains(arn.as_str()) {
            continue;
        }
        let is_current = current.as_deref() == Some(arn.as_str());
        let known = stored
            .iter()
            .find(|r| r.stream_arn == arn)
            .map(|r| r.is_enabled);
        if known != Some(is_current) {
            let row = StreamRow {
                table_name: table.to_string(),
                stream_arn: arn.clone(),
                is_enabled: is_current,
                drained: false,
                updated_at: Utc::now(),
            };
            if let Err(e) = engine.checkpoints.save_stream(&row).await {
                warn!(error = %e, stream = %arn, "cannot record stream");
            }
        }
        result.push(arn);
    }
    Ok((result, table_gone))
}

/// One stream. Returns true when the stream is finished (disabled or gone,
/// and every shard drained), false when stopped.
pub async fn run_stream<S, C, A>(
    engine: Arc<Engine<S, C, A>>,
    table: String,
    stream_arn: String,
    shutdown: Shutdown,
) -> bool
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    let mut sup = StreamSupervisor {
        engine,
        table,
        stream_arn,
        trimmed_checked: false,
        shutdown,
        lineage: Lineage::new(),
        checkpoints: BTreeMap::new(),
        cooldown: BTreeMap::new(),
        stream_open: true,
    };
    sup.run().await
}

struct StreamSupervisor<S, C, A> {
    engine: Arc<Engine<S, C, A>>,
    table: String,
    stream_arn: String,
    /// Whether a listing has been compared with our checkpoints yet, to find
    /// shards trimmed away while we were not reading them.
    trimmed_checked: bool,
    shutdown: Shutdown,
    lineage: Lineage,
    checkpoints: BTreeMap<String, ShardCheckpoint>,
    /// Shards that failed, and when they may start again.
    cooldown: BTreeMap<String, Instant>,
    /// False once the stream is disabled or gone: it gets no new shards.
    stream_open: bool,
}

impl<S, C, A> StreamSupervisor<S, C, A>
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    async fn run(&mut self) -> bool {
        let policy = self.engine.settings.retry_policy();
        match retry(policy, &self.shutdown.stop, "Query(checkpoints)", || {
            self.engine.checkpoints.load_shards(&self.stream_arn)
        })
        .await
        {
            Ok(rows) => {
                self.checkpoints = rows.into_iter().map(|c| (c.shard_id.clone(), c)).collect();
            }
            Err(Retried::Cancelled) => return false,
            Err(Retried::Failed(e)) => {
                error!(error = %e, "cannot load checkpoints");
                return false;
            }
        }
        if !self.full_listing().await {
            return false;
        }
        let interval = self.engine.settings.polling.full_listing_interval();
        let max_running = self.engine.settings.polling.max_concurrent_shards;
        let mut next_listing = Instant::now() + interval;
        let mut tasks: JoinSet<(String, ShardOutcome)> = JoinSet::new();
        loop {
            if self.shutdown.stop.is_cancelled() {
                break;
            }
            self.start_ready(&mut tasks, max_running);
            if !self.stream_open && tasks.is_empty() && self.lineage.all_drained() {
                return true;
            }
            let next_cooldown = self.cooldown.values().min().copied();
            tokio::select! {
                biased;
                _ = self.shutdown.stop.cancelled() => break,
                Some(done) = tasks.join_next() => match done {
                    Ok((shard_id, outcome)) => self.finished(shard_id, outcome).await,
                    Err(e) => error!(error = %e, "shard task panicked"),
                },
                _ = tokio::time::sleep_until(next_listing) => {
                    if !self.full_listing().await {
                        break;
                    }
                    next_listing = Instant::now() + interval;
                }
                _ = sleep_until_opt(next_cooldown) => {
                    let now = Instant::now();
                    self.cooldown.retain(|_, until| *until > now);
                }
            }
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok((shard_id, outcome)) = done {
                if outcome == ShardOutcome::Drained {
                    self.lineage.set_state(&shard_id, NodeState::Drained);
                }
            }
        }
        false
    }

    /// Starts every ready shard, but at most `max_draining` closed ones at
    /// once. Open shards are not bounded: each is read for as long as it is
    /// open, so counting them would leave open shards beyond the bound unread
    /// forever, and, once they fill it, every closed shard behind them.
    fn start_ready(&mut self, tasks: &mut JoinSet<(String, ShardOutcome)>, max_draining: usize) {
        let mut draining = self.lineage.running_closed();
        for shard in self.lineage.ready() {
            if self.cooldown.contains_key(&shard.shard_id) {
                continue;
            }
            if self.lineage.is_closed(&shard.shard_id) {
                if draining >= max_draining {
                    continue;
                }
                draining += 1;
            }
            self.lineage.set_state(&shard.shard_id, NodeState::Running);
            observe::ShardStateChanged {
                table: &self.table,
                stream: &self.stream_arn,
                shard: &shard.shard_id,
                state: ShardState::Reading,
            }
            .emit();
            let checkpoint = self.checkpoints.get(&shard.shard_id).cloned();
            // We followed this lineage if we read the parent — or if the
            // parent came and went unseen while we were away from a stream we
            // had been reading: either way its start must be readable.
            let continues_lineage = shard.parent_shard_id.as_ref().is_some_and(|p| {
                self.checkpoints.contains_key(p)
                    || self.lineage.state(p) == Some(NodeState::Drained)
                    || (!self.lineage.contains(p) && !self.checkpoints.is_empty())
            });
            let engine = self.engine.clone();
            let table = self.table.clone();
            let arn = self.stream_arn.clone();
            let shutdown = self.shutdown.clone();
            tasks.spawn(async move {
                let id = shard.shard_id.clone();
                (
                    id,
                    run_shard(
                        engine,
                        table,
                        arn,
                        shard,
                        checkpoint,
                        continues_lineage,
                        shutdown,
                    )
                    .await,
                )
            });
        }
    }

    async fn finished(&mut self, shard_id: String, outcome: ShardOutcome) {
        match outcome {
            ShardOutcome::Drained => {
                self.lineage.set_state(&shard_id, NodeState::Drained);
                observe::ShardStateChanged {
                    table: &self.table,
                    stream: &self.stream_arn,
                    shard: &shard_id,
                    state: ShardState::Drained,
                }
                .emit();
                if self.lineage.children_of(&shard_id).is_empty() && self.stream_open {
                    self.find_children(&shard_id).await;
                }
            }
            ShardOutcome::Stopped => {
                self.lineage.set_state(&shard_id, NodeState::Waiting);
                observe::ShardStateChanged {
                    table: &self.table,
                    stream: &self.stream_arn,
                    shard: &shard_id,
                    state: ShardState::Waiting,
                }
                .emit();
            }
            ShardOutcome::Failed(error) => {
                observe::ShardFailed {
                    table: &self.table,
                    stream: &self.stream_arn,
                    shard: &shard_id,
                    error: &error,
                }
                .emit();
                self.lineage.set_state(&shard_id, NodeState::Waiting);
                self.cooldown
                    .insert(shard_id, Instant::now() + FAILED_SHARD_COOLDOWN);
            }
        }
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

    /// Lists every shard (all pages). Returns false when stopped.
    async fn full_listing(&mut self) -> bool {
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
                Err(Retried::Cancelled) => return false,
                Err(Retried::Failed(StreamError::NotFound(_))) => {
                    warn!("stream no longer exists");
                    self.stream_gone().await;
                    return true;
                }
                Err(Retried::Failed(e)) => {
                    error!(error = %e, "stream listing failed; retrying at the next listing");
                    return true;
                }
            }
        }
        let listed_ids: HashSet<String> = listed.iter().map(|s| s.shard_id.clone()).collect();
        for shard in listed {
            self.add_shard(shard);
        }
        self.note_status(status);
        // At the first listing that succeeds: a failed one must not skip it.
        if !self.trimmed_checked {
            self.trimmed_checked = true;
            self.record_trimmed_shards(&listed_ids).await;
        }
        true
    }

    fn add_shard(&mut self, shard: Shard) {
        let drained = self
            .checkpoints
            .get(&shard.shard_id)
            .is_some_and(|c| c.status == ShardStatus::Drained);
        observe::ShardSeen {
            table: &self.table,
            stream: &self.stream_arn,
            shard: &shard.shard_id,
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
    async fn record_trimmed_shards(&mut self, listed: &HashSet<String>) {
        let lost: Vec<ShardCheckpoint> = self
            .checkpoints
            .values()
            .filter(|c| c.status != ShardStatus::Drained && !listed.contains(&c.shard_id))
            .cloned()
            .collect();
        for mut checkpoint in lost {
            let gap = Gap {
                table: self.table.clone(),
                stream_arn: self.stream_arn.clone(),
                shard_id: checkpoint.shard_id.clone(),
                after_sequence_number: checkpoint.sequence_no.clone(),
                resumed_at_sequence_number: None,
                detected_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            };
            warn!(shard = %checkpoint.shard_id, "shard trimmed before it was read to its end: recording a gap");
            let policy = self.engine.settings.retry_policy();
            let engine = &self.engine;
            if retry(policy, &self.shutdown.abort, "PutItem(gap)", || {
                engine.audit.put_gap(&gap)
            })
            .await
            .is_err()
            {
                continue;
            }
            observe::GapRecorded {
                table: &self.table,
                shard: &gap.shard_id,
                after_sequence_number: gap.after_sequence_number.as_deref(),
                resumed_at_sequence_number: None,
            }
            .emit();
            checkpoint.status = ShardStatus::Drained;
            checkpoint.updated_at = Utc::now();
            let saved = retry(policy, &self.shutdown.abort, "PutItem(checkpoint)", || {
                engine.checkpoints.save_shard(&checkpoint)
            })
            .await;
            if saved.is_ok() {
                self.checkpoints
                    .insert(checkpoint.shard_id.clone(), checkpoint);
            }
        }
    }

    async fn stream_gone(&mut self) {
        self.stream_open = false;
        let empty = HashSet::new();
        self.record_trimmed_shards(&empty).await;
        // Nothing more can be read: every shard counts as drained.
        let ids: Vec<String> = self.checkpoints.keys().cloned().collect();
        for id in ids {
            self.lineage.set_state(&id, NodeState::Drained);
            observe::ShardStateChanged {
                table: &self.table,
                stream: &self.stream_arn,
                shard: &id,
                state: ShardState::Drained,
            }
            .emit();
        }
        self.lineage = Lineage::new();
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
