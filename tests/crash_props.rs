//! Property: over random shard topologies (rotations, splits, many empty
//! shards, some of it while the daemon is down for longer than the stream's
//! retention), random faults (throttling, 5xx, expired iterators,
//! non-retryable errors such as AccessDenied, panics inside the stream
//! client, malformed records) and random crash points (the daemon dropped at
//! any await, then restarted on the same state), the audit trail equals the
//! stream's write log per item — nothing lost, nothing twice, per-item order
//! kept, every malformed record an error entry — and the gaps are exact: each
//! one true, tight and bracketed by the entries it names, none recorded
//! twice, none at all when nothing was trimmed, and every lost record inside
//! one (`sim_support::check_gaps`). The chain then verifies.
//!
//! Deterministic per seed: a failure prints its seed;
//! `DDB_AUDIT_PROP_SEED=<seed>` replays just that case, and
//! `DDB_AUDIT_PROP_CASES=<n>` runs more cases.

mod sim_support;

use std::sync::Arc;
use std::time::Duration;

use ddb_audit::config::Polling;
use ddb_audit::daemon::engine::{Engine, Settings, Shutdown};
use ddb_audit::store::memory::MemoryStore;
use ddb_audit::stream::faults::{FaultRule, FaultStream, Malformed, Op, When};
use ddb_audit::stream::sim::{SimConfig, SimStream, ViewType};
use ddb_audit::stream::StreamError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sim_support::*;

const DEFAULT_CASES: u64 = 24;

type Daemon = (Shutdown, tokio::task::JoinHandle<()>);

fn start_daemon(
    stream: Arc<FaultStream<SimStream>>,
    store: &LaggyStore,
    settings: &Settings,
) -> Daemon {
    let engine = Arc::new(Engine::new(
        stream,
        store.clone(),
        store.clone(),
        settings.clone(),
    ));
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let handle = tokio::spawn(async move {
        if let Err(e) = ddb_audit::daemon::supervisor::run(engine, vec![TABLE.to_string()], s).await
        {
            panic!("daemon failed: {e}");
        }
    });
    (shutdown, handle)
}

