//! The verifier's logic, pure: given what the store holds for one stream
//! (entry and gap fingerprints, digests, checkpoints, the stream row's
//! pointer to its newest digest) it reports every finding.
//!
//! Memory: the caller passes one stream at a time, as compact [`Leaf`]
//! fingerprints (hashes, sequence number, key text: ~250 bytes an entry),
//! never the entries' values; a stream of 100,000 entries needs ~25 MB.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::chain::{parse_hash, ChainState};
use super::digest::{Digest, SignedDigest};
use super::merkle::{Frontier, Hash};
use super::sign::PublicKey;
use crate::stream::cmp_sequence;

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
            cmp_sequence(&a.sequence_number, &b.sequence_number).then(a.is_gap.cmp(&b.is_gap))
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
                r.leaf(
                    Severity::Info,
                    Kind::Gap,
                    leaf,
                    "known loss: records the stream trimmed before they could be read \
                     (recorded in the chain, not a hole)"
                        .into(),
                );
            }
        }
    }

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

fn check_digests(
    ev: &StreamEvidence,
    opts: &VerifyOptions,
    r: &mut Reporter,
) -> Vec<CheckedDigest> {
    let mut found: Vec<&FoundDigest> = ev.digests.iter().collect();
    found.sort_by_key(|d| d.number);
    let mut checked: Vec<CheckedDigest> = Vec::new();
    let mut unsigned = 0u64;
    let mut unchecked_signatures = 0u64;
    for d in found {
        let n = d.number;
        if d.signed.computed_hash() != d.signed.hash || !d.signed.is_canonical() {
            r.digest(
                Severity::Tamper,
                Kind::DigestAltered,
                Some(n),
                format!("digest {n}: its bytes do not hash to the hash stored with it (or are not canonical): altered"),
            );
        }
        let doc = match d.signed.parse() {
            Ok(doc) => doc,
            Err(e) => {
                r.digest(
                    Severity::Tamper,
                    Kind::DigestAltered,
                    Some(n),
                    format!("digest {n}: {e}"),
                );
                continue;
            }
        };
        if doc.number != n || doc.stream_arn != ev.stream_arn {
            r.digest(
                Severity::Tamper,
                Kind::DigestAltered,
                Some(n),
                format!(
                    "digest stored as number {n} of {} says it is number {} of {}: moved or forged",
                    ev.stream_arn, doc.number, doc.stream_arn
                ),
            );
        }
        match (opts.public_key, d.signed.signature_bytes(), &doc.key) {
            (Some(key), Some(sig), Some(key_ref)) => {
                if key_ref.fingerprint != key.fingerprint() {
                    r.digest(
                        Severity::Tamper,
                        Kind::BadSignature,
                        Some(n),
                        format!(
                            "digest {n} names signing key {}, not the given key {}",
                            key_ref.fingerprint,
                            key.fingerprint()
                        ),
                    );
                } else if !key.verify(d.signed.digest.as_bytes(), &sig) {
                    r.digest(
                        Severity::Tamper,
                        Kind::BadSignature,
                        Some(n),
                        format!("digest {n}: the signature does not verify with {}", key.fingerprint()),
                    );
                }
            }
            (Some(key), _, _) => r.digest(
                Severity::Tamper,
                Kind::BadSignature,
                Some(n),
                format!(
                    "digest {n} carries no (readable) signature, but the trail is checked against key {}",
                    key.fingerprint()
                ),
            ),
            (None, None, None) => unsigned += 1,
            (None, _, _) => unchecked_signatures += 1,
        }
        checked.push(CheckedDigest {
            number: n,
            time: chrono::DateTime::parse_from_rfc3339(&doc.time)
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc)),
            doc,
            signed: d.signed.clone(),
        });
    }
    if unsigned > 0 {
        r.digest(
            Severity::Info,
            Kind::Unsigned,
            None,
            format!(
                "{unsigned} digests are unsigned (no [proof] signing key): the chain shows \
                 alteration by anyone who cannot rewrite every later hash too, not who wrote it"
            ),
        );
    }
    if unchecked_signatures > 0 {
        r.digest(
            Severity::Unverifiable,
            Kind::NotCheckable,
            None,
            format!(
                "{unchecked_signatures} digests are signed, but no public key was given \
                 (--public-key FILE, [proof] public_key_file or signing_key_file)"
            ),
        );
    }

    // The chain of digests: 1, 2, 3, … each naming the one before.
    let max = checked.last().map(|d| d.number).unwrap_or(0);
    let present: HashSet<u64> = checked.iter().map(|d| d.number).collect();
    let mut missing: Vec<u64> = (1..max).filter(|n| !present.contains(n)).collect();
    if let Some((number, hash)) = &ev.newest_digest {
        if *number > max {
            missing.extend(max + 1..=*number);
        } else if let Some(d) = checked.iter().find(|d| d.number == *number) {
            if &d.signed.hash != hash {
                r.digest(
                    Severity::Tamper,
                    Kind::RolledBack,
                    Some(*number),
                    format!(
                        "digest {number} is not the one the daemon wrote (the streams table \
                         recorded hash {hash}): replaced or rolled back"
                    ),
                );
            }
        }
    }
    if let Some(m) = opts.remembered {
        match checked.iter().find(|d| d.number == m.number) {
            Some(d) if d.signed.hash != m.hash => r.digest(
                Severity::Tamper,
                Kind::RolledBack,
                Some(m.number),
                format!(
                    "digest {} differs from the one verified on {} (hash {}): the trail was \
                     rewritten since",
                    m.number, m.verified_at, m.hash
                ),
            ),
            Some(_) => {}
            None => {
                r.digest(
                    Severity::Tamper,
                    Kind::RolledBack,
                    Some(m.number),
                    format!(
                        "digest {} ({}), verified on {}, is gone: the trail was truncated or \
                         rolled back (the store now ends at digest {max})",
                        m.number, m.time, m.verified_at
                    ),
                );
                missing.retain(|n| *n != m.number);
            }
        }
    }
    missing.sort_unstable();
    missing.dedup();
    for n in missing {
        r.digest(
            Severity::Tamper,
            Kind::DigestMissing,
            Some(n),
            format!("digest {n} is missing: deleted"),
        );
    }
    for pair in checked.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.number != a.number + 1 {
            continue;
        }
        let linked = b.doc.previous.as_ref().is_some_and(|p| {
            p.number == a.number && p.hash == a.signed.hash && p.signature == a.signed.signature
        });
        if !linked {
            r.digest(
                Severity::Tamper,
                Kind::DigestOutOfChain,
                Some(b.number),
                format!(
                    "digest {} does not name digest {} (hash {}) as its previous: out of chain",
                    b.number, a.number, a.signed.hash
                ),
            );
        }
    }
    if let Some(first) = checked.first() {
        if first.number == 1 && first.doc.previous.is_some() {
            r.digest(
                Severity::Tamper,
                Kind::DigestOutOfChain,
                Some(1),
                "digest 1 names a previous digest".into(),
            );
        }
    }
    checked
}

