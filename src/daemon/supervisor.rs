//! Discovery and scheduling. Per table: find its streams (the current one and
//! older ones still readable after a re-enable) and run one stream supervisor
//! each. Per stream: list shards once, then start shards as their parents
//! drain, find children with the cheap CHILD_SHARDS filter, and re-list the
//! whole stream only on a slow timer.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use crate::daemon::discovery::{self, Discoverer, Listed};
use crate::daemon::engine::{Engine, EngineError, Shutdown, TableState};
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
use crate::selection::{arn_region, home_region};
use crate::store::{
    AuditStore, CheckpointStore, Fence, ShardCheckpoint, ShardStatus, StreamRow, TableHealthRow,
};
use crate::stream::{
    DescribeStreamRequest, Shard, StreamApi, StreamError, StreamStatus, TableStream,
};

/// After a shard fails with a non-retryable error (or its task panics), wait
/// this long before starting it again from its last saved checkpoint.
const FAILED_SHARD_COOLDOWN: Duration = Duration::from_secs(30);

/// The daemon: audits every table until `shutdown.stop`, then waits for
/// in-flight work.
///
/// Tables are independent: each is checked, and audited, on its own. A table
/// that cannot be audited (missing, no stream, wrong view type, access
/// denied) is logged at error level, marked failing in [`Engine::health`],
/// and checked again at every discovery (`full_listing_interval_secs`) while
/// the others are audited. Transient errors (throttling, 5xx, a network not
/// yet up) are retried for as long as they last, with a log line each time
/// the wait doubles. `run` fails only when every configured table has been
/// found unauditable, so that a typo in a one-table config still fails fast;
/// a stop during start-up is a clean stop (`Ok`).
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
    let interval = engine.settings.polling.full_listing_interval();
    let discoverer = Discoverer::of_names(&tables, interval, engine.settings.retry_policy())
        .map_err(|e| EngineError::Unauditable {
            table: "tables".into(),
            reason: e.to_string(),
        })?;
    run_selected(engine, discoverer, shutdown).await
}

/// [`run`] as one of several replicas: only the streams whose lease
/// `replica` holds are read ([`crate::daemon::leases`]; its `coordinate`
/// must run beside this, and `let_go` after it).
pub async fn run_leased<S, C, A>(
    engine: Arc<Engine<S, C, A>>,
    discoverer: Discoverer,
    shutdown: Shutdown,
    replica: Arc<Replica>,
) -> Result<(), EngineError>
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    run_discovered(engine, discoverer, shutdown, Some(replica)).await
}

/// One table's task, and the token that stops it alone.
struct TableTask {
    stop: CancellationToken,
    id: tokio::task::Id,
}

/// [`run`] over a selection: its exact names from the start, and, when it
/// has patterns, the region's tables listed again every interval. A table
/// that starts matching gets its supervisor at that listing; one that stops
/// matching is stopped like a shutdown stops it (in-flight pages written
/// and checkpointed), and its checkpoints and trail stay. With patterns,
/// no table's failure ends `run`: a table found by a pattern that cannot
/// be audited is reported with its fix, and the others are audited.
pub async fn run_selected<S, C, A>(
    engine: Arc<Engine<S, C, A>>,
    discoverer: Discoverer,
    shutdown: Shutdown,
) -> Result<(), EngineError>
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    run_discovered(engine, discoverer, shutdown, None).await
}

