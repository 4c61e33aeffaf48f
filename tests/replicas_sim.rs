//! Several replicas on one config, on the simulator and tokio's paused
//! clock: they divide the streams, one killed (kill -9) is taken over within
//! 15 s, one frozen past its lease (SIGSTOP) and thawed cannot write for a
//! stream it lost and lets go; every record is still exactly one entry, with
//! no gap and a chain (and digest chain) that verifies.

mod sim_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ddb_audit::daemon::digests::{DigestSettings, DigestWriter};
use ddb_audit::daemon::discovery::Discoverer;
use ddb_audit::daemon::engine::{self, Engine, Shutdown};
use ddb_audit::daemon::leases::{self, LeaseSettings, Replica};
use ddb_audit::daemon::supervisor;
use ddb_audit::store::memory::MemoryStore;
use ddb_audit::store::{AuditStore, CheckpointStore, Fence, StoreError};
use ddb_audit::stream::sim::{SimConfig, SimStream, ViewType};
use sim_support::*;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const TABLES: [&str; 6] = ["t0", "t1", "t2", "t3", "t4", "t5"];

struct Running {
    replica: Arc<Replica>,
    /// Whether this one runs the CloudTrail reader now.
    reads_cloudtrail: tokio::sync::watch::Receiver<bool>,
    shutdown: Shutdown,
    store: LaggyStore,
    handle: JoinHandle<()>,
}

/// One `run` process: the lease coordinator, the supervisors of the
/// streams it holds and its digest writer, in one task tree (so aborting
/// it is a kill -9).
fn start_replica(sim: &SimStream, memory: &MemoryStore) -> Running {
    let store = LaggyStore::new(memory.clone(), 1, Duration::ZERO);
    let shutdown = Shutdown::new();
    let replica = Replica::new(leases::replica_id(), LeaseSettings::default(), &shutdown);
    let (turn, reads_cloudtrail) = tokio::sync::watch::channel(false);
    replica.run_one("cloudtrail", Arc::new(turn));
    let tables: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
    let engine = Arc::new(Engine::new(
        sim.clone(),
        store.clone(),
        store.clone(),
        settings(),
    ));
    let digests = DigestWriter::new(
        store.clone(),
        store.clone(),
        tables.clone(),
        DigestSettings {
            interval: Duration::from_secs(5),
            retention_days: None,
            signer: None,
            retry: settings().retry_policy(),
        },
    )
    .for_replica(replica.clone());
    let (r, s) = (replica.clone(), shutdown.clone());
    let handle = tokio::spawn(async move {
        let stop = CancellationToken::new();
        let read = engine::TableSet::new(tables.clone());
        let coordinating = leases::coordinate(r.clone(), &engine.checkpoints, &read, stop.clone());
        let working = async {
            let beats = CancellationToken::new();
            let digesting = digests.heartbeats(beats.clone());
            let reading = async {
                let interval = engine.settings.polling.full_listing_interval();
                let policy = engine.settings.retry_policy();
                let names = Discoverer::of_names(&tables, interval, policy).expect("names");
                supervisor::run_selected(engine.clone(), names, s.clone(), Some(r.clone()))
                    .await
                    .expect("replica failed");
                beats.cancel();
            };
            tokio::join!(digesting, reading);
            digests.round(true, &beats, &s.abort).await;
            stop.cancel();
        };
        tokio::join!(coordinating, working);
        leases::let_go(&r, &engine.checkpoints).await;
    });
    Running {
        replica,
        reads_cloudtrail,
        shutdown,
        store,
        handle,
    }
}

