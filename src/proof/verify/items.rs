//! The item chain check (proof format §2a), one for `verify` on the live
//! trail and for `verify-bundle`: one item's stream entries, in history
//! order, each naming the one before it by leaf hash.

use std::collections::HashMap;

use serde_json::Value;

use super::{Finding, Kind, Severity, StreamEvidence};

/// What an entry's `item_prev` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemLink {
    /// No `item_prev`: written before the item chain existed.
    Unlinked,
    /// `"item_prev": null`: the item's first stream entry.
    First,
    /// The previous stream entry's leaf hash (hex) and sequence number.
    Prev {
        hash: String,
        sequence_number: Option<String>,
    },
    /// An `item_prev` that is neither: it cannot link to anything.
    Malformed,
}

impl ItemLink {
    /// The link an entry's stored JSON carries.
    pub fn of(entry: &Value) -> ItemLink {
        match entry.get("item_prev") {
            None => ItemLink::Unlinked,
            Some(Value::Null) => ItemLink::First,
            Some(prev) => match prev.get("hash").and_then(Value::as_str) {
                Some(hash) => ItemLink::Prev {
                    hash: hash.to_string(),
                    sequence_number: prev
                        .get("sequence_number")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                },
                None => ItemLink::Malformed,
            },
        }
    }
}

/// One stream entry of the item, as the check needs it.
#[derive(Clone, Debug)]
pub struct ChainEntry {
    /// Its leaf hash (hex) as stored or carried.
    pub hash: String,
    pub link: ItemLink,
    /// Its predecessor may be gone by policy (`[retention] days`).
    pub may_have_expired: bool,
}

/// One thing wrong (or worth knowing) about entry `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainIssue {
    pub index: usize,
    pub severity: Severity,
    pub kind: Kind,
    pub message: String,
}

/// What the chain proves, besides its issues.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainSummary {
    /// Entries before the first linked one: the unlinked prefix, which the
    /// chain does not prove complete.
    pub unlinked_prefix: usize,
    /// The first linked entry's index, if any.
    pub first_linked: Option<usize>,
    /// The first entry links to an entry that is not there (the item's
    /// earlier entries expired, or a bundle that begins later): its
    /// sequence number.
    pub starts_after: Option<String>,
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

fn prev_text(hash: &str, sequence_number: &Option<String>) -> String {
    match sequence_number {
        Some(seq) => format!("the entry at sequence {seq} (hash {}…)", short(hash)),
        None => format!("the entry with hash {}…", short(hash)),
    }
}

