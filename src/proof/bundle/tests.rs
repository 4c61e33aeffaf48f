//! Bundles built in memory, as `export --proof` builds them, then doctored
//! one way at a time: each doctoring is a tamper finding naming the entry.

use super::*;
use crate::entry::{AuditEntry, Gap};
use crate::proof::chain::ChainState;
use crate::proof::digest::{next_digest, DigestInput, ShardHead};
use crate::proof::merkle::{inclusion_proof, Hash};
use crate::proof::sign::{DigestSigner, Ed25519Signer};
use crate::proof::verify::exit_status;
use crate::value::AttrValue;
use chrono::{TimeZone, Utc};
use futures_util::FutureExt;

pub(crate) const ARN: &str =
    "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-11-23T19:00:00.000";

pub(crate) fn signer() -> Ed25519Signer {
    Ed25519Signer::from_pem(include_str!("../testdata/ed25519-private.pem"), "t").unwrap()
}

fn entry(item: &str, seq: u64, shard: &str, n: u64) -> AuditEntry {
    AuditEntry {
        table: "orders".into(),
        key: [("pk".to_string(), AttrValue::S(item.into()))].into(),
        event: if n == 0 { "INSERT" } else { "MODIFY" }.into(),
        sequence_number: seq.to_string(),
        shard_id: shard.into(),
        event_time: Some(format!("2026-11-23T19:{:02}:00Z", seq / 100 % 60)),
        actor: None,
        changes: vec![crate::entry::Change {
            path: "n".into(),
            old: (n > 0).then(|| AttrValue::N((n - 1).to_string())),
            new: Some(AttrValue::N(n.to_string())),
            added: None,
            removed: None,
        }],
        ttl_expiry: false,
        error: None,
        raw: None,
        actor_source: None,
        last_writer: None,
        principal: None,
        item_actor: None,
        correlation: None,
        snapshot_time: None,
        item_prev: None,
        stream_arn: ARN.into(),
    }
}

/// A leaf as written: the entry or gap, its hash and its `prev_hash`.
pub(crate) struct Written {
    pub entry: Option<AuditEntry>,
    pub gap: Option<Gap>,
    pub hash: Hash,
    pub prev: Option<Hash>,
}

/// A stream's trail: its leaves per shard and digests.
pub(crate) struct Trail {
    pub arn: String,
    pub shards: Vec<(String, Vec<Written>)>,
    pub digests: Vec<BundleDigest>,
}

/// Items k1 and k2 change in turn, 3 times each in shardId-1, which then
/// closes; its child shardId-2 holds 3 more changes of each: k1's history
/// crosses a shard rotation. A digest after each shard.
pub(crate) fn trail() -> Trail {
    trail_with(false)
}

/// [`trail`], with `gap`: a loss in shardId-2 after its second record.
pub(crate) fn trail_with(gap: bool) -> Trail {
    trail_in(ARN, gap, 0)
}

