//! The item as it was: folding an item's entries up to a time (`show --at`),
//! net changes between two times (`diff`), and the one DynamoDB call that
//! puts an item back (`revert`). Pure folding over entries; reads go through
//! [`ReadStore::history_page`], oldest first, and stop at the last time asked.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::diff::{apply_changes, diff_images, parse_path, PathSegment};
use crate::entry::{AuditEntry, Change};
use crate::read::{Order, QueryFilter, ReadError};
use crate::store::{entry_ts, format_ts, ReadStore};
use crate::value::{same_value, AttrValue, Item};

/// What the trail says an item was at one time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    pub item: Option<Item>,
    /// False when the state before the first entry is unknown (no INSERT and
    /// no SNAPSHOT up to this time), or an entry could not be applied.
    pub complete: bool,
    /// How many entries were folded.
    pub entries: usize,
}

/// Folds entries, in order, into the item's state after them.
#[derive(Clone, Debug, Default)]
pub struct Folder {
    state: State,
    /// A baseline (INSERT or SNAPSHOT) was seen.
    based: bool,
    /// An entry could not be applied exactly.
    broken: bool,
    /// Until this time (`ts`), changes may already be in the last snapshot
    /// (stream times have second precision): applied leniently.
    lenient_until: Option<String>,
}

impl Folder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn apply(&mut self, entry: &AuditEntry) {
        self.state.entries += 1;
        if entry.error.is_some() {
            // An unreadable record: what it changed is unknown.
            self.broken = true;
            self.state.complete = false;
            return;
        }
        match entry.event.as_str() {
            // A trail complete from its INSERT knows better than a read
            // taken while it went on; a snapshot fills in what is unknown.
            "SNAPSHOT" if self.based && !self.broken => {}
            "INSERT" | "SNAPSHOT" => {
                let item = apply_changes(None, &entry.changes).ok();
                self.broken = item.is_none();
                self.based = true;
                self.state.item =
                    Some(item.unwrap_or_else(|| lenient(Item::new(), &entry.changes)));
                self.lenient_until = (entry.event == "SNAPSHOT")
                    .then(|| entry.snapshot_time.as_deref().and_then(shift_ts))
                    .flatten();
            }
            "REMOVE" => self.state.item = None,
            _ => {
                let current = self.state.item.take();
                let exact = if self.based && current.is_some() {
                    apply_changes(current.as_ref(), &entry.changes).ok()
                } else {
                    None
                };
                let in_window = self
                    .lenient_until
                    .as_deref()
                    .is_some_and(|until| entry_ts(entry, DateTime::UNIX_EPOCH).as_str() <= until);
                self.state.item = Some(match exact {
                    Some(item) => item,
                    None => {
                        if self.based && !in_window {
                            self.broken = true;
                        }
                        lenient(current.unwrap_or_default(), &entry.changes)
                    }
                });
            }
        }
        self.state.complete = self.based && !self.broken;
    }

    pub fn state(&self) -> State {
        self.state.clone()
    }
}

/// A snapshot read at `ts` may already hold changes whose (whole-second)
/// stream time is up to a second later, and sorts before changes stamped
/// from a second earlier: the window around a snapshot.
const SNAPSHOT_WINDOW_SECS: i64 = 1;

fn shift_ts(ts: &str) -> Option<String> {
    let t = DateTime::parse_from_rfc3339(ts).ok()?.with_timezone(&Utc);
    Some(format_ts(
        t + chrono::Duration::seconds(SNAPSHOT_WINDOW_SECS),
    ))
}

/// Where a snapshot goes among stream entries: before every entry stamped
/// from a second before its read (whole seconds) on.
pub(crate) fn snapshot_fold_point(entry: &AuditEntry) -> String {
    let t = entry
        .snapshot_time
        .as_deref()
        .or(entry.event_time.as_deref())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(DateTime::UNIX_EPOCH);
    let floor = t - chrono::Duration::nanoseconds(i64::from(t.timestamp_subsec_nanos()));
    format_ts(floor - chrono::Duration::seconds(SNAPSHOT_WINDOW_SECS))
}

