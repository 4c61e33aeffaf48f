//! What the query commands print: `history`, `gaps`, `status`, as readable
//! tables or as JSON lines. Pure functions over stored data.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::entry::{AuditEntry, Gap};
use crate::observe::health::shard_lag;
use crate::store::{ShardCheckpoint, ShardStatus, StreamRow, TableHealthRow};
use crate::value::AttrValue;

/// Longest rendering of one value in the readable table.
const MAX_VALUE_WIDTH: usize = 60;

/// One JSON object per line, in the contract format.
pub fn history_json(entries: &[AuditEntry]) -> Result<String, serde_json::Error> {
    json_lines(entries)
}

pub fn json_lines<T: Serialize>(items: &[T]) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    for item in items {
        out.push_str(&serde_json::to_string(item)?);
        out.push('\n');
    }
    Ok(out)
}

/// A readable table: time, event, actor, path, old → new; one row per change.
pub fn history_table(entries: &[AuditEntry]) -> String {
    let mut rows: Vec<[String; 5]> = Vec::new();
    for entry in entries {
        let time = entry.event_time.clone().unwrap_or_else(|| "-".into());
        let mut event = entry.event.clone();
        if entry.ttl_expiry {
            event.push_str(" (TTL)");
        }
        let actor = actor_cell(entry);
        if let Some(error) = &entry.error {
            rows.push([
                time,
                event,
                actor,
                "!".into(),
                format!("unreadable record: {error}"),
            ]);
            continue;
        }
        if entry.changes.is_empty() {
            rows.push([time, event, actor, "-".into(), "(no field changed)".into()]);
            continue;
        }
        for (i, change) in entry.changes.iter().enumerate() {
            let what = change_text(change.old.as_ref(), change.new.as_ref());
            let (t, e, a) = if i == 0 {
                (time.clone(), event.clone(), actor.clone())
            } else {
                (String::new(), String::new(), String::new())
            };
            rows.push([t, e, a, change.path.clone(), what]);
        }
    }
    if rows.is_empty() {
        return "no audit entries for this item\n".into();
    }
    render(&["TIME", "EVENT", "ACTOR", "PATH", "CHANGE"], &rows)
}

/// One change as a cell: `old → new`, `+ new` or `- old`.
pub fn change_text(old: Option<&AttrValue>, new: Option<&AttrValue>) -> String {
    match (old, new) {
        (Some(o), Some(n)) => format!("{} → {}", display_value(o), display_value(n)),
        (None, Some(n)) => format!("+ {}", display_value(n)),
        (Some(o), None) => format!("- {}", display_value(o)),
        (None, None) => String::new(),
    }
}

/// Who made the change, as far as it is known, and never a last writer
/// passed off as the one who made this change.
pub fn actor_cell(entry: &AuditEntry) -> String {
    use crate::attribution::Confidence;
    use crate::entry::ActorSource;
    let last = entry.last_writer.as_deref().or(match entry.actor_source {
        Some(ActorSource::ItemUnchanged) => entry.actor.as_deref(),
        _ => None,
    });
    let mut cell = match (entry.actor_source, entry.actor.as_deref(), last) {
        (Some(ActorSource::ItemUnchanged), _, Some(last)) | (None, _, Some(last)) => {
            format!("unknown (last writer: {last})")
        }
        (_, Some(actor), _) => actor.to_string(),
        (_, None, _) => "-".to_string(),
    };
    if let Some(p) = &entry.principal {
        if p.confidence == Confidence::Ambiguous {
            let _ = write!(
                cell,
                " (CloudTrail: ambiguous, {})",
                p.candidates.join(" or ")
            );
        }
    }
    cell
}