/// A trail of the stream `arn`: the first `legacy` entries written
/// unlinked, as a daemon that predates the item chain wrote them, the rest
/// each linked to its item's previous entry (§2a).
pub(crate) fn trail_in(arn: &str, gap: bool, legacy: usize) -> Trail {
    let s = signer();
    let mut written = 0usize;
    let mut newest: std::collections::HashMap<String, (u64, Hash)> = Default::default();
    let mut chain = ChainState::default();
    let mut shards = Vec::new();
    let mut digests: Vec<BundleDigest> = Vec::new();
    let mut heads: Vec<ShardHead> = Vec::new();
    let mut seq = 100;
    let mut version = [0u64; 2];
    for (shard, parent) in [("shardId-1", None), ("shardId-2", Some("shardId-1"))] {
        chain = ChainState::continuing(chain.last_hash);
        let mut leaves = Vec::new();
        for round in 0..6 {
            let item = round % 2;
            let name = format!("k{}", item + 1);
            let mut e = AuditEntry {
                stream_arn: arn.into(),
                ..entry(&name, seq, shard, version[item])
            };
            if written >= legacy {
                e.item_prev = Some(newest.get(&name).map(|(seq, hash)| crate::entry::ItemPrev {
                    hash: hex::encode(hash),
                    sequence_number: seq.to_string(),
                }));
            }
            written += 1;
            version[item] += 1;
            let link = chain.link_entry(&e).unwrap();
            newest.insert(name, (seq, link.hash));
            seq += 100;
            leaves.push(Written {
                entry: Some(e),
                gap: None,
                hash: link.hash,
                prev: link.prev_hash,
            });
            if gap && shard == "shardId-2" && round == 1 {
                let g = Gap {
                    after_sequence_number: Some((seq - 100).to_string()),
                    after_time: Some("2026-11-23T19:08:00Z".into()),
                    resumed_at_sequence_number: Some(seq.to_string()),
                    resumed_at_time: Some("2026-11-23T19:09:00Z".into()),
                    detected_at: "2026-11-23T20:00:30.000Z".into(),
                    ..Gap::detected("orders", arn, shard)
                };
                let link = chain.link_gap(&g).unwrap();
                leaves.push(Written {
                    entry: None,
                    gap: Some(g),
                    hash: link.hash,
                    prev: link.prev_hash,
                });
            }
        }
        heads.retain(|h| h.shard_id != shard);
        for h in heads.iter_mut() {
            h.status = "closed".into();
        }
        heads.push(ShardHead {
            shard_id: shard.into(),
            parent_shard_id: parent.map(str::to_string),
            status: "open".into(),
            size: chain.tree.size,
            root: hex::encode(chain.tree.root()),
            last_hash: chain.last_hash.map(hex::encode),
            last_sequence_number: Some((seq - 100).to_string()),
        });
        let previous = digests.last().map(|d| (d.number, &d.signed));
        let (doc, signed) = next_digest(DigestInput {
            table: "orders",
            stream_arn: arn,
            previous,
            shards: heads.clone(),
            time: Utc
                .with_ymd_and_hms(2026, 11, 23, 20, digests.len() as u32, 0)
                .unwrap(),
            is_final: false,
            interval_secs: 60,
            retention_days: None,
            signer: Some(&s),
        })
        .now_or_never()
        .unwrap()
        .unwrap();
        digests.push(BundleDigest {
            stream_arn: arn.into(),
            number: doc.number,
            signed,
        });
        shards.push((shard.to_string(), leaves));
    }
    Trail {
        arn: arn.to_string(),
        shards,
        digests,
    }
}

impl Trail {
    /// The bundle `export --proof` makes of `item`, each entry proven by the
    /// first digest that covers it.
    pub(crate) fn bundle(&self, item: &str) -> Bundle {
        let mut entries = Vec::new();
        let mut gaps = Vec::new();
        let mut digests: Vec<BundleDigest> = Vec::new();
        for (shard, leaves) in &self.shards {
            let hashes: Vec<Hash> = leaves.iter().map(|l| l.hash).collect();
            for (index, w) in leaves.iter().enumerate() {
                let mine = w
                    .entry
                    .as_ref()
                    .is_some_and(|e| e.key["pk"] == AttrValue::S(item.into()));
                if !mine && w.gap.is_none() {
                    continue;
                }
                let (d, size) = self
                    .digests
                    .iter()
                    .find_map(|d| {
                        let doc = d.signed.parse().unwrap();
                        let head = doc.shards.into_iter().find(|h| &h.shard_id == shard)?;
                        (head.size as usize > index).then_some((d, head.size as usize))
                    })
                    .unwrap();
                if !digests.iter().any(|x| x.number == d.number) {
                    digests.push(d.clone());
                }
                let proof = LeafProof {
                    prev_hash: w.prev.map(hex::encode),
                    hash: hex::encode(w.hash),
                    leaf_index: index as u64,
                    tree_size: size as u64,
                    digest_number: d.number,
                    inclusion_proof: inclusion_proof(&hashes[..size], index)
                        .unwrap()
                        .iter()
                        .map(hex::encode)
                        .collect(),
                };
                if let Some(g) = &w.gap {
                    gaps.push(BundleGap {
                        stream_arn: self.arn.clone(),
                        shard_id: shard.clone(),
                        gap: serde_json::to_value(g).unwrap(),
                        proof,
                    });
                    continue;
                }
                entries.push(BundleEntry {
                    stream_arn: self.arn.clone(),
                    shard_id: shard.clone(),
                    entry: serde_json::to_value(w.entry.as_ref().unwrap()).unwrap(),
                    proof,
                });
            }
        }
        Bundle {
            kind: BUNDLE_TYPE.into(),
            table: "orders".into(),
            key: serde_json::json!({"pk": {"S": item}}),
            created_at: "2026-11-23T21:00:00Z".into(),
            public_key_fingerprint: Some(signer().fingerprint().to_string()),
            span: BundleSpan::of(&entries),
            entries,
            digests,
            gaps,
        }
    }
}

