//! The whole path with zero network latency: `SimStream` (throttling off) →
//! supervisor → shard loop → `build_entry` → `MemoryStore` (audit) →
//! checkpoint in `MemoryStore`. Prints a table; not criterion, because one
//! measurement is a whole daemon run.
//!
//! 1. Throughput: N records are written to the simulator first (a backlog:
//!    half INSERTs, half MODIFYs of ~1 KB items, 3 attributes changed), then
//!    the daemon starts; the clock stops when every shard's checkpoint holds
//!    its last sequence number (so every entry is in the store). Twice per
//!    shard count: with the default pacing (4 GetRecords/s per shard, the
//!    API-limit-bound rate) and with the pacer lifted (CPU-bound). CPU time
//!    of the whole process (daemon + simulator + store) per record is from
//!    /proc/self/stat.
//! 2. RSS with 1,000 and 10,000 idle open shards, each in a child process
//!    (this binary re-executed) so that measurements do not mix: VmRSS after
//!    the simulator holds the shards (simulator only), then after every shard
//!    has been polled and the idle backoff has settled (simulator + daemon).
//!    The daemon's share is the difference.
//!
//! 3. A simulated week of rotations at 1,000 shards (a child process, on
//!    tokio's paused clock): every shard rotates every 4 h, with writes
//!    throughout; once per simulated day the daemon is stopped and started
//!    again on the same state. Reported per day: VmRSS, the shards the
//!    daemon holds in memory, the shard rows its store holds, and the
//!    start-up time (real time from start until every open shard has been
//!    read once).
//!
//! `cargo bench --bench pipeline` (full) or `-- --quick` (small N, smoke).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ddb_audit::daemon::engine::{Engine, Settings, Shutdown};
use ddb_audit::daemon::supervisor;
use ddb_audit::entry::{AuditEntry, Gap};
use ddb_audit::store::memory::MemoryStore;
use ddb_audit::store::{AuditStore, PutOutcome, StoreResult};
use ddb_audit::stream::sim::{SimConfig, SimStream, ViewType};
use ddb_audit::value::{AttrValue, Item};

const TABLE: &str = "orders";
const CHILD_ENV: &str = "DDB_AUDIT_BENCH_RSS_CHILD";
const WEEK_ENV: &str = "DDB_AUDIT_BENCH_WEEK_CHILD";