async fn case(seed: u64) -> Result<String, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let sim = SimStream::new(SimConfig {
        throttling: rng.random_bool(0.5),
        initial_shards: rng.random_range(1..=3),
        ..SimConfig::with_seed(seed)
    });
    sim.create_table(TABLE, &["pk"], Some(ViewType::NewAndOldImages))
        .map_err(|e| e.to_string())?;
    if rng.random_bool(0.3) {
        let n = rng.random_range(10..300);
        sim.add_empty_closed_shards(TABLE, n)
            .map_err(|e| e.to_string())?;
    }
    let faults = Arc::new(FaultStream::new(sim.clone(), seed));
    let p = rng.random_range(0.0..0.15);
    faults.add_rule(
        FaultRule::error(Op::GetRecords, StreamError::Throttled("injected".into()))
            .when(When::Probability(p)),
    );
    faults.add_rule(
        FaultRule::error(Op::Any, StreamError::Transient("injected 500".into()))
            .when(When::Probability(p / 2.0)),
    );
    faults.add_rule(
        FaultRule::error(
            Op::GetRecords,
            StreamError::ExpiredIterator("injected".into()),
        )
        .when(When::Probability(p / 3.0)),
    );
    // What a role change or an expired token looks like: not retried by the
    // call, so the shard task fails and restarts from its saved checkpoint.
    if rng.random_bool(0.4) {
        let op = [Op::GetRecords, Op::GetShardIterator][rng.random_range(0..2)];
        faults.add_rule(
            FaultRule::error(
                op,
                StreamError::Other("AccessDeniedException: injected".into()),
            )
            .when(When::Probability(p / 4.0)),
        );
    }
    if rng.random_bool(0.3) {
        faults.add_rule(FaultRule::panic(Op::GetRecords).when(When::Probability(0.01)));
    }
    let long_outages = rng.random_bool(0.5);
    let malformed = rng
        .random_bool(0.4)
        .then(|| [Malformed::Unreadable, Malformed::MissingImages][rng.random_range(0..2)]);
    let malform_on = |faults: &FaultStream<SimStream>| {
        if let Some(how) = malformed {
            faults.malform_records(29, how);
        }
    };
    malform_on(&faults);
    let memory = MemoryStore::new();
    let store = LaggyStore::new(memory.clone(), seed, Duration::from_millis(3));
    let settings = Settings {
        actor_attribute: Some("updated_by".into()),
        correlation_attribute: None,
        polling: Polling {
            max_concurrent_shards: rng.random_range(1..=64),
            ..Polling::default()
        },
        jitter_seed: Some(seed),
        ..Settings::default()
    };

    let digests = digest_writer(&memory, &settings);
    let never = tokio_util::sync::CancellationToken::new();
    let mut daemon: Option<Daemon> = Some(start_daemon(faults.clone(), &store, &settings));
    // Auditing begins once the daemon has recorded that it reads the
    // stream: what is trimmed before that was never audited, and is no gap
    // (a snapshot is the baseline for it). Let the first run get that far.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut versions = [0u32; 16];
    let (mut crashes, mut restarts, mut trims, mut topology) = (0, 0, 0, 0);
    for _ in 0..rng.random_range(10..40) {
        match rng.random_range(0..100) {
            0..=49 => {
                for _ in 0..rng.random_range(1..25) {
                    let id = rng.random_range(0..16u32);
                    let r = if rng.random_bool(0.1) {
                        sim.delete(TABLE, &key(id))
                    } else {
                        versions[id as usize] += 1;
                        sim.put(
                            TABLE,
                            item(id, versions[id as usize], ["alice", "bob"][id as usize % 2]),
                        )
                    };
                    r.map_err(|e| e.to_string())?;
                }
            }
            50..=59 => {
                let open = sim.open_shards(TABLE).map_err(|e| e.to_string())?;
                let shard = &open[rng.random_range(0..open.len())];
                if rng.random_bool(0.5) {
                    sim.rotate_shard(shard).map_err(|e| e.to_string())?;
                } else {
                    sim.split_shard(shard).map_err(|e| e.to_string())?;
                }
                topology += 1;
            }
            60..=74 => {
                if let Some((_, handle)) = daemon.take() {
                    // kill -9: dropped wherever it is.
                    handle.abort();
                    let _ = handle.await;
                    crashes += 1;
                }
            }
            75..=79 => {
                if let Some((shutdown, handle)) = daemon.take() {
                    shutdown.begin(Duration::from_secs(4));
                    handle.await.map_err(|e| format!("daemon panicked: {e}"))?;
                }
            }
            80..=89 if long_outages && daemon.is_none() => {
                // Down for longer than the stream keeps records.
                tokio::time::sleep(Duration::from_secs(25 * 3600)).await;
                trims += 1;
            }
            _ => {}
        }
        if long_outages && daemon.is_none() && rng.random_bool(0.25) {
            // Down for longer than the stream keeps records, while shards
            // keep rotating and splitting.
            for _ in 0..rng.random_range(0..3) {
                let open = sim.open_shards(TABLE).map_err(|e| e.to_string())?;
                let shard = &open[rng.random_range(0..open.len())];
                sim.rotate_shard(shard).map_err(|e| e.to_string())?;
                for _ in 0..rng.random_range(0..10) {
                    let id = rng.random_range(0..16u32);
                    versions[id as usize] += 1;
                    sim.put(TABLE, item(id, versions[id as usize], "carol"))
                        .map_err(|e| e.to_string())?;
                }
                tokio::time::sleep(Duration::from_secs(rng.random_range(1..8) * 3600)).await;
                topology += 1;
            }
            tokio::time::sleep(Duration::from_secs(25 * 3600)).await;
            trims += 1;
        }
        if daemon.is_none() && rng.random_bool(0.6) {
            daemon = Some(start_daemon(faults.clone(), &store, &settings));
            restarts += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..3000))).await;
        // Digests go on beside the daemon, as in `run`: they, not the shard
        // rows (which expire), keep the lineage for `verify`.
        digests.round(false, &never, &never).await;
    }
    // Final run, faults off, until everything readable is read.
    if let Some((_, handle)) = daemon.take() {
        handle.abort();
        let _ = handle.await;
    }
    faults.clear_rules();
    // A malformed record stays malformed when it is delivered again.
    malform_on(&faults);
    let (shutdown, handle) = start_daemon(faults.clone(), &store, &settings);
    tokio::time::sleep(Duration::from_secs(120)).await;
    shutdown.begin(Duration::from_secs(4));
    handle.await.map_err(|e| format!("daemon panicked: {e}"))?;
    let arn = sim.stream_arn(TABLE).unwrap_or_default();
    let n = verify_with(&sim, &memory, TABLE, |seq| faults.is_malformed(seq))
        .await
        .map_err(|e| {
            let shards = sim.shards(&arn).unwrap_or_default();
            let detail: Vec<String> = memory
                .checkpoints(&arn)
                .iter()
                .filter(|c| {
                    e.contains(&c.shard_id)
                        || shards.iter().any(|s| {
                            e.contains(&s.shard_id)
                                && s.parent_shard_id.as_deref() == Some(&c.shard_id)
                        })
                })
                .map(|c| {
                    format!(
                        "{} {:?} seq={:?} parent={:?}",
                        c.shard_id, c.status, c.sequence_no, c.parent_shard_id
                    )
                })
                .collect();
            let topo: Vec<String> = shards
                .iter()
                .filter(|s| e.contains(&s.shard_id))
                .map(|s| {
                    format!(
                        "{} parent={:?} start={:?} end={:?}",
                        s.shard_id,
                        s.parent_shard_id,
                        s.starting_sequence_number,
                        s.ending_sequence_number
                    )
                })
                .collect();
            format!("{e}\n  checkpoints: {detail:?}\n  topology: {topo:?}")
        })?;
    let gaps = check_gaps(&sim, &memory, TABLE, trims > 0).await?;
    let links = prove_chain(&memory, &digests).await?;
    let injected = faults.counts();
    Ok(format!(
        "{n} entries ({links} chained), {gaps} gaps, {crashes} crashes, {restarts} restarts, {trims} trims, {topology} topology changes, {} duplicates recognised, {} panics, {} malformed deliveries",
        memory.duplicate_puts(),
        injected.panics,
        injected.malformed,
    ))
}

