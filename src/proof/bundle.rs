//! Offline proof bundles: one item's entries, each with an inclusion proof
//! into a shard's Merkle tree as a signed digest states it, and those
//! digests. [`verify_bundle`] needs nothing but the file and a public key.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::chain::{document_hash, entry_document, gap_document, parse_hash};
use super::digest::{Digest, SignedDigest};
use super::merkle::verify_inclusion;
use super::sign::PublicKey;
use super::verify::items::{check_item_chain, ChainEntry, ItemLink};
use super::verify::{Finding, Kind, Severity};
use crate::entry::{GapClosure, GapRef};
use crate::value::{canonical_key_json, key_text, Item};

pub const BUNDLE_TYPE: &str = "ddb-audit.bundle.v1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    #[serde(rename = "type")]
    pub kind: String,
    pub table: String,
    /// The item key, DynamoDB JSON.
    pub key: serde_json::Value,
    pub created_at: String,
    /// The fingerprint of the key that signed the digests (`null`: unsigned).
    pub public_key_fingerprint: Option<String>,
    pub entries: Vec<BundleEntry>,
    pub digests: Vec<BundleDigest>,
    /// What the bundle claims to span: its entry count, first and last
    /// entry. Checked against the entries; absent from bundles exported
    /// before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<BundleSpan>,
    /// The gaps that touch the item's shard lineage within the span, each
    /// proven like an entry (absent from older bundles).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<BundleGap>,
}

/// A gap leaf with its inclusion proof, as [`BundleEntry`] for an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleGap {
    pub stream_arn: String,
    pub shard_id: String,
    /// The gap as stored (`gaps --json`), `detected_at` included.
    pub gap: serde_json::Value,
    /// Flattened: the members stand in the gap's object, after `gap`.
    #[serde(flatten)]
    pub proof: LeafProof,
}

/// What proves one leaf of a bundle, entry or gap: its link in the shard's
/// chain and its place in the tree a digest signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafProof {
    pub prev_hash: Option<String>,
    pub hash: String,
    /// Its position in the shard's tree, and the tree it is proven in.
    pub leaf_index: u64,
    pub tree_size: u64,
    pub digest_number: u64,
    /// Hex sibling hashes, leaf to root (RFC 9162 §2.1.3).
    pub inclusion_proof: Vec<String>,
}

impl LeafProof {
    /// The leaf's stated hash is in the tree that `digest` signs for
    /// `shard_id`, at `leaf_index`.
    fn included_in(&self, digest: &Digest, shard_id: &str) -> bool {
        let head = digest.shards.iter().find(|h| h.shard_id == shard_id);
        let root = head.and_then(|h| parse_hash(&h.root));
        let path: Option<Vec<_>> = self.inclusion_proof.iter().map(|h| parse_hash(h)).collect();
        match (head, root, path, parse_hash(&self.hash)) {
            (Some(h), Some(root), Some(path), Some(leaf)) => {
                h.size == self.tree_size
                    && verify_inclusion(&leaf, self.leaf_index, self.tree_size, &path, &root)
            }
            _ => false,
        }
    }
}

/// The header's claim about the entries it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleSpan {
    pub entries: u64,
    pub first: SpanEnd,
    pub last: SpanEnd,
}

/// One end of a span: the entry's leaf hash, sequence number and time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanEnd {
    pub hash: String,
    pub sequence_number: Option<String>,
    pub event_time: Option<String>,
}

impl SpanEnd {
    pub fn of(e: &BundleEntry) -> SpanEnd {
        SpanEnd {
            hash: e.proof.hash.clone(),
            sequence_number: e.entry["sequence_number"].as_str().map(str::to_string),
            event_time: e.entry["event_time"].as_str().map(str::to_string),
        }
    }
}

