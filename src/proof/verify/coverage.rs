//! One shard's walked chain against the digests and its checkpoint: every
//! head a digest signed must be reached, with the same last hash and Merkle
//! root; entries no digest covers yet are reported, as a tamper once late.

use std::collections::HashMap;

use super::{CheckedDigest, Kind, Leaf, Reporter, Severity, StreamEvidence, VerifyOptions};
use crate::proof::merkle::{Frontier, Hash};

/// The shard's chain against every digest's head for it and its checkpoint.
pub(super) fn check_coverage(
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
    // Where the chain ends, for the truncation findings.
    let reach = format!(
        "the table's chain reaches {known} and {}",
        known.checked_sub(1).and_then(|i| at.get(&i)).map_or_else(
            || "holds none".to_string(),
            |l| format!("ends at sequence {}", l.sequence_number)
        )
    );
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
                r.shard(
                    Severity::Tamper,
                    Kind::Truncated,
                    shard,
                    Some(d.number),
                    format!(
                        "digest {} covers {} entries of shard {shard} (to sequence {}); \
                         {reach}: the newest {} were deleted",
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
                r.shard(
                    Severity::Tamper,
                    Kind::Truncated,
                    shard,
                    None,
                    format!(
                        "the checkpoint of shard {shard} says {} entries were written (to \
                         sequence {}); {reach}: entries \
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
