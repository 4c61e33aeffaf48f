//! Table selection and discovery driven through the real daemon
//! (`supervisor::run_selected`) on the stream simulator, on tokio's paused
//! clock: tables created, tagged, excluded and made global while it runs.

mod sim_support;

use std::sync::Arc;
use std::time::Duration;

use ddb_audit::daemon::discovery::{Discoverer, TAG_REFRESH_INTERVALS};
use ddb_audit::daemon::engine::{Engine, Settings, Shutdown, TableState};
use ddb_audit::selection::TableSelection;
use ddb_audit::store::memory::MemoryStore;
use ddb_audit::stream::sim::{SimConfig, SimStream, ViewType};
use sim_support::*;

const INTERVAL: Duration = Duration::from_secs(60);

type SimEngine = Engine<SimStream, MemoryStore, MemoryStore>;

struct Running {
    engine: Arc<SimEngine>,
    daemon: Daemon,
}

fn start_selected(
    sim: &SimStream,
    store: &MemoryStore,
    settings: Settings,
    tables: &[&str],
    exclude: &[&str],
    tags: &[(&str, &str)],
) -> Running {
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let selection = TableSelection::new(
        &v(tables),
        &v(exclude),
        tags.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        v(&["ddb-audit-streams", "ddb-audit-shards", "ddb-audit-entries"]),
    )
    .unwrap();
    let discoverer = Discoverer::new(selection, INTERVAL, settings.retry_policy());
    let engine = Arc::new(Engine::new(
        sim.clone(),
        store.clone(),
        store.clone(),
        settings,
    ));
    let shutdown = Shutdown::new();
    let (e, s) = (engine.clone(), shutdown.clone());
    let handle = tokio::spawn(async move {
        if let Err(e) = ddb_audit::daemon::supervisor::run_selected(e, discoverer, s, None).await {
            panic!("daemon failed: {e}");
        }
    });
    Running {
        engine,
        daemon: Daemon { shutdown, handle },
    }
}

fn sim() -> SimStream {
    SimStream::new(SimConfig {
        throttling: false,
        ..SimConfig::default()
    })
}

fn entries_of(store: &MemoryStore, table: &str) -> usize {
    store
        .all_entries()
        .iter()
        .filter(|e| e.table == table)
        .count()
}