impl BundleSpan {
    /// The span of `entries` as they are (`None`: no entry).
    pub fn of(entries: &[BundleEntry]) -> Option<BundleSpan> {
        Some(BundleSpan {
            entries: entries.len() as u64,
            first: SpanEnd::of(entries.first()?),
            last: SpanEnd::of(entries.last()?),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEntry {
    pub stream_arn: String,
    pub shard_id: String,
    /// The entry exactly as stored (the `history --json` object).
    pub entry: serde_json::Value,
    /// Flattened: the members stand in the entry's object, after `entry`.
    #[serde(flatten)]
    pub proof: LeafProof,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleDigest {
    pub stream_arn: String,
    pub number: u64,
    #[serde(flatten)]
    pub signed: SignedDigest,
}

/// What `verify-bundle` found: the findings, and what the bundle proves.
#[derive(Clone, Debug, Default)]
pub struct BundleVerdict {
    pub findings: Vec<Finding>,
    /// The entries proven, first to last (`None`: none proven).
    pub span: Option<ProvenSpan>,
    /// The gaps the bundle carries that were proven, in its order.
    pub gaps: Vec<ProvenGap>,
}

/// A known loss in the item's lineage, proven in the signed trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProvenGap {
    pub stream_arn: String,
    pub shard_id: String,
    pub after_sequence_number: Option<String>,
    pub after_time: Option<String>,
    pub resumed_at_sequence_number: Option<String>,
    pub resumed_at_time: Option<String>,
    pub digest_number: u64,
    /// The open gaps this one closes (its `closes`); absent if none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub closes: Vec<GapRef>,
    /// An open gap (`resumed_at_sequence_number` null) that a proven gap of
    /// the bundle closes: where reading resumed, as that gap says. Absent
    /// while the bundle carries none (the bracket still open, or closed by a
    /// gap outside the item's span).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<GapClosure>,
}

impl ProvenGap {
    /// One line for people.
    pub fn statement(&self) -> String {
        let after = match (&self.after_sequence_number, &self.after_time) {
            (Some(s), Some(t)) => format!("after sequence {s} ({t})"),
            (Some(s), None) => format!("after sequence {s}"),
            _ => "from the start of the shard".to_string(),
        };
        let at = |s: &str, t: &Option<String>| match t {
            Some(t) => format!("sequence {s} ({t})"),
            None => format!("sequence {s}"),
        };
        let mut resumed = match (&self.resumed_at_sequence_number, &self.closed_by) {
            (Some(s), _) => format!("reading resumed at {}", at(s, &self.resumed_at_time)),
            (None, Some(by)) => format!(
                "reading resumed at {} in shard {}, as the later gap that closes this one says",
                at(
                    by.resumed_at_sequence_number.as_deref().unwrap_or("?"),
                    &by.resumed_at_time
                ),
                by.shard_id
            ),
            (None, None) => "its end is open: nothing after it was readable when it was \
                             written, and no gap of this bundle closes it"
                .to_string(),
        };
        if !self.closes.is_empty() {
            resumed.push_str(&format!(
                "; it closes {} open gap(s) of the lineage",
                self.closes.len()
            ));
        }
        format!(
            "gap in shard {}: records {after} were trimmed before they could be read; \
             {resumed} (proven by digest {})",
            self.shard_id, self.digest_number
        )
    }
}

/// The span a bundle proves, for people and for `--json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProvenSpan {
    pub table: String,
    /// The key as `--key` takes it (`pk=S:k1 sk=N:7`).
    pub key: String,
    pub entries: u64,
    pub first_time: Option<String>,
    pub last_time: Option<String>,
    pub first_sequence_number: Option<String>,
    pub last_sequence_number: Option<String>,
    /// What the item chain proves of the span.
    #[serde(flatten)]
    pub chain: ChainProof,
}

/// What a bundle's item chain proves (§7, `--json`: members of `span`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChainProof {
    /// The bundle entry (from 1) from which every entry of the item is
    /// proven present, through the last; `None`: no entry is linked.
    pub chained_from: Option<u64>,
    /// Entries before it, written before the item chain existed.
    pub unlinked_prefix: u64,
    /// The first entry follows this entry of the item, which the bundle
    /// does not hold (expired by retention).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_after_sequence_number: Option<String>,
}

impl ProvenSpan {
    /// What the bundle proves, said plainly.
    pub fn statement(&self) -> String {
        let at = |t: &Option<String>| t.clone().unwrap_or_else(|| "no time".into());
        let complete = match self.chain.chained_from {
            Some(_) if self.chain.unlinked_prefix == 0 => {
                "it holds every stream entry of the item between them, none missing".to_string()
            }
            Some(n) => format!(
                "it holds every stream entry of the item from entry {n} to entry {}, none \
                 missing (the {} before entry {n} predate the item chain: that none is \
                 missing among them is not proven)",
                self.entries, self.chain.unlinked_prefix
            ),
            None => "that no entry of the item is missing between them is not proven (they \
                     predate the item chain)"
                .to_string(),
        };
        let before = match &self.chain.starts_after_sequence_number {
            Some(seq) => format!(
                "; the item's entries up to sequence {seq}, before entry 1, are not in the \
                 bundle (expired)"
            ),
            None => String::new(),
        };
        format!(
            "the {} entries of {} {} from entry 1, {}, to entry {}, {}, each as the signed \
             trail holds it, in history order; {complete}{before}; no later entry is proven \
             absent",
            self.entries,
            self.table,
            self.key,
            at(&self.first_time),
            self.entries,
            at(&self.last_time)
        )
    }
}

/// Checks a bundle (see [`check_bundle`]) and returns its findings.
pub fn verify_bundle(bundle: &Bundle, key: Option<&PublicKey>) -> Vec<Finding> {
    check_bundle(bundle, key).findings
}

/// Findings about a bundle, each naming the entry or digest it is about.
struct Report<'a> {
    bundle: &'a Bundle,
    out: Vec<Finding>,
}

impl Report<'_> {
    fn finding(
        &self,
        severity: Severity,
        kind: Kind,
        stream_arn: &str,
        message: String,
    ) -> Finding {
        Finding {
            severity,
            kind,
            table: self.bundle.table.clone(),
            stream_arn: stream_arn.to_string(),
            shard_id: None,
            key: Some(self.bundle.key.clone()),
            sequence_number: None,
            digest: None,
            message,
        }
    }

