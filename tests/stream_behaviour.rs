//! The daemon's stream behaviour, proven on the simulator: one focused test per
//! behaviour of issue 3, on tokio's paused clock, asserting call counts where
//! cost is the point. Each test runs the real daemon (`supervisor::run`) over
//! `SimStream` (optionally wrapped in `FaultStream` and a call recorder) and a
//! `MemoryStore`, and compares the audit trail with the simulator's write log.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ddb_audit::config::Polling;
use ddb_audit::daemon::engine::{Engine, EngineError, Settings, Shutdown};
use ddb_audit::daemon::supervisor;
use ddb_audit::entry::Gap;
use ddb_audit::store::faults::{FaultStore, StoreFault, StoreOp};
use ddb_audit::store::memory::{canonical_key, MemoryStore};
use ddb_audit::store::{AuditStore, CheckpointStore, ShardStatus, StoreError};
use ddb_audit::stream::faults::{FaultRule, FaultStream, Op, When};
use ddb_audit::stream::sim::{SimConfig, SimStream, ViewType};
use ddb_audit::stream::{
    cmp_sequence, DescribeStreamRequest, IteratorPosition, RecordsPage, ShardIteratorRequest,
    StreamApi, StreamDescription, StreamError, StreamRecord, StreamResult, StreamSummary,
    TableStream,
};
use ddb_audit::value::{AttrValue, Item};
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

const SEC: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------
// Fixtures

/// A simulator with table `T` (keyed by `pk`, NEW_AND_OLD_IMAGES stream).
fn sim_with(cfg: SimConfig) -> SimStream {
    let sim = SimStream::new(cfg);
    sim.create_table("T", &["pk"], Some(ViewType::NewAndOldImages))
        .unwrap();
    sim
}

fn item(pk: &str, v: usize) -> Item {
    [
        ("pk".to_string(), AttrValue::S(pk.to_string())),
        ("v".to_string(), AttrValue::N(v.to_string())),
    ]
    .into_iter()
    .collect()
}

/// Writes versions `range` of items `k0..k{items}` (version i to item i % items)
/// and returns the records written.
fn write(
    sim: &SimStream,
    table: &str,
    items: usize,
    range: std::ops::Range<usize>,
) -> Vec<StreamRecord> {
    range
        .map(|i| {
            sim.put(table, item(&format!("k{}", i % items), i))
                .unwrap()
                .expect("a change writes a record")
        })
        .collect()
}

/// A record's time as entries print it: a gap's ends must read the same.
fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    ddb_audit::entry::record_time_text(t)
}

fn seqs(records: &[StreamRecord]) -> Vec<String> {
    records.iter().map(|r| r.sequence_number.clone()).collect()
}

struct Daemon {
    shutdown: Shutdown,
    handle: JoinHandle<Result<(), EngineError>>,
}

fn start<S: StreamApi, T>(stream: S, store: &T, polling: Polling, tables: &[&str]) -> Daemon
where
    T: CheckpointStore + AuditStore + Clone,
{
    let settings = Settings {
        polling,
        ..Settings::default()
    };
    let engine = Engine::new(stream, store.clone(), store.clone(), settings);
    let shutdown = Shutdown::new();
    let handle = tokio::spawn(supervisor::run(
        Arc::new(engine),
        tables.iter().map(|t| t.to_string()).collect(),
        shutdown.clone(),
    ));
    Daemon { shutdown, handle }
}

impl Daemon {
    async fn stop(self) {
        assert!(!self.handle.is_finished(), "the daemon ended by itself");
        self.shutdown.begin(Duration::ZERO);
        self.handle.await.unwrap().unwrap();
    }
}

/// The audit trail of `table` equals the write log, except for records the
/// simulator trimmed before they were read: no record twice, none missing,
/// per-item order kept. Returns the trimmed records that are missing.
fn assert_audited(sim: &SimStream, store: &MemoryStore, table: &str) -> Vec<String> {
    assert_eq!(store.duplicate_puts(), 0, "a record was written twice");
    let entries: Vec<_> = store
        .all_entries()
        .into_iter()
        .filter(|e| e.table == table)
        .collect();
    let mut by_item: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &entries {
        by_item
            .entry(canonical_key(&e.key))
            .or_default()
            .push(e.sequence_number.clone());
    }
    let mut logged: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut trimmed = Vec::new();
    for r in sim.write_log(table) {
        let audited = by_item
            .get(&canonical_key(&r.keys))
            .is_some_and(|s| s.contains(&r.sequence_number));
        if !audited {
            assert!(
                sim.is_trimmed(table, &r.sequence_number),
                "record {} of {table} was neither audited nor trimmed",
                r.sequence_number
            );
            trimmed.push(r.sequence_number.clone());
            continue;
        }
        logged
            .entry(canonical_key(&r.keys))
            .or_default()
            .push(r.sequence_number);
    }
    for (key, seqs) in &by_item {
        assert!(
            seqs.windows(2).all(|w| cmp_sequence(&w[0], &w[1]).is_lt()),
            "entries of {key} out of order: {seqs:?}"
        );
    }
    assert_eq!(by_item, logged, "audit trail differs from the write log");
    trimmed
}

// ---------------------------------------------------------------------------
// A recording wrapper: every call with its time, shard and outcome.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    DescribeStream,
    GetShardIterator,
    GetRecords,
}

#[derive(Clone, Debug)]
struct Event {
    at: Instant,
    call: Call,
    shard: Option<String>,
    /// DescribeStream: a listing's first page (no filter, no start shard).
    listing_start: bool,
    position: Option<IteratorPosition>,
    ok: bool,
    /// GetRecords that returned no next iterator: the shard is read to its end.
    ended: bool,
}

#[derive(Default)]
struct Log {
    iterators: HashMap<String, String>,
    events: Vec<Event>,
}

#[derive(Clone)]
struct Recorder<S> {
    inner: S,
    log: Arc<Mutex<Log>>,
}

