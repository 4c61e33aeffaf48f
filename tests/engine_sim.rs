//! The daemon on the stream simulator, on tokio's paused clock: every change
//! becomes exactly one entry, across lineage, restarts and crashes.

mod sim_support;

use std::time::Duration;

use ddb_audit::store::faults::{FaultStore, StoreFault, StoreOp};
use ddb_audit::store::memory::MemoryStore;
use ddb_audit::store::{AuditStore, ShardStatus, StoreError};
use ddb_audit::stream::faults::When;
use ddb_audit::stream::sim::{SimConfig, SimStream, ViewType};
use sim_support::*;

fn sim() -> SimStream {
    let sim = SimStream::new(SimConfig::with_seed(7));
    sim.create_table(TABLE, &["pk"], Some(ViewType::NewAndOldImages))
        .unwrap();
    sim
}

#[tokio::test(start_paused = true)]
async fn every_change_becomes_exactly_one_entry_that_rebuilds_the_item() {
    let sim = sim();
    let store = MemoryStore::new();
    for v in 0..5 {
        for id in 0..10 {
            sim.put(TABLE, item(id, v, if v % 2 == 0 { "alice" } else { "bob" }))
                .unwrap();
        }
    }
    sim.delete(TABLE, &key(3)).unwrap();
    sim.ttl_expire(TABLE, &key(4)).unwrap();
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    run_for(Duration::from_secs(10)).await;
    daemon.stop().await;
    let n = verify(&sim, &store, TABLE).await.unwrap();
    assert_eq!(n, 52);
    assert_eq!(store.entry_count(), 52);
    assert_eq!(store.duplicate_puts(), 0);
    let expired = store.history(TABLE, &key(4)).await.unwrap();
    let last = expired.last().unwrap();
    assert!(last.ttl_expiry && last.actor.as_deref() == Some("dynamodb.amazonaws.com"));
    let deleted = store.history(TABLE, &key(3)).await.unwrap();
    let last = deleted.last().unwrap();
    assert!(!last.ttl_expiry && last.actor.is_none());
    assert_eq!(last.last_writer.as_deref(), Some("alice"));
    assert_eq!(last.event, "REMOVE");
}