/// Checks one item's stream entries, in history order.
pub fn check_item_chain(entries: &[ChainEntry]) -> (Vec<ChainIssue>, ChainSummary) {
    let mut issues = Vec::new();
    let mut summary = ChainSummary::default();
    let at: std::collections::HashMap<&str, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.hash.as_str(), i))
        .collect();
    let mut issue = |index: usize, severity: Severity, kind: Kind, message: String| {
        issues.push(ChainIssue {
            index,
            severity,
            kind,
            message: format!("item chain: {message}"),
        })
    };
    for (i, e) in entries.iter().enumerate() {
        let before = i.checked_sub(1).map(|p| &entries[p]);
        match &e.link {
            ItemLink::Unlinked => match summary.first_linked {
                None => summary.unlinked_prefix += 1,
                Some(first) => issue(
                    i,
                    Severity::Tamper,
                    Kind::Inserted,
                    format!(
                        "no link to the item's previous entry, after the item's chain began \
                         (at entry {}): the daemon never writes such an entry",
                        first + 1
                    ),
                ),
            },
            ItemLink::Malformed => {
                summary.first_linked.get_or_insert(i);
                issue(
                    i,
                    Severity::Tamper,
                    Kind::Altered,
                    "its link to the item's previous entry is not a hash".into(),
                );
            }
            ItemLink::First => {
                summary.first_linked.get_or_insert(i);
                if before.is_some() {
                    issue(
                        i,
                        Severity::Tamper,
                        Kind::Inserted,
                        format!(
                            "it is the item's first entry, yet entry {} comes before it: \
                             inserted or reordered",
                            i
                        ),
                    );
                }
            }
            ItemLink::Prev {
                hash,
                sequence_number,
            } => {
                summary.first_linked.get_or_insert(i);
                if before.is_some_and(|p| p.hash == *hash) {
                    continue;
                }
                match at.get(hash.as_str()) {
                    Some(&j) if j > i => issue(
                        i,
                        Severity::Tamper,
                        Kind::Reordered,
                        format!(
                            "it follows entry {} in the item's chain, which comes after it: \
                             reordered",
                            j + 1
                        ),
                    ),
                    Some(&j) => issue(
                        i,
                        Severity::Tamper,
                        Kind::Inserted,
                        format!(
                            "it follows entry {} in the item's chain: entries {} to {} are not \
                             in the chain there (inserted or moved)",
                            j + 1,
                            j + 2,
                            i
                        ),
                    ),
                    None if before.is_none() => {
                        summary.starts_after = sequence_number.clone().or(Some(String::new()));
                        if !e.may_have_expired {
                            issue(
                                i,
                                Severity::Tamper,
                                Kind::Deleted,
                                format!(
                                    "it follows {}, which is missing, and no retention \
                                     policy could have expired it: deleted",
                                    prev_text(hash, sequence_number)
                                ),
                            );
                        } else {
                            issue(
                                i,
                                Severity::Info,
                                Kind::Expired,
                                format!(
                                    "the item's history before it ({} and earlier) is not \
                                     here: expired by the retention policy",
                                    prev_text(hash, sequence_number)
                                ),
                            );
                        }
                    }
                    None if e.may_have_expired => issue(
                        i,
                        Severity::Info,
                        Kind::Expired,
                        format!(
                            "it follows {}, which is gone: expired by the retention policy",
                            prev_text(hash, sequence_number)
                        ),
                    ),
                    None => issue(
                        i,
                        Severity::Tamper,
                        Kind::Deleted,
                        format!(
                            "it follows {}, which is missing between it and entry {}: deleted",
                            prev_text(hash, sequence_number),
                            i
                        ),
                    ),
                }
            }
        }
    }
    (issues, summary)
}

/// A stream entry of the live trail, as the item chain needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemLinkEvidence {
    /// The item key, its JSON text (names sorted).
    pub key: String,
    pub shard_id: String,
    pub sequence_number: String,
    /// Its place in the item's history: the audit table's sort key.
    pub sort_key: String,
    /// Its stored leaf hash (hex); `None`: stored without one.
    pub hash: Option<String>,
    pub link: ItemLink,
    /// It carries the retention TTL.
    pub expires: bool,
}