pub fn gaps_table(gaps: &[Gap]) -> String {
    if gaps.is_empty() {
        return "no gaps: every change in the streams was read\n".into();
    }
    let rows: Vec<[String; 5]> = gaps
        .iter()
        .map(|g| {
            [
                g.detected_at.clone(),
                g.table.clone(),
                g.shard_id.clone(),
                match (&g.after_sequence_number, &g.unseen_shard_id) {
                    (Some(after), _) => after.clone(),
                    (None, Some(unseen)) => format!("(start of unseen parent {unseen})"),
                    (None, None) => "(start)".into(),
                },
                match (&g.resumed_at_sequence_number, &g.closed_by) {
                    (Some(at), _) if g.is_closing() => format!("{at} (closes {})", g.closes.len()),
                    (Some(at), _) => at.clone(),
                    (None, Some(by)) => format!(
                        "{} (in {})",
                        by.resumed_at_sequence_number.as_deref().unwrap_or("?"),
                        by.shard_id
                    ),
                    // Nothing read after it yet: the bracket is open.
                    (None, None) => "(open)".into(),
                },
            ]
        })
        .collect();
    render(
        &["DETECTED", "TABLE", "SHARD", "AFTER", "RESUMED AT"],
        &rows,
    )
}

/// One shard as `status` reports it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShardStatusLine {
    pub kind: &'static str,
    pub table: String,
    pub stream_arn: String,
    pub shard_id: String,
    pub parent_shard_id: Option<String>,
    pub status: &'static str,
    pub sequence_number: Option<String>,
    pub last_record_time: Option<String>,
    /// Now minus the creation time of the newest record handled.
    pub lag_seconds: Option<i64>,
    pub updated_at: String,
}

/// The summary of one table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TableStatusLine {
    pub kind: &'static str,
    pub table: String,
    pub streams: usize,
    pub current_stream_arn: Option<String>,
    pub shards: usize,
    pub open: usize,
    pub closed: usize,
    pub drained: usize,
    pub max_lag_seconds: Option<i64>,
    /// What the daemon last said of the table: `auditing`, `draining`,
    /// `failing` or `starting` (`null`: never run against it).
    pub state: Option<String>,
    /// Why it is draining or failing.
    pub state_reason: Option<String>,
    /// The replicas whose lease says they read its streams not yet drained
    /// (empty: nobody does).
    pub read_by: Vec<String>,
}