/// After the final graceful stop: a final digest, then the verifier over
/// what the store holds must find nothing wrong — re-deliveries after
/// crashes hashed the same, children continued their parents' chains, gaps
/// are links like the rest.
fn digest_writer(
    memory: &MemoryStore,
    settings: &Settings,
) -> ddb_audit::daemon::digests::DigestWriter<MemoryStore, MemoryStore> {
    use ddb_audit::daemon::digests::{DigestSettings, DigestWriter};
    DigestWriter::new(
        memory.clone(),
        memory.clone(),
        vec![TABLE.to_string()],
        DigestSettings {
            interval: Duration::from_secs(60),
            retention_days: None,
            signer: None,
            retry: settings.retry_policy(),
        },
    )
}

async fn prove_chain(
    memory: &MemoryStore,
    writer: &ddb_audit::daemon::digests::DigestWriter<MemoryStore, MemoryStore>,
) -> Result<u64, String> {
    use ddb_audit::proof::verify::Severity;
    let token = tokio_util::sync::CancellationToken::new();
    writer.round(true, &token, &token).await;
    let evidence = memory.proof_evidence();
    // Every item's chain, across shards, crashes and replays: the replayed
    // entries must have been written with the links they had.
    let broken: Vec<String> = ddb_audit::proof::verify::items::verify_item_chains(&evidence)
        .into_iter()
        .filter(|f| f.severity != Severity::Info)
        .map(|f| {
            format!(
                "{:?} {:?} {:?}: {}",
                f.kind, f.key, f.sequence_number, f.message
            )
        })
        .collect();
    if !broken.is_empty() {
        return Err(format!("an item chain does not verify: {broken:#?}"));
    }
    let bad: Vec<String> = chain_findings(&evidence, 60)
        .iter()
        .filter(|f| f.severity != Severity::Info)
        .map(|f| {
            format!(
                "{:?} {:?} {:?}: {}",
                f.kind, f.shard_id, f.sequence_number, f.message
            )
        })
        .collect();
    if !bad.is_empty() {
        return Err(format!("the chain does not verify: {bad:#?}"));
    }
    let chained = evidence
        .iter()
        .flat_map(|ev| &ev.leaves)
        .filter(|l| l.stored_hash.is_some())
        .count();
    Ok(chained as u64)
}

/// Injected panics are expected, and contained by the daemon: keep their
/// messages (and backtraces) out of the test's output.
fn quiet_injected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let injected = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|m| m.starts_with("injected panic"));
        if !injected {
            default(info);
        }
    }));
}

fn run_case(seed: u64) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(case(seed))
}

#[test]
fn the_audit_trail_equals_the_write_log_through_crashes_faults_and_topology_changes() {
    let seeds: Vec<u64> = match std::env::var("DDB_AUDIT_PROP_SEED") {
        Ok(s) => vec![s.parse().expect("DDB_AUDIT_PROP_SEED is a number")],
        Err(_) => {
            let cases = std::env::var("DDB_AUDIT_PROP_CASES")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(DEFAULT_CASES);
            (0..cases).map(|i| 0x5eed_0000 + i).collect()
        }
    };
    quiet_injected_panics();
    let mut failures = Vec::new();
    for seed in seeds {
        match run_case(seed) {
            Ok(summary) => eprintln!("seed {seed}: ok: {summary}"),
            Err(e) => {
                eprintln!("seed {seed}: FAILED: {e}\n  replay: DDB_AUDIT_PROP_SEED={seed} cargo test --test crash_props");
                failures.push(seed);
            }
        }
    }
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}