/// The entries that make up the state at `at`, in folding order: stream
/// entries in stream order, each snapshot read by then placed by its time.
fn fold_order<'a>(entries: &'a [AuditEntry], at: &str) -> Vec<&'a AuditEntry> {
    let (mut snaps, stream): (Vec<&AuditEntry>, Vec<&AuditEntry>) = entries
        .iter()
        .filter(|e| entry_ts(e, DateTime::UNIX_EPOCH).as_str() <= at)
        .partition(|e| e.event == "SNAPSHOT");
    snaps.sort_by_key(|e| snapshot_fold_point(e));
    let mut out = Vec::with_capacity(snaps.len() + stream.len());
    let mut snaps = snaps.into_iter().peekable();
    for e in stream {
        let ts = entry_ts(e, DateTime::UNIX_EPOCH);
        while let Some(s) = snaps.next_if(|s| snapshot_fold_point(s) <= ts) {
            out.push(s);
        }
        out.push(e);
    }
    out.extend(snaps);
    out
}

/// Applies what can be applied to a partly known item: each change's new
/// value is put at its path, each removal done if the value is there.
fn lenient(mut item: Item, changes: &[Change]) -> Item {
    for c in changes {
        if let Ok(next) = apply_changes(Some(&item), std::slice::from_ref(c)) {
            item = next;
            continue;
        }
        let current = value_at(&item, &c.path).cloned();
        let fixed = Change {
            path: c.path.clone(),
            old: current.clone(),
            new: c.new.clone(),
            added: None,
            removed: None,
        };
        if fixed.old.is_none() && fixed.new.is_none() {
            continue;
        }
        if let Ok(next) = apply_changes(Some(&item), std::slice::from_ref(&fixed)) {
            item = next;
        }
    }
    item
}

/// The value at a document path, if the item has one there.
pub fn value_at<'a>(item: &'a Item, path: &str) -> Option<&'a AttrValue> {
    let segments = parse_path(path).ok()?;
    let (first, rest) = segments.split_first()?;
    let PathSegment::Key(k) = first else {
        return None;
    };
    let mut v = item.get(k)?;
    for seg in rest {
        v = match (v, seg) {
            (AttrValue::M(m), PathSegment::Key(k)) => m.get(k)?,
            (AttrValue::L(l), PathSegment::Index(i)) => l.get(*i)?,
            _ => return None,
        };
    }
    Some(v)
}

/// The item's state at each of `times`, from one read of its entries up to
/// the last of them (held in memory: one item's trail).
pub async fn states_at<S: ReadStore>(
    store: &S,
    table: &str,
    key: &Item,
    times: &[DateTime<Utc>],
) -> Result<Vec<State>, ReadError> {
    let filter = QueryFilter {
        table: Some(table.to_string()),
        key: Some(key.clone()),
        until: times.iter().max().copied(),
        order: Order::Asc,
        ..QueryFilter::default()
    };
    let mut entries = Vec::new();
    let mut cursor = None;
    loop {
        let page = crate::read::query(store, &filter, cursor.as_ref(), 500).await?;
        entries.extend(page.entries);
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(times
        .iter()
        .map(|t| {
            let mut folder = Folder::new();
            for e in fold_order(&entries, &format_ts(*t)) {
                folder.apply(e);
            }
            folder.state()
        })
        .collect())
}

/// `show --json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Shown {
    pub table: String,
    pub key: Item,
    pub at: String,
    pub exists: bool,
    pub item: Option<Item>,
    pub complete: bool,
}

pub async fn show<S: ReadStore>(
    store: &S,
    table: &str,
    key: &Item,
    at: DateTime<Utc>,
) -> Result<Shown, ReadError> {
    let state = states_at(store, table, key, &[at]).await?.remove(0);
    Ok(Shown {
        table: table.to_string(),
        key: key.clone(),
        at: format_ts(at),
        exists: state.item.is_some(),
        item: state.item,
        complete: state.complete,
    })
}

/// `diff --json`: `changes`, applied to the item at `from`, give it at `to`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diffed {
    pub table: String,
    pub key: Item,
    pub from: String,
    pub to: String,
    pub changes: Vec<Change>,
}

