//! `verify` and `export --proof` against the store: gathers the evidence
//! (one Scan), runs the pure checks of `verify`, keeps `--state`, builds
//! bundles. The CLI and the HTTP API both call these.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::proof::bundle::{
    Bundle, BundleDigest, BundleEntry, BundleGap, BundleSpan, LeafProof, BUNDLE_TYPE,
};
use crate::proof::chain::parse_hash;
use crate::proof::merkle::{inclusion_proof, Hash};
use crate::proof::sign::PublicKey;
use crate::proof::verify::{
    exit_status, verify_stream, Finding, Kind, Severity, StreamEvidence, VerifyOptions, VerifyState,
};
use crate::store::dynamo::DynamoStore;
use crate::store::evidence::EvidenceReads;
use crate::store::{StoreError, StoreResult};
use crate::stream::cmp_sequence;
use crate::value::Item;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    State(String),
    #[error("{0}")]
    Export(String),
}

/// Where `verify` reads the trail's evidence from: any store that offers
/// the raw reads of [`EvidenceReads`] (the DynamoDB store, one Scan; the
/// memory store, for the simulator and the API's tests), assembled by the
/// one [`crate::store::evidence::gather`].
pub trait EvidenceStore: Send + Sync {
    /// Every stream's evidence, of `tables` only when given. `progress` is
    /// told how many stored items have been read so far.
    fn proof_evidence(
        &self,
        tables: Option<&[String]>,
        progress: impl FnMut(u64) + Send,
    ) -> impl Future<Output = StoreResult<Vec<StreamEvidence>>> + Send;
}

impl<S: EvidenceReads> EvidenceStore for S {
    fn proof_evidence(
        &self,
        tables: Option<&[String]>,
        progress: impl FnMut(u64) + Send,
    ) -> impl Future<Output = StoreResult<Vec<StreamEvidence>>> + Send {
        crate::store::evidence::gather(self, tables, progress)
    }
}

pub struct VerifyRequest {
    /// The tables to check; `None`: every table in the trail.
    pub tables: Option<Vec<String>>,
    pub since: Option<DateTime<Utc>>,
    pub public_key: Option<PublicKey>,
    pub state_file: Option<PathBuf>,
    pub interval_secs: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifySummary {
    pub summary: bool,
    pub status: &'static str,
    pub exit_status: i32,
    pub streams: usize,
    pub entries: u64,
    pub digests: u64,
    pub tamper_findings: usize,
    pub seconds: f64,
    pub entries_per_second: f64,
    pub key_fingerprint: Option<String>,
}

pub struct VerifyOutcome {
    pub findings: Vec<Finding>,
    pub summary: VerifySummary,
}

fn load_state(path: &Path) -> Result<VerifyState, CheckError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            CheckError::State(format!(
                "--state {}: not a verify state file ({e}); move it away to start afresh",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(VerifyState::default()),
        Err(e) => Err(CheckError::State(format!(
            "--state {}: {e}",
            path.display()
        ))),
    }
}

fn save_state(path: &Path, state: &VerifyState) -> Result<(), CheckError> {
    let text = serde_json::to_string_pretty(state)
        .map_err(|e| CheckError::State(format!("encoding the state: {e}")))?;
    // Write then rename: a crash never leaves half a state file, which would
    // make the next run start afresh and forget what it had proven.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text + "\n")
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| CheckError::State(format!("--state {}: {e}", path.display())))
}

