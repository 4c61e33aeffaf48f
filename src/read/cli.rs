//! What the read commands print. Results stream page by page (bounded
//! memory), and a closed pipe (`| head`) ends a command quietly.

use std::io::Write;

use chrono::{DateTime, Utc};

use crate::entry::AuditEntry;
use crate::read::asof::{self, Diffed, Shown};
use crate::read::{last_entries, query, Cursor, Order, QueryFilter, ReadError};
use crate::report::{change_text, display_value, history_table, render};
use crate::store::ReadStore;
use crate::value::{key_text, Item};

/// Entries per page read and printed.
pub const PAGE_SIZE: usize = 100;

/// Writes `text`; `Ok(false)` once the reader has gone away (a broken pipe
/// is how `| head` says it has enough, not an error).
fn emit(out: &mut impl Write, text: &str) -> Result<bool, ReadError> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(ReadError::Refused(format!("writing the output: {e}"))),
    }
}

fn log_cost<S: ReadStore>(store: &S, command: &str) {
    let cost = store.read_cost();
    tracing::debug!(
        command,
        query_calls = cost.query_calls,
        batch_get_calls = cost.batch_get_calls,
        items_read = cost.items_read,
        "read cost"
    );
}

fn json_line(entry: &impl serde::Serialize) -> Result<String, ReadError> {
    let mut line = serde_json::to_string(entry)
        .map_err(|e| ReadError::Refused(format!("encoding JSON: {e}")))?;
    line.push('\n');
    Ok(line)
}

fn json_lines(entries: &[AuditEntry]) -> Result<String, ReadError> {
    entries.iter().map(json_line).collect()
}

/// `history`: every entry of one item, oldest first, or with `last` the
/// newest `last` (printed oldest first), within `since`..`until`.
#[allow(clippy::too_many_arguments)]
pub async fn history<S: ReadStore>(
    store: &S,
    table: &str,
    key: &Item,
    last: Option<usize>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    json: bool,
    out: &mut impl Write,
) -> Result<(), ReadError> {
    if let Some(n) = last {
        let entries = last_entries(store, table, key, n, since, until).await?;
        if entries.is_empty() {
            check_key_schema(store, table, key).await?;
        }
        let text = if json {
            json_lines(&entries)?
        } else {
            history_table(&entries)
        };
        emit(out, &text)?;
        log_cost(store, "history");
        return Ok(());
    }
    let filter = QueryFilter {
        table: Some(table.to_string()),
        key: Some(key.clone()),
        since,
        until,
        ..QueryFilter::default()
    };
    let mut placer = SnapshotPlacer::default();
    let listed = print_pages(
        store,
        &filter,
        None,
        json,
        history_table,
        Some(&mut placer),
        out,
    )
    .await?;
    // Nothing at all: maybe a key of the wrong type, else say it is empty.
    if !listed.printed && !listed.closed && !json {
        check_key_schema(store, table, key).await?;
        emit(out, &history_table(&[]))?;
    }
    log_cost(store, "history");
    Ok(())
}

/// How a paged listing ended.
struct Listed {
    /// At least one entry was printed.
    printed: bool,
    /// The reader went away (`| head`).
    closed: bool,
}

/// `history` lists an item in the order its state is folded (as `show` and
/// `diff` place a snapshot): a SNAPSHOT entry goes among the stream entries
/// by its read time. Snapshot entries sort first in an item's partition (a
/// snapshot run's label sorts before every stream's), so they arrive first
/// and are held until the first stream entry that comes after them.
#[derive(Default)]
struct SnapshotPlacer {
    held: Vec<AuditEntry>,
}

impl SnapshotPlacer {
    fn place(&mut self, entries: Vec<AuditEntry>) -> Vec<AuditEntry> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if e.event == "SNAPSHOT" {
                self.held.push(e);
                self.held.sort_by_key(asof::snapshot_fold_point);
                continue;
            }
            let ts = crate::store::entry_ts(&e, DateTime::UNIX_EPOCH);
            let due = self
                .held
                .iter()
                .take_while(|s| asof::snapshot_fold_point(s) <= ts)
                .count();
            out.extend(self.held.drain(..due));
            out.push(e);
        }
        out
    }

    /// What no stream entry came after.
    fn rest(&mut self) -> Vec<AuditEntry> {
        std::mem::take(&mut self.held)
    }
}