    /// A finding about entry `i` (0-based) of the bundle.
    fn entry(&mut self, severity: Severity, kind: Kind, i: usize, digest: Option<u64>, what: &str) {
        let e = &self.bundle.entries[i];
        let message = format!("bundle entry {} ({}): {what}", i + 1, describe(e));
        let mut f = self.finding(severity, kind, &e.stream_arn, message);
        f.shard_id = Some(e.shard_id.clone());
        f.sequence_number = e.entry["sequence_number"].as_str().map(str::to_string);
        f.digest = digest;
        self.out.push(f);
    }

    fn digest(&mut self, severity: Severity, kind: Kind, d: &BundleDigest, message: String) {
        let mut f = self.finding(severity, kind, &d.stream_arn, message);
        f.digest = Some(d.number);
        self.out.push(f);
    }

    fn header(&mut self, severity: Severity, kind: Kind, message: String) {
        let f = self.finding(severity, kind, "", message);
        self.out.push(f);
    }
}

/// An entry as a person finds it in the bundle: event, place, time.
fn describe(e: &BundleEntry) -> String {
    let event = e.entry["event"].as_str().unwrap_or("?");
    let place = match e.entry["sequence_number"].as_str() {
        Some(seq) => format!("sequence {seq}"),
        None => format!("leaf {} of {}", e.proof.leaf_index, e.shard_id),
    };
    match e.entry["event_time"].as_str() {
        Some(t) => format!("{event} at {place}, {t}"),
        None => format!("{event} at {place}"),
    }
}

/// Where an entry sits in its item's history, as the audit table orders
/// one item's entries: by stream (its label, a creation time; a snapshot
/// run's `0000-snapshot-…` first), then by sequence number (a SNAPSHOT
/// entry has none and sorts first within its run).
pub fn history_position(stream_arn: &str, entry: &serde_json::Value) -> (String, String) {
    let label = crate::stream::stream_label(stream_arn).to_string();
    let seq = match entry["sequence_number"].as_str() {
        Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{:0>40}", s.trim_start_matches('0'))
        }
        Some(s) => s.to_string(),
        None => String::new(),
    };
    (label, seq)
}