fn main() {
    if let Ok(n) = std::env::var(CHILD_ENV) {
        let n: u32 = n.parse().expect("shard count");
        rss_child(n);
        return;
    }
    if let Ok(spec) = std::env::var(WEEK_ENV) {
        // SHARDSxDAYS, or SHARDSxDAYS:sim for the simulator alone.
        let (spec, sim_only) = match spec.strip_suffix(":sim") {
            Some(spec) => (spec, true),
            None => (spec.as_str(), false),
        };
        let (shards, days) = spec.split_once('x').expect("SHARDSxDAYS");
        week_child(
            shards.parse().expect("shard count"),
            days.parse().expect("days"),
            !sim_only,
        );
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us with no
    // args, so the smoke mode is also the default outside `cargo bench`.
    let quick = args.iter().any(|a| a == "--quick" || a == "--test")
        || !args.iter().any(|a| a == "--bench");
    let filter: Option<&String> = args.iter().skip(1).find(|a| !a.starts_with("--"));
    let n = if quick { 2_000 } else { 50_000 };
    // One paced shard is bound by its pacing (pages per second), not by the
    // record count: 20,000 records (the end-to-end catch-up's backlog) show
    // the same rate in 40 % of the time 50,000 would take.
    let n_one_paced_shard = if quick { n } else { 20_000 };

    println!("pipeline throughput: a backlog of records, SimStream (throttling off) -> engine -> MemoryStore -> checkpoint");
    println!(
        "{:<8} {:<28} {:>8} {:>10} {:>12} {:>14} {:>10}",
        "shards", "pacing", "records", "seconds", "records/s", "CPU us/record", "GetRecords"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for shards in [1u32, 100] {
        for paced in [true, false] {
            if filter.is_some_and(|f| !"throughput".contains(f.as_str())) {
                continue;
            }
            let n = if shards == 1 && paced {
                n_one_paced_shard
            } else {
                n
            };
            let r = runtime.block_on(throughput(shards, n, paced));
            println!(
                "{:<8} {:<28} {:>8} {:>10.2} {:>12.0} {:>14.1} {:>10}",
                shards,
                if paced {
                    "default (4 GetRecords/s/shard)"
                } else {
                    "lifted (CPU-bound)"
                },
                n,
                r.secs,
                n as f64 / r.secs,
                r.cpu_secs * 1e6 / n as f64,
                r.get_records
            );
        }
    }
    drop(runtime);

    if filter.is_none_or(|f| "rss".contains(f.as_str())) {
        rss(quick);
    }
    if filter.is_none_or(|f| "week".contains(f.as_str())) {
        week(quick);
    }
}

fn rss(quick: bool) {
    println!();
    println!("RSS with idle open shards, each polled by the daemon (child process per case)");
    println!(
        "{:<8} {:>16} {:>22} {:>16} {:>14} {:>18}",
        "shards",
        "sim only (MB)",
        "sim + daemon (MB)",
        "daemon (MB)",
        "VmHWM (MB)",
        "GetRecords/s/shard"
    );
    let counts: &[u32] = if quick { &[100] } else { &[1_000, 10_000] };
    for &n in counts {
        let exe = std::env::current_exe().expect("current_exe");
        let out = std::process::Command::new(exe)
            .env(CHILD_ENV, n.to_string())
            .output()
            .expect("spawn RSS child");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("RSS "))
            .unwrap_or_else(|| {
                panic!(
                    "RSS child for {n} shards printed no result: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let f: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().expect("number"))
            .collect();
        println!(
            "{:<8} {:>16.1} {:>22.1} {:>16.1} {:>14.1} {:>18.3}",
            n,
            f[0],
            f[1],
            f[1] - f[0],
            f[2],
            f[3]
        );
    }
}

/// A week of rotations, in child processes (each RSS is its own): the
/// simulator alone, then the simulator with the daemon, so that the daemon's
/// share is the difference, as in the idle-shards RSS run.
fn week(quick: bool) {
    let (shards, days) = if quick { (50, 2) } else { (1_000, 7) };
    println!();
    println!(
        "a simulated week: {shards} shards rotating every 4 h, writes throughout, restart once a day (paused clock, child processes)"
    );
    let run = |spec: String| -> Vec<Vec<String>> {
        let exe = std::env::current_exe().expect("current_exe");
        let out = std::process::Command::new(exe)
            .env(WEEK_ENV, &spec)
            .output()
            .expect("spawn week child");
        let text = String::from_utf8_lossy(&out.stdout);
        let rows: Vec<Vec<String>> = text
            .lines()
            .filter(|l| l.starts_with("DAY "))
            .map(|l| l.split_whitespace().skip(1).map(str::to_string).collect())
            .collect();
        assert!(
            rows.len() == days as usize,
            "week child {spec} printed {} of {days} days: {}",
            rows.len(),
            String::from_utf8_lossy(&out.stderr)
        );
        rows
    };
    let sim_only = run(format!("{shards}x{days}:sim"));
    let with_daemon = run(format!("{shards}x{days}"));
    println!(
        "{:<4} {:>11} {:>13} {:>13} {:>11} {:>14} {:>13} {:>12} {:>9}",
        "day",
        "shards made",
        "RSS sim (MB)",
        "RSS all (MB)",
        "daemon (MB)",
        "held in memory",
        "rows in store",
        "start-up (s)",
        "entries"
    );
    for (alone, all) in sim_only.iter().zip(&with_daemon) {
        let mb = |v: &str| v.parse::<f64>().unwrap_or(f64::NAN);
        println!(
            "{:<4} {:>11} {:>13} {:>13} {:>11.1} {:>14} {:>13} {:>12} {:>9}",
            all[0],
            all[1],
            alone[2],
            all[2],
            mb(&all[2]) - mb(&alone[2]),
            all[3],
            all[4],
            all[5],
            all[6]
        );
    }
}

/// A day of the week run: a write every 20 s on average, in hourly bursts.
async fn simulate_day(sim: &SimStream, written: &mut usize) {
    for _hour in 0..24 {
        for _ in 0..180 {
            *written += 1;
            sim.put(TABLE, item(*written % 5_000, *written as u32))
                .expect("put");
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// One week run. With `daemon` false, the simulator alone goes through the
/// same writes, rotations and days (its RSS is the baseline).
fn week_child(shards: u32, days: u32, daemon: bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // The write log is the tests' oracle; a week of it would be most of
        // the process's memory.
        let sim = SimStream::new(SimConfig {
            throttling: false,
            initial_shards: shards,
            keep_write_log: false,
            ..SimConfig::with_seed(7)
        });
        sim.create_table(TABLE, &["pk"], Some(ViewType::NewAndOldImages))
            .expect("create table");
        sim.set_auto_rotate(Some(Duration::from_secs(4 * 3600)));
        let arn = sim.stream_arn(TABLE).expect("stream");
        // Checkpoints in memory, as the shards table; entries counted and
        // dropped, as the audit table keeps them outside the daemon.
        let store = MemoryStore::new();
        let entries = EntryCounter::new(store.clone());
        let mut settings = settings(true, shards as usize);
        settings.polling.describe_stream_per_sec = 1_000_000;
        // A week of 5 s idle polls of 1,000 shards is 120 million calls on
        // the simulator: a minute between polls keeps the run short without
        // changing what the daemon holds.
        settings.polling.idle_poll_max_ms = 60_000;
        let start = |settings: Settings| {
            let engine = Arc::new(Engine::new(
                sim.clone(),
                store.clone(),
                entries.clone(),
                settings,
            ));
            let shutdown = Shutdown::new();
            let handle = tokio::spawn(supervisor::run(
                engine.clone(),
                vec![TABLE.to_string()],
                shutdown.clone(),
            ));
            (engine, shutdown, handle)
        };
        let mut written = 0usize;
        if !daemon {
            for day in 1..=days {
                simulate_day(&sim, &mut written).await;
                let made = sim.all_shards(&arn).map(|all| all.len()).unwrap_or(0);
                println!(
                    "DAY {day} {made} {:.1} - - - {written}",
                    vm_kb("VmRSS:") as f64 / 1024.0
                );
            }
            return;
        }
        let mut daemon = start(settings.clone());
        for day in 1..=days {
            simulate_day(&sim, &mut written).await;
            let (_, shutdown, handle) = daemon;
            shutdown.begin(Duration::from_secs(5));
            let _ = handle.await;
            // Start-up: real time until every open shard has been read once.
            let open: std::collections::HashSet<String> =
                sim.open_shards(TABLE).expect("open").into_iter().collect();
            sim.reset_calls();
            let t0 = Instant::now();
            daemon = start(settings.clone());
            loop {
                let polled = sim.calls().get_records_per_shard;
                if open.iter().all(|id| polled.contains_key(id)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let startup = t0.elapsed().as_secs_f64();
            let made = sim.all_shards(&arn).map(|all| all.len()).unwrap_or(0);
            println!(
                "DAY {day} {made} {:.1} {} {} {startup:.2} {}",
                vm_kb("VmRSS:") as f64 / 1024.0,
                daemon.0.health.tracked_shards(),
                store.checkpoints(&arn).len(),
                entries.count(),
            );
        }
        let (_, shutdown, handle) = daemon;
        shutdown.begin(Duration::from_secs(5));
        let _ = handle.await;
    });
}

/// The week's audit table: the daemon writes to DynamoDB, not to its own
/// memory, so entries are only counted. Write-once is kept (a redelivered
/// record is reported as present) by remembering a 64-bit hash per entry:
/// 8 bytes an entry, the one thing here that grows with the trail.
#[derive(Clone)]
struct EntryCounter {
    seen: Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
    gaps: MemoryStore,
}

impl EntryCounter {
    fn new(gaps: MemoryStore) -> Self {
        EntryCounter {
            seen: Arc::default(),
            gaps,
        }
    }

    fn count(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }
}

impl AuditStore for EntryCounter {
    async fn put_entry(&self, entry: &AuditEntry) -> StoreResult<PutOutcome> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&entry.stream_arn, &entry.shard_id, &entry.sequence_number).hash(&mut h);
        let fresh = self.seen.lock().expect("lock").insert(h.finish());
        Ok(if fresh {
            PutOutcome::Written
        } else {
            PutOutcome::AlreadyPresent
        })
    }

    async fn history(&self, _table: &str, _key: &Item) -> StoreResult<Vec<AuditEntry>> {
        Ok(Vec::new())
    }

    async fn put_gap(&self, gap: &Gap) -> StoreResult<PutOutcome> {
        self.gaps.put_gap(gap).await
    }

    async fn gaps(&self) -> StoreResult<Vec<Gap>> {
        self.gaps.gaps().await
    }

    async fn gap_link(&self, gap: &Gap) -> StoreResult<Option<ddb_audit::proof::Link>> {
        self.gaps.gap_link(gap).await
    }

    async fn put_linked_gap(
        &self,
        gap: &Gap,
        link: &ddb_audit::proof::Link,
    ) -> StoreResult<PutOutcome> {
        self.gaps.put_linked_gap(gap, link).await
    }
}

struct Run {
    secs: f64,
    cpu_secs: f64,
    get_records: u64,
}

fn s(x: impl Into<String>) -> AttrValue {
    AttrValue::S(x.into())
}

/// ~1 KB: a key, an actor and 20 attributes of ~45 bytes.
fn item(i: usize, version: u32) -> Item {
    let mut item = Item::new();
    item.insert("pk".into(), s(format!("customer#{i:08}")));
    item.insert("updated_by".into(), s(format!("user-{}", version)));
    for a in 0..20 {
        // Attributes 0..3 change between versions.
        let v = if a < 3 { version } else { 1 };
        item.insert(
            format!("attribute_{a:02}"),
            s(format!("value {v} of attribute {a} for item {i} ........")),
        );
    }
    item.insert(
        "balance".into(),
        AttrValue::N(format!("{}", 1000 - version)),
    );
    item
}

fn sim(shards: u32) -> SimStream {
    let sim = SimStream::new(SimConfig {
        throttling: false,
        initial_shards: shards,
        ..SimConfig::with_seed(7)
    });
    sim.create_table(TABLE, &["pk"], Some(ViewType::NewAndOldImages))
        .expect("create table");
    sim
}

fn settings(paced: bool, max_concurrent_shards: usize) -> Settings {
    let mut settings = Settings {
        actor_attribute: Some("updated_by".into()),
        correlation_attribute: None,
        ..Settings::default()
    };
    settings.polling.max_concurrent_shards = max_concurrent_shards;
    if !paced {
        settings.polling.get_records_per_shard_per_sec = 1_000_000;
        settings.polling.describe_stream_per_sec = 1_000_000;
    }
    settings
}

async fn throughput(shards: u32, n: usize, paced: bool) -> Run {
    let sim = sim(shards);
    for i in 0..n / 2 {
        sim.put(TABLE, item(i, 1)).expect("put");
    }
    for i in 0..n - n / 2 {
        sim.put(TABLE, item(i, 2)).expect("put");
    }
    // Where each shard's checkpoint must end.
    let mut last: std::collections::HashMap<String, String> = Default::default();
    for logged in sim.write_log_routed(TABLE) {
        last.insert(logged.shard_id, logged.record.sequence_number);
    }
    let arn = sim.stream_arn(TABLE).expect("stream");
    let store = MemoryStore::new();
    // max_concurrent_shards above the shard count: needed before open shards
    // were exempt from the bound (BENCHMARKS.md, "engine findings"); kept so
    // the figures stay comparable.
    let engine = Arc::new(Engine::new(
        sim.clone(),
        store.clone(),
        store.clone(),
        settings(paced, shards as usize + 16),
    ));
    let shutdown = Shutdown::new();
    sim.reset_calls();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let daemon = tokio::spawn(supervisor::run(
        engine,
        vec![TABLE.to_string()],
        shutdown.clone(),
    ));
    loop {
        let done = {
            let cps = store.checkpoints(&arn);
            last.iter().all(|(shard, seq)| {
                cps.iter()
                    .any(|c| &c.shard_id == shard && c.sequence_no.as_ref() == Some(seq))
            })
        };
        if done {
            break;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            panic!("pipeline did not finish in 300 s ({shards} shards)");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu_secs = cpu_seconds() - cpu0;
    assert_eq!(store.entry_count(), n, "every record exactly once");
    let get_records = sim.calls().get_records;
    shutdown.begin(Duration::from_secs(1));
    let _ = daemon.await;
    Run {
        secs,
        cpu_secs,
        get_records,
    }
}

fn rss_child(n: u32) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let sim = sim(n);
        let sim_only = vm_kb("VmRSS:") as f64 / 1024.0;
        // Every shard polled (max_concurrent_shards = n), the listing pacer
        // lifted so that start-up does not take n/100/5 s; GetRecords pacing
        // and idle backoff at their defaults.
        let mut settings = settings(true, n as usize);
        settings.polling.describe_stream_per_sec = 1_000_000;
        let store = MemoryStore::new();
        let engine = Arc::new(Engine::new(sim.clone(), store.clone(), store, settings));
        let shutdown = Shutdown::new();
        let daemon = tokio::spawn(supervisor::run(
            engine,
            vec![TABLE.to_string()],
            shutdown.clone(),
        ));
        let t0 = Instant::now();
        while sim.calls().get_records_per_shard.len() < n as usize {
            if t0.elapsed() > Duration::from_secs(120) {
                panic!("not every shard was polled within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Idle backoff 250 ms doubling to 5 s settles after ~8 s.
        tokio::time::sleep(Duration::from_secs(9)).await;
        sim.reset_calls();
        let window = Duration::from_secs(5);
        tokio::time::sleep(window).await;
        let rate = sim.calls().get_records as f64 / window.as_secs_f64() / n as f64;
        let rss = vm_kb("VmRSS:") as f64 / 1024.0;
        let hwm = vm_kb("VmHWM:") as f64 / 1024.0;
        println!("RSS {sim_only:.1} {rss:.1} {hwm:.1} {rate:.4}");
        shutdown.begin(Duration::from_secs(1));
        let _ = daemon.await;
    });
}

fn vm_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of this process, from /proc/self/stat (clock ticks
/// of 1/100 s, the Linux default).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 overall: 12 and 13 after ')'.
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}
