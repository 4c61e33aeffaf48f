use super::*;
use crate::entry::AuditEntry;
use crate::proof::chain::ChainState;
use crate::proof::digest::{next_digest, DigestInput};
use crate::proof::sign::Ed25519Signer;
use crate::store::ShardCheckpoint;
use crate::value::AttrValue;
use chrono::{TimeZone, Utc};
use futures_util::FutureExt;

const ARN: &str = "arn:aws:dynamodb:us-east-1:1:table/orders/stream/L";

fn signer() -> Ed25519Signer {
    Ed25519Signer::from_pem(include_str!("../testdata/ed25519-private.pem"), "t").unwrap()
}

fn entry(seq: u64, value: &str) -> AuditEntry {
    AuditEntry {
        actor: None,
        changes: vec![crate::entry::Change {
            path: "v".into(),
            old: None,
            new: Some(AttrValue::S(value.into())),
            added: None,
            removed: None,
        }],
        ..AuditEntry::fixture(
            "orders",
            [("pk".to_string(), AttrValue::S(format!("u{}", seq % 3)))].into(),
            &seq.to_string(),
        )
    }
}

/// A daemon's view of a stream: `n` entries on one shard, a digest
/// after every `every` entries, a final one at the end.
fn trail(n: u64, every: u64) -> StreamEvidence {
    trail_with(n, every, None)
}

fn trail_with(n: u64, every: u64, retention_days: Option<u64>) -> StreamEvidence {
    let s = signer();
    let mut chain = ChainState::default();
    let mut ev = StreamEvidence {
        table: "orders".into(),
        stream_arn: ARN.into(),
        ..Default::default()
    };
    let mut prev: Option<(u64, crate::proof::digest::SignedDigest)> = None;
    let cp = |seq: Option<u64>| ShardCheckpoint {
        sequence_no: seq.map(|s| s.to_string()),
        ..ShardCheckpoint::fresh("orders", ARN, "shardId-1", None)
    };
    for i in 1..=n {
        let e = entry(i * 100, &format!("v{i}"));
        let link = chain.link_entry(&e).unwrap();
        ev.leaves.push(leaf_of(&e, link.prev_hash, link.hash));
        if i % every == 0 || i == n {
            let (_, sealed) = next_digest(DigestInput {
                table: "orders",
                stream_arn: ARN,
                previous: prev.as_ref().map(|(n, d)| (*n, d)),
                shards: vec![cp(Some(i * 100)).digest_head(&chain)],
                time: Utc
                    .with_ymd_and_hms(2026, 11, 23, 19, 0, i as u32 % 60)
                    .unwrap(),
                is_final: i == n,
                interval_secs: 60,
                retention_days,
                signer: Some(&s),
            })
            .now_or_never()
            .unwrap()
            .unwrap();
            let number = prev.as_ref().map(|(n, _)| n + 1).unwrap_or(1);
            ev.digests.push(FoundDigest {
                number,
                signed: sealed.clone(),
            });
            ev.newest_digest = Some((number, sealed.hash.clone()));
            prev = Some((number, sealed));
        }
    }
    ev.checkpoints.push(CheckpointEvidence {
        shard_id: "shardId-1".into(),
        parent_shard_id: None,
        chain: Some(chain),
        sequence_no: Some((n * 100).to_string()),
    });
    ev
}

fn leaf_of(e: &AuditEntry, prev: Option<Hash>, hash: Hash) -> Leaf {
    let stored: serde_json::Value = serde_json::to_value(e).unwrap();
    Leaf {
        is_gap: false,
        closes: Vec::new(),
        shard_id: e.shard_id.clone(),
        sequence_number: e.sequence_number.clone(),
        key: Some(serde_json::to_string(&e.key).unwrap()),
        stored_hash: Some(hash),
        prev_hash: prev,
        content_hash: crate::proof::chain::document_hash(&crate::proof::chain::entry_document(
            ARN,
            &stored,
            prev.as_ref(),
        ))
        .ok(),
        expires: false,
        rejected: false,
    }
}