/// The canonical DynamoDB JSON of a key given as JSON (`None`: not a key).
fn canonical_key(value: &serde_json::Value) -> Option<String> {
    let key: Item = serde_json::from_value(value.clone()).ok()?;
    (!key.is_empty()).then(|| canonical_key_json(&key))
}

/// Checks a bundle, with no access to anything but the bundle and the key:
///
/// - every digest hashes to its hash, is signed by `key`, is the digest of
///   the stream and number it is filed under, and of the bundle's table;
/// - every entry hashes to its hash, is of the bundle's table and key, and
///   is included, at its `leaf_index`, in the tree its digest signs;
/// - no leaf is there twice; the entries are in the item's history order
///   (stream, then sequence number; within a shard, leaf index);
/// - the header (table, key, key fingerprint, span) says what the entries
///   and digests say.
pub fn check_bundle(bundle: &Bundle, key: Option<&PublicKey>) -> BundleVerdict {
    let mut r = Report {
        bundle,
        out: Vec::new(),
    };
    if bundle.kind != BUNDLE_TYPE {
        r.header(
            Severity::Unverifiable,
            Kind::NotCheckable,
            format!("not a {BUNDLE_TYPE} file (type {:?})", bundle.kind),
        );
        return BundleVerdict {
            findings: r.out,
            ..BundleVerdict::default()
        };
    }
    let header_key = canonical_key(&bundle.key);
    if header_key.is_none() {
        r.header(
            Severity::Tamper,
            Kind::BundleHeader,
            format!("the header's key {} is not a DynamoDB key", bundle.key),
        );
    }
    let digests = check_digests(bundle, key, &mut r);
    if bundle.entries.is_empty() {
        r.header(
            Severity::Unverifiable,
            Kind::NotCheckable,
            "the bundle holds no entry: it proves nothing".into(),
        );
    }
    let mut proven = vec![false; bundle.entries.len()];
    let mut seen: HashMap<&str, usize> = HashMap::new();
    // The previous entry in history order, and per (stream, shard) the
    // previous leaf index.
    let mut previous: Option<(usize, (String, String))> = None;
    let mut shard_index: HashMap<(&str, &str), (usize, u64)> = HashMap::new();
    for (i, e) in bundle.entries.iter().enumerate() {
        if let Some(first) = seen.get(e.proof.hash.as_str()) {
            r.entry(
                Severity::Tamper,
                Kind::Duplicated,
                i,
                None,
                &format!("the same leaf as bundle entry {}: duplicated", first + 1),
            );
            continue;
        }
        seen.insert(&e.proof.hash, i);
        proven[i] = check_entry(bundle, i, &digests, header_key.as_deref(), &mut r);
        // History order.
        let position = history_position(&e.stream_arn, &e.entry);
        if let Some((p, before)) = &previous {
            if position <= *before {
                r.entry(
                    Severity::Tamper,
                    Kind::Reordered,
                    i,
                    None,
                    &format!(
                        "out of order: the item's history puts it before bundle entry {} ({})",
                        p + 1,
                        describe(&bundle.entries[*p])
                    ),
                );
            }
        }
        if let Some((p, index)) = shard_index.get(&(e.stream_arn.as_str(), e.shard_id.as_str())) {
            if e.proof.leaf_index <= *index {
                r.entry(
                    Severity::Tamper,
                    Kind::Reordered,
                    i,
                    None,
                    &format!(
                        "out of order: it is leaf {} of shard {}, bundle entry {} is leaf {index}",
                        e.proof.leaf_index,
                        e.shard_id,
                        p + 1
                    ),
                );
            }
        }
        shard_index.insert((&e.stream_arn, &e.shard_id), (i, e.proof.leaf_index));
        if previous
            .as_ref()
            .is_none_or(|(_, before)| position > *before)
        {
            previous = Some((i, position));
        }
    }
    let chain = check_item_chain_of(bundle, &digests, &mut r);
    check_span(bundle, &mut r);
    let mut span = proven_span(bundle, &proven);
    if let Some(span) = span.as_mut() {
        span.chain = chain;
    }
    let mut gaps: Vec<ProvenGap> = bundle
        .gaps
        .iter()
        .enumerate()
        .filter_map(|(i, g)| check_gap(bundle, i, g, &digests, &mut r))
        .collect();
    bracket_open_gaps(&mut gaps);
    BundleVerdict {
        findings: r.out,
        span,
        gaps,
    }
}