#[tokio::test(start_paused = true)]
async fn a_split_parent_is_read_to_its_end_before_either_child() {
    let sim = sim();
    let store = MemoryStore::new();
    for id in 0..20 {
        sim.put(TABLE, item(id, 0, "alice")).unwrap();
    }
    let parent = sim.open_shards(TABLE).unwrap().remove(0);
    let (a, b) = sim.split_shard(&parent).unwrap();
    for v in 1..4 {
        for id in 0..20 {
            sim.put(TABLE, item(id, v, "bob")).unwrap();
        }
    }
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    run_for(Duration::from_secs(10)).await;
    daemon.stop().await;
    assert_eq!(verify(&sim, &store, TABLE).await.unwrap(), 80);
    let order = store.write_order();
    let last_parent = order.iter().rposition(|(s, _)| *s == parent).unwrap();
    let first_child = order.iter().position(|(s, _)| *s == a || *s == b).unwrap();
    assert!(
        last_parent < first_child,
        "a child was written before its parent ended"
    );
    let arn = sim.stream_arn(TABLE).unwrap();
    let statuses: Vec<_> = store
        .checkpoints(&arn)
        .into_iter()
        .map(|c| (c.shard_id, c.status))
        .collect();
    assert!(
        statuses.contains(&(parent.clone(), ShardStatus::Drained)),
        "{statuses:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_chain_of_rotations_is_followed_while_running() {
    let sim = sim();
    let store = MemoryStore::new();
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    let mut chain = vec![sim.open_shards(TABLE).unwrap().remove(0)];
    for round in 0..6 {
        for id in 0..5 {
            sim.put(TABLE, item(id, round, "alice")).unwrap();
        }
        run_for(Duration::from_secs(3)).await;
        let current = chain.last().unwrap().clone();
        chain.push(sim.rotate_shard(&current).unwrap());
    }
    sim.put(TABLE, item(0, 99, "carol")).unwrap();
    run_for(Duration::from_secs(10)).await;
    daemon.stop().await;
    assert_eq!(verify(&sim, &store, TABLE).await.unwrap(), 31);
    let arn = sim.stream_arn(TABLE).unwrap();
    let drained = store
        .checkpoints(&arn)
        .into_iter()
        .filter(|c| c.status == ShardStatus::Drained)
        .count();
    assert_eq!(drained, 6, "every rotated-out shard is drained");
}

#[tokio::test(start_paused = true)]
async fn a_restart_resumes_after_the_checkpoint_without_duplicates() {
    let sim = sim();
    let store = MemoryStore::new();
    for id in 0..10 {
        sim.put(TABLE, item(id, 0, "alice")).unwrap();
    }
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    run_for(Duration::from_secs(5)).await;
    daemon.stop().await;
    assert_eq!(store.entry_count(), 10);
    for id in 0..10 {
        sim.put(TABLE, item(id, 1, "bob")).unwrap();
    }
    let puts_before = store.entry_puts();
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    run_for(Duration::from_secs(5)).await;
    daemon.stop().await;
    assert_eq!(verify(&sim, &store, TABLE).await.unwrap(), 20);
    assert_eq!(
        store.entry_puts() - puts_before,
        10,
        "only the new records were read"
    );
    assert_eq!(store.duplicate_puts(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_crash_between_write_and_checkpoint_loses_nothing_and_doubles_nothing() {
    let sim = sim();
    let store = MemoryStore::new();
    let faulty = FaultStore::new(store.clone(), 1);
    let arn = sim.stream_arn(TABLE).unwrap();
    let daemon = start(sim.clone(), &faulty, settings(), &[TABLE]);
    // The shard is started (and its row recorded) before the writes come.
    run_for(Duration::from_secs(1)).await;
    // Entries are written; the checkpoint write then fails permanently, as if
    // the process died right there.
    faulty.add(StoreFault::error(
        StoreOp::SaveShard,
        StoreError::Other("injected checkpoint failure".into()),
    ));
    for v in 0..3 {
        for id in 0..10 {
            sim.put(TABLE, item(id, v, "alice")).unwrap();
        }
    }
    run_for(Duration::from_secs(2)).await;
    daemon.crash().await;
    assert_eq!(
        store.entry_count(),
        30,
        "entries were written before the crash"
    );
    assert!(
        store
            .checkpoints(&arn)
            .iter()
            .all(|c| c.sequence_no.is_none()),
        "{:?}",
        store.checkpoints(&arn)
    );
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    run_for(Duration::from_secs(5)).await;
    daemon.stop().await;
    assert_eq!(verify(&sim, &store, TABLE).await.unwrap(), 30);
    assert_eq!(
        store.duplicate_puts(),
        30,
        "every redelivered record was recognised"
    );
    assert!(store
        .checkpoints(&arn)
        .iter()
        .all(|c| c.sequence_no.is_some()));
}

#[tokio::test(start_paused = true)]
async fn failing_audit_writes_are_retried_and_hold_the_checkpoint() {
    let sim = sim();
    let store = MemoryStore::new();
    for id in 0..10 {
        sim.put(TABLE, item(id, 0, "alice")).unwrap();
    }
    let faulty = FaultStore::new(store.clone(), 1);
    faulty.add(
        StoreFault::error(
            StoreOp::PutEntry,
            StoreError::Transient("injected put failure".into()),
        )
        .when(When::FirstN(25)),
    );
    let arn = sim.stream_arn(TABLE).unwrap();
    let daemon = start(sim.clone(), &faulty, settings(), &[TABLE]);
    run_for(Duration::from_millis(300)).await;
    assert!(store.entry_count() < 10);
    assert!(
        store
            .checkpoints(&arn)
            .iter()
            .all(|c| c.sequence_no.is_none()),
        "the checkpoint moved past entries not yet written"
    );
    run_for(Duration::from_secs(30)).await;
    daemon.stop().await;
    assert_eq!(verify(&sim, &store, TABLE).await.unwrap(), 10);
    assert!(store
        .checkpoints(&arn)
        .iter()
        .all(|c| c.sequence_no.is_some()));
}

#[tokio::test(start_paused = true)]
async fn a_table_deleted_while_down_is_drained_on_restart_and_others_keep_going() {
    let sim = sim();
    sim.create_table("flags", &["pk"], Some(ViewType::NewAndOldImages))
        .unwrap();
    let store = MemoryStore::new();
    sim.put(TABLE, item(1, 0, "alice")).unwrap();
    let daemon = start(sim.clone(), &store, settings(), &[TABLE, "flags"]);
    run_for(Duration::from_secs(3)).await;
    daemon.stop().await;
    sim.put(TABLE, item(1, 1, "bob")).unwrap();
    sim.delete_table(TABLE).unwrap();
    sim.put("flags", item(2, 0, "carol")).unwrap();
    let daemon = start(sim.clone(), &store, settings(), &[TABLE, "flags"]);
    run_for(Duration::from_secs(5)).await;
    sim.put("flags", item(2, 1, "dave")).unwrap();
    run_for(Duration::from_secs(10)).await;
    daemon.stop().await;
    assert_eq!(
        verify(&sim, &store, TABLE).await.unwrap(),
        2,
        "the deleted table's last change was read"
    );
    assert_eq!(verify(&sim, &store, "flags").await.unwrap(), 2);

    // A table we never audited that does not exist is still a config error.
    let engine = ddb_audit::daemon::engine::Engine::new(
        sim.clone(),
        store.clone(),
        store.clone(),
        settings(),
    );
    let err = ddb_audit::daemon::supervisor::run(
        std::sync::Arc::new(engine),
        vec!["never-there".to_string()],
        ddb_audit::daemon::engine::Shutdown::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("never-there"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn redacted_paths_never_reach_the_store_and_a_key_path_writes_nothing() {
    use ddb_audit::redact::{Pattern, RedactionKey, Redactions, Redactor};
    use std::sync::Arc;
    let secret = Arc::new(RedactionKey::from_bytes(vec![7; 32]).unwrap());
    let redactor = |paths: &[&str]| {
        Redactor::new(
            secret.clone(),
            paths
                .iter()
                .map(|p| Pattern::parse(p, "redaction.paths").unwrap())
                .collect(),
        )
    };
    let sim = sim();
    let store = MemoryStore::new();
    for v in 0..4 {
        for id in 0..3 {
            sim.put(TABLE, item(id, v, "alice")).unwrap();
        }
    }
    let covering = redactor(&["profile.name", "flags"]);
    let mut s = settings();
    s.redactions = Redactions::new([(TABLE.to_string(), covering.clone())]);
    let daemon = start(sim.clone(), &store, s, &[TABLE]);
    run_for(Duration::from_secs(10)).await;
    daemon.stop().await;
    // Still one entry per record...
    assert_eq!(store.entry_count(), 12);
    for id in 0..3 {
        let history = store.history(TABLE, &key(id)).await.unwrap();
        let text = serde_json::to_string(&history).unwrap();
        // ...with none of the covered values ("name-N", the "beta" flag),
        assert!(
            !text.contains("name-") && !text.contains("beta") && text.contains("hmac-sha256:"),
            "{text}"
        );
        // ...and the changes, folded, give the item as the table holds it,
        // redacted.
        let mut state = None;
        for e in &history {
            state = Some(ddb_audit::diff::apply_changes(state.as_ref(), &e.changes).unwrap());
        }
        let mut want = sim.get_item(TABLE, &key(id)).unwrap();
        covering.redact_item(&mut want);
        assert_eq!(state, Some(want));
    }

    // A path on the key (not caught at start: the simulator has no
    // DescribeTable key schema) fails the shard before anything is written.
    let store = MemoryStore::new();
    let mut s = settings();
    s.redactions = Redactions::new([(TABLE.to_string(), redactor(&["pk"]))]);
    let daemon = start(sim.clone(), &store, s, &[TABLE]);
    run_for(Duration::from_secs(10)).await;
    daemon.stop().await;
    assert_eq!(store.entry_count(), 0);
    let arn = sim.stream_arn(TABLE).unwrap();
    assert!(store
        .checkpoints(&arn)
        .iter()
        .all(|c| c.sequence_no.is_none()));
}

/// The daemon as `run` composes it (observability, digests, the final
/// digest), on the simulator and the memory store instead of AWS.
#[tokio::test(start_paused = true)]
async fn the_composed_daemon_audits_every_change_and_signs_where_the_trail_ends() {
    use ddb_audit::daemon::engine::Shutdown;
    use ddb_audit::daemon::{run, Seams};
    use ddb_audit::proof::sign::{DigestSigner, Ed25519Signer};
    use ddb_audit::store::ProofStore;
    use std::sync::Arc;

    let sim = sim();
    let store = MemoryStore::new();
    let config = ddb_audit::config::Config::parse(
        "tables = [\"orders\"]\n\
         [attribution]\nactor_attribute = \"updated_by\"\n\
         [proof]\ndigest_interval_secs = 60\n",
        "test",
    )
    .expect("config");
    let key_file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/proof/testdata/ed25519-private.pem");
    let signer: Arc<dyn DigestSigner> =
        Arc::new(Ed25519Signer::from_file(&key_file).expect("test signing key"));
    let seams = Seams {
        stream: sim.clone(),
        store: store.clone(),
        audit: store.clone(),
        signer: Some(signer),
        cloudtrail: None,
    };
    let shutdown = Shutdown::new();
    let daemon = {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { run(&config, seams, shutdown).await })
    };
    for v in 0..3 {
        for id in 0..10 {
            sim.put(TABLE, item(id, v, "alice")).unwrap();
        }
    }
    run_for(Duration::from_secs(150)).await;
    shutdown.begin(Duration::from_secs(4));
    daemon
        .await
        .expect("daemon task")
        .expect("the daemon stops cleanly");

    assert_eq!(verify(&sim, &store, TABLE).await.unwrap(), 30);
    assert_eq!(store.duplicate_puts(), 0);
    let arn = sim.stream_arn(TABLE).unwrap();
    let (number, newest) = store
        .newest_digest(&arn)
        .await
        .unwrap()
        .expect("digests were written");
    // Two heartbeats in 150 s, then the final one.
    assert!(number >= 3, "only {number} digests");
    assert!(newest.signature.is_some(), "the digest is signed");
    let document: serde_json::Value = serde_json::from_str(&newest.digest).unwrap();
    assert_eq!(document["final"], serde_json::json!(true));
}

/// The findings of `verify` on the memory store that come from the item
/// chain (there are no digests here: those findings are left aside).
async fn item_chain_findings(store: &MemoryStore) -> Vec<ddb_audit::proof::verify::Finding> {
    use ddb_audit::read::verify::{verify_trail, VerifyRequest};
    let outcome = verify_trail(
        store,
        &VerifyRequest {
            tables: None,
            since: None,
            public_key: None,
            state_file: None,
            interval_secs: 60,
        },
        |_| {},
    )
    .await
    .expect("verify");
    outcome
        .findings
        .into_iter()
        .filter(|f| f.message.contains("item chain"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_item_chain_survives_a_crash_and_a_rotation_and_verify_finds_a_reordered_or_deleted_entry(
) {
    use ddb_audit::proof::verify::{Kind, Severity};
    let sim = sim();
    let store = MemoryStore::new();
    let faulty = FaultStore::new(store.clone(), 1);
    let daemon = start(sim.clone(), &faulty, settings(), &[TABLE]);
    run_for(Duration::from_secs(1)).await;
    for id in 0..10 {
        sim.put(TABLE, item(id, 0, "alice")).unwrap();
    }
    run_for(Duration::from_secs(2)).await;
    // Written, never checkpointed: the restart reads them again, with an
    // empty cache, and must write the very same bytes.
    faulty.add(StoreFault::error(
        StoreOp::SaveShard,
        StoreError::Other("injected checkpoint failure".into()),
    ));
    for v in 1..3 {
        for id in 0..10 {
            sim.put(TABLE, item(id, v, "alice")).unwrap();
        }
    }
    run_for(Duration::from_secs(2)).await;
    daemon.crash().await;
    let before_crash = store.all_entries();
    assert_eq!(before_crash.len(), 30);
    assert!(before_crash.iter().all(|e| e.item_prev.is_some()));

    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    run_for(Duration::from_secs(3)).await;
    let shard = sim.open_shards(TABLE).unwrap().remove(0);
    sim.rotate_shard(&shard).unwrap();
    for id in 0..10 {
        sim.put(TABLE, item(id, 3, "bob")).unwrap();
    }
    run_for(Duration::from_secs(5)).await;
    daemon.stop().await;
    assert_eq!(
        store.duplicate_puts(),
        20,
        "the replayed page was recognised"
    );
    let after = store.all_entries();
    assert_eq!(after.len(), 40);
    for e in &before_crash {
        assert!(after.contains(e), "replayed differently: {e:?}");
    }
    // The first entry of each item is its chain's start; after the
    // rotation, each links to its version 2 in the parent shard.
    let history = store.history(TABLE, &key(3)).await.unwrap();
    assert_eq!(history[0].item_prev, Some(None));
    assert_ne!(history[3].shard_id, history[2].shard_id);
    assert_eq!(
        history[3]
            .item_prev
            .clone()
            .flatten()
            .unwrap()
            .sequence_number,
        history[2].sequence_number
    );
    assert!(item_chain_findings(&store).await.is_empty());
    assert_eq!(verify(&sim, &store, TABLE).await.unwrap(), 40);

    // Someone with write access swaps versions 1 and 2 of item 5 in place:
    // the item chain finds them out of order.
    let five = store.history(TABLE, &key(5)).await.unwrap();
    assert!(store.tamper_swap_entries(
        TABLE,
        &key(5),
        &five[1].sequence_number,
        &five[2].sequence_number
    ));
    let found = item_chain_findings(&store).await;
    assert!(
        found.iter().any(|f| f.severity == Severity::Tamper
            && f.kind == Kind::Reordered
            && f.sequence_number.as_deref() == Some(five[1].sequence_number.as_str())),
        "{found:#?}"
    );
    assert!(store.tamper_swap_entries(
        TABLE,
        &key(5),
        &five[1].sequence_number,
        &five[2].sequence_number
    ));
    assert!(item_chain_findings(&store).await.is_empty());

    // Someone with write access removes version 2 of item 3: the entry
    // after it (across the rotation) names what is missing.
    assert!(store.tamper_delete_entry(TABLE, &key(3), &history[2].sequence_number));
    let found = item_chain_findings(&store).await;
    assert!(
        found.iter().any(|f| f.severity == Severity::Tamper
            && f.kind == Kind::Deleted
            && f.sequence_number.as_deref() == Some(history[3].sequence_number.as_str())
            && f.message.contains(&history[2].sequence_number)),
        "{found:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_trail_written_before_the_item_chain_still_verifies_and_later_changes_link_to_it() {
    use ddb_audit::proof::verify::Severity;
    let sim = sim();
    let store = MemoryStore::new();
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    for v in 0..2 {
        for id in 0..5 {
            sim.put(TABLE, item(id, v, "alice")).unwrap();
        }
    }
    run_for(Duration::from_secs(3)).await;
    daemon.stop().await;
    // As the previous version wrote them: no `item_prev` at all.
    let legacy = store.strip_item_links();
    assert_eq!(legacy, 10);
    // One note for the table's unlinked prefixes, nothing else.
    let found = item_chain_findings(&store).await;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].severity, Severity::Info);
    assert!(
        found[0].message.contains("10 entries of 5 items"),
        "{found:#?}"
    );
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    for id in 0..5 {
        sim.put(TABLE, item(id, 2, "bob")).unwrap();
    }
    run_for(Duration::from_secs(3)).await;
    daemon.stop().await;
    let history = store.history(TABLE, &key(1)).await.unwrap();
    assert_eq!(history.len(), 3);
    assert!(history[1].item_prev.is_none());
    // The first linked entry says where its chain starts: after the newest
    // unlinked one.
    assert_eq!(
        history[2]
            .item_prev
            .clone()
            .flatten()
            .unwrap()
            .sequence_number,
        history[1].sequence_number
    );
    let found = item_chain_findings(&store).await;
    assert!(
        found.iter().all(|f| f.severity != Severity::Tamper),
        "{found:#?}"
    );
    assert_eq!(verify(&sim, &store, TABLE).await.unwrap(), 15);
}

/// A table whose trail begins with the daemon (one stream, nothing lost,
/// nothing removed): an item created there has no earlier life, so its
/// first entry reads nothing. A removal, a second stream or a restart
/// after them: each item's first change asks the store again, and links
/// to the item's earlier life.
#[tokio::test(start_paused = true)]
async fn a_fresh_tables_inserts_read_nothing_until_an_item_may_have_had_an_earlier_life() {
    use ddb_audit::store::CheckpointStore;
    let sim = sim();
    let first_stream = sim.stream_arn(TABLE).unwrap();
    let store = MemoryStore::new();
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    run_for(Duration::from_secs(1)).await;
    for id in 0..10 {
        sim.put(TABLE, item(id, 0, "alice")).unwrap();
    }
    run_for(Duration::from_secs(2)).await;
    assert_eq!(store.item_predecessor_reads(), 0);
    assert!(store.fresh_items(TABLE, &first_stream).await.unwrap());

    // Removed and created again: the new life follows the old one.
    sim.delete(TABLE, &key(3)).unwrap();
    run_for(Duration::from_secs(2)).await;
    assert!(!store.fresh_items(TABLE, &first_stream).await.unwrap());
    sim.put(TABLE, item(3, 1, "bob")).unwrap();
    run_for(Duration::from_secs(2)).await;
    daemon.stop().await;
    let three = store.history(TABLE, &key(3)).await.unwrap();
    assert_eq!(three.len(), 3);
    assert_eq!(three[1].event, "REMOVE");
    assert_eq!(
        three[2]
            .item_prev
            .clone()
            .flatten()
            .unwrap()
            .sequence_number,
        three[1].sequence_number
    );

    // Restarted with an empty cache: an INSERT now asks the store.
    let reads = store.item_predecessor_reads();
    let daemon = start(sim.clone(), &store, settings(), &[TABLE]);
    run_for(Duration::from_secs(1)).await;
    sim.put(TABLE, item(20, 0, "carol")).unwrap();
    run_for(Duration::from_secs(2)).await;
    assert_eq!(store.item_predecessor_reads() - reads, 1);

    // A second stream: an item deleted while none was enabled left no
    // REMOVE, so the new stream is never fresh, and item 5's new life
    // links to its entry of the first stream.
    sim.disable_stream(TABLE).unwrap();
    sim.delete(TABLE, &key(5)).unwrap();
    let second_stream = sim.enable_stream(TABLE, ViewType::NewAndOldImages).unwrap();
    run_for(Duration::from_secs(3)).await;
    sim.put(TABLE, item(5, 1, "dave")).unwrap();
    run_for(Duration::from_secs(5)).await;
    daemon.stop().await;
    assert!(!store.fresh_items(TABLE, &second_stream).await.unwrap());
    let five = store.history(TABLE, &key(5)).await.unwrap();
    assert_eq!(five.len(), 2, "{five:#?}");
    assert_eq!(five[1].stream_arn, second_stream);
    assert_eq!(
        five[1].item_prev.clone().flatten().unwrap().sequence_number,
        five[0].sequence_number
    );
    assert!(item_chain_findings(&store).await.is_empty());
}