/// Follows one shard's chain; returns its leaves in chain order and reports
/// what does not link.
/// After a break no digest anchors, the run of unplaced leaves gets its
/// positions as soon as one of them is a digest's last leaf. Returns the
/// next position, if now known.
fn place_run(chain: &mut Walked<'_>, anchors: &HashMap<Hash, Anchor>) -> Option<u64> {
    let (leaf, _) = chain.last()?;
    let anchor = anchors.get(&leaf.stored_hash?)?;
    let last = anchor.size.checked_sub(1)?;
    let n = chain.len();
    for back in 0..n {
        let i = n - 1 - back;
        if chain[i].1.is_some() {
            break;
        }
        chain[i].1 = last.checked_sub(back as u64);
    }
    Some(anchor.size)
}

/// A digest's word on where a shard's chain stood: the leaf with hash `h`
/// was number `size` (1-based) of the shard.
struct Anchor {
    digest: u64,
    size: u64,
    time: Option<chrono::DateTime<chrono::Utc>>,
    retention_days: Option<u64>,
}

impl Anchor {
    /// Everything this digest covered may have expired by policy by `now`.
    fn expired_by(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        match (self.time, self.retention_days) {
            (Some(t), Some(days)) => t + chrono::Duration::days(days as i64) <= now,
            _ => false,
        }
    }
}

/// Each chain element with its position in the shard's tree (`None` after a
/// break no digest anchors).
type Walked<'l> = Vec<(&'l Leaf, Option<u64>)>;

