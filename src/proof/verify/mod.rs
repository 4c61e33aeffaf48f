//! The verifier's logic, pure: given what the store holds for one stream
//! (entry and gap fingerprints, digests, checkpoints, the stream row's
//! pointer to its newest digest) it reports every finding.
//!
//! Memory: the caller passes one stream at a time, as compact [`Leaf`]
//! fingerprints (hashes, sequence number, key text: ~250 bytes an entry),
//! never the entries' values; a stream of 100,000 entries needs ~25 MB.
//!
//! Here: the evidence and finding types and [`verify_stream`], which runs
//! the three checks in order: `digests` (the digest chain on its own),
//! then per shard, parents first, `walk` (the shard's hash chain) and
//! `coverage` (that chain against what the digests and checkpoint say).

mod coverage;
mod digests;
pub mod items;
mod walk;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::chain::{parse_hash, ChainState};
use super::digest::{Digest, SignedDigest};
use super::merkle::Hash;
use super::sign::PublicKey;
use crate::entry::GapRef;
use crate::stream::cmp_sequence;
use coverage::check_coverage;
use digests::check_digests;
use walk::{walk_shard, Anchor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something was altered, removed, inserted or is missing: exit 1.
    Tamper,
    /// Something could not be checked: exit 2 (if nothing worse).
    Unverifiable,
    /// Worth knowing, not wrong (a signed gap, an unsigned trail, a live tail).
    Info,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Altered,
    Deleted,
    Inserted,
    Reordered,
    Truncated,
    Unchained,
    DigestMissing,
    DigestAltered,
    DigestOutOfChain,
    BadSignature,
    Unsigned,
    NoFinalDigest,
    RolledBack,
    Uncovered,
    Gap,
    /// Entries gone because `[retention] days` let them expire.
    Expired,
    NotCheckable,
    /// A bundle's entry (or digest) of another table or item than the
    /// bundle's header names.
    Foreign,
    /// A bundle holds the same leaf twice.
    Duplicated,
    /// A bundle's header (table, key, span, key fingerprint) says what its
    /// entries and digests do not.
    BundleHeader,
}

/// One finding: which entry or digest, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    pub kind: Kind,
    pub table: String,
    pub stream_arn: String,
    pub shard_id: Option<String>,
    /// The item key, DynamoDB JSON (an entry finding).
    pub key: Option<serde_json::Value>,
    pub sequence_number: Option<String>,
    /// The digest number (a digest finding).
    pub digest: Option<u64>,
    pub message: String,
}

/// An entry or gap as stored, reduced to what the chain needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub is_gap: bool,
    /// The open gaps a gap closes (its `closes`): when not empty, it
    /// follows, in its shard's chain, a gap that begins where it begins.
    pub closes: Vec<GapRef>,
    pub shard_id: String,
    /// An entry's sequence number; a gap's `after_sequence_number` ("" for none).
    pub sequence_number: String,
    /// The item key as canonical DynamoDB JSON text (entries).
    pub key: Option<String>,
    /// The `hash` attribute stored beside it.
    pub stored_hash: Option<Hash>,
    pub prev_hash: Option<Hash>,
    /// The hash recomputed from the stored JSON and `prev_hash`; `None` if
    /// the stored JSON could not be read at all.
    pub content_hash: Option<Hash>,
    /// The entry's TTL attribute says it expires by policy (retention).
    pub expires: bool,
    /// A stand-in the daemon stored when the store refused the entry itself:
    /// it holds the original's place in the chain, not its content.
    pub rejected: bool,
}

/// Where a leaf stands among its shard's leaves at the same position (an
/// entry's sequence number, a gap's `after_sequence_number`): the entry,
/// then a gap beginning after it, then a gap closing open ones (which may
/// begin there too).
pub fn leaf_rank(is_gap: bool, closes_gaps: bool) -> u8 {
    match (is_gap, closes_gaps) {
        (false, _) => 0,
        (true, false) => 1,
        (true, true) => 2,
    }
}

impl Leaf {
    fn rank(&self) -> u8 {
        leaf_rank(self.is_gap, self.closes_gaps())
    }

    /// A gap that closes earlier open gaps.
    pub fn closes_gaps(&self) -> bool {
        !self.closes.is_empty()
    }
}

/// The `error` text of a stand-in for an entry the store refused.
pub const REJECTED_MARKER: &str = "the audit store rejected this entry";