fn run(ev: &StreamEvidence) -> StreamReport {
    let key = signer().public_key();
    verify_stream(
        ev,
        &VerifyOptions {
            public_key: Some(&key),
            now: Utc.with_ymd_and_hms(2026, 11, 23, 19, 1, 0).unwrap(),
            interval_secs: 60,
            remembered: None,
        },
    )
}

fn tampers(report: &StreamReport) -> Vec<(Kind, Option<String>, Option<u64>)> {
    report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Tamper)
        .map(|f| (f.kind, f.sequence_number.clone(), f.digest))
        .collect()
}

/// A fresh deployment, before its first digest: nothing to check the
/// entries against yet, and nothing that points at tampering.
#[test]
fn a_stream_never_digested_cannot_be_checked_yet_and_is_no_tampering() {
    let mut ev = trail(5, 100);
    ev.digests.clear();
    ev.newest_digest = None;
    let report = run(&ev);
    assert_eq!(tampers(&report), vec![]);
    assert_eq!(exit_status(&report.findings), 2, "{:#?}", report.findings);
    // With the stream row saying digests were written, their absence is.
    let mut ev = trail(5, 100);
    ev.digests.clear();
    assert_eq!(exit_status(&run(&ev).findings), 1);
}

/// A shard that opened after the newest digest (a rotation a minute
/// ago) is covered by the next one: no finding above Info.
#[test]
fn a_shard_newer_than_a_recent_digest_is_no_tampering() {
    let mut ev = trail(10, 3);
    let parent_last = ev.checkpoints[0].chain.as_ref().and_then(|c| c.last_hash);
    let mut chain = ChainState::continuing(parent_last);
    for seq in [2_000u64, 2_100] {
        let mut e = entry(seq, "child");
        e.shard_id = "shardId-2".into();
        let link = chain.link_entry(&e).unwrap();
        ev.leaves.push(leaf_of(&e, link.prev_hash, link.hash));
    }
    ev.checkpoints.push(CheckpointEvidence {
        shard_id: "shardId-2".into(),
        parent_shard_id: Some("shardId-1".into()),
        chain: Some(chain),
        sequence_no: Some("2100".into()),
    });
    let report = run(&ev);
    assert_eq!(exit_status(&report.findings), 0, "{:#?}", report.findings);
    assert!(report
        .findings
        .iter()
        .any(|f| f.kind == Kind::Uncovered && f.shard_id.as_deref() == Some("shardId-2")));
}

#[test]
fn an_intact_trail_has_no_findings() {
    let report = run(&trail(10, 3));
    assert_eq!(exit_status(&report.findings), 0, "{:#?}", report.findings);
    assert_eq!(report.newest_intact.as_ref().map(|d| d.number), Some(4));
}

#[test]
fn an_altered_value_names_the_entry() {
    let mut ev = trail(10, 3);
    let e = entry(500, "forged");
    let prev = ev.leaves[4].prev_hash;
    ev.leaves[4].content_hash = leaf_of(&e, prev, [0; 32]).content_hash;
    let t = tampers(&run(&ev));
    assert_eq!(t, vec![(Kind::Altered, Some("500".into()), None)]);
}

#[test]
fn an_altered_entry_with_its_hash_recomputed_breaks_the_next_link() {
    let mut ev = trail(10, 3);
    let e = entry(500, "forged");
    let prev = ev.leaves[4].prev_hash;
    let h = crate::proof::chain::hash_entry(&e, prev.as_ref()).unwrap();
    ev.leaves[4] = leaf_of(&e, prev, h);
    let t = tampers(&run(&ev));
    assert!(
        t.contains(&(Kind::Deleted, Some("600".into()), None)),
        "{t:?}"
    );
    assert!(
        t.iter()
            .any(|(k, _, d)| *k == Kind::Altered && *d == Some(2)),
        "{t:?}"
    );
}

#[test]
fn a_deleted_middle_entry_is_named_by_its_neighbour() {
    let mut ev = trail(10, 3);
    ev.leaves.remove(4);
    let report = run(&ev);
    let t = tampers(&report);
    assert!(
        t.contains(&(Kind::Deleted, Some("600".into()), None)),
        "{t:?}"
    );
    let f = report
        .findings
        .iter()
        .find(|f| f.kind == Kind::Deleted)
        .unwrap();
    assert!(f.message.contains("after sequence 400"), "{}", f.message);
}