async fn run_discovered<S, C, A>(
    engine: Arc<Engine<S, C, A>>,
    mut discoverer: Discoverer,
    shutdown: Shutdown,
    replica: Option<Arc<Replica>>,
) -> Result<(), EngineError>
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    // Our own tables first: without them nothing can be kept. A missing one
    // is a configuration error; a transient error waits.
    let policy = engine.settings.retry_policy();
    match retry(
        policy,
        &shutdown.stop,
        "Query(ddb-audit streams table)",
        || engine.checkpoints.load_streams(None),
    )
    .await
    {
        Ok(_) => {}
        Err(Retried::Cancelled) => {
            info!("stopped during start-up");
            return Ok(());
        }
        Err(Retried::Failed(e)) => return Err(e.into()),
    }
    // Cancelled alone when every table turns out unauditable.
    let tasks_shutdown = Shutdown {
        stop: shutdown.stop.child_token(),
        abort: shutdown.abort.child_token(),
    };
    let exact: Vec<String> = discoverer.selection().exact().to_vec();
    let listing = discoverer.selection().needs_listing();
    let (verdict_tx, mut verdicts) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    let mut running: BTreeMap<String, TableTask> = BTreeMap::new();
    let mut task_tables: HashMap<tokio::task::Id, String> = HashMap::new();
    for table in &exact {
        // With patterns, a failing name must not end the daemon.
        let verdict = (!listing).then(|| verdict_tx.clone());
        start_table(
            &mut tasks,
            &mut running,
            &mut task_tables,
            &engine,
            table,
            &tasks_shutdown,
            verdict,
            replica.clone(),
        );
    }
    drop(verdict_tx);
    // Tables a pattern found whose tags cannot be read: reported, no task.
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut unauditable: BTreeMap<String, EngineError> = BTreeMap::new();
    let mut verdicts_open = !exact.is_empty() && !listing;
    let mut announced = false;
    let mut next_listing = listing.then(Instant::now);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.stop.cancelled() => break,
            verdict = verdicts.recv(), if verdicts_open => match verdict {
                Some((_, Ok(()))) | None => verdicts_open = false,
                Some((table, Err(e))) => {
                    unauditable.insert(table, e);
                    if unauditable.len() == exact.len() {
                        tasks_shutdown.stop.cancel();
                        while tasks.join_next().await.is_some() {}
                        return Err(combine(unauditable.into_values().collect()));
                    }
                }
            },
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let (id, panic) = match done {
                    Ok((id, ())) => (id, None),
                    Err(e) => (e.id(), Some(e)),
                };
                let Some(table) = task_tables.remove(&id) else { continue };
                let stopped = running.get(&table).is_none_or(|t| t.stop.is_cancelled());
                if stopped {
                    // Stopped because it no longer matches.
                    running.remove(&table);
                    unselect(&engine, &table).await;
                    continue;
                }
                if let Some(e) = panic {
                    error!(table = %table, error = %e, cooldown_secs = FAILED_SHARD_COOLDOWN.as_secs(),
                        "table task panicked; restarting it after a cooldown");
                    let Some(task) = running.get_mut(&table) else { continue };
                    let table_shutdown = Shutdown { stop: task.stop.clone(), abort: tasks_shutdown.abort.clone() };
                    let engine2 = engine.clone();
                    let table2 = table.clone();
                    let replica2 = replica.clone();
                    let handle = tasks.spawn(async move {
                        tokio::select! {
                            _ = table_shutdown.stop.cancelled() => return,
                            _ = tokio::time::sleep(FAILED_SHARD_COOLDOWN) => {}
                        }
                        let span = tracing::info_span!("table", table = %table2);
                        run_table(engine2, table2, table_shutdown, None, replica2)
                            .instrument(span)
                            .await
                    });
                    task.id = handle.id();
                    task_tables.insert(handle.id(), table);
                }
            }
            _ = sleep_until_opt(next_listing) => {
                next_listing = Some(Instant::now() + discoverer.interval());
                let listed = match discoverer.list(&engine.stream, &shutdown.stop).await {
                    Ok(listed) => listed,
                    Err(Retried::Cancelled) => break,
                    Err(Retried::Failed(e)) => {
                        // The tables found so far keep being audited.
                        let reason = discovery::listing_problem(&e);
                        error!(retry_in_secs = discoverer.interval().as_secs(), reason = %reason,
                            "cannot list the region's tables");
                        observe::TablesListed { problem: Some(reason) }.emit();
                        continue;
                    }
                };
                observe::TablesListed { problem: None }.emit();
                apply_listing(&engine, &discoverer, &listed, &mut running, &mut reported);
                for table in &listed.selected {
                    if !running.contains_key(table) {
                        info!(table = %table, "table selected: auditing it");
                        start_table(&mut tasks, &mut running, &mut task_tables, &engine, table, &tasks_shutdown, None, replica.clone());
                    }
                }
                for (table, reason) in &listed.unreadable {
                    if !running.contains_key(table) && reported.insert(table.clone()) {
                        error!(table = %table, reason = %reason, "table cannot be audited");
                        record_state(&engine, table, TableState::Failing(reason.clone())).await;
                    }
                }
            }
        }
        if !announced && !verdicts_open && !shutdown.stop.is_cancelled() {
            announced = true;
            info!(tables = ?running.keys().collect::<Vec<_>>(), "auditing");
        }
    }
    while tasks.join_next().await.is_some() {}
    info!("stopped");
    Ok(())
}