/// Whether an entry's stored JSON is such a stand-in.
pub fn is_rejected_marker(entry: &serde_json::Value) -> bool {
    entry
        .get("error")
        .and_then(|e| e.as_str())
        .is_some_and(|e| e.starts_with(REJECTED_MARKER))
}

/// A digest as found in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundDigest {
    /// From the item's sort key.
    pub number: u64,
    pub signed: SignedDigest,
}

/// What a previous run proved, kept by `verify --state FILE`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyState {
    /// Per stream ARN: the newest digest that was verified intact.
    pub streams: BTreeMap<String, RememberedDigest>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RememberedDigest {
    pub number: u64,
    pub hash: String,
    pub time: String,
    pub verified_at: String,
}

/// Everything known about one stream.
#[derive(Clone, Debug, Default)]
pub struct StreamEvidence {
    pub table: String,
    pub stream_arn: String,
    pub leaves: Vec<Leaf>,
    pub digests: Vec<FoundDigest>,
    /// Shard id → (parent, chain state saved with its checkpoint, checkpointed sequence).
    pub checkpoints: Vec<CheckpointEvidence>,
    /// The stream row's record of the newest digest written: (number, hash).
    pub newest_digest: Option<(u64, String)>,
    /// Each stream entry's place in its item's chain (§2a), checked across
    /// the item's streams by [`items::verify_item_chains`].
    pub item_links: Vec<items::ItemLinkEvidence>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointEvidence {
    pub shard_id: String,
    pub parent_shard_id: Option<String>,
    pub chain: Option<ChainState>,
    pub sequence_no: Option<String>,
}

pub struct VerifyOptions<'a> {
    pub public_key: Option<&'a PublicKey>,
    pub now: chrono::DateTime<chrono::Utc>,
    /// How late a digest may be before a missing one counts: the
    /// configured interval, doubled, plus a minute of slack.
    pub interval_secs: u64,
    pub remembered: Option<&'a RememberedDigest>,
}

/// The outcome for one stream.
#[derive(Clone, Debug, Default)]
pub struct StreamReport {
    pub findings: Vec<Finding>,
    pub entries: u64,
    pub digests: u64,
    /// The newest digest that checked out (for `--state`), if the stream had
    /// no tamper finding.
    pub newest_intact: Option<RememberedDigest>,
}

struct Reporter<'a> {
    ev: &'a StreamEvidence,
    out: Vec<Finding>,
}

impl Reporter<'_> {
    fn leaf(&mut self, severity: Severity, kind: Kind, leaf: &Leaf, message: String) {
        self.out.push(Finding {
            severity,
            kind,
            table: self.ev.table.clone(),
            stream_arn: self.ev.stream_arn.clone(),
            shard_id: Some(leaf.shard_id.clone()),
            key: leaf
                .key
                .as_deref()
                .and_then(|k| serde_json::from_str(k).ok()),
            sequence_number: (!leaf.sequence_number.is_empty())
                .then(|| leaf.sequence_number.clone()),
            digest: None,
            message,
        });
    }
    fn shard(
        &mut self,
        severity: Severity,
        kind: Kind,
        shard: &str,
        digest: Option<u64>,
        message: String,
    ) {
        self.out.push(Finding {
            severity,
            kind,
            table: self.ev.table.clone(),
            stream_arn: self.ev.stream_arn.clone(),
            shard_id: Some(shard.to_string()),
            key: None,
            sequence_number: None,
            digest,
            message,
        });
    }
    fn digest(&mut self, severity: Severity, kind: Kind, number: Option<u64>, message: String) {
        self.out.push(Finding {
            severity,
            kind,
            table: self.ev.table.clone(),
            stream_arn: self.ev.stream_arn.clone(),
            shard_id: None,
            key: None,
            sequence_number: None,
            digest: number,
            message,
        });
    }
}

fn what(leaf: &Leaf) -> String {
    if leaf.is_gap {
        format!("the gap after sequence {}", leaf.sequence_number)
    } else {
        format!("the entry at sequence {}", leaf.sequence_number)
    }
}

fn short(h: &Hash) -> String {
    hex::encode(&h[..8])
}

/// A digest parsed and checked on its own.
struct CheckedDigest {
    number: u64,
    doc: Digest,
    signed: SignedDigest,
    time: Option<chrono::DateTime<chrono::Utc>>,
}

