//! The invariants in the hard cases (issue 8) and SIGTERM in every state
//! (issue 14), on the stream simulator and tokio's paused clock: stale
//! restarts, panics, malformed records, rejected writes, unconfirmed
//! NotFound, shards that vanish unread, re-created tables, one bad table among
//! good ones, bounded state, and stopping at any stage within the grace time.

mod sim_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ddb_audit::daemon::engine::{Engine, EngineError, Shutdown, TableState};
use ddb_audit::store::faults::{FaultStore, StoreFault, StoreOp};
use ddb_audit::store::memory::MemoryStore;
use ddb_audit::store::{AuditStore, CheckpointStore, ShardStatus, StoreError};
use ddb_audit::stream::faults::{FaultRule, FaultStream, Op, When};
use ddb_audit::stream::sim::{SimConfig, SimStream, ViewType};
use ddb_audit::stream::{
    is_sequence_number, DescribeStreamRequest, RecordsPage, ShardIteratorRequest, StreamApi,
    StreamDescription, StreamError, StreamResult, StreamSummary, TableStream,
};
use sim_support::*;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const SEC: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const GRACE: Duration = Duration::from_secs(4);

fn sim() -> SimStream {
    let sim = SimStream::new(SimConfig::with_seed(81));
    sim.create_table(TABLE, &["pk"], Some(ViewType::NewAndOldImages))
        .unwrap();
    sim
}

fn write(sim: &SimStream, table: &str, versions: std::ops::Range<u32>) {
    for v in versions {
        sim.put(table, item(v % 7, v, "alice")).unwrap();
    }
}

fn entries_of(store: &MemoryStore, table: &str) -> usize {
    store
        .all_entries()
        .iter()
        .filter(|e| e.table == table)
        .count()
}

/// The daemon over any stream and store, with the engine kept for its health.
struct Running<S: StreamApi, T: CheckpointStore + AuditStore + Clone> {
    engine: Arc<Engine<S, T, T>>,
    shutdown: Shutdown,
    handle: JoinHandle<Result<(), EngineError>>,
}

fn run_daemon<S, T>(stream: S, store: &T, tables: &[&str]) -> Running<S, T>
where
    S: StreamApi,
    T: CheckpointStore + AuditStore + Clone,
{
    let engine = Arc::new(Engine::new(
        stream,
        store.clone(),
        store.clone(),
        settings(),
    ));
    let shutdown = Shutdown::new();
    let handle = tokio::spawn(ddb_audit::daemon::supervisor::run(
        engine.clone(),
        tables.iter().map(|t| t.to_string()).collect(),
        shutdown.clone(),
    ));
    Running {
        engine,
        shutdown,
        handle,
    }
}

impl<S: StreamApi, T: CheckpointStore + AuditStore + Clone> Running<S, T> {
    /// SIGTERM: returns how long the daemon took to exit, and what it returned.
    async fn sigterm(self) -> (Duration, Result<(), EngineError>) {
        let asked = Instant::now();
        self.shutdown.begin(GRACE);
        let result = self.handle.await.expect("the daemon task panicked");
        (asked.elapsed(), result)
    }
}

// ---------------------------------------------------------------------------
// 1. A shard restarts from the position it last durably saved

#[tokio::test(start_paused = true)]
async fn after_a_non_retryable_error_the_shard_resumes_from_its_last_saved_checkpoint() {
    let sim = sim();
    let faults = FaultStream::new(sim.clone(), 1);
    let store = MemoryStore::new();
    write(&sim, TABLE, 0..100);
    let daemon = run_daemon(faults.clone(), &store, &[TABLE]);
    tokio::time::sleep(10 * SEC).await;
    write(&sim, TABLE, 100..200);
    tokio::time::sleep(10 * SEC).await;
    // A role being rotated: three seconds of AccessDenied on every read.
    let denied = faults.add_rule(FaultRule::error(
        Op::GetRecords,
        StreamError::Other("AccessDeniedException: not authorized".into()),
    ));
    write(&sim, TABLE, 200..250);
    tokio::time::sleep(3 * SEC).await;
    faults.remove_rule(denied);
    write(&sim, TABLE, 250..300);
    tokio::time::sleep(2 * MIN).await;
    let (_, result) = daemon.sigterm().await;
    result.unwrap();
    assert_eq!(verify(&sim, &store, TABLE).await.unwrap(), 300);
    // About one audit put per change: the restart did not start over from
    // where the supervisor began.
    assert!(
        store.entry_puts() <= 300 + 5,
        "{} puts for 300 changes ({} duplicates)",
        store.entry_puts(),
        store.duplicate_puts()
    );
}

