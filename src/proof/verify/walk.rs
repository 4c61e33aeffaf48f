//! One shard's chain, followed link by link from its start: what is altered,
//! inserted, reordered, deleted or expired, and each leaf's position in the
//! shard's Merkle tree where a digest anchors it.

use std::collections::{HashMap, HashSet};

use super::{short, what, Kind, Leaf, Reporter, Severity};
use crate::proof::merkle::Hash;

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
pub(super) struct Anchor {
    pub(super) digest: u64,
    pub(super) size: u64,
    pub(super) time: Option<chrono::DateTime<chrono::Utc>>,
    pub(super) retention_days: Option<u64>,
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
pub(super) type Walked<'l> = Vec<(&'l Leaf, Option<u64>)>;

/// Follows one shard's chain; returns its leaves in chain order and reports
/// what does not link.
#[allow(clippy::too_many_arguments)]
pub(super) fn walk_shard<'l>(
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