impl<S> Recorder<S> {
    fn new(inner: S) -> Self {
        Recorder {
            inner,
            log: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    fn push(&self, event: Event) {
        self.lock().events.push(event);
    }
}

fn event(call: Call) -> Event {
    Event {
        at: Instant::now(),
        call,
        shard: None,
        listing_start: false,
        position: None,
        ok: false,
        ended: false,
    }
}

impl<S: StreamApi> StreamApi for Recorder<S> {
    async fn describe_table(&self, table: &str) -> StreamResult<TableStream> {
        self.inner.describe_table(table).await
    }

    async fn list_streams(&self, table: &str) -> StreamResult<Vec<StreamSummary>> {
        self.inner.list_streams(table).await
    }

    async fn list_tables(
        &self,
        exclusive_start: Option<&str>,
    ) -> StreamResult<ddb_audit::stream::TablesPage> {
        self.inner.list_tables(exclusive_start).await
    }

    async fn list_tags(&self, table_arn: &str) -> StreamResult<ddb_audit::stream::Tags> {
        self.inner.list_tags(table_arn).await
    }

    async fn describe_stream(
        &self,
        request: &DescribeStreamRequest,
    ) -> StreamResult<StreamDescription> {
        let result = self.inner.describe_stream(request).await;
        self.push(Event {
            shard: request.children_of.clone(),
            listing_start: request.children_of.is_none()
                && request.exclusive_start_shard_id.is_none(),
            ok: result.is_ok(),
            ..event(Call::DescribeStream)
        });
        result
    }

    async fn get_shard_iterator(&self, request: &ShardIteratorRequest<'_>) -> StreamResult<String> {
        let result = self.inner.get_shard_iterator(request).await;
        if let Ok(it) = &result {
            self.lock()
                .iterators
                .insert(it.clone(), request.shard_id.to_string());
        }
        self.push(Event {
            shard: Some(request.shard_id.to_string()),
            position: Some(request.position.clone()),
            ok: result.is_ok(),
            ..event(Call::GetShardIterator)
        });
        result
    }

    async fn get_records(&self, iterator: &str, limit: Option<i32>) -> StreamResult<RecordsPage> {
        let result = self.inner.get_records(iterator, limit).await;
        let mut log = self.lock();
        let shard = log.iterators.get(iterator).cloned();
        if let (Ok(page), Some(shard)) = (&result, &shard) {
            log.iterators.remove(iterator);
            if let Some(next) = &page.next_iterator {
                log.iterators.insert(next.clone(), shard.clone());
            }
        }
        log.events.push(Event {
            shard,
            ok: result.is_ok(),
            ended: result.as_ref().is_ok_and(|p| p.next_iterator.is_none()),
            ..event(Call::GetRecords)
        });
        result
    }
}

/// Index and time of the GetRecords that ended `shard`.
fn ended_at(events: &[Event], shard: &str) -> Option<(usize, Instant)> {
    events
        .iter()
        .position(|e| e.call == Call::GetRecords && e.ended && e.shard.as_deref() == Some(shard))
        .map(|i| (i, events[i].at))
}

/// Index and time of the first GetRecords on `shard`.
fn first_read(events: &[Event], shard: &str) -> Option<(usize, Instant)> {
    events
        .iter()
        .position(|e| e.call == Call::GetRecords && e.shard.as_deref() == Some(shard))
        .map(|i| (i, events[i].at))
}

// ---------------------------------------------------------------------------
// 1. Trimmed records: a gap, never a silent skip

/// The daemon started an open shard and read nothing from it (it was
/// empty), then was down for more than a day while records were written to
/// that shard and trimmed. The shard is still listed, so nothing vanished:
/// only reading it again from its first record, not from TRIM_HORIZON, shows
/// that records are missing.
#[tokio::test(start_paused = true)]
async fn a_shard_that_read_nothing_and_was_trimmed_while_down_becomes_a_gap() {
    let sim = sim_with(SimConfig::with_seed(5));
    let store = MemoryStore::new();
    let arn = sim.stream_arn("T").unwrap();
    let shard = sim.open_shards("T").unwrap().remove(0);
    let daemon = start(sim.clone(), &store, Polling::default(), &["T"]);
    sleep(10 * SEC).await;
    daemon.stop().await;
    let row = store.checkpoints(&arn).remove(0);
    assert!(row.sequence_no.is_none() && row.from_start, "{row:?}");

    let lost = write(&sim, "T", 3, 0..5);
    sleep(24 * HOUR + MIN).await;
    let fresh = write(&sim, "T", 3, 5..10);
    assert!(lost.iter().all(|r| sim.is_trimmed("T", &r.sequence_number)));
    let daemon = start(sim.clone(), &store, Polling::default(), &["T"]);
    sleep(10 * SEC).await;
    daemon.stop().await;

    let gaps = store.gaps().await.unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let gap = &gaps[0];
    assert_eq!(gap.shard_id, shard);
    assert_eq!(gap.after_sequence_number, None);
    assert_eq!(
        gap.resumed_at_sequence_number.as_deref(),
        Some(fresh[0].sequence_number.as_str())
    );
    assert_eq!(assert_audited(&sim, &store, "T"), seqs(&lost));

    // A restart with nothing trimmed since records no further gap.
    let daemon = start(sim.clone(), &store, Polling::default(), &["T"]);
    sleep(10 * SEC).await;
    daemon.stop().await;
    assert_eq!(store.gaps().await.unwrap().len(), 1);
}

/// Bounded rows without losing the bracket. Once its child has a row, a
/// drained parent that the stream no longer lists is released: its row
/// expires a day later. The child, which has read nothing, keeps the
/// lineage's tail on its own row, so a loss found in it afterwards is still
/// bracketed after the parent's last record — and the parent's absence is
/// no "unseen parent" gap.
#[tokio::test(start_paused = true)]
async fn a_loss_after_the_parents_row_expired_is_still_bracketed_from_the_childs_row() {
    let sim = sim_with(SimConfig::with_seed(6));
    let store = MemoryStore::new();
    let arn = sim.stream_arn("T").unwrap();
    let parent = sim.open_shards("T").unwrap().remove(0);
    let read = write(&sim, "T", 3, 0..5);
    let daemon = start(sim.clone(), &store, Polling::default(), &["T"]);
    sleep(10 * SEC).await;
    let child = sim.rotate_shard(&parent).unwrap();
    // The parent leaves the listing 24 h after it closed; the next listing
    // releases its row, which is gone a day after that.
    sleep(2 * 24 * HOUR + HOUR).await;
    daemon.stop().await;
    assert_eq!(store.load_shard(&arn, &parent).await.unwrap(), None);
    let row = store.load_shard(&arn, &child).await.unwrap().unwrap();
    assert_eq!(row.sequence_no, None, "{row:?}");
    let tail = row.lineage_tail.expect("the child's row keeps the tail");
    assert_eq!(
        (tail.shard_id.as_str(), tail.sequence_no.as_str()),
        (parent.as_str(), read[4].sequence_number.as_str())
    );

    let lost = write(&sim, "T", 3, 5..10);
    sleep(24 * HOUR + MIN).await;
    let fresh = write(&sim, "T", 3, 10..15);
    assert!(lost.iter().all(|r| sim.is_trimmed("T", &r.sequence_number)));
    let daemon = start(sim.clone(), &store, Polling::default(), &["T"]);
    sleep(10 * SEC).await;
    daemon.stop().await;

    let gaps = store.gaps().await.unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let gap = &gaps[0];
    assert_eq!(gap.shard_id, child);
    assert_eq!(gap.unseen_shard_id, None);
    assert_eq!(gap.after_shard_id.as_deref(), Some(parent.as_str()));
    assert_eq!(
        gap.after_sequence_number.as_deref(),
        Some(read[4].sequence_number.as_str())
    );
    assert_eq!(
        gap.resumed_at_sequence_number.as_deref(),
        Some(fresh[0].sequence_number.as_str())
    );
    assert_eq!(assert_audited(&sim, &store, "T"), seqs(&lost));
}

/// A shard that started as its lineage's continuation and read nothing, its
/// start trimmed when it first started (so it read from TRIM_HORIZON then):
/// restarted after its parent's row has expired, it still starts at its first
/// record, so records trimmed meanwhile are a gap, not skipped in silence.
#[tokio::test(start_paused = true)]
async fn a_restart_of_an_unread_continuation_whose_parent_row_expired_still_finds_the_loss() {
    let sim = sim_with(SimConfig::with_seed(8));
    let store = MemoryStore::new();
    let arn = sim.stream_arn("T").unwrap();
    let shard = sim.open_shards("T").unwrap().remove(0);
    // Its row, as the earlier run left it: nothing read, not from its start,
    // and the tail it took over from a parent whose row is gone.
    let tail = ddb_audit::store::LineageTail {
        shard_id: "shardId-00000001795300000000-0000dead".into(),
        sequence_no: "100000000000000000001".into(),
        record_time: None,
    };
    store
        .save_shard(&ddb_audit::store::ShardCheckpoint {
            chain: Some(ddb_audit::proof::ChainState::continuing(None)),
            lineage_tail: Some(tail.clone()),
            ..ddb_audit::store::ShardCheckpoint::fresh("T", &arn, &shard, Some(&tail.shard_id))
        })
        .await
        .unwrap();
    let lost = write(&sim, "T", 3, 0..5);
    sleep(24 * HOUR + MIN).await;
    let fresh = write(&sim, "T", 3, 5..10);
    assert!(lost.iter().all(|r| sim.is_trimmed("T", &r.sequence_number)));

    let daemon = start(sim.clone(), &store, Polling::default(), &["T"]);
    sleep(10 * SEC).await;
    daemon.stop().await;

    let gaps = store.gaps().await.unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let gap = &gaps[0];
    assert_eq!(gap.shard_id, shard);
    assert_eq!(gap.after_shard_id.as_deref(), Some(tail.shard_id.as_str()));
    assert_eq!(
        gap.after_sequence_number.as_deref(),
        Some(tail.sequence_no.as_str())
    );
    assert_eq!(
        gap.resumed_at_sequence_number.as_deref(),
        Some(fresh[0].sequence_number.as_str())
    );
    assert_eq!(assert_audited(&sim, &store, "T"), seqs(&lost));
}

#[tokio::test(start_paused = true)]
async fn records_trimmed_while_down_become_a_gap_and_the_rest_is_audited() {
    let sim = sim_with(SimConfig::with_seed(1));
    let store = MemoryStore::new();
    let arn = sim.stream_arn("T").unwrap();
    let shard = sim.open_shards("T").unwrap().remove(0);

    let read = write(&sim, "T", 3, 0..5);
    let daemon = start(sim.clone(), &store, Polling::default(), &["T"]);
    sleep(10 * SEC).await;
    daemon.stop().await;
    assert_eq!(store.entry_count(), 5);

    // Written while the daemon is down, then trimmed before it is back.
    let lost = write(&sim, "T", 3, 5..10);
    sleep(24 * HOUR + MIN).await;
    let fresh = write(&sim, "T", 3, 10..15);
    assert!(lost.iter().all(|r| sim.is_trimmed("T", &r.sequence_number)));

    let daemon = start(sim.clone(), &store, Polling::default(), &["T"]);
    sleep(10 * SEC).await;
    daemon.stop().await;

    let gaps = store.gaps().await.unwrap();
    assert_eq!(
        gaps,
        vec![Gap {
            table: "T".into(),
            stream_arn: arn,
            shard_id: shard,
            after_sequence_number: Some(read[4].sequence_number.clone()),
            after_shard_id: None,
            unseen_shard_id: None,
            after_time: read[4].approximate_creation.map(rfc3339),
            resumed_at_sequence_number: Some(fresh[0].sequence_number.clone()),
            resumed_at_time: fresh[0].approximate_creation.map(rfc3339),
            closes: Vec::new(),
            closed_by: None,
            detected_at: gaps[0].detected_at.clone(),
        }]
    );
    // Everything else is there; what is missing is exactly what was trimmed.
    assert_eq!(assert_audited(&sim, &store, "T"), seqs(&lost));
    assert_eq!(store.entry_count(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_shard_trimmed_away_while_down_becomes_a_gap() {
    let sim = sim_with(SimConfig::with_seed(2));
    let store = MemoryStore::new();
    let arn = sim.stream_arn("T").unwrap();
    let parent = sim.open_shards("T").unwrap().remove(0);

    let read = write(&sim, "T", 2, 0..3);
    let daemon = start(sim.clone(), &store, Polling::default(), &["T"]);
    sleep(10 * SEC).await;
    daemon.stop().await;

    // While down: more records, the shard closes, its successor gets records,
    // and a day later the parent is gone from the listing.
    write(&sim, "T", 2, 3..5);
    let child = sim.rotate_shard(&parent).unwrap();
    write(&sim, "T", 2, 5..7);
    sleep(24 * HOUR + MIN).await;
    assert!(sim
        .shards(&arn)
        .unwrap()
        .iter()
        .all(|s| s.shard_id == child));
    let fresh = write(&sim, "T", 2, 7..10);

    let daemon = start(sim.clone(), &store, Polling::default(), &["T"]);
    sleep(10 * SEC).await;
    daemon.stop().await;

    let gaps: BTreeMap<String, Gap> = store
        .gaps()
        .await
        .unwrap()
        .into_iter()
        .map(|g| (g.shard_id.clone(), g))
        .collect();
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    let p = &gaps[&parent];
    assert_eq!(
        (
            p.stream_arn.as_str(),
            p.after_sequence_number.as_deref(),
            p.resumed_at_sequence_number.as_deref()
        ),
        (arn.as_str(), Some(read[2].sequence_number.as_str()), None)
    );
    // The child's trimmed start is a gap too, bracketed across the lineage:
    // from the last record handled in its parent to the first record still
    // readable, with the times of both.
    let c = &gaps[&child];
    assert_eq!(
        (
            c.after_sequence_number.as_deref(),
            c.after_shard_id.as_deref(),
            c.resumed_at_sequence_number.as_deref()
        ),
        (
            Some(read[2].sequence_number.as_str()),
            Some(parent.as_str()),
            Some(fresh[0].sequence_number.as_str())
        )
    );
    assert_eq!(c.after_time, read[2].approximate_creation.map(rfc3339));
    assert_eq!(
        c.resumed_at_time,
        fresh[0].approximate_creation.map(rfc3339)
    );
    assert_eq!(assert_audited(&sim, &store, "T").len(), 4);
    let drained: Vec<_> = store
        .checkpoints(&arn)
        .into_iter()
        .filter(|c| c.status == ShardStatus::Drained)
        .map(|c| c.shard_id)
        .collect();
    assert_eq!(drained, vec![parent]);
}

#[tokio::test(start_paused = true)]
async fn a_shard_trimmed_away_is_a_gap_even_if_the_first_listing_fails() {
    let sim = sim_with(SimConfig::with_seed(14));
    let faults = FaultStream::new(sim.clone(), 14);
    let store = MemoryStore::new();
    let arn = sim.stream_arn("T").unwrap();
    let parent = sim.open_shards("T").unwrap().remove(0);
    let read = write(&sim, "T", 2, 0..3);
    let daemon = start(faults.clone(), &store, Polling::default(), &["T"]);
    sleep(10 * SEC).await;
    daemon.stop().await;

    write(&sim, "T", 2, 3..5);
    sim.rotate_shard(&parent).unwrap();
    sleep(24 * HOUR + MIN).await;
    write(&sim, "T", 2, 5..8);
    // The restarted daemon's first listing fails (not a retryable error).
    let rule = faults.add_rule(
        FaultRule::error(
            Op::DescribeStream,
            StreamError::Other("AccessDeniedException: injected".into()),
        )
        .when(When::FirstN(1)),
    );
    let daemon = start(faults.clone(), &store, Polling::default(), &["T"]);
    sleep(2 * MIN).await;
    daemon.stop().await;
    assert_eq!(faults.fired(rule), Some(1));

    let gap = store
        .gaps()
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.shard_id == parent)
        .expect("the trimmed-away parent is a gap");
    assert_eq!(
        gap.after_sequence_number.as_deref(),
        Some(read[2].sequence_number.as_str())
    );
    assert!(store
        .checkpoints(&arn)
        .iter()
        .any(|c| c.shard_id == parent && c.status == ShardStatus::Drained));
    assert_eq!(assert_audited(&sim, &store, "T").len(), 2);
}

#[tokio::test(start_paused = true)]
async fn records_trimmed_while_the_store_is_down_become_a_gap() {
    let sim = sim_with(SimConfig::with_seed(16));
    let store = MemoryStore::new();
    let faulty = FaultStore::new(store.clone(), 1);
    let shard = sim.open_shards("T").unwrap().remove(0);
    write(&sim, "T", 2, 0..3);
    let daemon = start(sim.clone(), &faulty, Polling::default(), &["T"]);
    sleep(10 * SEC).await;
    // The audit table fails for a day: the page in hand waits, the stream
    // moves on and trims what the daemon could not get to.
    faulty.add(StoreFault::error(
        StoreOp::PutEntry,
        StoreError::Transient("injected put failure".into()),
    ));
    let held = write(&sim, "T", 2, 3..5);
    sleep(10 * SEC).await;
    let lost = write(&sim, "T", 2, 5..8);
    sleep(25 * HOUR).await;
    faulty.clear();
    let fresh = write(&sim, "T", 2, 8..11);
    sleep(MIN).await;
    daemon.stop().await;

    let gaps = store.gaps().await.unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(
        (
            gaps[0].shard_id.as_str(),
            gaps[0].after_sequence_number.as_deref(),
            gaps[0].resumed_at_sequence_number.as_deref()
        ),
        (
            shard.as_str(),
            Some(held[1].sequence_number.as_str()),
            Some(fresh[0].sequence_number.as_str())
        )
    );
    assert_eq!(assert_audited(&sim, &store, "T"), seqs(&lost));
}

// ---------------------------------------------------------------------------
// 2. Expired iterator: renew AFTER the last written record

#[tokio::test(start_paused = true)]
async fn an_expired_iterator_resumes_after_the_last_written_record() {
    let sim = sim_with(SimConfig::with_seed(3));
    let faults = FaultStream::new(sim.clone(), 3);
    let rec = Recorder::new(faults.clone());
    let store = MemoryStore::new();
    let shard = sim.open_shards("T").unwrap().remove(0);
    let first_seq = sim
        .shards(&sim.stream_arn("T").unwrap())
        .unwrap()
        .into_iter()
        .find(|s| s.shard_id == shard)
        .and_then(|s| s.starting_sequence_number)
        .unwrap();

    let first = write(&sim, "T", 2, 0..5);
    let daemon = start(rec.clone(), &store, Polling::default(), &["T"]);
    sleep(10 * SEC).await;
    assert_eq!(store.entry_count(), 5);

    // The daemon's next GetRecords hangs for 16 minutes: its iterator has
    // aged past the 15 the service allows by the time the call is made.
    let hold = faults.add_rule(
        FaultRule::latency(Op::GetRecords, 16 * MIN).when(When::Burst {
            after_calls: 0,
            count: 1,
        }),
    );
    sleep(MIN).await;
    write(&sim, "T", 2, 5..10);
    sleep(16 * MIN).await;
    assert_eq!(faults.fired(hold), Some(1));
    daemon.stop().await;

    let events = rec.events();
    let expired = events
        .iter()
        .filter(|e| e.call == Call::GetRecords && !e.ok)
        .count();
    assert_eq!(expired, 1, "the aged iterator failed once");
    let positions: Vec<_> = events
        .iter()
        .filter(|e| e.call == Call::GetShardIterator)
        .map(|e| (e.shard.clone().unwrap(), e.position.clone().unwrap()))
        .collect();
    assert_eq!(
        positions,
        vec![
            // A new shard whose first record is readable is read from it
            // (and marked so: a restart before anything is read goes there
            // again rather than to TRIM_HORIZON).
            (
                shard.clone(),
                IteratorPosition::AtSequence(first_seq.clone())
            ),
            (
                shard,
                IteratorPosition::AfterSequence(first[4].sequence_number.clone())
            ),
        ]
    );
    assert!(store.gaps().await.unwrap().is_empty());
    assert!(assert_audited(&sim, &store, "T").is_empty());
    assert_eq!(store.entry_count(), sim.write_log("T").len());
    assert_eq!(store.entry_puts(), 10, "no record delivered twice");
}

#[tokio::test(start_paused = true)]
async fn an_injected_expired_iterator_error_is_renewed_without_gap_or_duplicate() {
    let sim = sim_with(SimConfig::with_seed(4));
    let faults = FaultStream::new(sim.clone(), 4);
    let store = MemoryStore::new();
    write(&sim, "T", 2, 0..5);
    let daemon = start(faults.clone(), &store, Polling::default(), &["T"]);
    sleep(10 * SEC).await;
    faults.add_rule(
        FaultRule::error(
            Op::GetRecords,
            StreamError::ExpiredIterator("injected".into()),
        )
        .when(When::FirstN(3)),
    );
    write(&sim, "T", 2, 5..10);
    sleep(30 * SEC).await;
    daemon.stop().await;
    assert_eq!(faults.counts().errors, 3);
    assert!(store.gaps().await.unwrap().is_empty());
    assert!(assert_audited(&sim, &store, "T").is_empty());
    assert_eq!(store.entry_puts(), 10);
    // One iterator to start, one per expiry.
    assert_eq!(sim.calls().get_shard_iterator, 4);
}

// ---------------------------------------------------------------------------
// 3. A child shard is picked up < 1 s after its parent is drained

#[tokio::test(start_paused = true)]
async fn children_are_read_within_a_second_of_their_parent_ending() {
    let sim = sim_with(SimConfig::with_seed(5));
    let rec = Recorder::new(sim.clone());
    let store = MemoryStore::new();
    let root = sim.open_shards("T").unwrap().remove(0);
    let daemon = start(rec.clone(), &store, Polling::default(), &["T"]);
    // Idle long enough that the shard polls at its slowest; topology changes
    // fall between the minute listings.
    sleep(2 * MIN + 20 * SEC).await;

    write(&sim, "T", 4, 0..4);
    let rotated = sim.rotate_shard(&root).unwrap();
    write(&sim, "T", 4, 4..8);
    sleep(20 * SEC).await;
    let (a, b) = sim.split_shard(&rotated).unwrap();
    write(&sim, "T", 4, 8..16);
    sleep(20 * SEC).await;
    daemon.stop().await;

    let events = rec.events();
    for (parent, child) in [(&root, &rotated), (&rotated, &a), (&rotated, &b)] {
        let (end_i, end_t) = ended_at(&events, parent).expect("parent read to its end");
        let (first_i, first_t) = first_read(&events, child).expect("child read");
        assert!(first_i > end_i, "{child} read before {parent} ended");
        let pickup = first_t - end_t;
        eprintln!("child pickup: {child} first read {pickup:?} after {parent} ended");
        assert!(
            pickup < SEC,
            "{child} first read {pickup:?} after {parent} ended"
        );
    }
    assert!(assert_audited(&sim, &store, "T").is_empty());
    // Found by the cheap filter, not by waiting for a listing.
    assert_eq!(sim.calls().describe_stream_children, 2);
}

#[tokio::test(start_paused = true)]
async fn children_are_read_within_a_second_even_when_the_child_lookup_fails() {
    let sim = sim_with(SimConfig::with_seed(15));
    let faults = FaultStream::new(sim.clone(), 15);
    let rec = Recorder::new(faults.clone());
    let store = MemoryStore::new();
    let root = sim.open_shards("T").unwrap().remove(0);
    let daemon = start(rec.clone(), &store, Polling::default(), &["T"]);
    sleep(2 * MIN + 20 * SEC).await;
    // The next DescribeStream is the child lookup: it fails for good (say,
    // an endpoint that rejects ShardFilter), so a listing must find them.
    let rule = faults.add_rule(
        FaultRule::error(
            Op::DescribeStream,
            StreamError::Other("ValidationException: injected".into()),
        )
        .when(When::FirstN(1)),
    );
    write(&sim, "T", 4, 0..4);
    let (a, b) = sim.split_shard(&root).unwrap();
    write(&sim, "T", 4, 4..12);
    sleep(20 * SEC).await;
    daemon.stop().await;
    assert_eq!(faults.fired(rule), Some(1));

    let events = rec.events();
    let (end_i, end_t) = ended_at(&events, &root).expect("parent read to its end");
    for child in [&a, &b] {
        let (first_i, first_t) = first_read(&events, child).expect("child read");
        assert!(first_i > end_i);
        let pickup = first_t - end_t;
        eprintln!(
            "child pickup (lookup failed): {child} first read {pickup:?} after its parent ended"
        );
        assert!(
            pickup < SEC,
            "{child} first read {pickup:?} after its parent ended"
        );
    }
    assert!(assert_audited(&sim, &store, "T").is_empty());
}

// ---------------------------------------------------------------------------
// 4. Steady state: at most one full listing per stream per minute

#[tokio::test(start_paused = true)]
async fn an_idle_stream_is_listed_at_most_once_a_minute() {
    let sim = sim_with(SimConfig {
        initial_shards: 3,
        ..SimConfig::with_seed(6)
    });
    // More than one page, so a listing is several calls.
    sim.add_empty_closed_shards("T", 150).unwrap();
    let rec = Recorder::new(sim.clone());
    let store = MemoryStore::new();
    let daemon = start(rec.clone(), &store, Polling::default(), &["T"]);
    sleep(10 * MIN).await;
    daemon.stop().await;

    let shards = sim.shards(&sim.stream_arn("T").unwrap()).unwrap().len();
    let pages = shards.div_ceil(100) as u64;
    let starts: Vec<Instant> = rec
        .events()
        .iter()
        .filter(|e| e.call == Call::DescribeStream && e.listing_start && e.ok)
        .map(|e| e.at)
        .collect();
    // The initial listing plus one a minute.
    assert!(
        starts.len() <= 11,
        "{} listings in 10 minutes",
        starts.len()
    );
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= MIN, "listings {:?} apart", w[1] - w[0]);
    }
    let calls = sim.calls();
    assert!(
        calls.describe_stream_full_pages <= 11 * pages,
        "{} full-listing pages ({pages} a listing)",
        calls.describe_stream_full_pages
    );
    // Child lookups only for shards whose children the listing had not shown.
    assert_eq!(calls.describe_stream_children, 0);
}

// ---------------------------------------------------------------------------
// 5. Idle cost: an idle shard settles at ≤ 0.2 GetRecords/s

#[tokio::test(start_paused = true)]
async fn an_idle_open_shard_costs_at_most_one_get_records_per_five_seconds() {
    let sim = sim_with(SimConfig::with_seed(7));
    let store = MemoryStore::new();
    write(&sim, "T", 1, 0..1);
    let daemon = start(sim.clone(), &store, Polling::default(), &["T"]);
    // The backoff ramps 0.25 → 0.5 → 1 → 2 → 4 → 5 s: settled well within a minute.
    sleep(MIN).await;
    let before = sim.calls();
    sleep(10 * MIN).await;
    let after = sim.calls();
    let calls = after.get_records - before.get_records;
    // 600 s at one call per 5 s, plus one for the window's edge.
    assert!(calls <= 121, "{calls} GetRecords in 600 s");
    assert!(
        calls >= 110,
        "{calls} GetRecords in 600 s: is it still polling?"
    );
    assert_eq!(
        after.get_shard_iterator, 1,
        "one iterator for the whole time"
    );

    // Still responsive: a new record is audited within one poll interval.
    write(&sim, "T", 1, 1..2);
    sleep(Duration::from_millis(5100)).await;
    assert_eq!(store.entry_count(), 2);
    daemon.stop().await;
}

// ---------------------------------------------------------------------------
// 6. Thousands of empty closed shards drain fast, with bounded concurrency

#[tokio::test(start_paused = true)]
async fn thousands_of_empty_closed_shards_drain_with_bounded_concurrency() {
    // 128 open shards, each closed and succeeded ~23 times: 128 chains of
    // empty closed shards, more ready at once than the bound, ending in 128
    // open shards (more than the bound too).
    const OPEN: usize = 128;
    let sim = sim_with(SimConfig {
        initial_shards: OPEN as u32,
        ..SimConfig::with_seed(8)
    });
    sim.add_empty_closed_shards("T", 3000).unwrap();
    let arn = sim.stream_arn("T").unwrap();
    let all = sim.shards(&arn).unwrap();
    let closed: BTreeSet<String> = all
        .iter()
        .filter(|s| s.is_closed())
        .map(|s| s.shard_id.clone())
        .collect();
    assert_eq!((closed.len(), all.len()), (3000, 3000 + OPEN));
    // Every GetRecords takes 50 ms, so that reads overlap and concurrency
    // can be seen (the simulator itself answers in no time).
    let latency = Duration::from_millis(50);
    let faults = FaultStream::new(sim.clone(), 8);
    faults.add_rule(FaultRule::latency(Op::GetRecords, latency));
    let rec = Recorder::new(faults);
    let polling = Polling::default();
    let max = polling.max_concurrent_shards;
    let store = MemoryStore::new();
    let t0 = Instant::now();
    let daemon = start(rec.clone(), &store, polling.clone(), &["T"]);

    let drained = |store: &MemoryStore| {
        store
            .checkpoints(&arn)
            .iter()
            .filter(|c| c.status == ShardStatus::Drained)
            .count()
    };
    while drained(&store) < closed.len() && t0.elapsed() < 5 * MIN {
        sleep(Duration::from_millis(100)).await;
    }
    let took = t0.elapsed();
    assert_eq!(drained(&store), closed.len(), "not all drained in {took:?}");

    // The bound: the first listing (32 pages at describe_stream_per_sec = 5:
    // 6.2 s), plus the reads themselves — 3000 × 50 ms spread over 64 slots
    // is 2.3 s; twice that for chains that leave slots idle — plus 1 s.
    // Waiting even the minimum idle backoff (250 ms) on each shard would add
    // 3000 × 250 ms / 64 = 11.7 s.
    let pages = all.len().div_ceil(100) as u32;
    let listing = SEC / polling.describe_stream_per_sec * (pages - 1);
    let reads = latency * closed.len() as u32 / max as u32;
    let bound = listing + 2 * reads + SEC;
    assert!(took <= bound, "drained in {took:?}, bound {bound:?}");

    // About one GetRecords per empty closed shard: the one that ends it.
    let calls = sim.calls();
    let per_closed: Vec<u64> = closed
        .iter()
        .map(|id| calls.get_records_per_shard.get(id).copied().unwrap_or(0))
        .collect();
    let total: u64 = per_closed.iter().sum();
    assert!(
        total <= closed.len() as u64 * 21 / 20,
        "{total} GetRecords for {} empty closed shards",
        closed.len()
    );
    assert!(per_closed.iter().all(|&n| (1..=2).contains(&n)));

    // Concurrency: closed shards being read at once (first GetShardIterator
    // to the GetRecords that ends them), in call order.
    let events = rec.events();
    let mut active: BTreeSet<&str> = BTreeSet::new();
    let mut peak = 0;
    for e in &events {
        let Some(shard) = e.shard.as_deref().filter(|s| closed.contains(*s)) else {
            continue;
        };
        match e.call {
            Call::GetShardIterator => {
                active.insert(shard);
            }
            Call::GetRecords if e.ended => {
                active.remove(shard);
            }
            _ => {}
        }
        peak = peak.max(active.len());
    }
    assert!(peak <= max, "{peak} closed shards read at once (max {max})");
    assert_eq!(peak, max, "the bound, not the topology, limits concurrency");

    // Every open shard is read too: none starves behind the bound.
    write(&sim, "T", 1000, 0..1000);
    sleep(20 * SEC).await;
    daemon.stop().await;
    let open_read = sim
        .calls()
        .get_records_per_shard
        .keys()
        .filter(|id| !closed.contains(*id))
        .count();
    assert_eq!(open_read, OPEN, "open shards never read");
    assert!(assert_audited(&sim, &store, "T").is_empty());
}

// ---------------------------------------------------------------------------
// 7. A re-enabled stream: both streams audited, both in the streams table

#[tokio::test(start_paused = true)]
async fn a_re_enabled_stream_is_followed_and_the_old_one_drained() {
    let sim = sim_with(SimConfig::with_seed(9));
    let store = MemoryStore::new();
    let old = sim.stream_arn("T").unwrap();
    write(&sim, "T", 2, 0..3);
    let daemon = start(sim.clone(), &store, Polling::default(), &["T"]);
    sleep(10 * SEC).await;
    // Written just before the disable: not read yet when it happens.
    write(&sim, "T", 2, 3..5);
    sim.disable_stream("T").unwrap();
    let new = sim.enable_stream("T", ViewType::NewAndOldImages).unwrap();
    assert_ne!(old, new);
    write(&sim, "T", 2, 5..9);
    sleep(3 * MIN).await;
    daemon.stop().await;

    assert!(assert_audited(&sim, &store, "T").is_empty());
    let by_stream = |arn: &str| {
        store
            .all_entries()
            .iter()
            .filter(|e| e.stream_arn == arn)
            .count()
    };
    assert_eq!((by_stream(&old), by_stream(&new)), (5, 4));
    let rows: BTreeMap<String, (bool, bool)> = store
        .load_streams(Some("T"))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.stream_arn, (r.is_enabled, r.drained)))
        .collect();
    assert_eq!(
        rows,
        BTreeMap::from([(old, (false, true)), (new, (true, false))])
    );
}