pub fn verify_stream(ev: &StreamEvidence, opts: &VerifyOptions) -> StreamReport {
    let mut r = Reporter {
        ev,
        out: Vec::new(),
    };
    let digests = check_digests(ev, opts, &mut r);
    let newest = digests.last();

    // Hashes a digest or checkpoint vouches for as a shard's last: a chain
    // walk prefers them when a forged copy competes with the original.
    let mut anchored: HashSet<Hash> = HashSet::new();
    for d in &digests {
        for head in &d.doc.shards {
            if let Some(h) = head.last_hash.as_deref().and_then(parse_hash) {
                anchored.insert(h);
            }
        }
    }
    for cp in &ev.checkpoints {
        if let Some(h) = cp.chain.as_ref().and_then(|c| c.last_hash) {
            anchored.insert(h);
        }
    }

    let mut by_shard: BTreeMap<&str, Vec<&Leaf>> = BTreeMap::new();
    for leaf in &ev.leaves {
        by_shard
            .entry(leaf.shard_id.as_str())
            .or_default()
            .push(leaf);
    }
    // Parents: from the checkpoints, else from the newest digest.
    let mut parent: HashMap<String, Option<String>> = HashMap::new();
    for d in &digests {
        for head in &d.doc.shards {
            parent.insert(head.shard_id.clone(), head.parent_shard_id.clone());
        }
    }
    for cp in &ev.checkpoints {
        parent.insert(cp.shard_id.clone(), cp.parent_shard_id.clone());
    }
    let mut shards: Vec<String> = parent.keys().cloned().collect();
    for s in by_shard.keys() {
        if !parent.contains_key(*s) {
            shards.push(s.to_string());
        }
    }
    shards.sort();
    shards.dedup();
    let order = lineage_order(&shards, &parent);

    let mut chain_end: HashMap<String, Option<Hash>> = HashMap::new();
    for shard in &order {
        let mut leaves: Vec<&Leaf> = by_shard.remove(shard.as_str()).unwrap_or_default();
        leaves.sort_by(|a, b| {
            cmp_sequence(&a.sequence_number, &b.sequence_number).then(a.rank().cmp(&b.rank()))
        });
        let start = match parent.get(shard).cloned().flatten() {
            Some(p) => match chain_end.get(&p) {
                Some(end) => *end,
                // A parent we know nothing of (trimmed before we read it):
                // the child's first link is taken as given.
                None => leaves.first().and_then(|l| l.prev_hash),
            },
            None => None,
        };
        let mut anchors: HashMap<Hash, Anchor> = HashMap::new();
        for d in &digests {
            for head in d.doc.shards.iter().filter(|h| &h.shard_id == shard) {
                if let Some(h) = head.last_hash.as_deref().and_then(parse_hash) {
                    anchors.entry(h).or_insert(Anchor {
                        digest: d.number,
                        size: head.size,
                        time: d.time,
                        retention_days: d.doc.retention_days,
                    });
                }
            }
        }
        let chain = walk_shard(shard, &leaves, start, &anchored, &anchors, opts.now, &mut r);
        let end = chain.last().and_then(|(l, _)| l.stored_hash).or(start);
        check_coverage(shard, &chain, start, &digests, ev, opts, &mut r);
        chain_end.insert(shard.clone(), end);
        for leaf in &leaves {
            if leaf.is_gap {
                let message = if leaf.closes_gaps() {
                    "known loss: records the stream trimmed before they could be read; \
                     this gap closes gaps recorded open (where reading resumed)"
                } else {
                    "known loss: records the stream trimmed before they could be read \
                     (recorded in the chain, not a hole)"
                };
                r.leaf(Severity::Info, Kind::Gap, leaf, message.into());
            }
        }
    }

    check_brackets(ev, &mut r);

    // The daemon stopped without its final digest while its checkpoints say
    // more was read, or the newest digests were deleted.
    if let Some(last) = newest {
        let stale = last
            .time
            .is_some_and(|t| (opts.now - t).num_seconds() > (2 * opts.interval_secs + 60) as i64);
        if !last.doc.is_final && stale {
            // A digest lists only the shards that still change: each shard's
            // newest head is in the newest digest that lists it.
            let mut covered: HashMap<&str, u64> = HashMap::new();
            for d in &digests {
                for h in &d.doc.shards {
                    covered.insert(h.shard_id.as_str(), h.size);
                }
            }
            let ahead = ev.checkpoints.iter().any(|cp| {
                let size = cp.chain.as_ref().map(|c| c.tree.size).unwrap_or(0);
                size > covered.get(cp.shard_id.as_str()).copied().unwrap_or(0)
            });
            if ahead {
                r.digest(
                    Severity::Tamper,
                    Kind::NoFinalDigest,
                    Some(last.number),
                    format!(
                        "the trail stops at digest {} ({}) without a final digest, while the \
                         checkpoints say more was read: newer digests were deleted",
                        last.number, last.doc.time
                    ),
                );
            } else {
                r.digest(
                    Severity::Info,
                    Kind::NoFinalDigest,
                    Some(last.number),
                    format!(
                        "the newest digest ({}, {}) is not a final one and is older than twice \
                         the interval: the daemon is not running, and did not stop gracefully",
                        last.number, last.doc.time
                    ),
                );
            }
        }
    } else if ev.leaves.iter().any(|l| l.stored_hash.is_some()) {
        if ev.newest_digest.is_none() {
            // The stream row (outside the audit table) records every digest
            // written; it records none: a fresh deployment, or `[proof]`
            // just turned on, before the first digest.
            r.digest(
                Severity::Unverifiable,
                Kind::DigestMissing,
                None,
                format!(
                    "{} entries and no digest yet: the daemon writes this stream's first \
                     digest within {}s of starting; verify again after it",
                    ev.leaves.len(),
                    opts.interval_secs
                ),
            );
        } else {
            r.digest(
                Severity::Tamper,
                Kind::DigestMissing,
                None,
                format!(
                    "{} entries and no digest at all, while the stream row says digests \
                     were written: every digest of this stream was deleted",
                    ev.leaves.len()
                ),
            );
        }
    }

    let tampered = r.out.iter().any(|f| f.severity == Severity::Tamper);
    let newest_intact = match (tampered, newest) {
        (false, Some(d)) => Some(RememberedDigest {
            number: d.number,
            hash: d.signed.hash.clone(),
            time: d.doc.time.clone(),
            verified_at: opts.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }),
        _ => None,
    };
    StreamReport {
        findings: r.out,
        entries: ev.leaves.len() as u64,
        digests: digests.len() as u64,
        newest_intact,
    }
}