pub(crate) fn check(bundle: &Bundle) -> BundleVerdict {
    check_bundle(bundle, Some(&signer().public_key()))
}

/// Edits a bundle's entries and rewrites its span to match them, as a
/// forger covering their tracks would.
fn forge_entries(b: &mut Bundle, edit: impl FnOnce(&mut Vec<BundleEntry>)) {
    edit(&mut b.entries);
    b.span = BundleSpan::of(&b.entries);
}

/// The verdict is tampered, with a finding of `kind` whose message holds
/// every needle.
fn assert_tampered(bundle: &Bundle, kind: Kind, needles: &[&str]) -> BundleVerdict {
    let v = check(bundle);
    assert_eq!(exit_status(&v.findings), 1, "{:#?}", v.findings);
    assert!(
        v.findings.iter().any(|f| f.kind == kind
            && f.severity == Severity::Tamper
            && needles.iter().all(|n| f.message.contains(n))),
        "no {kind:?} finding naming {needles:?}: {:#?}",
        v.findings
    );
    v
}

#[test]
fn an_intact_bundle_proves_its_span_across_a_rotation() {
    let t = trail();
    let b = t.bundle("k1");
    assert_eq!(b.entries.len(), 6);
    assert_eq!(b.entries[2].shard_id, "shardId-1");
    assert_eq!(b.entries[3].shard_id, "shardId-2");
    let v = check(&b);
    assert_eq!(exit_status(&v.findings), 0, "{:#?}", v.findings);
    let span = v.span.expect("a proven span");
    assert_eq!(span.key, "pk=S:k1");
    assert_eq!(span.entries, 6);
    assert_eq!(span.first_sequence_number.as_deref(), Some("100"));
    assert_eq!(span.last_sequence_number.as_deref(), Some("1100"));
}

#[test]
fn another_items_entry_is_foreign() {
    let t = trail();
    let mut b = t.bundle("k1");
    let other = t.bundle("k2");
    // k2's genuine entry at sequence 200, with its own proof, in k1's place.
    forge_entries(&mut b, |e| e.insert(1, other.entries[0].clone()));
    assert_tampered(
        &b,
        Kind::Foreign,
        &["bundle entry 2", "sequence 200", "another item"],
    );
}

#[test]
fn an_entry_of_another_table_is_foreign() {
    let t = trail();
    let mut b = t.bundle("k1");
    b.table = "payments".into();
    let v = assert_tampered(&b, Kind::Foreign, &["bundle entry 1", "not of payments"]);
    // The digests are of orders too.
    assert!(v
        .findings
        .iter()
        .any(|f| f.kind == Kind::Foreign && f.digest.is_some()));
}

#[test]
fn a_duplicate_is_found() {
    let t = trail();
    let mut b = t.bundle("k1");
    forge_entries(&mut b, |e| e.insert(2, e[1].clone()));
    assert_tampered(&b, Kind::Duplicated, &["bundle entry 3", "bundle entry 2"]);
}

#[test]
fn swapped_entries_are_reordered_within_a_shard_and_across_the_rotation() {
    let t = trail();
    for ((i, j), needles) in [
        ((0, 1), ["bundle entry 2", "sequence 100"]),
        ((2, 3), ["bundle entry 4", "sequence 500"]),
    ] {
        let mut b = t.bundle("k1");
        forge_entries(&mut b, |e| e.swap(i, j));
        assert_tampered(&b, Kind::Reordered, &needles);
    }
}

#[test]
fn an_altered_header_is_found() {
    let t = trail();
    // The key: every entry is then another item's.
    let mut b = t.bundle("k1");
    b.key = serde_json::json!({"pk": {"S": "k9"}});
    assert_tampered(&b, Kind::Foreign, &["bundle entry 6"]);
    // The span.
    let mut b = t.bundle("k1");
    b.span.as_mut().unwrap().last.event_time = Some("2027-01-01T00:00:00Z".into());
    assert_tampered(&b, Kind::BundleHeader, &["header says"]);
    let mut b = t.bundle("k1");
    b.span.as_mut().unwrap().entries = 9;
    assert_tampered(&b, Kind::BundleHeader, &["9 entries"]);
    // The key fingerprint.
    let mut b = t.bundle("k1");
    b.public_key_fingerprint = Some("sha256:00".into());
    assert_tampered(&b, Kind::BundleHeader, &["sha256:00"]);
}