/// Writes a change to every table every 500 ms until stopped.
fn writer(sim: &SimStream, stop: Arc<AtomicBool>) -> JoinHandle<u32> {
    let sim = sim.clone();
    tokio::spawn(async move {
        let mut version = 1;
        while !stop.load(Ordering::Relaxed) {
            for t in TABLES {
                sim.put(t, item(version % 7, version, "alice")).unwrap();
            }
            version += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        version
    })
}

/// Stream ARN → owner, from the lease rows.
fn owners(sim: &SimStream, memory: &MemoryStore) -> Vec<(String, Option<String>)> {
    TABLES
        .iter()
        .map(|t| {
            let arn = sim.stream_arn(t).unwrap();
            (t.to_string(), memory.lease_of(&arn).0)
        })
        .collect()
}

/// How many of `replicas` run the CloudTrail reader now.
fn cloudtrail_readers(replicas: &[&Running]) -> usize {
    replicas
        .iter()
        .filter(|r| *r.reads_cloudtrail.borrow())
        .count()
}

fn count_owned(owners: &[(String, Option<String>)], replica: &Replica) -> usize {
    owners
        .iter()
        .filter(|(_, o)| o.as_deref() == Some(replica.id.as_str()))
        .count()
}

/// Waits (simulated time) until `table` has an entry of item 100 written by
/// `actor`; returns how long that took.
async fn audited_within(memory: &MemoryStore, table: &str, actor: &str) -> Duration {
    let started = Instant::now();
    loop {
        let history = memory.history(table, &key(100)).await.unwrap();
        if history.iter().any(|e| e.actor.as_deref() == Some(actor)) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{table}: the change was never audited"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn three_replicas_share_the_streams_survive_a_kill_and_fence_a_frozen_one() {
    let sim = SimStream::new(SimConfig::with_seed(11));
    for t in TABLES {
        sim.create_table(t, &["pk"], Some(ViewType::NewAndOldImages))
            .unwrap();
        for id in 0..5 {
            sim.put(t, item(id, 0, "alice")).unwrap();
        }
    }
    let memory = MemoryStore::new();
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writing = writer(&sim, stop_writing.clone());
    let a = start_replica(&sim, &memory);
    let b = start_replica(&sim, &memory);
    let c = start_replica(&sim, &memory);
    run_for(Duration::from_secs(20)).await;

    // Each stream has one owner, and each replica its fair share.
    let now = owners(&sim, &memory);
    for (table, owner) in &now {
        assert!(owner.is_some(), "{table} has no owner: {now:?}");
    }
    for r in [&a, &b, &c] {
        assert_eq!(count_owned(&now, &r.replica), 2, "{now:?}");
    }
    assert_eq!(cloudtrail_readers(&[&a, &b, &c]), 1);
    let a_read_cloudtrail = *a.reads_cloudtrail.borrow();
    let reads_before = memory.entry_puts();

    // kill -9 of A: its streams are audited again within 15 s of a write.
    let a_tables: Vec<String> = now
        .iter()
        .filter(|(_, o)| o.as_deref() == Some(a.replica.id.as_str()))
        .map(|(t, _)| t.clone())
        .collect();
    a.handle.abort();
    let _ = a.handle.await;
    for t in &a_tables {
        sim.put(t, item(100, 1000, "after-kill")).unwrap();
    }
    let mut takeover = Duration::ZERO;
    for t in &a_tables {
        takeover = takeover.max(audited_within(&memory, t, "after-kill").await);
    }
    println!("takeover after the kill: {takeover:?}");
    assert!(
        takeover <= Duration::from_secs(15),
        "took {takeover:?} to audit a change after the kill"
    );
    let now = owners(&sim, &memory);
    assert_eq!(
        count_owned(&now, &b.replica) + count_owned(&now, &c.replica),
        6,
        "{now:?}"
    );
    if a_read_cloudtrail {
        // Its reader moved too (A's last value stays true: it is dead).
        run_for(Duration::from_secs(3)).await;
        assert_eq!(cloudtrail_readers(&[&b, &c]), 1);
    }

    // SIGSTOP of B past its lease: C takes everything over.
    let b_fences: Vec<Fence> = b.replica.held();
    assert!(!b_fences.is_empty());
    b.store.freeze();
    run_for(Duration::from_secs(20)).await;
    let now = owners(&sim, &memory);
    assert_eq!(count_owned(&now, &c.replica), 6, "{now:?}");
    assert!(*c.reads_cloudtrail.borrow(), "the reader did not move to C");

    // SIGCONT: B's writes under its old epoch are refused; it lets go.
    b.store.thaw();
    run_for(Duration::from_secs(5)).await;
    assert!(
        b.replica.lost() >= 1,
        "the thawed replica did not notice it lost its streams"
    );
    for fence in &b_fences {
        assert!(b
            .replica
            .held()
            .iter()
            .all(|f| f.epoch != fence.epoch || f.stream_arn != fence.stream_arn));
        let rows = memory.load_shards(&fence.stream_arn).await.unwrap();
        let refused = b.store.save_fenced_shard(&rows[0], fence).await;
        assert!(
            matches!(refused, Err(StoreError::Fenced { .. })),
            "an old epoch's checkpoint was accepted: {refused:?}"
        );
    }
    // Then the two live ones rebalance, 3 and 3.
    run_for(Duration::from_secs(20)).await;
    let now = owners(&sim, &memory);
    assert_eq!(count_owned(&now, &b.replica), 3, "{now:?}");
    assert_eq!(count_owned(&now, &c.replica), 3, "{now:?}");
    assert_eq!(cloudtrail_readers(&[&b, &c]), 1);

    stop_writing.store(true, Ordering::Relaxed);
    writing.await.unwrap();
    run_for(Duration::from_secs(10)).await;
    let refused = b.store.refused.clone();
    for r in [b, c] {
        r.shutdown.begin(Duration::from_secs(4));
        r.handle.await.unwrap();
    }
    // A graceful stop hands every lease back.
    assert!(owners(&sim, &memory).iter().all(|(_, o)| o.is_none()));

    let mut records = 0;
    for t in TABLES {
        records += verify(&sim, &memory, t).await.unwrap();
    }
    assert!(memory.gaps().await.unwrap().is_empty());
    chain_and_digests_verify(&memory);
    println!(
        "{records} records, {} entry puts ({} before the kill), {} duplicates, {} lease writes, {} refused fenced writes",
        memory.entry_puts(),
        reads_before,
        memory.duplicate_puts(),
        memory.lease_writes(),
        refused.load(Ordering::Relaxed)
    );
}

/// Every stream's chain and digest chain verify: nothing forked.
fn chain_and_digests_verify(store: &MemoryStore) {
    use ddb_audit::proof::verify::Severity;
    let bad: Vec<_> = chain_findings(&store.proof_evidence(), 5)
        .into_iter()
        .filter(|f| f.severity != Severity::Info)
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

/// SIGTERM: the stopping replica's final checkpoints and digests, then its
/// leases released; the other takes them at its next scan (≤ 2 s).
#[tokio::test(start_paused = true)]
async fn a_graceful_stop_hands_its_streams_over_within_two_seconds() {
    let sim = SimStream::new(SimConfig::with_seed(12));
    for t in TABLES {
        sim.create_table(t, &["pk"], Some(ViewType::NewAndOldImages))
            .unwrap();
        sim.put(t, item(1, 0, "alice")).unwrap();
    }
    let memory = MemoryStore::new();
    let a = start_replica(&sim, &memory);
    let b = start_replica(&sim, &memory);
    run_for(Duration::from_secs(15)).await;
    let now = owners(&sim, &memory);
    assert_eq!(count_owned(&now, &a.replica), 3, "{now:?}");
    assert_eq!(count_owned(&now, &b.replica), 3, "{now:?}");
    let stopping = Instant::now();
    a.shutdown.begin(Duration::from_secs(4));
    a.handle.await.unwrap();
    let released = Instant::now();
    while count_owned(&owners(&sim, &memory), &b.replica) < 6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = released.elapsed();
    println!(
        "handover: {took:?} after the release, {:?} after SIGTERM",
        stopping.elapsed()
    );
    assert!(took <= Duration::from_secs(2), "took {took:?}");
    // And what is written next is audited by B.
    for t in TABLES {
        sim.put(t, item(2, 1, "after-stop")).unwrap();
    }
    run_for(Duration::from_secs(5)).await;
    b.shutdown.begin(Duration::from_secs(4));
    b.handle.await.unwrap();
    for t in TABLES {
        assert_eq!(verify(&sim, &memory, t).await.unwrap(), 2);
    }
    assert_eq!(memory.duplicate_puts(), 0, "nothing read twice");
}

/// What leasing costs: in steady state a replica writes only its heartbeat
/// (every 3 s, 1,200 an hour), whatever the number of streams; takes and
/// releases happen only when ownership changes.
#[tokio::test(start_paused = true)]
async fn lease_writes_per_hour_are_the_heartbeats() {
    let sim = SimStream::new(SimConfig::with_seed(13));
    for t in TABLES {
        sim.create_table(t, &["pk"], Some(ViewType::NewAndOldImages))
            .unwrap();
    }
    let memory = MemoryStore::new();
    let a = start_replica(&sim, &memory);
    let b = start_replica(&sim, &memory);
    run_for(Duration::from_secs(60)).await;
    let before = memory.lease_writes();
    run_for(Duration::from_secs(3600)).await;
    let per_replica_hour = (memory.lease_writes() - before) / 2;
    println!("lease and heartbeat writes per replica per hour: {per_replica_hour}");
    assert!(
        (1190..=1210).contains(&per_replica_hour),
        "{per_replica_hour}"
    );
    for r in [a, b] {
        r.shutdown.begin(Duration::from_secs(4));
        r.handle.await.unwrap();
    }
}

/// A table read under a lease that becomes a Global Table homed in another
/// region stops being read here (its lease handed back), and the others go
/// on: one logical change is audited in one region only.
#[tokio::test(start_paused = true)]
async fn a_leased_table_that_becomes_global_elsewhere_stops_being_read_here() {
    let sim = SimStream::new(SimConfig::with_seed(13));
    for t in TABLES {
        sim.create_table(t, &["pk"], Some(ViewType::NewAndOldImages))
            .unwrap();
    }
    let memory = MemoryStore::new();
    let a = start_replica(&sim, &memory);
    sim.put("t0", item(100, 1, "alice")).unwrap();
    audited_within(&memory, "t0", "alice").await;
    // A replica added in a region that sorts before ours: it audits t0.
    sim.set_replicas("t0", &["ap-northeast-1"]).unwrap();
    run_for(Duration::from_secs(70)).await;
    for t in ["t0", "t1"] {
        sim.put(t, item(100, 2, "bob")).unwrap();
    }
    audited_within(&memory, "t1", "bob").await;
    run_for(Duration::from_secs(30)).await;
    let t0 = memory.history("t0", &key(100)).await.unwrap();
    assert!(
        t0.iter().all(|e| e.actor.as_deref() != Some("bob")),
        "t0 was read here after it became global elsewhere: {t0:?}"
    );
    a.shutdown.begin(Duration::from_secs(4));
    a.handle.await.unwrap();
}
