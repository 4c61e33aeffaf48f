//! Discovery and scheduling per table: the tables selected (and found by a
//! pattern), each table's streams (the current one and older ones still
//! readable after a re-enable), and one stream supervisor each
//! (`daemon::stream`), for the streams this replica holds.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use crate::daemon::discovery::{self, Discoverer, Listed};
use crate::daemon::engine::{Engine, EngineError, Shutdown, TableState};
use crate::daemon::leases::Replica;
use crate::daemon::stream::{run_stream, sleep_until_opt, StreamLease, FAILED_SHARD_COOLDOWN};
use crate::observe::{self, Event};
use crate::retry::{retry, Retried};
use crate::selection::{arn_region, home_region};
use crate::store::{AuditStore, CheckpointStore, StreamRow, TableHealthRow};
use crate::stream::{StreamApi, StreamError, TableStream};

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
    run_selected(engine, discoverer, shutdown, None).await
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
///
/// With a `replica`, as one of several: only the streams whose lease it
/// holds are read ([`crate::daemon::leases`]; its `coordinate` must run
/// beside this, and `let_go` after it).
pub async fn run_selected<S, C, A>(
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
    let mut tables = TableTasks {
        engine: engine.clone(),
        shutdown: Shutdown {
            stop: shutdown.stop.child_token(),
            abort: shutdown.abort.child_token(),
        },
        replica,
        tasks: JoinSet::new(),
        running: BTreeMap::new(),
        by_id: HashMap::new(),
    };
    let exact: Vec<String> = discoverer.selection().exact().to_vec();
    let listing = discoverer.selection().needs_listing();
    let (verdict_tx, mut verdicts) = mpsc::unbounded_channel();
    for table in &exact {
        // With patterns, a failing name must not end the daemon.
        let verdict = (!listing).then(|| verdict_tx.clone());
        tables.start(table, verdict);
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
                        tables.shutdown.stop.cancel();
                        while tables.tasks.join_next().await.is_some() {}
                        return Err(combine(unauditable.into_values().collect()));
                    }
                }
            },
            Some(done) = tables.tasks.join_next_with_id(), if !tables.tasks.is_empty() => {
                let (id, panic) = match done {
                    Ok((id, ())) => (id, None),
                    Err(e) => (e.id(), Some(e)),
                };
                let Some(table) = tables.by_id.remove(&id) else { continue };
                let stopped = tables.running.get(&table).is_none_or(|t| t.stop.is_cancelled());
                if stopped {
                    // Stopped because it no longer matches.
                    tables.running.remove(&table);
                    unselect(&engine, &table).await;
                    continue;
                }
                if let Some(e) = panic {
                    error!(table = %table, error = %e, cooldown_secs = FAILED_SHARD_COOLDOWN.as_secs(),
                        "table task panicked; restarting it after a cooldown");
                    tables.restart(table);
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
                apply_listing(&engine, &discoverer, &listed, &mut tables.running, &mut reported);
                for table in &listed.selected {
                    if !tables.running.contains_key(table) {
                        info!(table = %table, "table selected: auditing it");
                        tables.start(table, None);
                    }
                }
                for (table, reason) in &listed.unreadable {
                    if !tables.running.contains_key(table) && reported.insert(table.clone()) {
                        error!(table = %table, reason = %reason, "table cannot be audited");
                        record_state(&engine, table, TableState::Failing(reason.clone())).await;
                    }
                }
            }
        }
        if !announced && !verdicts_open && !shutdown.stop.is_cancelled() {
            announced = true;
            info!(tables = ?tables.running.keys().collect::<Vec<_>>(), "auditing");
        }
    }
    while tables.tasks.join_next().await.is_some() {}
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

/// The table tasks of one run, each with the token that stops it alone.
struct TableTasks<S, C, A> {
    engine: Arc<Engine<S, C, A>>,
    /// Cancelled alone when every table turns out unauditable.
    shutdown: Shutdown,
    replica: Option<Arc<Replica>>,
    tasks: JoinSet<()>,
    running: BTreeMap<String, TableTask>,
    /// The table of each task, to know which one ended.
    by_id: HashMap<tokio::task::Id, String>,
}