// ---------------------------------------------------------------------------
// 8. A deleted table is drained; the other tables keep being audited

#[tokio::test(start_paused = true)]
async fn a_deleted_table_is_drained_and_the_others_keep_going() {
    let sim = sim_with(SimConfig::with_seed(10));
    sim.create_table("U", &["pk"], Some(ViewType::NewAndOldImages))
        .unwrap();
    let store = MemoryStore::new();
    let t_arn = sim.stream_arn("T").unwrap();
    write(&sim, "T", 2, 0..3);
    write(&sim, "U", 2, 0..3);
    let daemon = start(sim.clone(), &store, Polling::default(), &["T", "U"]);
    sleep(10 * SEC).await;
    write(&sim, "T", 2, 3..6);
    sim.delete_table("T").unwrap();
    write(&sim, "U", 2, 3..6);
    sleep(2 * MIN).await;
    write(&sim, "U", 2, 6..9);
    sleep(30 * SEC).await;
    daemon.stop().await;

    assert!(assert_audited(&sim, &store, "T").is_empty());
    assert!(assert_audited(&sim, &store, "U").is_empty());
    let count = |t: &str| store.all_entries().iter().filter(|e| e.table == t).count();
    assert_eq!((count("T"), count("U")), (6, 9));
    let rows = store.load_streams(Some("T")).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].stream_arn.as_str(), rows[0].drained),
        (t_arn.as_str(), true)
    );
    assert!(store
        .checkpoints(&t_arn)
        .iter()
        .all(|c| c.status == ShardStatus::Drained));
}