#[test]
fn a_truncated_bundle_is_found_with_or_without_its_digest() {
    let t = trail();
    // The last entry cut off, its digest kept.
    let mut b = t.bundle("k1");
    b.entries.pop();
    assert_tampered(&b, Kind::BundleHeader, &["6 entries", "holds 5 entries"]);
    // The entries of the child shard cut off, with the digest only they need.
    let mut b = t.bundle("k1");
    b.entries.truncate(3);
    b.digests.retain(|d| d.number == 1);
    assert_tampered(&b, Kind::BundleHeader, &["holds 3 entries"]);
    // A truncated bundle whose header is rewritten to match is an honest
    // earlier export's twin: it proves the shorter span, and says so.
    b.span = BundleSpan::of(&b.entries);
    let v = check(&b);
    assert_eq!(exit_status(&v.findings), 0, "{:#?}", v.findings);
    assert_eq!(v.span.unwrap().entries, 3);
}

#[test]
fn a_bad_signature_names_its_stream() {
    let t = trail();
    let mut b = t.bundle("k1");
    b.digests[0].signed.flip_signature_bits(3, 1);
    let v = assert_tampered(&b, Kind::BadSignature, &["digest 1"]);
    let f = v
        .findings
        .iter()
        .find(|f| f.kind == Kind::BadSignature)
        .unwrap();
    assert_eq!(f.stream_arn, ARN);
    assert_eq!(f.digest, Some(1));
}

#[test]
fn a_missing_digest_and_an_altered_entry_name_the_entry() {
    let t = trail();
    let mut b = t.bundle("k1");
    b.digests.retain(|d| d.number != 2);
    assert_tampered(&b, Kind::DigestMissing, &["bundle entry 4", "digest 2"]);
    let mut b = t.bundle("k1");
    b.entries[4].entry["changes"][0]["new"] = serde_json::json!({"N": "99"});
    assert_tampered(&b, Kind::Altered, &["bundle entry 5", "altered"]);
}

#[test]
fn a_bundle_without_a_span_is_checked_from_its_entries() {
    let t = trail();
    let mut b = t.bundle("k1");
    b.span = None;
    let text = serde_json::to_string(&b).unwrap();
    assert!(!text.contains("\"span\""));
    let v = check(&serde_json::from_str(&text).unwrap());
    assert_eq!(exit_status(&v.findings), 0, "{:#?}", v.findings);
    assert!(v
        .findings
        .iter()
        .any(|f| f.kind == Kind::BundleHeader && f.severity == Severity::Info));
}

#[test]
fn the_span_and_the_gaps_in_it_are_stated() {
    let t = trail_with(true);
    let b = t.bundle("k1");
    assert_eq!(b.gaps.len(), 1);
    let v = check(&b);
    assert_eq!(exit_status(&v.findings), 0, "{:#?}", v.findings);
    let span = v.span.unwrap().statement();
    assert!(
        span.contains("orders pk=S:k1 from entry 1, 2026-11-23T19:01:00Z, to entry 6"),
        "{span}"
    );
    assert!(span.contains("no later entry is proven absent"), "{span}");
    assert_eq!(v.gaps.len(), 1);
    let gap = v.gaps[0].statement();
    assert!(
        gap.contains("shard shardId-2")
            && gap.contains("after sequence 800")
            && gap.contains("resumed at sequence 900"),
        "{gap}"
    );
    // A gap altered, or of another table, is found and not stated.
    let mut b = t.bundle("k1");
    b.gaps[0].gap["resumed_at_sequence_number"] = serde_json::json!("1000");
    let v = assert_tampered(&b, Kind::Gap, &["bundle gap 1", "altered"]);
    assert!(v.gaps.is_empty());
    let mut b = t.bundle("k1");
    b.gaps[0].gap["table"] = serde_json::json!("payments");
    assert_tampered(&b, Kind::Gap, &["not of orders"]);
}

/// A later stream of the same table (the stream disabled and enabled
/// again): its label sorts after [`ARN`]'s.
const LATER_ARN: &str =
    "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-11-24T08:00:00.000";

/// A genuine, signed entry of the item from another history (here: a
/// later stream whose trail began afresh), appended with its digest.
fn insert_foreign_position(b: &mut Bundle) {
    let later = trail_in(LATER_ARN, false, 0).bundle("k1");
    forge_entries(b, |e| e.push(later.entries[0].clone()));
    b.digests.push(
        later
            .digests
            .iter()
            .find(|d| d.number == later.entries[0].proof.digest_number)
            .unwrap()
            .clone(),
    );
}