pub fn shard_lines(checkpoints: &[ShardCheckpoint], now: DateTime<Utc>) -> Vec<ShardStatusLine> {
    checkpoints
        .iter()
        .map(|c| ShardStatusLine {
            kind: "shard",
            table: c.table.clone(),
            stream_arn: c.stream_arn.clone(),
            shard_id: c.shard_id.clone(),
            parent_shard_id: c.parent_shard_id.clone(),
            status: c.status.as_str(),
            sequence_number: c.sequence_no.clone(),
            last_record_time: c
                .last_record_time
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            // Saved checkpoints say nothing of idle polls, so no stall shows here.
            lag_seconds: match c.status {
                ShardStatus::Drained => None,
                _ => shard_lag(
                    c.caught_up,
                    c.last_record_time,
                    None,
                    chrono::Duration::MAX,
                    now,
                )
                .map(|d| d.num_seconds()),
            },
            updated_at: c
                .updated_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
        .collect()
}

pub fn table_line(
    table: &str,
    streams: &[StreamRow],
    shards: &[ShardStatusLine],
    health: Option<&TableHealthRow>,
) -> TableStatusLine {
    let count = |s: &str| shards.iter().filter(|l| l.status == s).count();
    TableStatusLine {
        kind: "table",
        table: table.to_string(),
        streams: streams.len(),
        current_stream_arn: streams
            .iter()
            .find(|s| s.is_enabled)
            .map(|s| s.stream_arn.clone()),
        shards: shards.len(),
        open: count("open"),
        closed: count("closed"),
        drained: count("drained"),
        max_lag_seconds: shards.iter().filter_map(|l| l.lag_seconds).max(),
        state: health.map(|h| h.state.clone()),
        state_reason: health.and_then(|h| h.reason.clone()),
        read_by: Vec::new(),
    }
}

/// The tables `status` and `serve` report: the exact names of `tables`,
/// and, when it has patterns, every table the daemon has found and recorded
/// (audited, failing, elsewhere or no longer selected), in name order after
/// the exact names.
pub async fn known_tables<C: crate::store::CheckpointStore>(
    config: &crate::config::Config,
    store: &C,
) -> crate::store::StoreResult<Vec<String>> {
    let mut tables = config.exact_tables();
    if config.tables.len() == tables.len() {
        return Ok(tables);
    }
    let mut found: std::collections::BTreeSet<String> = store
        .load_streams(None)
        .await?
        .into_iter()
        .map(|r| r.table_name)
        .collect();
    found.extend(
        store
            .load_all_table_health()
            .await?
            .into_iter()
            .map(|h| h.table_name),
    );
    for t in &tables {
        found.remove(t);
    }
    tables.extend(found);
    Ok(tables)
}

/// One table's status as `status` and `serve` report it: its summary and
/// its shards, read from the checkpoint store.
pub async fn table_status<C: crate::store::CheckpointStore>(
    store: &C,
    table: &str,
    now: DateTime<Utc>,
) -> crate::store::StoreResult<(TableStatusLine, Vec<ShardStatusLine>)> {
    let streams = store.load_streams(Some(table)).await?;
    let mut shards = Vec::new();
    for s in &streams {
        shards.extend(shard_lines(&store.load_shards(&s.stream_arn).await?, now));
    }
    let health = store.load_table_health(table).await?;
    let mut summary = table_line(table, &streams, &shards, health.as_ref());
    let mut read_by: Vec<String> = store
        .leases(Some(table))
        .await?
        .into_iter()
        .filter(|l| !l.drained)
        .filter_map(|l| l.owner)
        .collect();
    read_by.sort();
    read_by.dedup();
    summary.read_by = read_by;
    Ok((summary, shards))
}

/// One `run` process on this config, from its heartbeat row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplicaStatusLine {
    pub kind: &'static str,
    pub replica: String,
    /// Streams it owned at its last heartbeat.
    pub owns: u64,
    pub heartbeats: u64,
    /// Its own clock's time of its last heartbeat (for people: replicas
    /// judge each other by the counter moving, never by this).
    pub last_heartbeat: String,
}

pub fn replica_lines(beats: &[crate::store::ReplicaBeat]) -> Vec<ReplicaStatusLine> {
    beats
        .iter()
        .map(|b| ReplicaStatusLine {
            kind: "replica",
            replica: b.replica.clone(),
            owns: b.owned,
            heartbeats: b.counter,
            last_heartbeat: crate::entry::format_ts(b.updated_at),
        })
        .collect()
}

pub fn replicas_table(replicas: &[ReplicaStatusLine]) -> String {
    let mut out = String::new();
    for r in replicas {
        let _ = writeln!(
            out,
            "replica {}: owns {} stream(s); last heartbeat {} (#{})",
            r.replica, r.owns, r.last_heartbeat, r.heartbeats
        );
    }
    out
}

pub fn status_table(tables: &[(TableStatusLine, Vec<ShardStatusLine>)]) -> String {
    let mut out = String::new();
    for (summary, shards) in tables {
        let _ = writeln!(
            out,
            "{}: {} stream(s), {} shard(s): {} open, {} closed, {} drained; max lag {}{}",
            summary.table,
            summary.streams,
            summary.shards,
            summary.open,
            summary.closed,
            summary.drained,
            summary
                .max_lag_seconds
                .map(|s| format!("{s} s"))
                .unwrap_or_else(|| "-".into()),
            // Only what needs attention: an audited table's line stays short.
            match (summary.state.as_deref(), &summary.state_reason) {
                (None | Some("auditing"), _) => String::new(),
                (Some(state), Some(reason)) => format!("; {state}: {reason}"),
                (Some(state), None) => format!("; {state}"),
            },
        );
        if !summary.read_by.is_empty() {
            let _ = writeln!(out, "  read by {}", summary.read_by.join(", "));
        }
        let rows: Vec<[String; 5]> = shards
            .iter()
            .filter(|s| s.status != "drained")
            .map(|s| {
                [
                    // Indented under the summary line, like the header.
                    format!("  {}", s.shard_id),
                    s.status.to_string(),
                    s.sequence_number.clone().unwrap_or_else(|| "-".into()),
                    s.lag_seconds
                        .map(|l| format!("{l} s"))
                        .unwrap_or_else(|| "-".into()),
                    s.parent_shard_id.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        if !rows.is_empty() {
            out.push_str(&render(
                &["  SHARD", "STATUS", "CHECKPOINT", "LAG", "PARENT"],
                &rows,
            ));
        }
    }
    if out.is_empty() {
        out.push_str("nothing audited yet: start `ddb-audit run`\n");
    }
    out
}

/// A compact, readable rendering of a value (the JSON form is lossless; this
/// one is for people).
pub fn display_value(value: &AttrValue) -> String {
    let text = match value {
        AttrValue::S(s) => format!("{s:?}"),
        AttrValue::N(n) => n.clone(),
        AttrValue::B(b) => format!("<{} bytes>", b.len()),
        AttrValue::Bool(b) => b.to_string(),
        AttrValue::Null => "null".into(),
        AttrValue::M(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k}: {}", display_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        AttrValue::L(l) => format!(
            "[{}]",
            l.iter().map(display_value).collect::<Vec<_>>().join(", ")
        ),
        AttrValue::Ss(s) => format!(
            "<<{}>>",
            s.iter()
                .map(|x| format!("{x:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        AttrValue::Ns(n) => format!("<<{}>>", n.join(", ")),
        AttrValue::Bs(b) => format!("<<{} binary>>", b.len()),
        AttrValue::Redacted(_) => crate::redact::MARK.to_string(),
    };
    truncate(text, MAX_VALUE_WIDTH)
}

fn truncate(text: String, width: usize) -> String {
    if text.chars().count() <= width {
        return text;
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Columns padded to their widest cell, two spaces apart, the last one
/// unpadded; the header first.
pub fn render<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Change;

    fn entry(changes: Vec<Change>) -> AuditEntry {
        AuditEntry {
            actor_source: Some(crate::entry::ActorSource::Item),
            changes,
            stream_arn: "arn".into(),
            ..AuditEntry::fixture(
                "orders",
                [("pk".to_string(), AttrValue::S("u1".into()))].into(),
                "100",
            )
        }
    }

    #[test]
    fn history_table_shows_who_what_from_and_to() {
        let e = entry(vec![
            Change {
                path: "balance".into(),
                old: Some(AttrValue::N("1000".into())),
                new: Some(AttrValue::N("900".into())),
                added: None,
                removed: None,
            },
            Change {
                path: "profile.name".into(),
                old: None,
                new: Some(AttrValue::S("Bob".into())),
                added: None,
                removed: None,
            },
        ]);
        let out = history_table(&[e]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("TIME"), "{out}");
        assert!(
            lines[1].contains("2026-11-23T19:05:00Z") && lines[1].contains("alice"),
            "{out}"
        );
        assert!(
            lines[1].contains("balance") && lines[1].contains("1000 → 900"),
            "{out}"
        );
        assert!(
            lines[2].contains("profile.name") && lines[2].contains("+ \"Bob\""),
            "{out}"
        );
        assert!(!lines[2].contains("alice"), "{out}");
    }

    #[test]
    fn a_last_writer_is_never_shown_as_the_actor() {
        use crate::attribution::Principal;
        use crate::entry::ActorSource;
        let mut removed = entry(vec![]);
        removed.event = "REMOVE".into();
        (removed.actor, removed.actor_source) = (None, None);
        removed.last_writer = Some("onboarding-service".into());
        assert_eq!(
            actor_cell(&removed),
            "unknown (last writer: onboarding-service)"
        );
        let mut unchanged = entry(vec![]);
        unchanged.actor_source = Some(ActorSource::ItemUnchanged);
        assert_eq!(actor_cell(&unchanged), "unknown (last writer: alice)");
        let out = history_table(&[removed.clone(), unchanged]);
        assert_eq!(out.matches("unknown (last writer: ").count(), 2, "{out}");
        let mut by_trail = removed.clone();
        by_trail.actor = Some("arn:aws:sts::1:assumed-role/cleanup/x".into());
        by_trail.actor_source = Some(ActorSource::Cloudtrail);
        assert_eq!(
            actor_cell(&by_trail),
            "arn:aws:sts::1:assumed-role/cleanup/x"
        );
        let mut ambiguous = removed;
        ambiguous.principal = Some(Principal::ambiguous(vec!["arn:a".into(), "arn:b".into()]));
        let cell = actor_cell(&ambiguous);
        assert!(
            cell.starts_with("unknown (last writer: onboarding-service)")
                && cell.contains("ambiguous, arn:a or arn:b"),
            "{cell}"
        );
        assert_eq!(actor_cell(&entry(vec![])), "alice");
    }

    #[test]
    fn errors_empty_changes_and_ttl_are_visible() {
        let mut bad = entry(vec![]);
        bad.error = Some("unknown event name".into());
        let mut ttl = entry(vec![]);
        ttl.event = "REMOVE".into();
        ttl.ttl_expiry = true;
        let out = history_table(&[bad, ttl]);
        assert!(
            out.contains("unreadable record: unknown event name"),
            "{out}"
        );
        assert!(
            out.contains("REMOVE (TTL)") && out.contains("(no field changed)"),
            "{out}"
        );
        assert_eq!(history_table(&[]), "no audit entries for this item\n");
    }

    #[test]
    fn long_values_are_truncated_for_people() {
        let long = AttrValue::S("x".repeat(500));
        let shown = display_value(&long);
        assert_eq!(shown.chars().count(), MAX_VALUE_WIDTH);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn status_says_where_a_found_table_stands() {
        let row = |state: &str, reason: &str| TableHealthRow {
            table_name: "g".into(),
            state: state.into(),
            reason: Some(reason.into()),
            updated_at: Utc::now(),
        };
        for (state, reason) in [
            (
                "elsewhere",
                "audited in eu-west-1: a Global Table is audited in one region only",
            ),
            ("unselected", "no longer selected by `tables`"),
        ] {
            let h = row(state, reason);
            let text = status_table(&[(table_line("g", &[], &[], Some(&h)), vec![])]);
            assert!(text.contains(&format!("; {state}: {reason}")), "{text}");
        }
    }

    #[test]
    fn status_reports_lag_for_undrained_shards_only() {
        let now = Utc::now();
        let cp = |id: &str, status| ShardCheckpoint {
            sequence_no: Some("5".into()),
            status,
            last_record_time: Some(now - chrono::Duration::seconds(30)),
            updated_at: now,
            ..ShardCheckpoint::fresh("orders", "arn", id, None)
        };
        let lines = shard_lines(
            &[cp("a", ShardStatus::Open), cp("b", ShardStatus::Drained)],
            now,
        );
        assert_eq!(lines[0].lag_seconds, Some(30));
        assert_eq!(lines[1].lag_seconds, None);
        let summary = table_line("orders", &[], &lines, None);
        assert_eq!((summary.shards, summary.open, summary.drained), (2, 1, 1));
        assert_eq!(summary.max_lag_seconds, Some(30));
        let mut idle = cp("c", ShardStatus::Open);
        idle.caught_up = true;
        assert_eq!(
            shard_lines(&[idle], now)[0].lag_seconds,
            Some(0),
            "a caught-up shard is not behind"
        );
        let text = status_table(&[(summary, lines)]);
        assert!(
            text.starts_with(
                "orders: 0 stream(s), 2 shard(s): 1 open, 0 closed, 1 drained; max lag 30 s"
            ),
            "{text}"
        );
        // The open shard's row sits under the header, both indented.
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].starts_with("  SHARD "), "{text}");
        assert!(lines[2].starts_with("  a "), "{text}");
        assert_eq!(
            lines[1].find("STATUS"),
            lines[2].find("open"),
            "columns line up: {text}"
        );
    }
}