// ---------------------------------------------------------------------------
// 9. Throttling and 5xx bursts: nothing lost, nothing doubled

#[tokio::test(start_paused = true)]
async fn throttling_and_5xx_bursts_lose_and_double_nothing() {
    let sim = sim_with(SimConfig {
        initial_shards: 2,
        throttling: true,
        ..SimConfig::with_seed(11)
    });
    let faults = FaultStream::new(sim.clone(), 11);
    let transient = || StreamError::Transient("injected 500".into());
    for (op, after_calls) in [
        (Op::GetRecords, 10),
        (Op::GetRecords, 60),
        (Op::GetShardIterator, 2),
        (Op::DescribeStream, 1),
        (Op::Any, 150),
    ] {
        faults.add_rule(FaultRule::error(op, transient()).when(When::Burst {
            after_calls,
            count: 6,
        }));
    }
    faults.add_rule(FaultRule::error(Op::Any, transient()).when(When::Probability(0.05)));
    // Pacing pushed past the service: 10 GetRecords/s per shard against its 5,
    // 20 DescribeStream/s against its 10; small pages so busy shards re-read
    // at once.
    let polling = Polling {
        get_records_per_shard_per_sec: 10,
        describe_stream_per_sec: 20,
        get_records_limit: 5,
        retry_min_ms: 50,
        ..Polling::default()
    };
    let store = MemoryStore::new();
    let daemon = start(faults.clone(), &store, polling, &["T"]);
    let mut n = 0;
    for round in 0..6 {
        write(&sim, "T", 40, n..n + 100);
        n += 100;
        if round == 2 {
            let shard = sim.open_shards("T").unwrap().remove(0);
            sim.split_shard(&shard).unwrap();
        }
        if round == 4 {
            sim.rotate_all();
        }
        sleep(5 * SEC).await;
    }
    sleep(MIN).await;
    daemon.stop().await;

    let calls = sim.calls();
    assert!(calls.throttled_get_records > 0, "no GetRecords throttled");
    assert!(faults.counts().errors >= 30, "{:?}", faults.counts());
    assert!(store.gaps().await.unwrap().is_empty());
    assert!(assert_audited(&sim, &store, "T").is_empty());
    assert_eq!(store.entry_count(), 600);
    assert_eq!(store.entry_puts(), 600, "every record written once");
}