/// Stops the tables a listing no longer selects, and forgets the reported
/// ones it no longer finds unreadable.
fn apply_listing<S, C, A>(
    engine: &Engine<S, C, A>,
    discoverer: &Discoverer,
    listed: &Listed,
    running: &mut BTreeMap<String, TableTask>,
    reported: &mut BTreeSet<String>,
) where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    let selection = discoverer.selection();
    for (table, task) in running.iter() {
        if selection.is_exact(table) || listed.selected.contains(table) || task.stop.is_cancelled()
        {
            continue;
        }
        // A deleted table still has records in its old streams for a day:
        // those are read to their end first (its state says when).
        let deleted = !listed.existing.contains(table);
        let draining = matches!(
            engine.health.get(table),
            Some(TableState::Draining(_) | TableState::Auditing | TableState::Starting)
        );
        if deleted && draining {
            continue;
        }
        info!(table = %table, deleted, "table no longer selected: it is not read any more (its trail stays)");
        task.stop.cancel();
    }
    let unreadable = &listed.unreadable;
    reported.retain(|table| {
        let still = unreadable.contains_key(table) && !running.contains_key(table);
        if !still {
            engine.health.remove(table);
        }
        still
    });
}

/// A table left the selection: out of `/readyz`, and `status` says why.
async fn unselect<S, C, A>(engine: &Engine<S, C, A>, table: &str)
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    engine.health.remove(table);
    let row = TableHealthRow {
        table_name: table.to_string(),
        state: "unselected".to_string(),
        reason: Some(
            "no longer selected by `tables`, `exclude_tables` or `[discovery] tags`: not read; its trail stays"
                .to_string(),
        ),
        updated_at: Utc::now(),
    };
    if let Err(e) = engine.checkpoints.save_table_health(&row).await {
        warn!(table = %table, error = %e, "cannot record that the table is no longer selected");
    }
}

/// Sets a table's state, and records it for `status`, which runs in another
/// process (best effort: the log says the same). The one way a table's state
/// changes: `/readyz`, `/metrics` and `status` all follow from here. True
/// when it changed.
async fn record_state<S, C, A>(engine: &Engine<S, C, A>, table: &str, state: TableState) -> bool
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    if !engine.health.set(table, state.clone()) {
        return false;
    }
    let row = TableHealthRow {
        table_name: table.to_string(),
        state: state.name().to_string(),
        reason: state.reason().map(str::to_string),
        updated_at: Utc::now(),
    };
    if let Err(e) = engine.checkpoints.save_table_health(&row).await {
        warn!(table = %table, error = %e, "cannot record the table's state for `status`");
    }
    true
}

#[allow(clippy::too_many_arguments)]
fn start_table<S, C, A>(
    tasks: &mut JoinSet<()>,
    running: &mut BTreeMap<String, TableTask>,
    task_tables: &mut HashMap<tokio::task::Id, String>,
    engine: &Arc<Engine<S, C, A>>,
    table: &str,
    shutdown: &Shutdown,
    verdict: Option<Verdicts>,
    replica: Option<Arc<Replica>>,
) where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    // Not recorded for `status`: its row keeps the last verdict until the
    // table's first check answers, a moment later.
    engine.health.set(table, TableState::Starting);
    engine.read_tables.insert(table);
    let stop = shutdown.stop.child_token();
    let table_shutdown = Shutdown {
        stop: stop.clone(),
        abort: shutdown.abort.clone(),
    };
    let id = spawn_table(tasks, engine, table, &table_shutdown, verdict, replica);
    task_tables.insert(id, table.to_string());
    running.insert(table.to_string(), TableTask { stop, id });
}

fn spawn_table<S, C, A>(
    tasks: &mut JoinSet<()>,
    engine: &Arc<Engine<S, C, A>>,
    table: &str,
    shutdown: &Shutdown,
    verdict: Option<Verdicts>,
    replica: Option<Arc<Replica>>,
) -> tokio::task::Id
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    let span = tracing::info_span!("table", table = %table);
    tasks
        .spawn(
            run_table(
                engine.clone(),
                table.to_string(),
                shutdown.clone(),
                verdict,
                replica,
            )
            .instrument(span),
        )
        .id()
}

/// Where a table's first discovery says whether it can be audited.
type Verdicts = mpsc::UnboundedSender<(String, Result<(), EngineError>)>;