/// An open gap's right bracket, from a proven gap of the same stream that
/// names it in `closes` (a written gap is never updated: its end is in the
/// later leaf).
fn bracket_open_gaps(gaps: &mut [ProvenGap]) {
    let closures: Vec<(String, GapRef, GapClosure)> = gaps
        .iter()
        .flat_map(|c| {
            c.closes.iter().map(|named| {
                let closure = GapClosure {
                    shard_id: c.shard_id.clone(),
                    resumed_at_sequence_number: c.resumed_at_sequence_number.clone(),
                    resumed_at_time: c.resumed_at_time.clone(),
                };
                (c.stream_arn.clone(), named.clone(), closure)
            })
        })
        .collect();
    for g in gaps
        .iter_mut()
        .filter(|g| g.resumed_at_sequence_number.is_none() && g.closes.is_empty())
    {
        let me = GapRef {
            shard_id: g.shard_id.clone(),
            after_sequence_number: g.after_sequence_number.clone(),
        };
        g.closed_by = closures
            .iter()
            .find(|(arn, named, _)| *arn == g.stream_arn && *named == me)
            .map(|(_, _, closure)| closure.clone());
    }
}

/// One gap: of the bundle's table, hashing to its hash, included in the
/// tree its digest signs.
fn check_gap(
    bundle: &Bundle,
    i: usize,
    g: &BundleGap,
    digests: &HashMap<(&str, u64), Digest>,
    r: &mut Report,
) -> Option<ProvenGap> {
    let text = |name: &str| g.gap[name].as_str().map(str::to_string);
    let mut wrong = Vec::new();
    if text("table").as_deref() != Some(bundle.table.as_str()) {
        wrong.push(format!(
            "it is of table {}, not of {}",
            g.gap["table"], bundle.table
        ));
    }
    if text("stream_arn").as_deref() != Some(g.stream_arn.as_str())
        || text("shard_id").as_deref() != Some(g.shard_id.as_str())
    {
        wrong.push("it is filed under another stream or shard than it names".into());
    }
    let proof = &g.proof;
    let prev = proof.prev_hash.as_deref().and_then(parse_hash);
    let computed = document_hash(&gap_document(&g.gap, prev.as_ref())).ok();
    if computed.is_none() || computed != parse_hash(&proof.hash) {
        wrong.push("its content does not hash to its hash: altered".into());
    }
    match digests.get(&(g.stream_arn.as_str(), proof.digest_number)) {
        None => wrong.push(format!(
            "digest {} of {}, which proves it, is not in the bundle",
            proof.digest_number, g.stream_arn
        )),
        Some(digest) if !proof.included_in(digest, &g.shard_id) => wrong.push(format!(
            "its inclusion proof does not lead to the root digest {} signed for shard {}",
            proof.digest_number, g.shard_id
        )),
        Some(_) => {}
    }
    if !wrong.is_empty() {
        let mut f = r.finding(
            Severity::Tamper,
            Kind::Gap,
            &g.stream_arn,
            format!(
                "bundle gap {} (shard {}): {}",
                i + 1,
                g.shard_id,
                wrong.join("; ")
            ),
        );
        f.shard_id = Some(g.shard_id.clone());
        f.digest = Some(proof.digest_number);
        r.out.push(f);
        return None;
    }
    Some(ProvenGap {
        stream_arn: g.stream_arn.clone(),
        shard_id: g.shard_id.clone(),
        after_sequence_number: text("after_sequence_number"),
        after_time: text("after_time"),
        resumed_at_sequence_number: text("resumed_at_sequence_number"),
        resumed_at_time: text("resumed_at_time"),
        digest_number: proof.digest_number,
        closes: serde_json::from_value(g.gap["closes"].clone()).unwrap_or_default(),
        closed_by: None,
    })
}