impl<S, C, A> TableTasks<S, C, A>
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    fn start(&mut self, table: &str, verdict: Option<Verdicts>) {
        // Not recorded for `status`: its row keeps the last verdict until the
        // table's first check answers, a moment later.
        self.engine.health.set(table, TableState::Starting);
        self.engine.read_tables.insert(table);
        let stop = self.shutdown.stop.child_token();
        let id = self.spawn(table, stop.clone(), verdict, None);
        self.by_id.insert(id, table.to_string());
        self.running
            .insert(table.to_string(), TableTask { stop, id });
    }

    /// The task of `table` panicked: started again after a cooldown, under
    /// the token it had.
    fn restart(&mut self, table: String) {
        let Some(stop) = self.running.get(&table).map(|task| task.stop.clone()) else {
            return;
        };
        let id = self.spawn(&table, stop, None, Some(FAILED_SHARD_COOLDOWN));
        if let Some(task) = self.running.get_mut(&table) {
            task.id = id;
        }
        self.by_id.insert(id, table);
    }

    fn spawn(
        &mut self,
        table: &str,
        stop: CancellationToken,
        verdict: Option<Verdicts>,
        cooldown: Option<std::time::Duration>,
    ) -> tokio::task::Id {
        let shutdown = Shutdown {
            stop,
            abort: self.shutdown.abort.clone(),
        };
        let span = tracing::info_span!("table", table = %table);
        let engine = self.engine.clone();
        let (table, replica) = (table.to_string(), self.replica.clone());
        self.tasks
            .spawn(async move {
                if let Some(cooldown) = cooldown {
                    tokio::select! {
                        _ = shutdown.stop.cancelled() => return,
                        _ = tokio::time::sleep(cooldown) => {}
                    }
                }
                run_table(engine, table, shutdown, verdict, replica)
                    .instrument(span)
                    .await
            })
            .id()
    }
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
    // Audited in another region: no stream of it is started here.
    let mut elsewhere = false;
    'discovery: loop {
        let state = match discover_streams(&engine, &table, &shutdown, &mut rejected).await {
            Ok(Discovery {
                elsewhere: Some(home),
                ..
            }) => {
                elsewhere = true;
                if !running.is_empty() {
                    info!(home = %home, "table is now audited in its home region: stopping its streams here");
                    if let Some(replica) = &replica {
                        replica.stop_table(&table);
                    }
                    streams_stop.cancel();
                    while let Some(done) = streams.join_next().await {
                        // A leased stream goes back after its final checkpoints.
                        let arn = done.ok().map(|(arn, _)| arn);
                        let fence = replica
                            .as_ref()
                            .zip(arn)
                            .and_then(|(r, a)| r.ended(&a, false));
                        if let Some(fence) = fence {
                            crate::daemon::leases::release(&engine.checkpoints, &fence).await;
                        }
                    }
                    running.clear();
                    streams_stop = shutdown.stop.child_token();
                }
                Err((EngineError::Elsewhere { home }, false))
            }
            Ok(found) => {
                elsewhere = false;
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
                    if let Some(replica) = replica.as_ref().filter(|_| !elsewhere) {
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
        Ok(rows) => Some(rows),
        Err(Retried::Cancelled) => return Err(Retried::Cancelled),
        Err(Retried::Failed(e)) => {
            warn!(error = %e, "cannot read the streams table");
            None
        }
    };
    // The table's trail begins with this discovery when nothing of it was
    // ever recorded and it has one stream, the current one: its items then
    // have no stream entry yet (what the item chain may rely on, see
    // `itemchain`). Anything else, or not knowing, is "not fresh".
    let only_current = listed
        .iter()
        .all(|l| current.as_deref() == Some(l.stream_arn.as_str()));
    let first_stream = (stored.as_ref().is_some_and(Vec::is_empty) && only_current)
        .then_some(current.as_ref())
        .flatten();
    let stored = stored.unwrap_or_default();
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
            match engine.checkpoints.save_stream(&row).await {
                Ok(()) if first_stream == Some(&arn) => {
                    if let Err(e) = engine.checkpoints.set_fresh_items(table, &arn, true).await {
                        // Only costs reads: each item's first change asks the store.
                        warn!(error = %e, stream = %arn, "cannot record that the table's trail begins here");
                    }
                }
                Ok(()) => {}
                Err(e) => warn!(error = %e, stream = %arn, "cannot record stream"),
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
