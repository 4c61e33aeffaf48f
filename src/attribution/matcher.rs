//! Pairs the item writes of CloudTrail data events with audit entries of the
//! same item. Pure: the reader gives it one item's writes and the entries
//! stored for that item around their time.
//!
//! The rules:
//! - a write matches an entry of the same table and key whose event its kind
//!   can produce (Put/Update → INSERT or MODIFY, Delete → REMOVE) and whose
//!   time is within `tolerance` of the event's (both have second precision
//!   at best);
//! - several writes of one key are paired with its entries in order: the
//!   earliest write with the earliest free entry (stream order), and so on;
//! - writes of one key by *different* principals within the same second
//!   cannot be told apart (CloudTrail's `eventTime` has whole seconds, and
//!   its order within a second is not the order of the writes): their
//!   entries are marked ambiguous, naming the candidates, and no principal
//!   is guessed;
//! - a write with no matching entry stays pending (the stream may not have
//!   been read that far yet), until the reader's delivery window ends.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};

use super::cloudtrail::{ItemWrite, WriteKind};
use super::{Confidence, Principal};

/// An audit entry of the item, as the matcher needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The entry's sort key in the audit table (stream order).
    pub sk: String,
    pub event: String,
    pub time: Option<DateTime<Utc>>,
    /// Already has an attribution record: never matched again.
    pub attributed: bool,
}

/// The matcher's verdict for one entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub sk: String,
    pub principal: Principal,
    /// Indexes (into the writes given) that this decision used up.
    pub writes: Vec<usize>,
}

/// What [`match_item`] found: decisions, and the writes still waiting for
/// their entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matched {
    pub decisions: Vec<Decision>,
    pub pending: Vec<usize>,
}