/// Every open gap a closing gap names is in the trail. A closing gap is a
/// gap's right bracket; one that names a gap the stream does not hold says
/// history is missing where no gap says so (the open gap, its left bracket,
/// was deleted, or written by a daemon that never wrote it): a chain walk
/// alone may miss it when the deleted gap ended an ancestor's chain.
fn check_brackets(ev: &StreamEvidence, r: &mut Reporter) {
    let gaps: HashSet<(&str, &str)> = ev
        .leaves
        .iter()
        // A closing gap is never an open one (it is written at the record
        // where reading resumed), and may begin where an open one begins.
        .filter(|l| l.is_gap && !l.closes_gaps())
        .map(|l| (l.shard_id.as_str(), l.sequence_number.as_str()))
        .collect();
    for leaf in ev.leaves.iter().filter(|l| l.is_gap) {
        for named in &leaf.closes {
            let after = named.after_sequence_number.as_deref().unwrap_or_default();
            if !gaps.contains(&(named.shard_id.as_str(), after)) {
                r.leaf(
                    Severity::Tamper,
                    Kind::Deleted,
                    leaf,
                    format!(
                        "{} closes the gap of {} after sequence {}, which is not in the trail: \
                         the left bracket of a known loss was deleted",
                        what(leaf),
                        named.shard_id,
                        named.after_sequence_number.as_deref().unwrap_or("(none)"),
                    ),
                );
            }
        }
    }
}

/// Parents before children; shards whose parent is unknown first.
fn lineage_order(shards: &[String], parent: &HashMap<String, Option<String>>) -> Vec<String> {
    let known: HashSet<&str> = shards.iter().map(String::as_str).collect();
    let mut done: HashSet<String> = HashSet::new();
    let mut order = Vec::new();
    let mut pending: Vec<&String> = shards.iter().collect();
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|s| {
            let ready = match parent.get(*s).cloned().flatten() {
                Some(p) => !known.contains(p.as_str()) || done.contains(&p),
                None => true,
            };
            if ready {
                done.insert((*s).clone());
                order.push((*s).clone());
            }
            !ready
        });
        if pending.len() == before {
            // A cycle only a forged parent link makes; take them as they are.
            order.extend(pending.drain(..).cloned());
        }
    }
    order
}

/// Exit status for a set of findings: 1 tampering, 2 unverifiable, 0 intact.
pub fn exit_status(findings: &[Finding]) -> i32 {
    if findings.iter().any(|f| f.severity == Severity::Tamper) {
        1
    } else if findings
        .iter()
        .any(|f| f.severity == Severity::Unverifiable)
    {
        2
    } else {
        0
    }
}

#[cfg(test)]
mod tests;