fn write(sim: &SimStream, table: &str, id: u32) {
    sim.put(table, item(id, 1, "alice")).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_table_created_while_running_is_audited_within_the_interval_and_others_keep_going() {
    let sim = sim();
    let store = MemoryStore::new();
    sim.create_table("app-a", &["pk"], Some(ViewType::NewAndOldImages))
        .unwrap();
    // Our own tables never match, even under "*"-like patterns.
    sim.create_table(
        "ddb-audit-entries",
        &["pk"],
        Some(ViewType::NewAndOldImages),
    )
    .unwrap();
    let r = start_selected(
        &sim,
        &store,
        settings(),
        &["app-*", "ddb-*"],
        &["*-tmp"],
        &[],
    );
    write(&sim, "app-a", 1);
    run_for(Duration::from_secs(5)).await;
    assert_eq!(entries_of(&store, "app-a"), 1);

    // Created a few seconds after the listing: the next one finds them.
    sim.create_table("app-b", &["pk"], Some(ViewType::NewAndOldImages))
        .unwrap();
    sim.create_table("app-b-tmp", &["pk"], Some(ViewType::NewAndOldImages))
        .unwrap();
    sim.create_table("app-keys", &["pk"], Some(ViewType::KeysOnly))
        .unwrap();
    let created = tokio::time::Instant::now();
    for id in 0..3 {
        write(&sim, "app-b", id);
        write(&sim, "app-b-tmp", id);
        write(&sim, "app-keys", id);
    }
    while entries_of(&store, "app-b") < 3 {
        assert!(
            created.elapsed() < INTERVAL + Duration::from_secs(5),
            "app-b not audited within the interval"
        );
        run_for(Duration::from_millis(500)).await;
    }
    write(&sim, "app-a", 2);
    run_for(Duration::from_secs(10)).await;
    assert_eq!(
        entries_of(&store, "app-a"),
        2,
        "the other tables keep going"
    );
    assert_eq!(entries_of(&store, "app-b-tmp"), 0, "excluded");
    assert_eq!(entries_of(&store, "ddb-audit-entries"), 0, "our own");
    assert_eq!(entries_of(&store, "app-keys"), 0);
    match r.engine.health.get("app-keys") {
        Some(TableState::Failing(reason)) => assert!(
            reason.contains("KEYS_ONLY")
                && reason.contains(
                    "aws dynamodb update-table --table-name app-keys --stream-specification StreamEnabled=false"
                ),
            "{reason}"
        ),
        other => panic!("app-keys should be failing with its fix: {other:?}"),
    }
    assert_eq!(r.engine.health.get("app-b"), Some(TableState::Auditing));
    assert_eq!(r.engine.health.get("app-b-tmp"), None);
    verify(&sim, &store, "app-b").await.unwrap();
    r.daemon.stop().await;
}

#[tokio::test(start_paused = true)]
async fn tags_select_and_a_table_that_stops_matching_is_no_longer_read() {
    let sim = sim();
    let store = MemoryStore::new();
    for t in ["tagged", "untagged"] {
        sim.create_table(t, &["pk"], Some(ViewType::NewAndOldImages))
            .unwrap();
    }
    sim.tag_table("tagged", "audit", "on").unwrap();
    let r = start_selected(&sim, &store, settings(), &["*"], &[], &[("audit", "on")]);
    write(&sim, "tagged", 1);
    write(&sim, "untagged", 1);
    // Created with its tag: found at the next listing.
    sim.create_table("later", &["pk"], Some(ViewType::NewAndOldImages))
        .unwrap();
    sim.tag_table("later", "audit", "on").unwrap();
    write(&sim, "later", 1);
    run_for(INTERVAL + Duration::from_secs(5)).await;
    assert_eq!(entries_of(&store, "tagged"), 1);
    assert_eq!(entries_of(&store, "later"), 1);
    assert_eq!(entries_of(&store, "untagged"), 0);

    // Untagged: at the next listing (a small region's tags are all read
    // again each time), it is stopped; its trail stays.
    sim.untag_table("tagged", "audit").unwrap();
    run_for(INTERVAL + Duration::from_secs(5)).await;
    assert_eq!(r.engine.health.get("tagged"), None);
    write(&sim, "tagged", 2);
    write(&sim, "later", 2);
    run_for(INTERVAL).await;
    assert_eq!(
        entries_of(&store, "tagged"),
        1,
        "not read any more, trail kept"
    );
    assert_eq!(entries_of(&store, "later"), 2);
    // Steady state: one ListTables page per listing, and the three tables'
    // tags once each.
    sim.reset_calls();
    run_for(INTERVAL * 5).await;
    let c = sim.calls();
    assert_eq!(c.list_tables, 5, "{c:?}");
    assert_eq!(c.list_tags, 15, "{c:?}");
    r.daemon.stop().await;
}

#[tokio::test(start_paused = true)]
async fn exact_names_make_no_listing() {
    let sim = sim();
    let store = MemoryStore::new();
    sim.create_table("orders", &["pk"], Some(ViewType::NewAndOldImages))
        .unwrap();
    let d = start(sim.clone(), &store, settings(), &["orders"]);
    write(&sim, "orders", 1);
    run_for(INTERVAL * 3).await;
    assert_eq!(entries_of(&store, "orders"), 1);
    assert_eq!((sim.calls().list_tables, sim.calls().list_tags), (0, 0));
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_global_table_is_audited_in_its_home_region_only() {
    // The simulator is us-east-1.
    let sim = sim();
    let store = MemoryStore::new();
    for t in ["g-eu", "g-us", "g-set"] {
        sim.create_table(t, &["pk"], Some(ViewType::NewAndOldImages))
            .unwrap();
    }
    // Home: the region that sorts first, eu-west-1, elsewhere.
    sim.set_replicas("g-eu", &["eu-west-1", "us-east-1"])
        .unwrap();
    // Home: us-east-1 (listed without the asking region too).
    sim.set_replicas("g-us", &["us-west-2"]).unwrap();
    // Home: as configured.
    sim.set_replicas("g-set", &["ap-south-1"]).unwrap();
    let settings = Settings {
        home_region: Some("us-east-1".into()),
        ..settings()
    };
    let r = start_selected(&sim, &store, settings, &["g-*"], &[], &[]);
    for t in ["g-eu", "g-us", "g-set"] {
        write(&sim, t, 1);
    }
    run_for(Duration::from_secs(10)).await;
    // us-east-1 holds a replica of each, so the configured home wins.
    assert_eq!(entries_of(&store, "g-eu"), 1);
    assert_eq!(entries_of(&store, "g-us"), 1);
    assert_eq!(entries_of(&store, "g-set"), 1);
    r.daemon.stop().await;

    // Without a configured home: the smallest region, for every daemon.
    let store = MemoryStore::new();
    let r = start_selected(&sim, &store, settings_plain(), &["g-*"], &[], &[]);
    run_for(Duration::from_secs(10)).await;
    match r.engine.health.get("g-eu") {
        Some(TableState::Elsewhere(reason)) => {
            assert!(reason.starts_with("audited in eu-west-1"), "{reason}")
        }
        other => panic!("g-eu should be audited elsewhere: {other:?}"),
    }
    match r.engine.health.get("g-set") {
        Some(TableState::Elsewhere(reason)) => {
            assert!(reason.starts_with("audited in ap-south-1"), "{reason}")
        }
        other => panic!("g-set should be audited elsewhere: {other:?}"),
    }
    assert_eq!(r.engine.health.get("g-us"), Some(TableState::Auditing));
    assert_eq!(entries_of(&store, "g-eu"), 0);
    assert_eq!(entries_of(&store, "g-set"), 0);
    assert_eq!(entries_of(&store, "g-us"), 1);
    r.daemon.stop().await;
}

fn settings_plain() -> Settings {
    Settings {
        home_region: None,
        ..settings()
    }
}

/// The discovery cost at 1,000 tables (BENCHMARKS.md): calls per minute in
/// steady state and the time one listing takes, names only and with tags.
/// `cargo test --release --test discovery_sim discovery_cost -- --nocapture`
#[tokio::test(start_paused = true)]
async fn discovery_cost_at_1000_tables() {
    for tags in [false, true] {
        let sim = sim();
        for i in 0..1000 {
            let t = format!("t{i:04}");
            sim.create_table(&t, &["pk"], Some(ViewType::NewAndOldImages))
                .unwrap();
            if tags && i % 10 == 0 {
                sim.tag_table(&t, "audit", "on").unwrap();
            }
        }
        let wanted: &[(&str, &str)] = if tags { &[("audit", "on")] } else { &[] };
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let selection = TableSelection::new(
            &v(&["*"]),
            &[],
            wanted
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            Vec::new(),
        )
        .unwrap();
        let mut d = Discoverer::new(selection, INTERVAL, settings().retry_policy());
        let stop = tokio_util::sync::CancellationToken::new();
        // The first listing, then ten minutes of listings once a minute.
        let (wall, paced) = (std::time::Instant::now(), tokio::time::Instant::now());
        let first = d.list(&sim, &stop).await.unwrap();
        let (first_wall, first_paced) = (wall.elapsed(), paced.elapsed());
        let first_calls = sim.calls();
        assert_eq!(first.selected.len(), if tags { 100 } else { 1000 });
        // Past the first refresh round, then measured.
        for _ in 0..(2 * TAG_REFRESH_INTERVALS) {
            tokio::time::advance(INTERVAL).await;
            d.list(&sim, &stop).await.unwrap();
        }
        sim.reset_calls();
        let minutes = 10u32;
        let mut slowest_paced = Duration::ZERO;
        let mut wall_total = Duration::ZERO;
        for _ in 0..minutes {
            tokio::time::advance(INTERVAL).await;
            let (w, p) = (std::time::Instant::now(), tokio::time::Instant::now());
            d.list(&sim, &stop).await.unwrap();
            wall_total += w.elapsed();
            slowest_paced = slowest_paced.max(p.elapsed());
        }
        let c = sim.calls();
        let per_min = |n: u64| n as f64 / f64::from(minutes);
        println!(
            "discovery, 1,000 tables, {}: first listing {} ListTables + {} ListTagsOfResource + {} DescribeTable, \
             {:.1} s paced, {:.1} ms CPU; steady state per minute: {:.1} ListTables, {:.1} ListTagsOfResource; \
             a listing: {:.1} s paced at most, {:.2} ms CPU on average",
            if tags { "tags (100 tagged)" } else { "names only" },
            first_calls.list_tables,
            first_calls.list_tags,
            first_calls.describe_table,
            first_paced.as_secs_f64(),
            first_wall.as_secs_f64() * 1e3,
            per_min(c.list_tables),
            per_min(c.list_tags),
            slowest_paced.as_secs_f64(),
            wall_total.as_secs_f64() * 1e3 / f64::from(minutes),
        );
        assert_eq!(c.list_tables, 10 * u64::from(minutes));
        assert!(per_min(c.list_tags) <= if tags { 120.0 } else { 0.0 });
    }
}

#[tokio::test(start_paused = true)]
async fn a_found_table_the_role_may_not_describe_is_reported_with_its_fix() {
    use ddb_audit::stream::faults::{FaultRule, FaultStream, Op};
    use ddb_audit::stream::StreamError;
    let sim = sim();
    let store = MemoryStore::new();
    sim.create_table("app-denied", &["pk"], Some(ViewType::NewAndOldImages))
        .unwrap();
    let faults = FaultStream::new(sim.clone(), 1);
    faults.add_rule(FaultRule::error(
        Op::DescribeTable,
        StreamError::Other(
            "AccessDeniedException: not authorized to perform dynamodb:DescribeTable".into(),
        ),
    ));
    let selection =
        TableSelection::new(&["app-*".to_string()], &[], Default::default(), Vec::new()).unwrap();
    let engine = Arc::new(Engine::new(
        faults,
        store.clone(),
        store.clone(),
        settings(),
    ));
    let discoverer = Discoverer::new(selection, INTERVAL, settings().retry_policy());
    let shutdown = Shutdown::new();
    let handle = tokio::spawn(ddb_audit::daemon::supervisor::run_selected(
        engine.clone(),
        discoverer,
        shutdown.clone(),
        None,
    ));
    run_for(Duration::from_secs(5)).await;
    match engine.health.get("app-denied") {
        Some(TableState::Failing(reason)) => assert!(
            reason.contains("access denied")
                && reason.contains("aws dynamodb describe-table --table-name app-denied"),
            "{reason}"
        ),
        other => panic!("app-denied should be failing with its fix: {other:?}"),
    }
    shutdown.begin(Duration::from_secs(4));
    handle.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_table_that_becomes_global_elsewhere_stops_being_read_here() {
    let sim = sim();
    let store = MemoryStore::new();
    sim.create_table("orders", &["pk"], Some(ViewType::NewAndOldImages))
        .unwrap();
    // An exact name: the home rule holds for names as for patterns.
    let d = start(sim.clone(), &store, settings_plain(), &["orders"]);
    write(&sim, "orders", 1);
    run_for(Duration::from_secs(5)).await;
    assert_eq!(entries_of(&store, "orders"), 1);
    // A replica added in a region that sorts first: that region audits it.
    sim.set_replicas("orders", &["ap-northeast-1"]).unwrap();
    run_for(INTERVAL + Duration::from_secs(5)).await;
    write(&sim, "orders", 2);
    run_for(INTERVAL).await;
    assert_eq!(
        entries_of(&store, "orders"),
        1,
        "read in its home region only"
    );
    d.stop().await;
}