pub async fn diff<S: ReadStore>(
    store: &S,
    table: &str,
    key: &Item,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Diffed, ReadError> {
    let (a, b) = if from <= to { (from, to) } else { (to, from) };
    let states = states_at(store, table, key, &[a, b]).await?;
    let (old, new) = if from <= to {
        (&states[0], &states[1])
    } else {
        (&states[1], &states[0])
    };
    Ok(Diffed {
        table: table.to_string(),
        key: key.clone(),
        from: format_ts(from),
        to: format_ts(to),
        changes: diff_images(old.item.as_ref(), new.item.as_ref()),
    })
}

// ---------------------------------------------------------------- revert

/// `revert`: one DynamoDB call, as `aws dynamodb <op> --cli-input-json` takes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RevertPlan {
    pub operation: &'static str,
    pub input: Value,
}

/// Expression names and values, numbered as they are added.
#[derive(Default)]
struct Expr {
    names: Map<String, Value>,
    values: Map<String, Value>,
}

impl Expr {
    fn name(&mut self, name: &str) -> String {
        if let Some((k, _)) = self.names.iter().find(|(_, v)| v.as_str() == Some(name)) {
            return k.clone();
        }
        let k = format!("#n{}", self.names.len());
        self.names.insert(k.clone(), json!(name));
        k
    }

    fn value(&mut self, v: &AttrValue) -> String {
        let k = format!(":v{}", self.values.len());
        self.values
            .insert(k.clone(), serde_json::to_value(v).unwrap_or(Value::Null));
        k
    }