/// Pages through `filter`'s answer, at most `limit` entries in all, and
/// prints each page as it comes: JSON lines, or the rows of `table` (its
/// header once, above the first entry); with a `placer`, in its order.
async fn print_pages<S: ReadStore>(
    store: &S,
    filter: &QueryFilter,
    limit: Option<usize>,
    json: bool,
    table: fn(&[AuditEntry]) -> String,
    mut placer: Option<&mut SnapshotPlacer>,
    out: &mut impl Write,
) -> Result<Listed, ReadError> {
    let mut cursor: Option<Cursor> = None;
    let mut fetched = 0usize;
    let mut printed = 0usize;
    loop {
        let want = limit.map_or(PAGE_SIZE, |l| (l - fetched).min(PAGE_SIZE));
        let (entries, next) = if want == 0 {
            (Vec::new(), None)
        } else {
            let page = query(store, filter, cursor.as_ref(), want).await?;
            fetched += page.entries.len();
            (page.entries, page.next)
        };
        let last = next.is_none();
        let mut entries = match placer.as_deref_mut() {
            Some(p) => p.place(entries),
            None => entries,
        };
        if last {
            if let Some(p) = placer.as_deref_mut() {
                entries.extend(p.rest());
            }
        }
        let text = if json {
            json_lines(&entries)?
        } else if entries.is_empty() {
            String::new()
        } else {
            let t = table(&entries);
            if printed == 0 {
                t
            } else {
                without_header(&t)
            }
        };
        printed += entries.len();
        if !emit(out, &text)? {
            return Ok(Listed {
                printed: printed > 0,
                closed: true,
            });
        }
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(Listed {
        printed: printed > 0,
        closed: false,
    })
}

/// An item with no history may be a key of the wrong type or name (`N:42`
/// for a table keyed by a string, or its sort key left out): the trail is
/// keyed by the exact typed value, so that finds nothing rather than
/// failing. When the table's newest entries are keyed differently, say what
/// the key schema is instead of printing an empty history.
async fn check_key_schema<S: ReadStore>(
    store: &S,
    table: &str,
    key: &Item,
) -> Result<(), ReadError> {
    let newest = QueryFilter {
        table: Some(table.to_string()),
        order: Order::Desc,
        ..QueryFilter::default()
    };
    let page = query(store, &newest, None, 5).await?;
    // An unreadable record's entry may have no key to learn from.
    let Some(sample) = page.entries.iter().find(|e| !e.key.is_empty()) else {
        return Ok(());
    };
    let schema = |item: &Item| -> Vec<(String, &'static str)> {
        item.iter()
            .map(|(name, value)| (name.clone(), value.type_name()))
            .collect()
    };
    let (recorded, given) = (schema(&sample.key), schema(key));
    if recorded == given {
        return Ok(());
    }
    let list = |schema: &[(String, &str)]| {
        schema
            .iter()
            .map(|(name, kind)| format!("{name} ({kind})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let example = recorded
        .iter()
        .map(|(name, kind)| format!("--key {name}={kind}:VALUE"))
        .collect::<Vec<_>>()
        .join(" ");
    Err(ReadError::BadArg {
        flag: "--key".into(),
        message: format!(
            "no history: table {table} is keyed by {} (its key schema, as its audit entries record it), \
             but the key given is {}; pass {example}",
            list(&recorded),
            list(&given),
        ),
    })
}

fn without_header(table: &str) -> String {
    table
        .split_once('\n')
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_default()
}

/// `query`: matching entries page by page, at most `limit`.
pub async fn query_command<S: ReadStore>(
    store: &S,
    filter: &QueryFilter,
    limit: Option<usize>,
    json: bool,
    out: &mut impl Write,
) -> Result<(), ReadError> {
    filter.validate()?;
    let listed = print_pages(store, filter, limit, json, query_table, None, out).await?;
    if !listed.printed && !json && !emit(out, "no audit entries match\n")? {
        return Ok(());
    }
    log_cost(store, "query");
    Ok(())
}

/// The readable form of query results: one row per change, with the table
/// and key of each entry (a query crosses items and tables).
pub fn query_table(entries: &[AuditEntry]) -> String {
    let mut rows: Vec<[String; 7]> = Vec::new();
    for entry in entries {
        let head = [
            entry.event_time.clone().unwrap_or_else(|| "-".into()),
            entry.table.clone(),
            key_text(&entry.key),
            entry.event.clone(),
            // As `history` shows it: never a last writer as the actor.
            crate::report::actor_cell(entry),
        ];
        if let Some(error) = &entry.error {
            let [a, b, c, d, e] = head;
            rows.push([
                a,
                b,
                c,
                d,
                e,
                "!".into(),
                format!("unreadable record: {error}"),
            ]);
            continue;
        }
        if entry.changes.is_empty() {
            let [a, b, c, d, e] = head;
            rows.push([a, b, c, d, e, "-".into(), "(no field changed)".into()]);
            continue;
        }
        for (i, change) in entry.changes.iter().enumerate() {
            let what = change_text(change.old.as_ref(), change.new.as_ref());
            let [a, b, c, d, e] = if i == 0 {
                head.clone()
            } else {
                Default::default()
            };
            rows.push([a, b, c, d, e, change.path.clone(), what]);
        }
    }
    render(
        &["TIME", "TABLE", "KEY", "EVENT", "ACTOR", "PATH", "CHANGE"],
        &rows,
    )
}

/// Prints one answer, as a JSON line or as its readable `text`.
pub fn print_answer<S: ReadStore, T: serde::Serialize>(
    store: &S,
    command: &str,
    answer: &T,
    json: bool,
    text: fn(&T) -> String,
    out: &mut impl Write,
) -> Result<(), ReadError> {
    let text = if json {
        json_line(answer)?
    } else {
        text(answer)
    };
    emit(out, &text)?;
    log_cost(store, command);
    Ok(())
}

pub fn show_text(shown: &Shown) -> String {
    let state = if shown.exists {
        "exists"
    } else {
        "does not exist"
    };
    let note = match shown.complete {
        true => "",
        false => " (incomplete: the state before the first entry is unknown)",
    };
    let item = key_text(&shown.key);
    let rows: Vec<[String; 2]> = (shown.item.iter().flatten())
        .map(|(k, v)| [k.clone(), display_value(v)])
        .collect();
    let head = format!("{} {item} at {}: {state}{note}\n", shown.table, shown.at);
    with_rows(head, &["ATTRIBUTE", "VALUE"], &rows)
}

pub fn diff_text(d: &Diffed) -> String {
    let (item, count) = (key_text(&d.key), d.changes.len());
    let head = format!(
        "{} {item} from {} to {}: {count} change(s)\n",
        d.table, d.from, d.to
    );
    let rows: Vec<[String; 2]> = (d.changes.iter())
        .map(|c| [c.path.clone(), change_text(c.old.as_ref(), c.new.as_ref())])
        .collect();
    with_rows(head, &["PATH", "CHANGE"], &rows)
}

/// A heading line, and under it the rows as a table unless there are none.
fn with_rows(mut text: String, columns: &[&str; 2], rows: &[[String; 2]]) -> String {
    if !rows.is_empty() {
        text.push_str(&render(columns, rows));
    }
    text
}

/// `revert`: prints the plan back to `to_time` (one JSON object); writes
/// nothing anywhere.
pub fn print_revert<S: ReadStore>(
    store: &S,
    plan: &asof::RevertPlan,
    to_time: DateTime<Utc>,
    out: &mut impl Write,
) -> Result<(), ReadError> {
    if plan.operation == "UpdateItem" && plan.input.get("UpdateExpression").is_none() {
        eprintln!(
            "note: the item already holds its state at {}: this plan only checks it",
            crate::store::format_ts(to_time)
        );
    }
    let text = serde_json::to_string_pretty(plan)
        .map_err(|e| ReadError::Refused(format!("encoding JSON: {e}")))?;
    emit(out, &format!("{text}\n"))?;
    log_cost(store, "revert");
    Ok(())
}

#[cfg(test)]
mod placing_tests {
    use super::*;
    use serde_json::json;

    fn entry(event: &str, seq: Option<&str>, time: &str) -> AuditEntry {
        let snapshot = event == "SNAPSHOT";
        serde_json::from_value(json!({
            "table": "orders", "key": {"pk": {"S": "o1"}}, "event": event,
            "sequence_number": seq, "shard_id": if snapshot { None } else { Some("s") },
            "event_time": if snapshot { None } else { Some(time) },
            "snapshot_time": if snapshot { Some(time) } else { None },
            "actor": null, "actor_source": null, "last_writer": null, "changes": []
        }))
        .expect("an entry")
    }

    #[test]
    fn history_places_a_snapshot_by_its_read_time_across_pages() {
        // As the partition holds them: the snapshot first, then the stream.
        let snapshot = entry("SNAPSHOT", None, "2026-11-23T14:15:00.500Z");
        let before = entry("MODIFY", Some("1"), "2026-11-23T14:13:00Z");
        let after = entry("MODIFY", Some("2"), "2026-11-23T14:20:00Z");
        let mut placer = SnapshotPlacer::default();
        let first = placer.place(vec![snapshot, before]);
        let second = placer.place(vec![after]);
        let order: Vec<&str> = first
            .iter()
            .chain(&second)
            .map(|e| e.event.as_str())
            .collect();
        assert_eq!(order, ["MODIFY", "SNAPSHOT", "MODIFY"]);
        assert!(placer.rest().is_empty());

        // A snapshot newer than every change comes last.
        let mut placer = SnapshotPlacer::default();
        let page = placer.place(vec![
            entry("SNAPSHOT", None, "2026-11-23T15:00:00Z"),
            entry("INSERT", Some("1"), "2026-11-23T14:13:00Z"),
        ]);
        assert_eq!(page.len(), 1);
        assert_eq!(placer.rest()[0].event, "SNAPSHOT");
    }
}