fn combine(mut problems: Vec<EngineError>) -> EngineError {
    match problems.len() {
        1 => problems.remove(0),
        n => EngineError::Several(
            n,
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n  "),
        ),
    }
}

/// Why a table's current stream cannot be read, from DescribeTable.
fn table_problem(table: &str, ts: &TableStream) -> Option<EngineError> {
    if !ts.stream_enabled || ts.latest_stream_arn.is_none() {
        return Some(EngineError::NoStream {
            table: table.to_string(),
        });
    }
    match ts.view_type.as_deref() {
        Some("NEW_AND_OLD_IMAGES") => None,
        other => Some(EngineError::WrongViewType {
            table: table.to_string(),
            view_type: other.unwrap_or("unknown").to_string(),
        }),
    }
}

/// One table, for as long as it is configured: follows its current stream,
/// drains older ones, and re-discovers on a slow timer — so a stream that is
/// re-enabled, a table that is re-created under the same name, or a table
/// that was failing and is fixed, is picked up within one interval.
pub async fn run_table<S, C, A>(
    engine: Arc<Engine<S, C, A>>,
    table: String,
    shutdown: Shutdown,
    verdict: Option<Verdicts>,
    replica: Option<Arc<Replica>>,
) where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    let policy = engine.settings.retry_policy();
    // Leases taken or lost: streams to start (a replica that never changes
    // holds nothing).
    let mut lease_changes = replica.as_ref().map(|r| r.subscribe());
    let interval = engine.settings.polling.full_listing_interval();
    let mut verdict = verdict;
    let mut running: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut streams: JoinSet<(String, bool)> = JoinSet::new();
    // Streams found with the wrong view type: never read, also once they
    // are no longer current.
    let mut rejected: HashSet<String> = HashSet::new();
    // Stops this table's streams alone (a Global Table found to belong to
    // another region), while the table keeps being watched.
    let mut streams_stop = shutdown.stop.child_token();
    'discovery: loop {
        let state = match discover_streams(&engine, &table, &shutdown, &mut rejected).await {
            Ok(Discovery {
                elsewhere: Some(home),
                ..
            }) => {
                if !running.is_empty() {
                    info!(home = %home, "table is now audited in its home region: stopping its streams here");
                    streams_stop.cancel();
                    while streams.join_next().await.is_some() {}
                    running.clear();
                    streams_stop = shutdown.stop.child_token();
                }
                Err((EngineError::Elsewhere { home }, false))
            }
            Ok(found) => {
                match &replica {
                    None => {
                        for arn in found.arns {
                            if running.values().any(|r| *r == arn) {
                                continue;
                            }
                            let stream_shutdown = Shutdown {
                                stop: streams_stop.clone(),
                                abort: shutdown.abort.clone(),
                            };
                            let task = spawn_stream(
                                &mut streams,
                                &engine,
                                &table,
                                &arn,
                                &stream_shutdown,
                                None,
                            );
                            running.insert(task, arn);
                        }
                    }
                    // Only what this replica holds; discovery still records
                    // every stream row, which is what the leases are on.
                    Some(replica) => {
                        // A stream nobody has leased yet (new, or this is the
                        // first start): scan now rather than at the next tick.
                        let held = replica.held();
                        if found
                            .arns
                            .iter()
                            .any(|a| !held.iter().any(|f| f.stream_arn == *a))
                        {
                            replica.poke();
                        }
                        start_held(
                            &mut streams,
                            &mut running,
                            &engine,
                            &table,
                            replica,
                            &rejected,
                        )
                    }
                }
                match found.problem {
                    None => Ok(()),
                    Some(p) if !running.is_empty() => Err((p, true)),
                    Some(p) => Err((p, false)),
                }
            }
            Err(Retried::Cancelled) => break 'discovery,
            Err(Retried::Failed(StreamError::Other(message)))
                if message.contains("AccessDenied") || message.contains("not authorized") =>
            {
                Err((
                    EngineError::AccessDenied {
                        table: table.clone(),
                        message,
                    },
                    !running.is_empty(),
                ))
            }
            Err(Retried::Failed(source)) => Err((
                EngineError::Stream {
                    table: table.clone(),
                    source,
                },
                !running.is_empty(),
            )),
        };
        // Found or not: this replica may take the table's leases now.
        if let Some(replica) = &replica {
            replica.discovered(&table);
        }
        let (new_state, outcome) = match state {
            Ok(()) => (TableState::Auditing, Ok(())),
            Err((p @ EngineError::Elsewhere { .. }, _)) => {
                (TableState::Elsewhere(p.to_string()), Ok(()))
            }
            Err((p, true)) => (TableState::Draining(p.to_string()), Ok(())),
            Err((p, false)) => (TableState::Failing(p.to_string()), Err(p)),
        };
        let changed = record_state(&engine, &table, new_state.clone()).await;
        match &new_state {
            TableState::Failing(reason) => error!(
                reason = %reason, retry_in_secs = interval.as_secs(),
                "table cannot be audited; checking again later (the other tables are audited)"
            ),
            TableState::Draining(reason) if changed => {
                error!(reason = %reason, "table's current stream cannot be read: draining its old streams and watching for a new one")
            }
            TableState::Auditing if changed => info!("table is being audited"),
            TableState::Elsewhere(reason) if changed => {
                info!(reason = %reason, "Global Table audited in another region")
            }
            _ => {}
        }
        if let Some(tx) = verdict.take() {
            let _ = tx.send((table.clone(), outcome));
        }
        let mut next_discovery = Instant::now() + interval;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.stop.cancelled() => break 'discovery,
                Ok(()) = lease_changed(&mut lease_changes) => {
                    if let Some(replica) = &replica {
                        start_held(&mut streams, &mut running, &engine, &table, replica, &rejected);
                    }
                }
                Some(done) = streams.join_next_with_id() => {
                    let (id, finished) = match done {
                        Ok((id, (_, finished))) => (id, finished),
                        Err(e) => {
                            if !shutdown.stop.is_cancelled() {
                                error!(stream = ?running.get(&e.id()), error = %e,
                                    "stream task panicked; restarting it at the next discovery");
                            }
                            (e.id(), false)
                        }
                    };
                    // Stopped, failed or panicked: restarted at the next
                    // discovery, not at once, so a stream that keeps failing
                    // costs one attempt per interval.
                    let Some(arn) = running.remove(&id) else { continue };
                    // Handed over (or finished): the lease goes back now,
                    // after the stream's final checkpoints.
                    let release = replica.as_ref().and_then(|r| r.ended(&arn, finished));
                    if let Some(fence) = release {
                        crate::daemon::leases::release(&engine.checkpoints, &fence).await;
                    }
                    if finished {
                        info!(stream = %arn, "stream drained");
                        let row = StreamRow { table_name: table.clone(), stream_arn: arn, is_enabled: false, drained: true, updated_at: Utc::now() };
                        let saved = retry(policy, &shutdown.abort, "PutItem(stream)", || engine.checkpoints.save_stream(&row)).await;
                        if let Err(e) = saved {
                            // Only the `drained` mark is lost: the stream is
                            // listed and found drained again at the next start.
                            error!(table = %table, stream = %row.stream_arn, error = %e,
                                "cannot record that the stream is drained");
                            observe::WriteUnfinished { table: &table, what: "stream_row" }.emit();
                        }
                        // At once: a drained old stream may have been all
                        // that kept the table from counting as failing.
                        next_discovery = Instant::now();
                    }
                }
                _ = tokio::time::sleep_until(next_discovery) => break,
            }
        }
    }
    while streams.join_next().await.is_some() {}
}