/// Checks every item's chain across the streams of its table: one item's
/// history may span several streams (a stream disabled and enabled again).
pub fn verify_item_chains(evidence: &[StreamEvidence]) -> Vec<Finding> {
    let mut items: HashMap<(&str, &str), Vec<(&StreamEvidence, &ItemLinkEvidence)>> =
        HashMap::new();
    for ev in evidence {
        for link in &ev.item_links {
            items
                .entry((ev.table.as_str(), link.key.as_str()))
                .or_default()
                .push((ev, link));
        }
    }
    let mut findings = Vec::new();
    // Per table: (stream of a prefix entry, items with an unlinked prefix,
    // entries in them), one note each rather than one per item.
    let mut prefixes: std::collections::BTreeMap<&str, (&str, u64, u64)> = Default::default();
    let mut keys: Vec<_> = items.keys().copied().collect();
    keys.sort();
    for id in keys {
        let Some(mut entries) = items.remove(&id) else {
            continue;
        };
        entries.sort_by(|a, b| a.1.sort_key.cmp(&b.1.sort_key));
        let chain: Vec<ChainEntry> = entries
            .iter()
            .map(|(_, l)| ChainEntry {
                hash: l.hash.clone().unwrap_or_default(),
                link: l.link.clone(),
                may_have_expired: l.expires,
            })
            .collect();
        let (issues, summary) = check_item_chain(&chain);
        if summary.unlinked_prefix > 0 {
            let note = prefixes
                .entry(id.0)
                .or_insert((entries[0].0.stream_arn.as_str(), 0, 0));
            note.1 += 1;
            note.2 += summary.unlinked_prefix as u64;
        }
        for issue in issues {
            let (ev, l) = entries[issue.index];
            findings.push(Finding {
                severity: issue.severity,
                kind: issue.kind,
                table: ev.table.clone(),
                stream_arn: ev.stream_arn.clone(),
                shard_id: Some(l.shard_id.clone()),
                key: serde_json::from_str(&l.key).ok(),
                sequence_number: Some(l.sequence_number.clone()),
                digest: None,
                message: format!(
                    "the entry at sequence {}: {}",
                    l.sequence_number, issue.message
                ),
            });
        }
    }
    for (table, (stream_arn, items, entries)) in prefixes {
        findings.push(Finding {
            severity: Severity::Info,
            kind: Kind::Unchained,
            table: table.to_string(),
            stream_arn: stream_arn.to_string(),
            shard_id: None,
            key: None,
            sequence_number: None,
            digest: None,
            message: format!(
                "item chain: {entries} entries of {items} items were written before the item \
                 chain existed (each item's unlinked prefix): each is checked in its shard's \
                 chain, and the item chain proves completeness from each item's first linked \
                 entry on"
            ),
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linked(n: usize) -> Vec<ChainEntry> {
        (0..n)
            .map(|i| ChainEntry {
                hash: format!("{i:064x}"),
                link: if i == 0 {
                    ItemLink::First
                } else {
                    ItemLink::Prev {
                        hash: format!("{:064x}", i - 1),
                        sequence_number: Some(format!("{}", (i - 1) * 100)),
                    }
                },
                may_have_expired: false,
            })
            .collect()
    }

    fn kinds(entries: &[ChainEntry]) -> Vec<(usize, Kind)> {
        check_item_chain(entries)
            .0
            .into_iter()
            .filter(|i| i.severity == Severity::Tamper)
            .map(|i| (i.index, i.kind))
            .collect()
    }

    #[test]
    fn an_intact_chain_has_no_issue() {
        let (issues, summary) = check_item_chain(&linked(5));
        assert!(issues.is_empty());
        assert_eq!(summary.first_linked, Some(0));
        assert_eq!(summary.unlinked_prefix, 0);
    }

    #[test]
    fn deletion_reorder_and_insertion_are_found() {
        let mut e = linked(5);
        e.remove(2);
        assert_eq!(kinds(&e), vec![(2, Kind::Deleted)]);
        let mut e = linked(5);
        e.swap(1, 2);
        assert!(kinds(&e).contains(&(1, Kind::Reordered)));
        let mut e = linked(5);
        e.remove(0);
        assert_eq!(kinds(&e), vec![(0, Kind::Deleted)]);
        e[0].may_have_expired = true;
        assert!(kinds(&e).is_empty());
        let mut e = linked(5);
        let extra = ChainEntry {
            hash: "f".repeat(64),
            link: ItemLink::Unlinked,
            may_have_expired: false,
        };
        e.insert(3, extra);
        assert_eq!(kinds(&e), vec![(3, Kind::Inserted), (4, Kind::Inserted)]);
    }

    #[test]
    fn an_unlinked_prefix_is_a_note_not_a_failure() {
        let mut e: Vec<ChainEntry> = (0..3)
            .map(|i| ChainEntry {
                hash: format!("{:064x}", 100 + i),
                link: ItemLink::Unlinked,
                may_have_expired: false,
            })
            .collect();
        let mut rest = linked(3);
        rest[0].link = ItemLink::Prev {
            hash: format!("{:064x}", 102),
            sequence_number: None,
        };
        e.extend(rest);
        let (issues, summary) = check_item_chain(&e);
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(summary.unlinked_prefix, 3);
        assert_eq!(summary.first_linked, Some(3));
    }
}