#[allow(clippy::too_many_arguments)]
fn walk_shard<'l>(
    shard: &str,
    leaves: &[&'l Leaf],
    start: Option<Hash>,
    anchored: &HashSet<Hash>,
    anchors: &HashMap<Hash, Anchor>,
    now: chrono::DateTime<chrono::Utc>,
    r: &mut Reporter,
) -> Walked<'l> {
    let mut by_prev: HashMap<Option<Hash>, Vec<usize>> = HashMap::new();
    let mut by_hash: HashMap<Hash, usize> = HashMap::new();
    let mut used = vec![false; leaves.len()];
    let mut first_chained: Option<usize> = None;
    for (i, leaf) in leaves.iter().enumerate() {
        match leaf.stored_hash {
            Some(h) => {
                by_prev.entry(leaf.prev_hash).or_default().push(i);
                by_hash.insert(h, i);
                first_chained.get_or_insert(i);
                if leaf.content_hash != Some(h) && leaf.rejected {
                    r.leaf(
                        Severity::Unverifiable,
                        Kind::NotCheckable,
                        leaf,
                        format!(
                            "{}: the store refused it when it was written, and the stand-in \
                             kept in its place cannot prove what it said",
                            what(leaf)
                        ),
                    );
                } else if leaf.content_hash != Some(h) {
                    r.leaf(
                        Severity::Tamper,
                        Kind::Altered,
                        leaf,
                        format!(
                            "{} was altered: its stored content no longer hashes to its hash {}",
                            what(leaf),
                            short(&h)
                        ),
                    );
                }
            }
            None => {
                used[i] = true;
                let before_chain = first_chained.is_none();
                r.leaf(
                    if before_chain {
                        Severity::Info
                    } else {
                        Severity::Tamper
                    },
                    Kind::Unchained,
                    leaf,
                    if before_chain {
                        format!(
                            "{} was written before the chain began: not provable",
                            what(leaf)
                        )
                    } else {
                        format!(
                            "{} has no hash although entries before it do: inserted",
                            what(leaf)
                        )
                    },
                );
            }
        }
    }
    let has_successor = |i: usize, used: &[bool]| {
        leaves[i].stored_hash.is_some_and(|h| {
            anchored.contains(&h)
                || by_prev
                    .get(&Some(h))
                    .is_some_and(|next| next.iter().any(|j| !used[*j]))
        })
    };
    let mut chain: Walked<'l> = Vec::with_capacity(leaves.len());
    let mut last_index: Option<usize> = None;
    let mut next_position: Option<u64> = Some(0);
    let mut cur = start;
    loop {
        let candidates: Vec<usize> = by_prev
            .get(&cur)
            .map(|c| c.iter().copied().filter(|i| !used[*i]).collect())
            .unwrap_or_default();
        let pick = candidates.iter().copied().max_by(|a, b| {
            has_successor(*a, &used)
                .cmp(&has_successor(*b, &used))
                .then(b.cmp(a))
        });
        if let Some(i) = pick {
            if last_index.is_some_and(|l| i < l) {
                r.leaf(
                    Severity::Tamper,
                    Kind::Reordered,
                    leaves[i],
                    format!(
                        "{} is out of order: the chain puts it after sequence {}",
                        what(leaves[i]),
                        last_index
                            .map(|l| leaves[l].sequence_number.as_str())
                            .unwrap_or("")
                    ),
                );
            }
            used[i] = true;
            chain.push((leaves[i], next_position));
            next_position = next_position.map(|p| p + 1);
            if next_position.is_none() {
                next_position = place_run(&mut chain, anchors);
            }
            last_index = Some(last_index.map_or(i, |l| l.max(i)));
            cur = leaves[i].stored_hash;
            continue;
        }
        let Some(j) = (0..leaves.len()).find(|i| !used[*i]) else {
            break;
        };
        used[j] = true;
        let leaf = leaves[j];
        let prev_known = leaf.prev_hash.and_then(|p| by_hash.get(&p).copied());
        if let Some(p) = prev_known {
            r.leaf(
                Severity::Tamper,
                Kind::Inserted,
                leaf,
                format!(
                    "{} is not in the chain: it links to sequence {}, which already has its \
                     successor — a forged or inserted copy",
                    what(leaf),
                    leaves[p].sequence_number
                ),
            );
            continue;
        }
        let after = chain
            .last()
            .map(|(l, _)| format!("after sequence {}", l.sequence_number))
            .unwrap_or_else(|| format!("at the start of shard {shard}"));
        let anchor = leaf.prev_hash.and_then(|p| anchors.get(&p));
        match anchor {
            Some(a) if a.expired_by(now) => r.leaf(
                Severity::Info,
                Kind::Expired,
                leaf,
                format!(
                    "entries {after} up to number {} of the shard, all covered by digest {}, \
                     are gone: expired under the retention policy ({} days)",
                    a.size,
                    a.digest,
                    a.retention_days.unwrap_or_default()
                ),
            ),
            _ => r.leaf(
                Severity::Tamper,
                Kind::Deleted,
                leaf,
                format!(
                    "the chain breaks before {}: it links to {}, which no stored entry has — \
                     entries {after} were deleted (or the one before it was rewritten)",
                    what(leaf),
                    leaf.prev_hash
                        .map(|h| short(&h))
                        .unwrap_or_else(|| "nothing".into())
                ),
            ),
        }
        let position = anchor.map(|a| a.size);
        chain.push((leaf, position));
        next_position = position.map(|p| p + 1);
        if next_position.is_none() {
            next_position = place_run(&mut chain, anchors);
        }
        last_index = Some(last_index.map_or(j, |l| l.max(j)));
        cur = leaf.stored_hash;
    }
    chain
}