/// Waits for a change of the leases held; never, without replicas.
async fn lease_changed(
    changes: &mut Option<tokio::sync::watch::Receiver<u64>>,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match changes {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

fn spawn_stream<S, C, A>(
    streams: &mut JoinSet<(String, bool)>,
    engine: &Arc<Engine<S, C, A>>,
    table: &str,
    arn: &str,
    shutdown: &Shutdown,
    lease: Option<StreamLease>,
) -> tokio::task::Id
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    let span = match &lease {
        Some(l) => tracing::info_span!("stream", stream = %arn, epoch = l.fence.epoch),
        None => tracing::info_span!("stream", stream = %arn),
    };
    let engine = engine.clone();
    let table = table.to_string();
    let shutdown = shutdown.clone();
    let arn = arn.to_string();
    streams
        .spawn(
            async move {
                let finished = run_stream(engine, table, arn.clone(), shutdown, lease).await;
                (arn, finished)
            }
            .instrument(span),
        )
        .id()
}

/// Starts the streams of `table` this replica holds and does not read yet.
fn start_held<S, C, A>(
    streams: &mut JoinSet<(String, bool)>,
    running: &mut HashMap<tokio::task::Id, String>,
    engine: &Arc<Engine<S, C, A>>,
    table: &str,
    replica: &Arc<Replica>,
    rejected: &HashSet<String>,
) where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    for (fence, stream_shutdown) in replica.to_start(table) {
        if rejected.contains(&fence.stream_arn) || running.values().any(|r| *r == fence.stream_arn)
        {
            continue;
        }
        let arn = fence.stream_arn.clone();
        let lease = StreamLease {
            fence,
            replica: replica.clone(),
        };
        let task = spawn_stream(streams, engine, table, &arn, &stream_shutdown, Some(lease));
        running.insert(task, arn);
    }
}