/// The digests on their own; returns the parsed ones by (stream, number).
fn check_digests<'b>(
    bundle: &'b Bundle,
    key: Option<&PublicKey>,
    r: &mut Report,
) -> HashMap<(&'b str, u64), Digest> {
    let mut parsed = HashMap::new();
    let mut unsigned = false;
    let mut fingerprints: HashSet<String> = HashSet::new();
    for d in &bundle.digests {
        let n = d.number;
        let arn = &d.stream_arn;
        if d.signed.computed_hash() != d.signed.hash || !d.signed.is_canonical() {
            r.digest(
                Severity::Tamper,
                Kind::DigestAltered,
                d,
                format!("digest {n} of {arn}: its bytes do not match its hash"),
            );
        }
        let doc = d.signed.parse().ok();
        match (&d.signed.signature_bytes(), key) {
            (Some(sig), Some(key)) => {
                let named = doc
                    .as_ref()
                    .and_then(|doc| doc.key.as_ref())
                    .map(|k| k.fingerprint.clone());
                if named.as_deref().is_some_and(|f| f != key.fingerprint()) {
                    r.digest(
                        Severity::Tamper,
                        Kind::BadSignature,
                        d,
                        format!(
                            "digest {n} of {arn} names signing key {}, not the given key {}",
                            named.unwrap_or_default(),
                            key.fingerprint()
                        ),
                    );
                } else if !key.verify(d.signed.digest.as_bytes(), sig) {
                    r.digest(
                        Severity::Tamper,
                        Kind::BadSignature,
                        d,
                        format!(
                            "digest {n} of {arn}: the signature does not verify with {}",
                            key.fingerprint()
                        ),
                    );
                }
            }
            (Some(_), None) => r.digest(
                Severity::Unverifiable,
                Kind::NotCheckable,
                d,
                format!(
                    "digest {n} of {arn} is signed by {}, but no public key was given \
                     (--public-key FILE)",
                    bundle
                        .public_key_fingerprint
                        .as_deref()
                        .unwrap_or("an unnamed key")
                ),
            ),
            (None, Some(key)) => r.digest(
                Severity::Tamper,
                Kind::BadSignature,
                d,
                format!(
                    "digest {n} of {arn} carries no signature, but {} was expected",
                    key.fingerprint()
                ),
            ),
            (None, None) => unsigned = true,
        }
        let Some(doc) = doc else {
            r.digest(
                Severity::Tamper,
                Kind::DigestAltered,
                d,
                format!("digest {n} of {arn} is not a digest document"),
            );
            continue;
        };
        if doc.number != n || doc.stream_arn != *arn {
            r.digest(
                Severity::Tamper,
                Kind::DigestAltered,
                d,
                format!(
                    "digest {n} of {arn} says it is number {} of {}",
                    doc.number, doc.stream_arn
                ),
            );
        }
        if doc.table != bundle.table {
            r.digest(
                Severity::Tamper,
                Kind::Foreign,
                d,
                format!(
                    "digest {n} of {arn} is of table {}, the header says {}",
                    doc.table, bundle.table
                ),
            );
        }
        if let Some(k) = &doc.key {
            fingerprints.insert(k.fingerprint.clone());
        }
        if parsed.insert((arn.as_str(), n), doc).is_some() {
            r.digest(
                Severity::Tamper,
                Kind::Duplicated,
                d,
                format!("digest {n} of {arn} is in the bundle twice"),
            );
        }
    }
    if let Some(f) = &bundle.public_key_fingerprint {
        for named in fingerprints.iter().filter(|named| *named != f) {
            r.header(
                Severity::Tamper,
                Kind::BundleHeader,
                format!("the header names signing key {f}, the digests name {named}"),
            );
        }
    }
    if unsigned {
        r.header(
            Severity::Info,
            Kind::Unsigned,
            "the digests are unsigned: the bundle shows consistency, not who wrote it".into(),
        );
    }
    parsed
}