pub async fn verify_trail<S: EvidenceStore>(
    store: &S,
    req: &VerifyRequest,
    progress: impl FnMut(u64) + Send,
) -> Result<VerifyOutcome, CheckError> {
    let started = Instant::now();
    let mut state = match &req.state_file {
        Some(path) => load_state(path)?,
        None => VerifyState::default(),
    };
    let evidence = store
        .proof_evidence(req.tables.as_deref(), progress)
        .await?;
    let now = Utc::now();
    let mut findings = Vec::new();
    let (mut entries, mut digests) = (0, 0);
    for ev in &evidence {
        let report = verify_stream(
            ev,
            &VerifyOptions {
                public_key: req.public_key.as_ref(),
                now,
                interval_secs: req.interval_secs,
                remembered: state.streams.get(&ev.stream_arn),
            },
        );
        entries += report.entries;
        digests += report.digests;
        if let Some(newest) = report.newest_intact {
            state.streams.insert(ev.stream_arn.clone(), newest);
        }
        findings.extend(report.findings);
    }
    // One item's entries may sit in several streams: its chain is checked
    // over all of them.
    findings.extend(crate::proof::verify::items::verify_item_chains(&evidence));
    if let Some(since) = req.since {
        // Digest findings older than --since are dropped; entries are
        // always checked, since the chain runs through them all.
        let since_text = crate::entry::format_ts(since);
        findings.retain(|f| {
            !(f.kind == Kind::BadSignature
                && f.digest.is_some()
                && digest_time(&evidence, f).is_some_and(|t| t < since_text))
        });
    }
    let code = exit_status(&findings);
    if let Some(path) = &req.state_file {
        if code != 1 {
            save_state(path, &state)?;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let tamper_findings = findings
        .iter()
        .filter(|f| f.severity == Severity::Tamper)
        .count();
    Ok(VerifyOutcome {
        summary: VerifySummary {
            summary: true,
            status: match code {
                0 => "intact",
                1 => "tampered",
                _ => "unverifiable",
            },
            exit_status: code,
            streams: evidence.len(),
            entries,
            digests,
            tamper_findings,
            seconds,
            entries_per_second: if seconds > 0.0 {
                entries as f64 / seconds
            } else {
                0.0
            },
            key_fingerprint: req.public_key.as_ref().map(PublicKey::fingerprint),
        },
        findings,
    })
}

fn digest_time(evidence: &[crate::proof::verify::StreamEvidence], f: &Finding) -> Option<String> {
    let ev = evidence.iter().find(|e| e.stream_arn == f.stream_arn)?;
    let d = ev.digests.iter().find(|d| Some(d.number) == f.digest)?;
    d.signed.parse().ok().map(|doc| doc.time)
}

/// The shards' leaves and the streams' digests an export has read.
#[derive(Default)]
struct ExportReads {
    shards: std::collections::HashMap<(String, String), Vec<Hash>>,
    digests: std::collections::HashMap<String, Vec<(u64, crate::proof::digest::SignedDigest)>>,
    /// The digests the bundle carries, in the order first needed.
    used: Vec<BundleDigest>,
}

impl ExportReads {
    /// Proves the leaf `hash` (linked to `prev_hash`) of (stream, shard) by
    /// the first digest whose tree for that shard holds it; `what` names it
    /// in errors.
    async fn prove(
        &mut self,
        store: &DynamoStore,
        stream_arn: &str,
        shard_id: &str,
        hash: Hash,
        prev_hash: Option<String>,
        what: &str,
    ) -> Result<LeafProof, CheckError> {
        let cache_key = (stream_arn.to_string(), shard_id.to_string());
        if !self.shards.contains_key(&cache_key) {
            let mut leaves = store.shard_leaves(stream_arn, shard_id).await?;
            leaves.sort_by(|a, b| cmp_sequence(&a.0, &b.0).then(a.1.cmp(&b.1)));
            self.shards
                .insert(cache_key.clone(), leaves.into_iter().map(|l| l.2).collect());
        }
        let leaves = &self.shards[&cache_key];
        let Some(index) = leaves.iter().position(|h| *h == hash) else {
            return Err(CheckError::Export(format!(
                "{what} is not in its shard's chain: run `ddb-audit verify`"
            )));
        };
        if !self.digests.contains_key(stream_arn) {
            self.digests
                .insert(stream_arn.to_string(), store.digests(stream_arn).await?);
        }
        let covering = self.digests[stream_arn].iter().find_map(|(n, signed)| {
            let doc = signed.parse().ok()?;
            let head = doc.shards.iter().find(|h| h.shard_id == shard_id)?;
            (head.size as usize > index).then(|| (*n, signed.clone(), head.size as usize))
        });
        let Some((number, signed, size)) = covering else {
            return Err(CheckError::Export(format!(
                "{what} is not covered by a digest yet: export again after the next digest \
                 (every [proof] digest_interval_secs)"
            )));
        };
        if size > leaves.len() {
            return Err(CheckError::Export(format!(
                "digest {number} covers {size} entries of shard {shard_id}, the table holds {}: \
                 run `ddb-audit verify`",
                leaves.len()
            )));
        }
        let path = inclusion_proof(&leaves[..size], index).unwrap_or_default();
        if !self
            .used
            .iter()
            .any(|d| d.stream_arn == stream_arn && d.number == number)
        {
            self.used.push(BundleDigest {
                stream_arn: stream_arn.to_string(),
                number,
                signed,
            });
        }
        Ok(LeafProof {
            prev_hash,
            hash: hex::encode(hash),
            leaf_index: index as u64,
            tree_size: size as u64,
            digest_number: number,
            inclusion_proof: path.iter().map(hex::encode).collect(),
        })
    }

    /// Each shard's parent, as the digests read so far state it.
    fn parents(&self, stream_arn: &str) -> std::collections::HashMap<String, String> {
        let mut out = std::collections::HashMap::new();
        for (_, signed) in self.digests.get(stream_arn).into_iter().flatten() {
            if let Ok(doc) = signed.parse() {
                for h in doc.shards {
                    if let Some(p) = h.parent_shard_id {
                        out.insert(h.shard_id, p);
                    }
                }
            }
        }
        out
    }
}

/// A self-contained proof of one item's entries, and of the gaps that
/// touch its shard lineage between its first and last entry.
pub async fn export_bundle(
    store: &DynamoStore,
    table: &str,
    key: &Item,
    fingerprint: Option<String>,
) -> Result<Bundle, CheckError> {
    let rows = store.history_linked(table, key).await?;
    if rows.is_empty() {
        return Err(CheckError::Export(format!(
            "no entries for that key in table {table}: check --table and --key"
        )));
    }
    let mut reads = ExportReads::default();
    let mut entries = Vec::new();
    for row in rows {
        let (stream_arn, hash, prev) = (row.stream_arn, row.hash, row.prev_hash);
        let entry: serde_json::Value = serde_json::from_str(&row.json)
            .map_err(|e| CheckError::Export(format!("a stored entry is not JSON: {e}")))?;
        let shard_id = row
            .chain_shard
            .unwrap_or_else(|| entry["shard_id"].as_str().unwrap_or_default().to_string());
        let seq = entry["sequence_number"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let Some(hash) = hash.as_deref().and_then(parse_hash) else {
            return Err(CheckError::Export(format!(
                "the entry at sequence {seq} has no hash (written before the chain existed): \
                 it cannot be proven"
            )));
        };
        let what = format!("the entry at sequence {seq}");
        let proof = reads
            .prove(store, &stream_arn, &shard_id, hash, prev, &what)
            .await?;
        entries.push(BundleEntry {
            stream_arn,
            shard_id,
            entry,
            proof,
        });
    }
    let gaps = lineage_gaps(store, table, &entries, &mut reads).await?;
    Ok(Bundle {
        kind: BUNDLE_TYPE.into(),
        table: table.to_string(),
        key: serde_json::to_value(key).unwrap_or(serde_json::Value::Null),
        created_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        public_key_fingerprint: fingerprint,
        span: BundleSpan::of(&entries),
        entries,
        digests: reads.used,
        gaps,
    })
}

/// The gaps that touch the item's lineage between its first and last
/// entry: in a stream between theirs, any gap; in the stream of the first
/// or last entry, a gap in a shard on the lineage from the first entry's
/// shard to the last one's, after the first entry and before the last.
async fn lineage_gaps(
    store: &DynamoStore,
    table: &str,
    entries: &[BundleEntry],
    reads: &mut ExportReads,
) -> Result<Vec<BundleGap>, CheckError> {
    use crate::store::AuditStore as _;
    use crate::stream::stream_label;
    let streamed: Vec<&BundleEntry> = entries
        .iter()
        .filter(|e| e.entry["sequence_number"].is_string())
        .collect();
    let (Some(first), Some(last)) = (streamed.first(), streamed.last()) else {
        return Ok(Vec::new());
    };
    let seq = |e: &BundleEntry| {
        e.entry["sequence_number"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (first_label, last_label) = (
        stream_label(&first.stream_arn),
        stream_label(&last.stream_arn),
    );
    let mut out = Vec::new();
    for gap in store.gaps().await? {
        if gap.table != table {
            continue;
        }
        let label = stream_label(&gap.stream_arn);
        if label < first_label || label > last_label {
            continue;
        }
        let after = gap.after_sequence_number.as_deref();
        let within = |lineage: &[String], from: Option<&BundleEntry>, to: Option<&BundleEntry>| {
            if !lineage.contains(&gap.shard_id) {
                return false;
            }
            let after_first = from.is_none_or(|f| {
                f.shard_id != gap.shard_id
                    || after.is_some_and(|a| cmp_sequence(a, &seq(f)).is_ge())
            });
            let before_last = to.is_none_or(|l| {
                l.shard_id != gap.shard_id || after.is_none_or(|a| cmp_sequence(a, &seq(l)).is_lt())
            });
            after_first && before_last
        };
        let in_span = if gap.stream_arn == last.stream_arn || gap.stream_arn == first.stream_arn {
            // The lineage of this stream's part of the span: up from the
            // last entry of the item in this stream to its first.
            let mine: Vec<&&BundleEntry> = streamed
                .iter()
                .filter(|e| e.stream_arn == gap.stream_arn)
                .collect();
            let (Some(from), Some(to)) = (mine.first(), mine.last()) else {
                continue;
            };
            // The digests of the stream are read once the entries are proven.
            let parents = reads.parents(&gap.stream_arn);
            // In the first entry's stream the lineage starts at its shard;
            // in a later stream, at the stream's first shard.
            let stop = (gap.stream_arn == first.stream_arn).then_some(&from.shard_id);
            let mut lineage = vec![to.shard_id.clone()];
            while let Some(p) = parents.get(lineage.last().unwrap()) {
                if stop == lineage.last() || lineage.contains(p) {
                    break;
                }
                lineage.push(p.clone());
            }
            let from = (gap.stream_arn == first.stream_arn).then_some(**from);
            let to = (gap.stream_arn == last.stream_arn).then_some(**to);
            within(&lineage, from, to)
        } else {
            true
        };
        if !in_span {
            continue;
        }
        let what = format!("the gap in shard {} after {:?}", gap.shard_id, after);
        let Some(link) = store.gap_link(&gap).await? else {
            continue;
        };
        let value = serde_json::to_value(&gap)
            .map_err(|e| CheckError::Export(format!("encoding {what}: {e}")))?;
        let prev = link.prev_hash;
        let rehashed = crate::proof::chain::document_hash(&crate::proof::chain::gap_document(
            &value,
            prev.as_ref(),
        ))
        .ok();
        if rehashed != Some(link.hash) {
            return Err(CheckError::Export(format!(
                "{what} does not hash to its stored hash: run `ddb-audit verify`"
            )));
        }
        let proof = reads
            .prove(
                store,
                &gap.stream_arn,
                &gap.shard_id,
                link.hash,
                prev.map(hex::encode),
                &what,
            )
            .await?;
        out.push(BundleGap {
            stream_arn: gap.stream_arn.clone(),
            shard_id: gap.shard_id.clone(),
            gap: value,
            proof,
        });
    }
    Ok(out)
}

/// One line per finding, for people.
pub fn finding_line(f: &Finding) -> String {
    let severity = match f.severity {
        Severity::Tamper => "TAMPERED",
        Severity::Unverifiable => "UNCHECKED",
        Severity::Info => "note",
    };
    let kind = serde_json::to_value(f.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut at = vec![f.table.clone()];
    if let Some(k) = &f.key {
        at.push(k.to_string());
    }
    if let Some(s) = &f.sequence_number {
        at.push(format!("seq {s}"));
    }
    if let Some(s) = &f.shard_id {
        at.push(format!("shard {s}"));
    }
    if let Some(d) = f.digest {
        at.push(format!("digest {d}"));
    }
    format!("{severity:<9} {kind:<18} {}: {}", at.join(" "), f.message)
}