#[test]
fn a_forged_copy_under_a_new_sequence_number_is_inserted() {
    let mut ev = trail(10, 3);
    let mut copy = ev.leaves[4].clone();
    copy.sequence_number = "550".into();
    ev.leaves.push(copy);
    let t = tampers(&run(&ev));
    assert!(
        t.contains(&(Kind::Inserted, Some("550".into()), None)),
        "{t:?}"
    );
    assert!(
        !t.iter().any(|(_, s, _)| s.as_deref() == Some("500")),
        "{t:?}"
    );
}

/// Two entries' places swapped (their sequence numbers exchanged, the
/// content left as it hashes): the chain reaches one out of order.
#[test]
fn swapped_entries_are_reordered() {
    let mut ev = trail(10, 3);
    let (a, b) = (
        ev.leaves[3].sequence_number.clone(),
        ev.leaves[6].sequence_number.clone(),
    );
    ev.leaves[3].sequence_number = b;
    ev.leaves[6].sequence_number = a;
    let t = tampers(&run(&ev));
    assert!(t.iter().any(|(k, _, _)| *k == Kind::Reordered), "{t:?}");
    assert_eq!(exit_status(&run(&ev).findings), 1);
}

#[test]
fn tail_truncation_is_found_even_without_the_digests() {
    let mut ev = trail(10, 3);
    ev.leaves.truncate(7);
    assert!(tampers(&run(&ev))
        .iter()
        .any(|(k, _, _)| *k == Kind::Truncated));
    // The newest digests deleted too: the checkpoint and the streams
    // table's pointer still tell.
    ev.digests.truncate(2);
    let t = tampers(&run(&ev));
    assert!(t.contains(&(Kind::DigestMissing, None, Some(3))), "{t:?}");
    assert!(t.contains(&(Kind::DigestMissing, None, Some(4))), "{t:?}");
    assert!(t.iter().any(|(k, _, _)| *k == Kind::Truncated), "{t:?}");
}

#[test]
fn each_deleted_digest_is_named() {
    let mut ev = trail(12, 2);
    ev.digests.retain(|d| d.number != 2 && d.number != 3);
    let t = tampers(&run(&ev));
    assert!(t.contains(&(Kind::DigestMissing, None, Some(2))), "{t:?}");
    assert!(t.contains(&(Kind::DigestMissing, None, Some(3))), "{t:?}");
    let mut ev = trail(12, 2);
    ev.digests.pop();
    let t = tampers(&run(&ev));
    assert!(t.contains(&(Kind::DigestMissing, None, Some(6))), "{t:?}");
}

#[test]
fn a_flipped_signature_bit_is_a_bad_signature() {
    let mut ev = trail(10, 3);
    ev.digests[1].signed.flip_signature_bits(7, 0x10);
    let t = tampers(&run(&ev));
    assert!(t.contains(&(Kind::BadSignature, None, Some(2))), "{t:?}");
}

#[test]
fn a_rollback_below_a_remembered_digest_is_found() {
    let full = trail(10, 3);
    let remembered = run(&full).newest_intact.unwrap();
    // An older copy of everything, pointer and checkpoints included.
    let old = trail(7, 3);
    let key = signer().public_key();
    let report = verify_stream(
        &old,
        &VerifyOptions {
            public_key: Some(&key),
            now: Utc.with_ymd_and_hms(2026, 11, 23, 19, 1, 0).unwrap(),
            interval_secs: 60,
            remembered: Some(&remembered),
        },
    );
    let t = tampers(&report);
    assert!(t.contains(&(Kind::RolledBack, None, Some(4))), "{t:?}");
}

fn run_at(ev: &StreamEvidence, now: chrono::DateTime<Utc>) -> StreamReport {
    let key = signer().public_key();
    verify_stream(
        ev,
        &VerifyOptions {
            public_key: Some(&key),
            now,
            interval_secs: 60,
            remembered: None,
        },
    )
}