/// One entry: of the bundle's table and key, hashing to its hash, included
/// in the tree its digest signs. Returns whether it is proven.
fn check_entry(
    bundle: &Bundle,
    i: usize,
    digests: &HashMap<(&str, u64), Digest>,
    header_key: Option<&str>,
    r: &mut Report,
) -> bool {
    let e = &bundle.entries[i];
    let mut ok = true;
    let table = e.entry["table"].as_str().unwrap_or_default();
    if table != bundle.table {
        r.entry(
            Severity::Tamper,
            Kind::Foreign,
            i,
            None,
            &format!(
                "an entry of table {table:?}, not of {}: not this item's",
                bundle.table
            ),
        );
        ok = false;
    }
    let key = canonical_key(&e.entry["key"]);
    if header_key.is_some() && key.as_deref() != header_key {
        r.entry(
            Severity::Tamper,
            Kind::Foreign,
            i,
            None,
            &format!(
                "an entry of key {}, not of {}: another item's",
                e.entry["key"], bundle.key
            ),
        );
        ok = false;
    }
    let own_shard = e.entry["shard_id"].as_str();
    if own_shard.is_some_and(|s| s != e.shard_id) {
        r.entry(
            Severity::Tamper,
            Kind::Altered,
            i,
            None,
            &format!(
                "filed under shard {}, but the entry says shard {}",
                e.shard_id,
                own_shard.unwrap_or_default()
            ),
        );
        ok = false;
    }
    let proof = &e.proof;
    let prev = proof.prev_hash.as_deref().and_then(parse_hash);
    let computed = document_hash(&entry_document(&e.stream_arn, &e.entry, prev.as_ref())).ok();
    if computed.is_none() || computed != parse_hash(&proof.hash) {
        r.entry(
            Severity::Tamper,
            Kind::Altered,
            i,
            None,
            "its content does not hash to its hash: altered",
        );
        return false;
    }
    let Some(digest) = digests.get(&(e.stream_arn.as_str(), proof.digest_number)) else {
        r.entry(
            Severity::Tamper,
            Kind::DigestMissing,
            i,
            Some(proof.digest_number),
            &format!(
                "digest {} of {}, which proves it, is not in the bundle",
                proof.digest_number, e.stream_arn
            ),
        );
        return false;
    };
    if !proof.included_in(digest, &e.shard_id) {
        r.entry(
            Severity::Tamper,
            Kind::Inserted,
            i,
            Some(proof.digest_number),
            &format!(
                "its inclusion proof does not lead to the Merkle root digest {} signed for \
                 shard {}: not the entry the trail holds there",
                proof.digest_number, e.shard_id
            ),
        );
        return false;
    }
    ok
}

/// The header's span against the entries.
fn check_span(bundle: &Bundle, r: &mut Report) {
    let actual = BundleSpan::of(&bundle.entries);
    match (&bundle.span, actual) {
        (None, Some(_)) => r.header(
            Severity::Info,
            Kind::BundleHeader,
            "the header states no span (a bundle exported before spans were stated): \
             the span is read from the entries"
                .into(),
        ),
        (Some(claimed), actual) if Some(claimed) != actual.as_ref() => {
            let said = |s: &BundleSpan| {
                format!(
                    "{} entries, the last at {} ({})",
                    s.entries,
                    s.last.sequence_number.as_deref().unwrap_or("a snapshot"),
                    s.last.event_time.as_deref().unwrap_or("no time"),
                )
            };
            r.header(
                Severity::Tamper,
                Kind::BundleHeader,
                format!(
                    "the header says the bundle holds {}; it holds {}: entries were cut off or \
                     added, or the header altered",
                    said(claimed),
                    actual
                        .as_ref()
                        .map(said)
                        .unwrap_or_else(|| "no entry".into())
                ),
            );
        }
        _ => {}
    }
}