/// Called around each GetRecords: with `None` before the call, then with the
/// page it returned.
type GetRecordsHook = Arc<dyn Fn(Option<&mut RecordsPage>) + Send + Sync>;

/// A stream that lets a test panic in, or rewrite, GetRecords.
#[derive(Clone)]
struct Tap<S> {
    inner: S,
    hook: GetRecordsHook,
}

impl<S: StreamApi + Clone> StreamApi for Tap<S> {
    async fn describe_table(&self, table: &str) -> StreamResult<TableStream> {
        self.inner.describe_table(table).await
    }
    async fn list_streams(&self, table: &str) -> StreamResult<Vec<StreamSummary>> {
        self.inner.list_streams(table).await
    }
    async fn list_tables(
        &self,
        start: Option<&str>,
    ) -> StreamResult<ddb_audit::stream::TablesPage> {
        self.inner.list_tables(start).await
    }
    async fn list_tags(&self, arn: &str) -> StreamResult<ddb_audit::stream::Tags> {
        self.inner.list_tags(arn).await
    }
    async fn describe_stream(
        &self,
        request: &DescribeStreamRequest,
    ) -> StreamResult<StreamDescription> {
        self.inner.describe_stream(request).await
    }
    async fn get_shard_iterator(&self, request: &ShardIteratorRequest<'_>) -> StreamResult<String> {
        self.inner.get_shard_iterator(request).await
    }
    async fn get_records(&self, iterator: &str, limit: Option<i32>) -> StreamResult<RecordsPage> {
        (self.hook)(None);
        let mut page = self.inner.get_records(iterator, limit).await?;
        (self.hook)(Some(&mut page));
        Ok(page)
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_shard_task_is_restarted_and_its_children_still_start() {
    let sim = sim();
    let store = MemoryStore::new();
    write(&sim, TABLE, 0..20);
    // Panics once, on the third GetRecords call.
    let calls = AtomicU64::new(0);
    let stream = Tap {
        inner: sim.clone(),
        hook: Arc::new(move |page: Option<&mut RecordsPage>| {
            if page.is_none() && calls.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
                panic!("injected panic in GetRecords");
            }
        }),
    };
    let daemon = run_daemon(stream, &store, &[TABLE]);
    tokio::time::sleep(5 * SEC).await;
    write(&sim, TABLE, 20..40);
    let shard = sim.open_shards(TABLE).unwrap().remove(0);
    let child = sim.rotate_shard(&shard).unwrap();
    write(&sim, TABLE, 40..60);
    tokio::time::sleep(2 * MIN).await;
    let (_, result) = daemon.sigterm().await;
    result.unwrap();
    assert_eq!(verify(&sim, &store, TABLE).await.unwrap(), 60);
    let arn = sim.stream_arn(TABLE).unwrap();
    let checkpoints = store.checkpoints(&arn);
    assert!(
        checkpoints
            .iter()
            .any(|c| c.shard_id == shard && c.status == ShardStatus::Drained),
        "{checkpoints:?}"
    );
    assert!(checkpoints
        .iter()
        .any(|c| c.shard_id == child && c.sequence_no.is_some()));
}

// ---------------------------------------------------------------------------
// 5. Nothing stalls a lineage: malformed records, rejected writes, NotFound

#[tokio::test(start_paused = true)]
async fn a_malformed_record_is_an_error_entry_and_never_the_checkpoint() {
    let sim = sim();
    let store = MemoryStore::new();
    write(&sim, TABLE, 0..9);
    // The ninth record read, the last of the first page (it would be the
    // checkpoint), gets a sequence number that is not one.
    let seen = AtomicU64::new(0);
    let stream = Tap {
        inner: sim.clone(),
        hook: Arc::new(move |page: Option<&mut RecordsPage>| {
            for r in page.map(|p| p.records.iter_mut()).into_iter().flatten() {
                if seen.fetch_add(1, Ordering::SeqCst) == 8 {
                    r.sequence_number = "not-a-number".into();
                }
            }
        }),
    };
    let daemon = run_daemon(stream, &store, &[TABLE]);
    tokio::time::sleep(5 * SEC).await;
    write(&sim, TABLE, 9..15);
    tokio::time::sleep(10 * SEC).await;
    let (_, result) = daemon.sigterm().await;
    result.unwrap();
    let entries = store.all_entries();
    assert_eq!(entries.len(), 15);
    let bad: Vec<_> = entries.iter().filter(|e| e.error.is_some()).collect();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0]
            .error
            .as_deref()
            .unwrap()
            .contains("not a decimal number"),
        "{bad:?}"
    );
    let arn = sim.stream_arn(TABLE).unwrap();
    for c in store.checkpoints(&arn) {
        let seq = c.sequence_no.expect("checkpointed");
        assert!(is_sequence_number(&seq), "checkpoint {seq:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_entry_the_store_rejects_becomes_an_error_entry_not_an_endless_retry() {
    let sim = sim();
    let store = MemoryStore::new();
    let faulty = FaultStore::new(store.clone(), 1);
    let records: Vec<_> = (0..10u32)
        .map(|v| sim.put(TABLE, item(v, v, "alice")).unwrap().unwrap())
        .collect();
    let rejected = &records[4].sequence_number;
    faulty.add(
        StoreFault::error(
            StoreOp::PutEntry,
            StoreError::Rejected("ValidationException: invalid attribute".into()),
        )
        .for_sequence(rejected)
        // The marker entry that stands in for it goes through.
        .when(When::FirstN(1)),
    );
    let daemon = run_daemon(sim.clone(), &faulty, &[TABLE]);
    tokio::time::sleep(10 * SEC).await;
    let (_, result) = daemon.sigterm().await;
    result.unwrap();
    let entries = store.all_entries();
    assert_eq!(entries.len(), 10);
    let marker = entries
        .iter()
        .find(|e| &e.sequence_number == rejected)
        .expect("a marker entry for the rejected record");
    assert!(marker.changes.is_empty());
    assert!(
        marker.error.as_deref().unwrap().contains("rejected"),
        "{marker:?}"
    );
    let arn = sim.stream_arn(TABLE).unwrap();
    assert_eq!(
        store.checkpoints(&arn)[0].sequence_no.as_deref(),
        Some(records[9].sequence_number.as_str()),
        "the checkpoint moved past the rejected record"
    );
}

#[tokio::test(start_paused = true)]
async fn not_found_is_confirmed_by_a_listing_before_a_shard_counts_as_gone() {
    let sim = sim();
    let faults = FaultStream::new(sim.clone(), 1);
    let store = MemoryStore::new();
    write(&sim, TABLE, 0..5);
    faults.add_rule(
        FaultRule::error(
            Op::GetRecords,
            StreamError::NotFound("ResourceNotFoundException: injected".into()),
        )
        .when(When::Burst {
            after_calls: 2,
            count: 1,
        }),
    );
    let daemon = run_daemon(faults.clone(), &store, &[TABLE]);
    tokio::time::sleep(5 * SEC).await;
    write(&sim, TABLE, 5..10);
    tokio::time::sleep(2 * MIN).await;
    let (_, result) = daemon.sigterm().await;
    result.unwrap();
    assert!(store.gaps().await.unwrap().is_empty(), "no false gap");
    let arn = sim.stream_arn(TABLE).unwrap();
    let checkpoints = store.checkpoints(&arn);
    assert_eq!(checkpoints.len(), 1);
    assert_eq!(
        checkpoints[0].status,
        ShardStatus::Open,
        "the shard is still read"
    );
    assert_eq!(verify(&sim, &store, TABLE).await.unwrap(), 10);
}

// ---------------------------------------------------------------------------
// 2 and 3. Every shard started is recorded; gaps are bracketed; no false gap

#[tokio::test(start_paused = true)]
async fn an_open_shard_that_vanishes_unread_while_down_is_a_gap() {
    let sim = sim();
    let store = MemoryStore::new();
    let shard = sim.open_shards(TABLE).unwrap().remove(0);
    // The daemon tails an open shard that has no records yet, and stops.
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    tokio::time::sleep(10 * SEC).await;
    daemon.stop().await;
    // While it is down: changes, the shard closes, and is trimmed away.
    write(&sim, TABLE, 0..5);
    let child = sim.rotate_shard(&shard).unwrap();
    tokio::time::sleep(25 * HOUR).await;
    write(&sim, TABLE, 5..8);
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    tokio::time::sleep(MIN).await;
    daemon.stop().await;
    let gaps = store.gaps().await.unwrap();
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    assert_eq!(gaps[0].shard_id, shard);
    assert_eq!(gaps[0].after_sequence_number, None, "nothing was read");
    // Found by the listing, nothing after it readable then: the child's
    // first record closes it.
    assert_eq!(gaps[1].shard_id, child);
    assert_eq!(gaps[1].closes, vec![gaps[0].reference()]);
    assert!(gaps[1].resumed_at_sequence_number.is_some());
    let arn = sim.stream_arn(TABLE).unwrap();
    assert!(store
        .checkpoints(&arn)
        .iter()
        .any(|c| c.shard_id == child && c.sequence_no.is_some()));
    assert_eq!(entries_of(&store, TABLE), 3);
}

/// Issue 20, point 6: the loss is found in one shard, the first record after
/// it is two shards later in the lineage, and that shard stays empty for a
/// while. Each gap written open (`resumed_at` null) stays open in the rows,
/// through a restart, until the first record after it is read; a gap of
/// that shard then closes them all, and the chain still verifies.
async fn gap_closed_two_shards_later(first_shard_listed: bool) {
    let sim = sim();
    let store = MemoryStore::new();
    let arn = sim.stream_arn(TABLE).unwrap();
    let s1 = sim.open_shards(TABLE).unwrap().remove(0);
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    write(&sim, TABLE, 0..3);
    tokio::time::sleep(MIN).await;
    daemon.stop().await;
    // While it is down: changes in s1 that are trimmed before it is back.
    write(&sim, TABLE, 3..5);
    let s3 = if first_shard_listed {
        // s1 is still listed (closed two hours later), s2 stays empty: the
        // loss is found by s1's task, which can only leave it open.
        tokio::time::sleep(2 * HOUR).await;
        let s2 = sim.rotate_shard(&s1).unwrap();
        tokio::time::sleep(HOUR).await;
        let s3 = sim.rotate_shard(&s2).unwrap();
        tokio::time::sleep(22 * HOUR).await;
        s3
    } else {
        // s1 is trimmed away, and s2's own records are trimmed too: a gap
        // for s1 (found by the listing), one for s2 (found by its task).
        let s2 = sim.rotate_shard(&s1).unwrap();
        tokio::time::sleep(HOUR).await;
        write(&sim, TABLE, 5..7);
        tokio::time::sleep(HOUR).await;
        let s3 = sim.rotate_shard(&s2).unwrap();
        tokio::time::sleep(23 * HOUR + 30 * MIN).await;
        s3
    };
    let listed: Vec<String> = sim
        .shards(&arn)
        .unwrap()
        .into_iter()
        .map(|s| s.shard_id)
        .collect();
    assert_eq!(listed.contains(&s1), first_shard_listed, "{listed:?}");
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    tokio::time::sleep(MIN).await;
    daemon.stop().await;
    // s3 is empty: every gap is written, its right bracket open, and s3's
    // row holds them open.
    let open = store.gaps().await.unwrap();
    assert!(!open.is_empty());
    assert!(
        open.iter()
            .all(|g| g.resumed_at_sequence_number.is_none() && !g.is_closing()),
        "{open:#?}"
    );
    let row = |id: &str| {
        store
            .checkpoints(&arn)
            .into_iter()
            .find(|c| c.shard_id == id)
    };
    let held: Vec<_> = row(&s3).map(|c| c.open_gaps).unwrap_or_default();
    assert_eq!(
        held.iter().map(|g| g.reference()).collect::<Vec<_>>(),
        open.iter().map(|g| g.reference()).collect::<Vec<_>>(),
        "s3's row holds the open gaps"
    );
    // A restart while s3 is still empty: the brackets stay open, nothing is
    // written twice.
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    tokio::time::sleep(MIN).await;
    assert_eq!(store.gaps().await.unwrap(), open);
    // The first records after the loss, in s3: the brackets close.
    write(&sim, TABLE, 7..10);
    tokio::time::sleep(MIN).await;
    daemon.stop().await;
    let gaps = store.gaps().await.unwrap();
    let closing: Vec<_> = gaps.iter().filter(|g| g.is_closing()).collect();
    assert_eq!(closing.len(), 1, "{gaps:#?}");
    let s3_first = store
        .all_entries()
        .into_iter()
        .filter(|e| e.shard_id == s3)
        .map(|e| e.sequence_number)
        .min_by(|a, b| ddb_audit::stream::cmp_sequence(a, b))
        .unwrap();
    let close = closing[0];
    assert_eq!(close.shard_id, s3);
    assert_eq!(
        close.resumed_at_sequence_number.as_deref(),
        Some(s3_first.as_str())
    );
    assert_eq!(close.after_shard_id.as_deref(), Some(s1.as_str()));
    assert_eq!(
        close.closes,
        open.iter().map(|g| g.reference()).collect::<Vec<_>>()
    );
    assert_eq!(close.after_sequence_number, open[0].after_sequence_number);
    assert!(
        row(&s3).unwrap().open_gaps.is_empty(),
        "closed, no longer held"
    );
    // Reading shows the open gaps' right bracket (`closed_by`).
    let shown = ddb_audit::read::gaps_bracketed(store.gaps().await.unwrap());
    for g in shown.iter().filter(|g| !g.is_closing()) {
        let by = g.closed_by.as_ref().expect("closed");
        assert_eq!(by.shard_id, s3);
        assert_eq!(
            by.resumed_at_sequence_number.as_deref(),
            Some(s3_first.as_str())
        );
    }
    check_gaps(&sim, &store, TABLE, true).await.unwrap();
    verify_with(&sim, &store, TABLE, |_| false).await.unwrap();
    chain_verifies(&store);
}

/// The chain walk of `verify` finds nothing but notes (no digest is written
/// here: their absence is not what is checked).
fn chain_verifies(store: &MemoryStore) {
    use ddb_audit::proof::verify::{Kind, Severity};
    let bad: Vec<_> = chain_findings(&store.proof_evidence(), 60)
        .into_iter()
        .filter(|f| f.severity != Severity::Info && f.kind != Kind::DigestMissing)
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_gap_found_in_its_shard_is_closed_where_reading_resumes_two_shards_later() {
    gap_closed_two_shards_later(true).await;
}

#[tokio::test(start_paused = true)]
async fn gaps_of_shards_trimmed_away_are_closed_where_reading_resumes_two_shards_later() {
    gap_closed_two_shards_later(false).await;
}

/// The loss and the first record after it in one open shard, quiet in
/// between: the open gap and the gap closing it begin at the same record,
/// and the chain puts the closing one second.
#[tokio::test(start_paused = true)]
async fn a_gap_left_open_in_a_quiet_shard_is_closed_by_its_next_record() {
    let sim = sim();
    let store = MemoryStore::new();
    let shard = sim.open_shards(TABLE).unwrap().remove(0);
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    write(&sim, TABLE, 0..3);
    tokio::time::sleep(MIN).await;
    daemon.stop().await;
    write(&sim, TABLE, 3..5);
    tokio::time::sleep(25 * HOUR).await;
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    tokio::time::sleep(10 * MIN).await;
    let open = store.gaps().await.unwrap();
    assert_eq!(open.len(), 1, "{open:#?}");
    assert!(open[0].is_open());
    write(&sim, TABLE, 5..8);
    tokio::time::sleep(MIN).await;
    daemon.stop().await;
    let gaps = store.gaps().await.unwrap();
    assert_eq!(gaps.len(), 2, "{gaps:#?}");
    let close = gaps.iter().find(|g| g.is_closing()).unwrap();
    assert_eq!(close.shard_id, shard);
    assert_eq!(close.after_sequence_number, open[0].after_sequence_number);
    assert_eq!(close.after_shard_id, None);
    assert_eq!(close.closes, vec![open[0].reference()]);
    check_gaps(&sim, &store, TABLE, true).await.unwrap();
    verify_with(&sim, &store, TABLE, |_| false).await.unwrap();
    chain_verifies(&store);
}

#[tokio::test(start_paused = true)]
async fn a_restart_where_nothing_was_trimmed_records_no_gap() {
    let sim = sim();
    let store = MemoryStore::new();
    let shard = sim.open_shards(TABLE).unwrap().remove(0);
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    tokio::time::sleep(10 * SEC).await;
    write(&sim, TABLE, 0..5);
    tokio::time::sleep(10 * SEC).await;
    daemon.stop().await;
    write(&sim, TABLE, 5..10);
    let child = sim.rotate_shard(&shard).unwrap();
    write(&sim, TABLE, 10..15);
    sim.split_shard(&child).unwrap();
    write(&sim, TABLE, 15..20);
    tokio::time::sleep(6 * HOUR).await;
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    tokio::time::sleep(MIN).await;
    daemon.stop().await;
    assert_eq!(store.gaps().await.unwrap(), vec![]);
    assert_eq!(verify(&sim, &store, TABLE).await.unwrap(), 20);
}

// ---------------------------------------------------------------------------
// 4. Tables stay independent

#[tokio::test(start_paused = true)]
async fn a_re_created_table_is_audited_again_within_the_discovery_interval() {
    let sim = sim();
    let store = MemoryStore::new();
    write(&sim, TABLE, 0..5);
    let daemon = run_daemon(sim.clone(), &store, &[TABLE]);
    tokio::time::sleep(10 * SEC).await;
    let old = sim.stream_arn(TABLE).unwrap();
    sim.delete_table(TABLE).unwrap();
    // Long enough for discovery to notice, and to drain the old stream.
    tokio::time::sleep(3 * MIN).await;
    assert!(matches!(
        daemon.engine.health.get(TABLE),
        Some(TableState::Failing(_))
    ));
    sim.create_table(TABLE, &["pk"], Some(ViewType::NewAndOldImages))
        .unwrap();
    let new = sim.stream_arn(TABLE).unwrap();
    assert_ne!(old, new);
    write(&sim, TABLE, 5..9);
    tokio::time::sleep(61 * SEC).await;
    assert_eq!(daemon.engine.health.get(TABLE), Some(TableState::Auditing));
    tokio::time::sleep(10 * SEC).await;
    let (_, result) = daemon.sigterm().await;
    result.unwrap();
    let on_new = store
        .all_entries()
        .iter()
        .filter(|e| e.stream_arn == new)
        .count();
    assert_eq!(on_new, 4, "the new stream is audited");
    assert_eq!(entries_of(&store, TABLE), 9);
    let rows = store.load_streams(Some(TABLE)).await.unwrap();
    assert!(rows.iter().any(|r| r.stream_arn == old && r.drained));
}

#[tokio::test(start_paused = true)]
async fn one_bad_table_does_not_stop_the_others_and_is_picked_up_once_fixed() {
    let sim = sim();
    sim.create_table("keys_only", &["pk"], Some(ViewType::KeysOnly))
        .unwrap();
    let store = MemoryStore::new();
    write(&sim, TABLE, 0..5);
    let daemon = run_daemon(sim.clone(), &store, &[TABLE, "keys_only", "missing"]);
    tokio::time::sleep(10 * SEC).await;
    write(&sim, TABLE, 5..10);
    write(&sim, "keys_only", 0..3);
    tokio::time::sleep(10 * SEC).await;
    assert_eq!(entries_of(&store, TABLE), 10, "the good table is audited");
    assert_eq!(
        entries_of(&store, "keys_only"),
        0,
        "never read with KEYS_ONLY"
    );
    let health = daemon.engine.health.snapshot();
    assert_eq!(health[TABLE].0, TableState::Auditing);
    match &health["keys_only"].0 {
        TableState::Failing(reason) => assert!(reason.contains("KEYS_ONLY"), "{reason}"),
        other => panic!("{other:?}"),
    }
    match &health["missing"].0 {
        TableState::Failing(reason) => assert!(reason.contains("does not exist"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Recorded for `status`, which runs in another process.
    let row = store.load_table_health("keys_only").await.unwrap().unwrap();
    assert_eq!(row.state, "failing");
    assert!(row.reason.unwrap().contains("NEW_AND_OLD_IMAGES"));
    // Fixed by the operator: the stream re-enabled with the right view type.
    sim.disable_stream("keys_only").unwrap();
    sim.enable_stream("keys_only", ViewType::NewAndOldImages)
        .unwrap();
    write(&sim, "keys_only", 3..6);
    tokio::time::sleep(70 * SEC).await;
    assert_eq!(
        daemon.engine.health.get("keys_only"),
        Some(TableState::Auditing)
    );
    let (_, result) = daemon.sigterm().await;
    result.unwrap();
    assert_eq!(entries_of(&store, "keys_only"), 3);
}

#[tokio::test(start_paused = true)]
async fn run_fails_at_start_only_when_no_table_can_be_audited() {
    let sim = sim();
    sim.create_table("keys_only", &["pk"], Some(ViewType::KeysOnly))
        .unwrap();
    let store = MemoryStore::new();
    let daemon = run_daemon(sim.clone(), &store, &["keys_only", "missing"]);
    let err = daemon.handle.await.unwrap().unwrap_err().to_string();
    assert!(
        err.contains("keys_only") && err.contains("missing"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// 6. Bounded state

#[tokio::test(start_paused = true)]
async fn drained_shards_leave_memory_so_state_stays_flat_over_days_of_rotations() {
    let sim = SimStream::new(SimConfig {
        initial_shards: 4,
        ..SimConfig::with_seed(82)
    });
    sim.create_table(TABLE, &["pk"], Some(ViewType::NewAndOldImages))
        .unwrap();
    let store = MemoryStore::new();
    let mut settings = settings();
    // Fewer idle polls to simulate: state, not polling, is the point here.
    settings.polling.idle_poll_max_ms = 60_000;
    let engine = Arc::new(Engine::new(
        sim.clone(),
        store.clone(),
        store.clone(),
        settings,
    ));
    let shutdown = Shutdown::new();
    let handle = tokio::spawn(ddb_audit::daemon::supervisor::run(
        engine.clone(),
        vec![TABLE.to_string()],
        shutdown.clone(),
    ));
    sim.set_auto_rotate(Some(4 * HOUR));
    let mut peak_after_first_day = 0;
    for hour in 0..(4 * 24) {
        write(&sim, TABLE, hour * 3..hour * 3 + 3);
        tokio::time::sleep(HOUR).await;
        if hour >= 24 {
            peak_after_first_day = peak_after_first_day.max(engine.health.tracked_shards());
        }
    }
    shutdown.begin(GRACE);
    handle.await.unwrap().unwrap();
    let arn = sim.stream_arn(TABLE).unwrap();
    let ever = sim.all_shards(&arn).unwrap().len();
    // 4 shards rotating every 4 h for 4 days is ~100 shards; the stream lists
    // about a day's worth (~30), and that, not the uptime, bounds memory.
    assert!(ever >= 90, "{ever} shards made");
    // And the rows kept: what is listed, plus those released in the last
    // day (they expire a day after release), not every shard ever read.
    let rows = store.checkpoints(&arn).len();
    let listed = sim.shards(&arn).unwrap().len();
    assert!(
        rows <= listed + 30,
        "{rows} rows for {listed} listed shards, {ever} made"
    );
    assert!(
        peak_after_first_day <= 3 * sim.shards(&arn).unwrap().len().max(30),
        "{peak_after_first_day} shards in memory after {ever} seen"
    );
    assert!(
        peak_after_first_day < ever / 2,
        "{peak_after_first_day} of {ever}"
    );
}

// ---------------------------------------------------------------------------
// Issue 14: SIGTERM in every state exits within the grace time

#[tokio::test(start_paused = true)]
async fn sigterm_during_start_up_with_describe_table_failing_exits_cleanly() {
    let sim = sim();
    let faults = FaultStream::new(sim.clone(), 1);
    faults.add_rule(FaultRule::error(
        Op::DescribeTable,
        StreamError::Transient("InternalServerError".into()),
    ));
    let store = MemoryStore::new();
    let daemon = run_daemon(faults, &store, &[TABLE]);
    tokio::time::sleep(MIN).await;
    assert_eq!(daemon.engine.health.get(TABLE), Some(TableState::Starting));
    let (took, result) = daemon.sigterm().await;
    result.unwrap();
    assert!(took < GRACE, "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn sigterm_while_our_own_tables_fail_at_start_exits_cleanly() {
    let sim = sim();
    let store = MemoryStore::new();
    let faulty = FaultStore::new(store.clone(), 1);
    faulty.add(StoreFault::error(
        StoreOp::LoadStreams,
        StoreError::Transient("InternalServerError".into()),
    ));
    let daemon = run_daemon(sim, &faulty, &[TABLE]);
    tokio::time::sleep(MIN).await;
    assert!(
        !daemon.handle.is_finished(),
        "a transient error is waited out"
    );
    let (took, result) = daemon.sigterm().await;
    result.unwrap();
    assert!(took < GRACE, "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn sigterm_during_a_throttled_listing_exits_within_the_grace_time() {
    let sim = sim();
    let faults = FaultStream::new(sim.clone(), 1);
    faults.add_rule(FaultRule::error(
        Op::DescribeStream,
        StreamError::Throttled("LimitExceededException".into()),
    ));
    let store = MemoryStore::new();
    let daemon = run_daemon(faults, &store, &[TABLE]);
    tokio::time::sleep(MIN).await;
    let (took, result) = daemon.sigterm().await;
    result.unwrap();
    assert!(took < GRACE, "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn sigterm_during_a_retried_audit_write_exits_within_the_grace_time() {
    let sim = sim();
    let store = MemoryStore::new();
    let faulty = FaultStore::new(store.clone(), 1);
    faulty.add(StoreFault::error(
        StoreOp::PutEntry,
        StoreError::Transient("ProvisionedThroughputExceeded".into()),
    ));
    write(&sim, TABLE, 0..10);
    let daemon = run_daemon(sim.clone(), &faulty, &[TABLE]);
    tokio::time::sleep(MIN).await;
    let (took, result) = daemon.sigterm().await;
    result.unwrap();
    assert!(took <= GRACE + SEC, "{took:?}");
    // Nothing was checkpointed past what was not written.
    let arn = sim.stream_arn(TABLE).unwrap();
    assert!(store
        .checkpoints(&arn)
        .iter()
        .all(|c| c.sequence_no.is_none()));
}

#[tokio::test(start_paused = true)]
async fn sigterm_during_inits_wait_for_active_tables_ends_the_wait() {
    let cancel = tokio_util::sync::CancellationToken::new();
    let stopper = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(30 * SEC).await;
        stopper.cancel();
    });
    let started = Instant::now();
    let checks = AtomicU64::new(0);
    let ready = ddb_audit::store::wait_until_ready("table CREATING", HOUR, &cancel, || async {
        checks.fetch_add(1, Ordering::SeqCst);
        Ok(false)
    })
    .await
    .unwrap();
    assert!(!ready, "cancelled, not ready");
    let took = started.elapsed();
    assert!(took >= 30 * SEC && took < 30 * SEC + GRACE, "{took:?}");
    assert!(checks.load(Ordering::SeqCst) > 5);
}