#[test]
fn entries_expired_by_retention_are_policy_not_tampering() {
    let mut ev = trail_with(10, 3, Some(1));
    // TTL took the oldest three (all covered by digest 1).
    ev.leaves.drain(..3);
    let later = Utc.with_ymd_and_hms(2026, 11, 25, 19, 0, 0).unwrap();
    let report = run_at(&ev, later);
    assert_eq!(exit_status(&report.findings), 0, "{:#?}", report.findings);
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.kind == Kind::Expired && f.sequence_number.as_deref() == Some("400")),
        "{:#?}",
        report.findings
    );
    // The same hole before the policy allows it is a deletion.
    let soon = Utc.with_ymd_and_hms(2026, 11, 23, 20, 0, 0).unwrap();
    let t = tampers(&run_at(&ev, soon));
    assert!(
        t.contains(&(Kind::Deleted, Some("400".into()), None)),
        "{t:?}"
    );
    // And a hole in the young part of the trail is a deletion whatever
    // the policy: entries 7 and 8 are newer than any expired digest.
    let mut ev = trail_with(10, 3, Some(1));
    ev.leaves.drain(..3);
    ev.leaves.retain(|l| l.sequence_number != "700");
    let t = tampers(&run_at(&ev, later));
    assert!(
        t.contains(&(Kind::Deleted, Some("800".into()), None)),
        "{t:?}"
    );
}

#[test]
fn without_a_key_signed_digests_cannot_be_checked() {
    let ev = trail(4, 2);
    let report = verify_stream(
        &ev,
        &VerifyOptions {
            public_key: None,
            now: Utc.with_ymd_and_hms(2026, 11, 23, 19, 1, 0).unwrap(),
            interval_secs: 60,
            remembered: None,
        },
    );
    assert_eq!(exit_status(&report.findings), 2, "{:#?}", report.findings);
}

#[test]
fn a_closing_gap_must_name_gaps_the_trail_holds() {
    let gap = |shard: &str, after: &str, closes: Vec<GapRef>| Leaf {
        is_gap: true,
        closes,
        shard_id: shard.into(),
        sequence_number: after.into(),
        key: None,
        stored_hash: None,
        prev_hash: None,
        content_hash: None,
        expires: false,
        rejected: false,
    };
    let named = |shard: &str, after: Option<&str>| GapRef {
        shard_id: shard.into(),
        after_sequence_number: after.map(str::to_string),
    };
    let ev = StreamEvidence {
        table: "orders".into(),
        stream_arn: ARN.into(),
        leaves: vec![
            // Open: nothing after it was readable in shardId-1; its child's
            // first record closes it, and an unseen parent's gap (after
            // nothing) of the child too.
            gap("shardId-1", "500", Vec::new()),
            gap("shardId-2", "", Vec::new()),
            gap(
                "shardId-2",
                "",
                vec![named("shardId-1", Some("500")), named("shardId-2", None)],
            ),
        ],
        ..Default::default()
    };
    let findings = |ev: &StreamEvidence| {
        let mut r = Reporter {
            ev,
            out: Vec::new(),
        };
        check_brackets(ev, &mut r);
        r.out
    };
    assert!(findings(&ev).is_empty());

    // The left bracket deleted: the right one says so, naming it.
    let mut doctored = ev.clone();
    doctored.leaves.remove(0);
    let out = findings(&doctored);
    assert_eq!(out.len(), 1, "{out:#?}");
    let f = &out[0];
    assert_eq!((f.severity, f.kind), (Severity::Tamper, Kind::Deleted));
    assert_eq!(f.shard_id.as_deref(), Some("shardId-2"));
    assert!(
        f.message.contains("shardId-1 after sequence 500"),
        "{}",
        f.message
    );

    // Nor does the closing gap stand in for the open one it begins with.
    let mut doctored = ev.clone();
    doctored.leaves.remove(1);
    let mut r = Reporter {
        ev: &doctored,
        out: Vec::new(),
    };
    check_brackets(&doctored, &mut r);
    assert_eq!(r.out.len(), 1, "{:#?}", r.out);
    assert!(
        r.out[0].message.contains("shardId-2 after sequence (none)"),
        "{}",
        r.out[0].message
    );
}