/// The item chain over the bundle's stream entries (§2a), in the order
/// the bundle gives them: each must follow the one before it. SNAPSHOT
/// entries stand outside the chain; a leaf given twice counts once.
fn check_item_chain_of(
    bundle: &Bundle,
    digests: &HashMap<(&str, u64), Digest>,
    r: &mut Report,
) -> ChainProof {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut index = Vec::new();
    let mut chain = Vec::new();
    let mut snapshots = 0;
    let now = chrono::Utc::now();
    let mut before: Option<&BundleEntry> = None;
    for (i, e) in bundle.entries.iter().enumerate() {
        if !seen.insert(e.proof.hash.as_str()) {
            continue;
        }
        if e.entry["sequence_number"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            snapshots += 1;
            continue;
        }
        // Under a retention policy (the digest states it) the entry this
        // one follows may be gone by policy, not by tampering: before the
        // bundle's first entry, always; between two entries, only if the
        // older of them is past its own expiry (TTL deletes late and in no
        // order, so a younger neighbour may go first); else the hole is a
        // deletion.
        let retention = digests
            .get(&(e.stream_arn.as_str(), e.proof.digest_number))
            .map_or(Some(0), |d| d.retention_days);
        let may_have_expired = match (retention, before) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(days), Some(older)) => older.entry["event_time"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| {
                    now - t.with_timezone(&chrono::Utc)
                        > chrono::Duration::days(i64::try_from(days).unwrap_or(i64::MAX))
                }),
        };
        before = Some(e);
        index.push(i);
        chain.push(ChainEntry {
            hash: e.proof.hash.clone(),
            link: ItemLink::of(&e.entry),
            may_have_expired,
        });
    }
    let (issues, summary) = check_item_chain(&chain);
    for issue in issues {
        r.entry(
            issue.severity,
            issue.kind,
            index[issue.index],
            None,
            &issue.message,
        );
    }
    let unlinked = summary.unlinked_prefix;
    if unlinked > 0 {
        let through = index[unlinked - 1] + 1;
        r.header(
            Severity::Info,
            Kind::Unchained,
            format!(
                "entries 1 to {through} were written before the item chain existed: that                  none of the item's entries is missing among them is not proven (each is                  proven on its own)"
            ),
        );
    }
    if snapshots > 0 {
        r.header(
            Severity::Info,
            Kind::Unchained,
            format!(
                "{snapshots} SNAPSHOT entr{} (a baseline read by `snapshot`) stand outside                  the item chain: each is proven on its own, and the bundle does not prove                  that no other snapshot of the item exists",
                if snapshots == 1 { "y" } else { "ies" }
            ),
        );
    }
    ChainProof {
        chained_from: summary.first_linked.map(|i| index[i] as u64 + 1),
        unlinked_prefix: unlinked as u64,
        starts_after_sequence_number: summary.starts_after.filter(|s| !s.is_empty()),
    }
}

/// The span the entries prove, when every one of them is proven.
fn proven_span(bundle: &Bundle, proven: &[bool]) -> Option<ProvenSpan> {
    if proven.is_empty() || proven.iter().any(|p| !p) {
        return None;
    }
    let key: Item = serde_json::from_value(bundle.key.clone()).ok()?;
    let (first, last) = (bundle.entries.first()?, bundle.entries.last()?);
    let time = |e: &BundleEntry| e.entry["event_time"].as_str().map(str::to_string);
    let seq = |e: &BundleEntry| e.entry["sequence_number"].as_str().map(str::to_string);
    Some(ProvenSpan {
        table: bundle.table.clone(),
        key: key_text(&key),
        entries: bundle.entries.len() as u64,
        first_time: time(first),
        last_time: time(last),
        first_sequence_number: seq(first),
        last_sequence_number: seq(last),
        chain: ChainProof::default(),
    })
}

#[cfg(test)]
mod tests;