/// A stream read under a lease: the fence its writes carry, and the replica
/// to tell when a write is refused.
#[derive(Clone)]
pub struct StreamLease {
    pub fence: Fence,
    pub replica: Arc<Replica>,
}

/// What one discovery of a table found.
struct Discovery {
    /// The streams still to read: the current one (if it can be audited) and
    /// older ones not yet drained.
    arns: Vec<String>,
    /// Why the table's current stream cannot be audited, if so.
    problem: Option<EngineError>,
    /// A Global Table whose home is another region: that region.
    elsewhere: Option<String>,
}

/// The home region of a Global Table, when it is not this one (the region
/// of the table's ARN).
fn foreign_home(ts: &TableStream, configured: Option<&str>) -> Option<String> {
    if ts.replicas.is_empty() {
        return None;
    }
    let own = ts.table_arn.as_deref().and_then(arn_region)?;
    let home = home_region(own, &ts.replicas, configured);
    (home != own).then(|| home.to_string())
}

/// Finds a table's streams and records them in the streams table (which one
/// is current).
async fn discover_streams<S, C, A>(
    engine: &Engine<S, C, A>,
    table: &str,
    shutdown: &Shutdown,
    rejected: &mut HashSet<String>,
) -> Result<Discovery, Retried<StreamError>>
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    let policy = engine.settings.retry_policy();
    let (current, problem) = match retry(policy, &shutdown.stop, "DescribeTable", || {
        engine.stream.describe_table(table)
    })
    .await
    {
        Ok(ts) if foreign_home(&ts, engine.settings.home_region.as_deref()).is_some() => {
            return Ok(Discovery {
                arns: Vec::new(),
                problem: None,
                elsewhere: foreign_home(&ts, engine.settings.home_region.as_deref()),
            });
        }
        Ok(ts) => match table_problem(table, &ts) {
            None => (ts.latest_stream_arn, None),
            Some(p) => (None, Some((p, ts.latest_stream_arn))),
        },
        Err(Retried::Failed(StreamError::NotFound(_))) => (
            None,
            Some((
                EngineError::TableNotFound {
                    table: table.to_string(),
                },
                None,
            )),
        ),
        Err(e) => return Err(e),
    };
    // A stream of the wrong view type is never read, even though it is listed.
    if let Some((EngineError::WrongViewType { .. }, Some(arn))) = &problem {
        rejected.insert(arn.clone());
    }
    let problem = problem.map(|(p, _)| p);
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
    let stored = match retry(policy, &shutdown.stop, "Query(streams)", || {
        engine.checkpoints.load_streams(Some(table))
    })
    .await
    {
        Ok(rows) => rows,
        Err(Retried::Cancelled) => return Err(Retried::Cancelled),
        Err(Retried::Failed(e)) => {
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
        if drained.contains(arn.as_str()) || rejected.contains(&arn) {
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
    Ok(Discovery {
        arns: result,
        problem,
        elsewhere: None,
    })
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
                table: &self.table,
                stream: &self.stream_arn,
                shard: &id,
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
            table: &self.table,
            stream: &self.stream_arn,
            shard: shard_id,
            state: shown,
        }
        .emit();
    }

    fn cool_down(&mut self, shard_id: &str, error: &str) {
        error!(shard = %shard_id, error, cooldown_secs = FAILED_SHARD_COOLDOWN.as_secs(),
            "shard failed; restarting it from its last saved checkpoint after a cooldown");
        self.lineage.set_state(shard_id, NodeState::Waiting);
        observe::ShardFailed {
            table: &self.table,
            stream: &self.stream_arn,
            shard: shard_id,
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
                table: &self.table,
                stream: &self.stream_arn,
                shard: id,
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

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