#[test]
fn a_deleted_entry_is_found_through_the_item_chain_across_the_rotation() {
    let t = trail();
    // The last entry of the parent shard: the child's first follows it.
    let mut b = t.bundle("k1");
    forge_entries(&mut b, |e| {
        e.remove(2);
    });
    assert_tampered(
        &b,
        Kind::Deleted,
        &[
            "bundle entry 3",
            "sequence 700",
            "entry at sequence 500",
            "deleted",
        ],
    );
    // From the middle of a shard.
    let mut b = t.bundle("k1");
    forge_entries(&mut b, |e| {
        e.remove(4);
    });
    assert_tampered(&b, Kind::Deleted, &["bundle entry 5", "sequence 900"]);
    // The first: no retention policy could have expired it.
    let mut b = t.bundle("k1");
    forge_entries(&mut b, |e| {
        e.remove(0);
    });
    assert_tampered(&b, Kind::Deleted, &["bundle entry 1", "sequence 100"]);
}

#[test]
fn a_genuine_entry_from_another_history_is_inserted() {
    let t = trail();
    let mut b = t.bundle("k1");
    insert_foreign_position(&mut b);
    assert_tampered(&b, Kind::Inserted, &["bundle entry 7", "first entry"]);
}

#[test]
fn an_intact_bundle_proves_that_it_misses_no_entry() {
    let v = check(&trail().bundle("k1"));
    let span = v.span.unwrap();
    assert_eq!(span.chain.chained_from, Some(1));
    assert_eq!(span.chain.unlinked_prefix, 0);
    let text = span.statement();
    assert!(
        text.contains("every stream entry of the item between them, none missing"),
        "{text}"
    );
}

#[test]
fn entries_written_before_the_item_chain_are_a_note_never_a_failure() {
    // All of them unlinked: a trail written by the previous version.
    let b = trail_in(ARN, true, usize::MAX).bundle("k1");
    let v = check(&b);
    assert_eq!(exit_status(&v.findings), 0, "{:#?}", v.findings);
    assert!(v
        .findings
        .iter()
        .any(|f| f.kind == Kind::Unchained && f.severity == Severity::Info));
    let span = v.span.unwrap();
    assert_eq!(span.chain.chained_from, None);
    assert!(span.statement().contains("is not proven"));
    // The daemon upgraded after four changes (two of k1): k1's third entry
    // is its first linked one and says where the chain starts.
    let b = trail_in(ARN, false, 4).bundle("k1");
    assert!(b.entries[1].entry.get("item_prev").is_none());
    assert_eq!(
        b.entries[2].entry["item_prev"]["hash"].as_str(),
        Some(b.entries[1].proof.hash.as_str())
    );
    let v = check(&b);
    assert_eq!(exit_status(&v.findings), 0, "{:#?}", v.findings);
    let span = v.span.unwrap();
    assert_eq!(span.chain.chained_from, Some(3));
    assert_eq!(span.chain.unlinked_prefix, 2);
    assert!(
        span.statement().contains("from entry 3 to entry 6"),
        "{}",
        span.statement()
    );
    // Deleting within the linked part is still found; within the prefix,
    // only the span's header can tell (the prefix proves no completeness).
    let mut d = b.clone();
    forge_entries(&mut d, |e| {
        e.remove(3);
    });
    assert_tampered(&d, Kind::Deleted, &["bundle entry 4"]);
    let mut d = b.clone();
    forge_entries(&mut d, |e| {
        e.remove(0);
    });
    assert_eq!(exit_status(&check(&d).findings), 0);
}