/// Matches one item's writes (any order) against its entries (any order).
pub fn match_item(writes: &[ItemWrite], entries: &[Candidate], tolerance: Duration) -> Matched {
    let mut order: Vec<usize> = (0..writes.len()).collect();
    order.sort_by_key(|&i| (writes[i].event_time, i));
    let mut free: Vec<&Candidate> = entries
        .iter()
        .filter(|e| !e.attributed && e.time.is_some())
        .collect();
    free.sort_by(|a, b| a.sk.cmp(&b.sk));
    let mut taken = vec![false; free.len()];
    let near = |w: &ItemWrite, e: &Candidate| {
        e.time
            .is_some_and(|t| (t - w.event_time).abs() <= tolerance && w.kind.allows(&e.event))
    };

    // Writes in the same second that could have made the same entries (a
    // delete never makes an INSERT or MODIFY), grouped: ambiguous when their
    // principals differ.
    let mut seconds: BTreeMap<(DateTime<Utc>, bool), Vec<usize>> = BTreeMap::new();
    for &i in &order {
        let deletes = writes[i].kind == WriteKind::Delete;
        seconds
            .entry((writes[i].event_time, deletes))
            .or_default()
            .push(i);
    }
    let mut out = Matched::default();
    for group in seconds.values() {
        let arns: BTreeSet<String> = group
            .iter()
            .map(|&i| writes[i].principal.arn.clone().unwrap_or_default())
            .collect();
        if arns.len() > 1 {
            // Each write of the group takes the next free entry, but none of
            // them may name its principal.
            let candidates: Vec<String> = arns.into_iter().collect();
            for &i in group {
                match (0..free.len()).find(|&j| !taken[j] && near(&writes[i], free[j])) {
                    Some(j) => {
                        taken[j] = true;
                        out.decisions.push(Decision {
                            sk: free[j].sk.clone(),
                            principal: Principal::ambiguous(candidates.clone()),
                            writes: group.clone(),
                        });
                    }
                    None => out.pending.push(i),
                }
            }
            continue;
        }
        for &i in group {
            let w = &writes[i];
            match (0..free.len()).find(|&j| !taken[j] && near(w, free[j])) {
                Some(j) => {
                    taken[j] = true;
                    // Unique both ways: no other write of the key near this
                    // one, and no other entry of the key near it.
                    let other_writes = order
                        .iter()
                        .filter(|&&k| {
                            k != i
                                && (writes[k].kind == WriteKind::Delete)
                                    == (w.kind == WriteKind::Delete)
                                && (writes[k].event_time - w.event_time).abs() <= tolerance
                        })
                        .count();
                    let other_entries = free
                        .iter()
                        .enumerate()
                        .filter(|&(k, e)| k != j && near(w, e))
                        .count();
                    let confidence = if other_writes == 0 && other_entries == 0 {
                        Confidence::High
                    } else {
                        Confidence::Ordered
                    };
                    out.decisions.push(Decision {
                        sk: free[j].sk.clone(),
                        principal: Principal {
                            confidence,
                            ..w.principal.clone()
                        },
                        writes: vec![i],
                    });
                }
                None => out.pending.push(i),
            }
        }
    }
    out.pending.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 19, 5, s).unwrap()
    }

    fn write(arn: &str, kind: WriteKind, s: u32, event_id: &str) -> ItemWrite {
        ItemWrite {
            table: "t".into(),
            key: [("pk".to_string(), serde_json::json!("u1"))].into(),
            kind,
            event_time: t(s),
            principal: Principal {
                arn: Some(arn.into()),
                kind: Some("AssumedRole".into()),
                source_ip: Some("192.0.2.0".into()),
                user_agent: Some("ua".into()),
                request_id: Some(format!("req-{event_id}")),
                event_id: Some(event_id.into()),
                confidence: Confidence::High,
                candidates: vec![],
            },
        }
    }

    fn entry(sk: &str, event: &str, s: u32) -> Candidate {
        Candidate {
            sk: sk.into(),
            event: event.into(),
            time: Some(t(s)),
            attributed: false,
        }
    }

    fn tol() -> Duration {
        Duration::seconds(2)
    }

    #[test]
    fn a_lone_delete_is_attributed_with_high_confidence() {
        let m = match_item(
            &[write("arn:x", WriteKind::Delete, 10, "e1")],
            &[entry("s1", "INSERT", 0), entry("s2", "REMOVE", 10)],
            tol(),
        );
        assert_eq!(m.pending, Vec::<usize>::new());
        assert_eq!(m.decisions.len(), 1);
        let d = &m.decisions[0];
        assert_eq!(d.sk, "s2");
        assert_eq!(d.principal.arn.as_deref(), Some("arn:x"));
        assert_eq!(d.principal.event_id.as_deref(), Some("e1"));
        assert_eq!(d.principal.confidence, Confidence::High);
    }

    #[test]
    fn kind_and_time_must_both_fit() {
        // A delete cannot be a MODIFY; a put 30 s away is not this entry.
        let m = match_item(
            &[
                write("arn:x", WriteKind::Delete, 10, "e1"),
                write("arn:x", WriteKind::Put, 40, "e2"),
            ],
            &[entry("s1", "MODIFY", 10)],
            tol(),
        );
        assert!(m.decisions.is_empty());
        assert_eq!(m.pending, [0, 1]);
    }

    #[test]
    fn repeated_writes_of_one_key_pair_in_order() {
        let m = match_item(
            &[
                write("arn:b", WriteKind::Update, 11, "e2"),
                write("arn:a", WriteKind::Put, 10, "e1"),
                write("arn:c", WriteKind::Delete, 12, "e3"),
            ],
            &[
                entry("s3", "REMOVE", 12),
                entry("s1", "INSERT", 10),
                entry("s2", "MODIFY", 11),
            ],
            tol(),
        );
        let got: Vec<(&str, &str, Confidence)> = m
            .decisions
            .iter()
            .map(|d| {
                (
                    d.sk.as_str(),
                    d.principal.arn.as_deref().unwrap(),
                    d.principal.confidence,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("s1", "arn:a", Confidence::Ordered),
                ("s2", "arn:b", Confidence::Ordered),
                // The only delete near its time: nothing to confuse it with.
                ("s3", "arn:c", Confidence::High),
            ]
        );
    }

    #[test]
    fn two_principals_in_one_second_are_ambiguous_never_guessed() {
        let m = match_item(
            &[
                write("arn:a", WriteKind::Put, 10, "e1"),
                write("arn:b", WriteKind::Put, 10, "e2"),
            ],
            &[entry("s1", "INSERT", 10), entry("s2", "MODIFY", 10)],
            tol(),
        );
        assert_eq!(m.decisions.len(), 2);
        for d in &m.decisions {
            assert_eq!(d.principal.confidence, Confidence::Ambiguous);
            assert_eq!(d.principal.arn, None);
            assert_eq!(d.principal.candidates, ["arn:a", "arn:b"]);
        }
        // A put and a delete in one second by two principals: the kinds
        // tell them apart.
        let m = match_item(
            &[
                write("arn:a", WriteKind::Put, 10, "e1"),
                write("arn:b", WriteKind::Delete, 10, "e2"),
            ],
            &[entry("s1", "INSERT", 10), entry("s2", "REMOVE", 10)],
            tol(),
        );
        let got: Vec<(&str, Option<&str>)> = m
            .decisions
            .iter()
            .map(|d| (d.sk.as_str(), d.principal.arn.as_deref()))
            .collect();
        assert_eq!(got, [("s1", Some("arn:a")), ("s2", Some("arn:b"))]);
        assert!(m
            .decisions
            .iter()
            .all(|d| d.principal.confidence == Confidence::High));
        // The same principal twice in one second is no ambiguity about who.
        let m = match_item(
            &[
                write("arn:a", WriteKind::Put, 10, "e1"),
                write("arn:a", WriteKind::Put, 10, "e2"),
            ],
            &[entry("s1", "INSERT", 10), entry("s2", "MODIFY", 10)],
            tol(),
        );
        assert!(m
            .decisions
            .iter()
            .all(|d| d.principal.arn.as_deref() == Some("arn:a")
                && d.principal.confidence == Confidence::Ordered));
    }

    #[test]
    fn attributed_entries_are_never_matched_again_and_early_writes_wait() {
        let mut done = entry("s1", "REMOVE", 10);
        done.attributed = true;
        let m = match_item(
            &[write("arn:x", WriteKind::Delete, 10, "e9")],
            &[done],
            tol(),
        );
        assert!(m.decisions.is_empty());
        assert_eq!(m.pending, [0]);
    }
}