// ---------------------------------------------------------------------------
// 10. A parent listed as open while its children exist: children still wait

#[tokio::test(start_paused = true)]
async fn children_wait_for_a_parent_listed_open_and_item_order_is_kept() {
    // Two lineages, so that one's shards end while the other's are being
    // read: each end makes the supervisor look for shards to start.
    let sim = sim_with(SimConfig {
        initial_shards: 2,
        ..SimConfig::with_seed(12)
    });
    // Every listing shows a closed parent as open for a long while.
    sim.set_stale_parent_describe_calls(1_000);
    // Reads take time and pages are small: a parent is read over seconds.
    let faults = FaultStream::new(sim.clone(), 12);
    faults.add_rule(FaultRule::latency(
        Op::GetRecords,
        Duration::from_millis(100),
    ));
    let rec = Recorder::new(faults);
    let polling = Polling {
        get_records_limit: 5,
        ..Polling::default()
    };
    let store = MemoryStore::new();
    let roots = sim.open_shards("T").unwrap();
    let (root, other) = (&roots[0], &roots[1]);
    // Before the daemon starts: root → split (a, b) → a rotates to c; other
    // → e → f; every shard holds versions of the same few items.
    write(&sim, "T", 6, 0..40);
    let (a, b) = sim.split_shard(root).unwrap();
    let e = sim.rotate_shard(other).unwrap();
    write(&sim, "T", 6, 40..80);
    let c = sim.rotate_shard(&a).unwrap();
    let f = sim.rotate_shard(&e).unwrap();
    write(&sim, "T", 6, 80..120);
    let listing = sim
        .describe_stream(&DescribeStreamRequest {
            stream_arn: sim.stream_arn("T").unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        listing.shards.iter().all(|s| !s.is_closed()),
        "the listing shows every parent open"
    );

    let daemon = start(rec.clone(), &store, polling, &["T"]);
    sleep(30 * SEC).await;
    // While running: c rotates to d (and is listed open for a while).
    write(&sim, "T", 6, 120..140);
    let d = sim.rotate_shard(&c).unwrap();
    write(&sim, "T", 6, 140..150);
    sleep(2 * MIN).await;
    daemon.stop().await;

    let events = rec.events();
    let pairs = [
        (root, &a),
        (root, &b),
        (&a, &c),
        (&c, &d),
        (other, &e),
        (&e, &f),
    ];
    for (parent, child) in pairs {
        let (end, _) = ended_at(&events, parent).expect("parent read to its end");
        let (first, _) = first_read(&events, child).expect("child read");
        assert!(first > end, "{child} read before its parent {parent} ended");
    }
    assert!(assert_audited(&sim, &store, "T").is_empty());
    assert_eq!(store.entry_count(), 150);
    // Written in each item's order too, not only sorted so by the store.
    let item_of: HashMap<String, String> = sim
        .write_log("T")
        .iter()
        .map(|r| (r.sequence_number.clone(), canonical_key(&r.keys)))
        .collect();
    let order = store.write_order();
    let mut written: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (_, seq) in &order {
        written
            .entry(item_of[seq].as_str())
            .or_default()
            .push(seq.as_str());
    }
    for (item, seqs) in written {
        assert!(
            seqs.windows(2).all(|w| cmp_sequence(w[0], w[1]).is_lt()),
            "{item} written out of order: {seqs:?}"
        );
    }
}