/// The published bundle vectors (`testdata/bundles.json`): an intact bundle
/// and one of each doctoring, with the verdict a verifier must reach.
/// `DDB_AUDIT_WRITE_VECTORS=1 cargo test --lib bundle_vectors` rewrites the
/// file; otherwise it must be what this code makes and concludes.
#[test]
fn bundle_vectors() {
    let t = trail_with(true);
    let other = t.bundle("k2");
    let mut cases: Vec<(&str, Bundle)> = vec![
        ("intact", t.bundle("k1")),
        (
            "intact-unlinked-prefix",
            trail_in(ARN, true, 4).bundle("k1"),
        ),
    ];
    let mut doctor = |name: &'static str, change: &dyn Fn(&mut Bundle)| {
        let mut b = t.bundle("k1");
        change(&mut b);
        cases.push((name, b));
    };
    doctor("foreign-entry", &|b| {
        forge_entries(b, |e| e.insert(1, other.entries[0].clone()))
    });
    doctor("duplicate", &|b| {
        forge_entries(b, |e| e.insert(2, e[1].clone()))
    });
    doctor("swapped", &|b| forge_entries(b, |e| e.swap(2, 3)));
    doctor("altered-entry", &|b| {
        b.entries[1].entry["changes"][0]["new"] = serde_json::json!({"N": "99"});
    });
    doctor("altered-header-key", &|b| {
        b.key = serde_json::json!({"pk": {"S": "k2"}});
    });
    doctor("altered-header-span", &|b| {
        b.span.as_mut().unwrap().last.event_time = Some("2027-01-01T00:00:00Z".into());
    });
    doctor("truncated", &|b| {
        b.entries.pop();
    });
    doctor("truncated-with-digest", &|b| {
        b.entries.truncate(3);
        b.digests.retain(|d| d.number == 1);
        b.gaps.clear();
    });
    doctor("digest-missing", &|b| {
        b.digests.retain(|d| d.number != 2);
    });
    doctor("deleted-across-rotation", &|b| {
        forge_entries(b, |e| {
            e.remove(2);
        })
    });
    doctor("deleted-first", &|b| {
        forge_entries(b, |e| {
            e.remove(0);
        })
    });
    doctor("inserted-from-another-history", &|b| {
        insert_foreign_position(b)
    });
    doctor("altered-gap", &|b| {
        b.gaps[0].gap["after_sequence_number"] = serde_json::json!("700");
    });
    let vectors: Vec<serde_json::Value> = cases
        .iter()
        .map(|(name, b)| {
            let v = check(b);
            let mut kinds: Vec<String> = v
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Tamper)
                .map(|f| {
                    serde_json::to_value(f.kind)
                        .unwrap()
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect();
            kinds.sort();
            kinds.dedup();
            serde_json::json!({
                "name": name,
                "expected": {"exit_status": exit_status(&v.findings), "tamper_kinds": kinds},
                "bundle": b,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "about": "verify-bundle vectors (docs/proof-format.md section 7): check each bundle \
                  with public_key; a verifier must reach exit_status, and report at least \
                  one finding of each of tamper_kinds",
        "public_key": include_str!("../testdata/ed25519-public.pem"),
        "cases": vectors,
    });
    let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/proof/testdata/bundles.json"
    );
    if std::env::var_os("DDB_AUDIT_WRITE_VECTORS").is_some() {
        std::fs::write(path, &text).unwrap();
    }
    let stored = std::fs::read_to_string(path).expect("testdata/bundles.json");
    assert_eq!(
        stored, text,
        "the bundle vectors changed: rewrite them on purpose"
    );
    // Every doctoring is tampering; the intact bundle is intact.
    for v in &doc["cases"].as_array().unwrap()[..] {
        let intact = v["name"].as_str().unwrap().starts_with("intact");
        assert_eq!(
            v["expected"]["exit_status"],
            if intact { 0 } else { 1 },
            "{}",
            v["name"]
        );
    }
}

/// An open gap of a bundle shows the right bracket of the bundle's gap that
/// closes it; without one, it says the bracket is open.
#[test]
fn an_open_gap_shows_where_the_bundles_closing_gap_says_reading_resumed() {
    let proven = |shard: &str, resumed: Option<&str>, closes: Vec<GapRef>| ProvenGap {
        stream_arn: ARN.into(),
        shard_id: shard.into(),
        after_sequence_number: Some("800".into()),
        after_time: None,
        resumed_at_sequence_number: resumed.map(str::to_string),
        resumed_at_time: None,
        digest_number: 2,
        closes,
        closed_by: None,
    };
    let open = proven("shardId-1", None, Vec::new());
    let named = GapRef {
        shard_id: "shardId-1".into(),
        after_sequence_number: Some("800".into()),
    };
    let mut alone = vec![open.clone()];
    bracket_open_gaps(&mut alone);
    assert_eq!(alone[0].closed_by, None);
    assert!(
        alone[0].statement().contains("its end is open"),
        "{}",
        alone[0].statement()
    );
    let mut both = vec![open, proven("shardId-3", Some("900"), vec![named])];
    bracket_open_gaps(&mut both);
    let by = both[0].closed_by.as_ref().expect("closed");
    assert_eq!(
        (
            by.shard_id.as_str(),
            by.resumed_at_sequence_number.as_deref()
        ),
        ("shardId-3", Some("900"))
    );
    assert!(
        both[0]
            .statement()
            .contains("reading resumed at sequence 900 in shard shardId-3"),
        "{}",
        both[0].statement()
    );
    assert!(both[1].statement().contains("it closes 1 open gap(s)"));
}