    fn path(&mut self, path: &str) -> Result<String, ReadError> {
        let segments = parse_path(path).map_err(|e| ReadError::BadArg {
            flag: "--field".into(),
            message: format!("{path:?} is not a document path such as a.b[2].c: {e}"),
        })?;
        let mut out = String::new();
        for seg in segments {
            match seg {
                PathSegment::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(&self.name(&k));
                }
                PathSegment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        Ok(out)
    }

    fn into_input(self, input: &mut Map<String, Value>) {
        if !self.names.is_empty() {
            input.insert("ExpressionAttributeNames".into(), Value::Object(self.names));
        }
        if !self.values.is_empty() {
            input.insert(
                "ExpressionAttributeValues".into(),
                Value::Object(self.values),
            );
        }
    }
}

fn to_json(v: &impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Who a revert is attributed to. A plan never sets the actor attribute
/// back to an old value (applying it would credit the revert to the writer
/// it undoes): with `name` it writes that name, without it the attribute is
/// left as it is (and the entry the revert causes says `item-unchanged`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevertActor<'a> {
    /// `[attribution] actor_attribute`: the attribute naming the writer.
    pub attribute: Option<&'a str>,
    /// `--actor NAME` (`actor=NAME` in the API): written into it.
    pub name: Option<&'a str>,
}

/// The plan that returns the item (or only `fields`) to its state at
/// `to_time`, conditioned on the item holding what the trail says it holds
/// now, so that it fails after a concurrent change instead of overwriting it.
pub async fn revert<S: ReadStore>(
    store: &S,
    table: &str,
    key: &Item,
    to_time: DateTime<Utc>,
    fields: &[String],
    actor: RevertActor<'_>,
) -> Result<RevertPlan, ReadError> {
    // Later than any entry, and still a four-digit year, so it compares as text.
    let far = DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let states = states_at(store, table, key, &[to_time, far]).await?;
    plan_revert(table, key, &states[0], &states[1], fields, to_time, actor)
}

/// The pure part of [`revert`]: `then` is the state at `to_time`, `now` the
/// state after the last entry.
pub fn plan_revert(
    table: &str,
    key: &Item,
    then: &State,
    now: &State,
    fields: &[String],
    to_time: DateTime<Utc>,
    actor: RevertActor<'_>,
) -> Result<RevertPlan, ReadError> {
    let at = format_ts(to_time);
    if actor.name.is_some() && actor.attribute.is_none() {
        return Err(ReadError::BadArg {
            flag: "--actor".into(),
            message: "the config names no `[attribution] actor_attribute` to write it into".into(),
        });
    }
    let is_actor = |name: &str| actor.attribute == Some(name);
    // The actor, written as a string beside what the plan sets.
    let actor_value = actor.name.map(|n| AttrValue::S(n.to_string()));
    if now.entries == 0 {
        return Err(ReadError::Refused(format!(
            "no audit entries for this item of {table}: nothing to revert"
        )));
    }
    // The trail holds only a commitment there: nothing to write back, and
    // nothing a condition could compare the item's value with.
    let redacted = |path: &str| {
        ReadError::Refused(format!(
            "{path} is redacted (`[redaction]` keeps only a keyed commitment of it in the trail): \
             a revert can neither write it back nor check its current value; revert the other \
             fields with --field PATH"
        ))
    };
    let mut input = Map::new();
    input.insert("TableName".into(), json!(table));
    let mut expr = Expr::default();
    let key_names: Vec<&String> = key.keys().collect();

    if !fields.is_empty() {
        let Some(current) = &now.item else {
            return Err(ReadError::Refused(format!(
                "the item does not exist now; revert it whole (without --field) to re-create it as at {at}"
            )));
        };
        let mut sets = Vec::new();
        let mut removes = Vec::new();
        let mut conditions = Vec::new();
        for field in fields {
            if is_actor(field) {
                return Err(ReadError::BadArg {
                    flag: "--field".into(),
                    message: format!(
                        "{field:?} is the actor attribute: a revert never sets it back to an old \
                         writer; use --actor NAME to name who applies the revert"
                    ),
                });
            }
            if value_at(current, field).is_none()
                && then
                    .item
                    .as_ref()
                    .and_then(|i| value_at(i, field))
                    .is_none()
            {
                let mut names: Vec<&str> = current.keys().map(String::as_str).collect();
                if let Some(t) = &then.item {
                    names.extend(t.keys().map(String::as_str));
                }
                names.sort_unstable();
                names.dedup();
                return Err(ReadError::BadArg {
                    flag: "--field".into(),
                    message: format!(
                        "{field:?}: the item has no such field, neither at {at} nor now (its \
                         attributes: {})",
                        names.join(", ")
                    ),
                });
            }
            let path = expr.path(field)?;
            for item in [Some(current), then.item.as_ref()].into_iter().flatten() {
                let mut at_path = parse_path(field).unwrap_or_default();
                if let Some(v) = value_at(item, field) {
                    if crate::redact::find_redacted(v, &mut at_path) {
                        return Err(redacted(&crate::diff::format_path(&at_path)));
                    }
                }
            }
            if key.contains_key(field) {
                return Err(ReadError::BadArg {
                    flag: "--field".into(),
                    message: format!("{field:?} is part of the key, which an update cannot change"),
                });
            }
            match value_at(current, field) {
                Some(v) => {
                    let cur = expr.value(v);
                    conditions.push(format!("{path} = {cur}"));
                }
                None => conditions.push(format!("attribute_not_exists({path})")),
            }
            match then.item.as_ref().and_then(|i| value_at(i, field)) {
                Some(v) => {
                    let val = expr.value(v);
                    sets.push(format!("{path} = {val}"));
                }
                None => removes.push(path),
            }
        }
        if let (Some(attr), Some(v)) = (actor.attribute, &actor_value) {
            let n = expr.name(attr);
            let v = expr.value(v);
            sets.push(format!("{n} = {v}"));
        }
        let first_key = key_names.first().map(|k| expr.name(k)).unwrap_or_default();
        conditions.insert(0, format!("attribute_exists({first_key})"));
        input.insert("Key".into(), to_json(key));
        input.insert(
            "UpdateExpression".into(),
            json!(update_expression(&sets, &removes)),
        );
        input.insert(
            "ConditionExpression".into(),
            json!(conditions.join(" AND ")),
        );
        expr.into_input(&mut input);
        return Ok(RevertPlan {
            operation: "UpdateItem",
            input: Value::Object(input),
        });
    }

    if !now.complete {
        return Err(ReadError::Refused(format!(
            "the trail does not hold this item's whole current state (no INSERT or SNAPSHOT \
             entry, or an unreadable one): a whole-item revert could not be conditioned on it; \
             revert named fields with --field PATH, or run `ddb-audit snapshot --table {table}` first"
        )));
    }
    for item in [then.item.as_ref(), now.item.as_ref()]
        .into_iter()
        .flatten()
    {
        if let Some(path) = crate::redact::first_redacted(item) {
            return Err(redacted(&path));
        }
    }
    match (&then.item, &now.item) {
        (None, None) => Err(ReadError::Refused(format!(
            "the item did not exist at {at} and does not exist now: nothing to revert"
        ))),
        (Some(target), None) => {
            let first_key = key_names.first().map(|k| expr.name(k)).unwrap_or_default();
            let mut target = target.clone();
            if let Some(attr) = actor.attribute {
                // Re-created by whoever applies it, not by its old writer.
                match &actor_value {
                    Some(v) => target.insert(attr.to_string(), v.clone()),
                    None => target.remove(attr),
                };
            }
            input.insert("Item".into(), to_json(&target));
            input.insert(
                "ConditionExpression".into(),
                json!(format!("attribute_not_exists({first_key})")),
            );
            expr.into_input(&mut input);
            Ok(RevertPlan {
                operation: "PutItem",
                input: Value::Object(input),
            })
        }
        (None, Some(current)) => {
            input.insert("Key".into(), to_json(key));
            input.insert(
                "ConditionExpression".into(),
                json!(holds(&mut expr, current)),
            );
            expr.into_input(&mut input);
            Ok(RevertPlan {
                operation: "DeleteItem",
                input: Value::Object(input),
            })
        }
        (Some(target), Some(current)) => {
            let mut sets = Vec::new();
            let mut removes = Vec::new();
            let mut absent = Vec::new();
            for (name, value) in target {
                if key.contains_key(name) || is_actor(name) {
                    continue;
                }
                match current.get(name) {
                    Some(c) if same_value(c, value) => {}
                    found => {
                        let n = expr.name(name);
                        if found.is_none() {
                            absent.push(format!("attribute_not_exists({n})"));
                        }
                        let v = expr.value(value);
                        sets.push(format!("{n} = {v}"));
                    }
                }
            }
            for name in current.keys() {
                if !target.contains_key(name) && !key.contains_key(name) && !is_actor(name) {
                    removes.push(expr.name(name));
                }
            }
            // Only beside a change: the actor alone is no revert.
            if let (Some(attr), Some(v), false) = (
                actor.attribute,
                &actor_value,
                sets.is_empty() && removes.is_empty(),
            ) {
                let n = expr.name(attr);
                let v = expr.value(v);
                sets.push(format!("{n} = {v}"));
            }
            let mut condition = holds(&mut expr, current);
            for a in absent {
                condition.push_str(" AND ");
                condition.push_str(&a);
            }
            input.insert("Key".into(), to_json(key));
            if !sets.is_empty() || !removes.is_empty() {
                input.insert(
                    "UpdateExpression".into(),
                    json!(update_expression(&sets, &removes)),
                );
            }
            input.insert("ConditionExpression".into(), json!(condition));
            expr.into_input(&mut input);
            Ok(RevertPlan {
                operation: "UpdateItem",
                input: Value::Object(input),
            })
        }
    }
}

/// "The item holds `current`": every attribute equal to its value now.
fn holds(expr: &mut Expr, current: &Item) -> String {
    current
        .iter()
        .map(|(name, value)| {
            let n = expr.name(name);
            let v = expr.value(value);
            format!("{n} = {v}")
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn update_expression(sets: &[String], removes: &[String]) -> String {
    let mut parts = Vec::new();
    if !sets.is_empty() {
        parts.push(format!("SET {}", sets.join(", ")));
    }
    if !removes.is_empty() {
        parts.push(format!("REMOVE {}", removes.join(", ")));
    }
    parts.join(" ")
}

#[cfg(test)]
mod revert_tests {
    use super::*;
    use crate::value::string_item as item;

    fn state(i: Option<Item>) -> State {
        State {
            item: i,
            complete: true,
            entries: 2,
        }
    }

    const ACTOR: RevertActor<'static> = RevertActor {
        attribute: Some("updated_by"),
        name: None,
    };

    fn plan(then: Option<Item>, now: Option<Item>, fields: &[&str], actor: RevertActor) -> Value {
        let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        let key = item(&[("pk", "o1")]);
        let p = plan_revert(
            "orders",
            &key,
            &state(then),
            &state(now),
            &fields,
            Utc::now(),
            actor,
        )
        .unwrap();
        json!({"operation": p.operation, "input": p.input})
    }

    /// The values an update expression writes, by attribute name.
    fn written(plan: &Value) -> BTreeMap<String, Value> {
        let input = &plan["input"];
        let names = input["ExpressionAttributeNames"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let values = input["ExpressionAttributeValues"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let expr = input["UpdateExpression"].as_str().unwrap_or("");
        let set = expr
            .strip_prefix("SET ")
            .unwrap_or("")
            .split(" REMOVE ")
            .next()
            .unwrap_or("");
        set.split(", ")
            .filter_map(|a| a.split_once(" = "))
            .map(|(n, v)| {
                let name = names[n].as_str().unwrap_or_default().to_string();
                (name, values[v].clone())
            })
            .collect()
    }

    use std::collections::BTreeMap;

    #[test]
    fn a_whole_item_revert_never_restores_the_old_writer() {
        let then = item(&[("pk", "o1"), ("status", "PENDING"), ("updated_by", "alice")]);
        let now = item(&[("pk", "o1"), ("status", "PAID"), ("updated_by", "bob")]);
        let without = plan(Some(then.clone()), Some(now.clone()), &[], ACTOR);
        let w = written(&without);
        assert_eq!(w.get("status"), Some(&json!({"S": "PENDING"})), "{without}");
        assert!(
            !w.contains_key("updated_by"),
            "restored the old writer: {without}"
        );
        let with = plan(
            Some(then),
            Some(now),
            &[],
            RevertActor {
                name: Some("carol"),
                ..ACTOR
            },
        );
        assert_eq!(
            written(&with).get("updated_by"),
            Some(&json!({"S": "carol"})),
            "{with}"
        );
    }

    #[test]
    fn a_recreated_item_is_written_by_whoever_applies_the_plan() {
        let then = item(&[("pk", "o1"), ("status", "PENDING"), ("updated_by", "alice")]);
        let without = plan(Some(then.clone()), None, &[], ACTOR);
        assert_eq!(without["operation"], "PutItem");
        assert!(
            without["input"]["Item"].get("updated_by").is_none(),
            "{without}"
        );
        let with = plan(
            Some(then),
            None,
            &[],
            RevertActor {
                name: Some("carol"),
                ..ACTOR
            },
        );
        assert_eq!(with["input"]["Item"]["updated_by"], json!({"S": "carol"}));
    }

    #[test]
    fn a_field_revert_names_the_actor_and_refuses_unknown_fields() {
        let then = item(&[("pk", "o1"), ("status", "PENDING"), ("updated_by", "alice")]);
        let now = item(&[("pk", "o1"), ("status", "PAID"), ("updated_by", "bob")]);
        let with = plan(
            Some(then.clone()),
            Some(now.clone()),
            &["status"],
            RevertActor {
                name: Some("carol"),
                ..ACTOR
            },
        );
        let w = written(&with);
        assert_eq!(w.get("status"), Some(&json!({"S": "PENDING"})));
        assert_eq!(w.get("updated_by"), Some(&json!({"S": "carol"})));

        let key = item(&[("pk", "o1")]);
        let err = |fields: &[&str], actor: RevertActor| {
            let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            plan_revert(
                "orders",
                &key,
                &state(Some(then.clone())),
                &state(Some(now.clone())),
                &fields,
                Utc::now(),
                actor,
            )
            .unwrap_err()
            .to_string()
        };
        let e = err(&["nosuch"], ACTOR);
        assert!(
            e.contains("\"nosuch\"") && e.contains("no such field"),
            "{e}"
        );
        assert!(e.contains("status") && e.contains("updated_by"), "{e}");
        let e = err(&["updated_by"], ACTOR);
        assert!(
            e.contains("actor attribute") && e.contains("--actor"),
            "{e}"
        );
        let e = err(
            &["status"],
            RevertActor {
                attribute: None,
                name: Some("carol"),
            },
        );
        assert!(e.contains("actor_attribute"), "{e}");
    }
}