/// The shard's chain against every digest's head for it and its checkpoint.
fn check_coverage(
    shard: &str,
    chain: &[(&Leaf, Option<u64>)],
    start: Option<Hash>,
    digests: &[CheckedDigest],
    ev: &StreamEvidence,
    opts: &VerifyOptions,
    r: &mut Reporter,
) {
    // Position (0-based) → leaf, where a digest anchors it.
    let at: HashMap<u64, &Leaf> = chain
        .iter()
        .filter_map(|(l, p)| p.map(|p| (p, *l)))
        .collect();
    // How far the chain runs unbroken from the shard's first leaf: only that
    // far can a Merkle root be recomputed.
    let contiguous = chain
        .iter()
        .enumerate()
        .take_while(|(i, (_, p))| *p == Some(*i as u64))
        .count();
    let known = chain
        .iter()
        .filter_map(|(_, p)| *p)
        .max()
        .map(|p| p + 1)
        .unwrap_or(0);
    let seq_of = |n: u64| {
        n.checked_sub(1)
            .and_then(|i| at.get(&i))
            .map(|l| l.sequence_number.clone())
    };
    let mut tree = Frontier::default();
    let mut fed = 0usize;
    let mut truncation_reported = false;
    let mut mismatch_reported = false;
    let mut newest_size = 0u64;
    let mut newest: Option<&CheckedDigest> = None;
    let mut prev_size = 0u64;
    for d in digests {
        let Some(head) = d.doc.shards.iter().find(|h| h.shard_id == shard) else {
            continue;
        };
        newest_size = head.size;
        newest = Some(d);
        if head.size < prev_size {
            r.shard(
                Severity::Tamper,
                Kind::DigestAltered,
                shard,
                Some(d.number),
                format!(
                    "digest {} says shard {shard} holds {} entries; an earlier digest said {prev_size}",
                    d.number, head.size
                ),
            );
        }
        prev_size = head.size;
        if head.size > known {
            if !truncation_reported {
                truncation_reported = true;
                let ends = seq_of(known)
                    .map(|s| format!("ends at sequence {s}"))
                    .unwrap_or_else(|| "holds none".into());
                r.shard(
                    Severity::Tamper,
                    Kind::Truncated,
                    shard,
                    Some(d.number),
                    format!(
                        "digest {} covers {} entries of shard {shard} (to sequence {}); the \
                         table's chain reaches {known} and {ends}: the newest {} were deleted",
                        d.number,
                        head.size,
                        head.last_sequence_number.as_deref().unwrap_or("?"),
                        head.size - known
                    ),
                );
            }
            continue;
        }
        let end = match head.size {
            0 => Some(start),
            n => at.get(&(n - 1)).map(|l| l.stored_hash),
        };
        // `None`: the leaf this digest ends at expired (or its neighbourhood
        // was reported deleted already).
        let last_ok = end.is_none_or(|e| e.map(hex::encode) == head.last_hash);
        let size = head.size as usize;
        let root_ok = if size <= contiguous {
            while fed < size {
                if let Some(h) = chain[fed].0.stored_hash {
                    tree.push(h);
                }
                fed += 1;
            }
            hex::encode(tree.root()) == head.root && tree.size == head.size
        } else {
            true
        };
        let matches = last_ok && root_ok;
        if !mismatch_reported && !matches {
            mismatch_reported = true;
            r.shard(
                Severity::Tamper,
                Kind::Altered,
                shard,
                Some(d.number),
                format!(
                    "shard {shard}'s first {} entries (to sequence {}) do not give the last \
                     hash and Merkle root digest {} signed: entries in that range were \
                     altered, deleted or inserted",
                    head.size,
                    head.last_sequence_number.as_deref().unwrap_or("?"),
                    d.number
                ),
            );
        }
    }
    if let Some(cp) = ev.checkpoints.iter().find(|c| c.shard_id == shard) {
        if let Some(state) = &cp.chain {
            if state.tree.size > known && !truncation_reported {
                let ends = seq_of(known)
                    .map(|s| format!("ends at sequence {s}"))
                    .unwrap_or_else(|| "holds none".into());
                r.shard(
                    Severity::Tamper,
                    Kind::Truncated,
                    shard,
                    None,
                    format!(
                        "the checkpoint of shard {shard} says {} entries were written (to \
                         sequence {}); the table's chain reaches {known} and {ends}: entries \
                         were deleted or the table rolled back",
                        state.tree.size,
                        cp.sequence_no.as_deref().unwrap_or("?"),
                    ),
                );
            }
        }
    }
    if known > newest_size {
        let uncovered = known - newest_size;
        let grace = (2 * opts.interval_secs + 60) as i64;
        let overdue =
            |d: &CheckedDigest| d.time.is_none_or(|t| (opts.now - t).num_seconds() > grace);
        let Some(first) = at.get(&newest_size) else {
            return;
        };
        let stream_newest = digests.last();
        let late = match (newest, stream_newest) {
            // The stream's newest digest left out a shard it had covered
            // before (a shard is only dropped once drained), or it is late.
            (Some(d), Some(last)) => d.number != last.number || overdue(d),
            // A shard that appeared after the newest digest: the next one
            // covers it, unless that is overdue.
            (None, Some(last)) => overdue(last),
            (_, None) => {
                if ev.newest_digest.is_none() {
                    // Never digested: reported once for the stream.
                    return;
                }
                // The stream row says digests were written, and none is left.
                true
            }
        };
        if late {
            r.leaf(
                Severity::Tamper,
                Kind::Uncovered,
                first,
                format!(
                    "{uncovered} entries of shard {shard} from sequence {} on are covered by no \
                     digest: inserted after the last digest, or newer digests were deleted",
                    first.sequence_number
                ),
            );
        } else {
            r.leaf(
                Severity::Info,
                Kind::Uncovered,
                first,
                format!(
                    "{uncovered} entries of shard {shard} from sequence {} on are newer than \
                     the newest digest (the next one covers them)",
                    first.sequence_number
                ),
            );
        }
    }
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
mod tests {
    use super::*;
    use crate::entry::AuditEntry;
    use crate::proof::chain::ChainState;
    use crate::proof::digest::{next_digest, DigestInput};
    use crate::proof::sign::Ed25519Signer;
    use crate::store::{ShardCheckpoint, ShardStatus};
    use crate::value::AttrValue;
    use chrono::{TimeZone, Utc};
    use futures_util::FutureExt;

    const ARN: &str = "arn:aws:dynamodb:us-east-1:1:table/orders/stream/L";

    fn signer() -> Ed25519Signer {
        Ed25519Signer::from_pem(include_str!("../testdata/ed25519-private.pem"), "t").unwrap()
    }

    fn entry(seq: u64, value: &str) -> AuditEntry {
        AuditEntry {
            table: "orders".into(),
            key: [("pk".to_string(), AttrValue::S(format!("u{}", seq % 3)))].into(),
            event: "MODIFY".into(),
            sequence_number: seq.to_string(),
            shard_id: "shardId-1".into(),
            event_time: Some("2026-11-23T19:05:00Z".into()),
            actor: None,
            changes: vec![crate::entry::Change {
                path: "v".into(),
                old: None,
                new: Some(AttrValue::S(value.into())),
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
            stream_arn: ARN.into(),
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
            stream_arn: ARN.into(),
            shard_id: "shardId-1".into(),
            table: "orders".into(),
            parent_shard_id: None,
            sequence_no: seq.map(|s| s.to_string()),
            status: ShardStatus::Open,
            last_record_time: None,
            caught_up: false,
            from_start: false,
            updated_at: Utc::now(),
            chain: None,
            lineage_tail: None,
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
        let sig = ev.digests[1].signed.signature.clone().unwrap();
        let mut bytes =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, sig).unwrap();
        bytes[7] ^= 0x10;
        ev.digests[1].signed.signature = Some(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            bytes,
        ));
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
}
