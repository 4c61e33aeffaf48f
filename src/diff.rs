//! Field-level diffs between two item images, and the inverse (applying them).
//!
//! # The patch
//! [`diff_images`] returns changes that, applied one by one to the old image
//! with JSON Patch (RFC 6902) semantics, give the new image:
//! - no `old`: add (at a list index: insert, later elements shift right);
//! - no `new`: remove (in a list, later elements shift left);
//! - both: replace.
//!
//! Values equal by [`same_value`] (numbers as decimals, sets as sets) are not
//! changes. Maps are walked in sorted key order. A set (SS/NS/BS) that differs
//! is replaced as a whole, with `added` and `removed` element lists; a type
//! change is a replace. INSERT (no old image) is one add per top-level
//! attribute, REMOVE (no new image) one remove per top-level attribute.
//!
//! Lists: the common prefix and suffix are skipped, the rest is paired
//! position by position (and diffed inside), then the surplus new elements
//! are added at ascending indices, or the surplus old elements removed at
//! descending indices. An insertion or deletion in the middle of a list is
//! therefore one change, not a shift of every later element.
//!
//! # Paths
//! A path is a DynamoDB document path as in an UpdateExpression:
//! `profile.name`, `rules[1].conditions[0].value`. Attribute names are
//! written raw, except that each `.`, `[`, `]` and `\` in a name is preceded
//! by a backslash, so every path names exactly one place: the attribute
//! `a.b` is the path `a\.b`, while `a.b` is attribute `b` inside map `a`.
//! Indexes are decimal without leading zeros. A path always starts with an
//! attribute name (possibly empty).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::value::{same_value, set_delta, AttrValue, Item};

/// One field-level change. Applied in order to the old image with JSON Patch
/// semantics: no `old` adds, no `new` removes, both replaces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// DynamoDB document path, e.g. `profile.name` or `rules[1].conditions[0].value`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<AttrValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<AttrValue>,
    /// For a set (SS/NS/BS) replaced as a whole: the elements it gained
    /// (binary elements base64-encoded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<Vec<String>>,
    /// For a set: the elements it lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<String>>,
}

/// One step of a document path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathSegment {
    /// An attribute of an item, or a key of a map.
    Key(String),
    /// A position in a list.
    Index(usize),
}

/// Errors from parsing paths and applying changes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    #[error("bad path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("change at {path} has neither an old nor a new value")]
    Empty { path: String },
    #[error("change at {path}: nothing is there")]
    Missing { path: String },
    #[error("change at {path} adds a value, but one is already there")]
    Exists { path: String },
    #[error("change at {path}: index {index} is out of range for a list of {len}")]
    IndexOutOfRange {
        path: String,
        index: usize,
        len: usize,
    },
    #[error("change at {path}: expected a {expected} along the path, found a {found}")]
    Shape {
        path: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("change at {path}: its old value does not match the current value")]
    OldMismatch { path: String },
    #[error("change at {path}: its added/removed lists do not match its old and new sets")]
    SetDelta { path: String },
}

/// The changes that turn `old` into `new` (see the module docs for the
/// shape). `None` is a missing image: INSERT has no old, REMOVE no new.
pub fn diff_images(old: Option<&Item>, new: Option<&Item>) -> Vec<Change> {
    let mut out = Vec::new();
    let mut path = String::new();
    match (old, new) {
        (None, None) => {}
        (None, Some(new)) => {
            for (k, v) in new {
                push_key(&mut path, k, true);
                out.push(change(&path, None, Some(v)));
                path.clear();
            }
        }
        (Some(old), None) => {
            for (k, v) in old {
                push_key(&mut path, k, true);
                out.push(change(&path, Some(v), None));
                path.clear();
            }
        }
        (Some(old), Some(new)) => diff_map(&mut path, true, old, new, &mut out),
    }
    out
}

fn change(path: &str, old: Option<&AttrValue>, new: Option<&AttrValue>) -> Change {
    let (added, removed) = match (old, new) {
        (Some(o), Some(n)) => set_delta(o, n).map_or((None, None), |(a, r)| (Some(a), Some(r))),
        _ => (None, None),
    };
    Change {
        path: path.to_owned(),
        old: old.cloned(),
        new: new.cloned(),
        added,
        removed,
    }
}

// One path buffer is grown and truncated through the whole walk, so a path
// string is only allocated for a change actually emitted.
fn diff_map(
    path: &mut String,
    top: bool,
    old: &BTreeMap<String, AttrValue>,
    new: &BTreeMap<String, AttrValue>,
    out: &mut Vec<Change>,
) {
    let base = path.len();
    let mut o = old.iter().peekable();
    let mut n = new.iter().peekable();
    loop {
        let step = match (o.peek(), n.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((ko, _)), Some((kn, _))) => ko.cmp(kn),
        };
        match step {
            Ordering::Less => {
                if let Some((k, v)) = o.next() {
                    push_key(path, k, top);
                    out.push(change(path, Some(v), None));
                }
            }
            Ordering::Greater => {
                if let Some((k, v)) = n.next() {
                    push_key(path, k, top);
                    out.push(change(path, None, Some(v)));
                }
            }
            Ordering::Equal => {
                if let (Some((k, a)), Some((_, b))) = (o.next(), n.next()) {
                    push_key(path, k, top);
                    diff_value(path, a, b, out);
                }
            }
        }
        path.truncate(base);
    }
}

fn diff_value(path: &mut String, old: &AttrValue, new: &AttrValue, out: &mut Vec<Change>) {
    match (old, new) {
        (AttrValue::M(a), AttrValue::M(b)) => diff_map(path, false, a, b, out),
        (AttrValue::L(a), AttrValue::L(b)) => diff_list(path, a, b, out),
        _ if same_value(old, new) => {}
        _ => out.push(change(path, Some(old), Some(new))),
    }
}

fn diff_list(path: &mut String, old: &[AttrValue], new: &[AttrValue], out: &mut Vec<Change>) {
    let prefix = old
        .iter()
        .zip(new)
        .take_while(|(a, b)| same_value(a, b))
        .count();
    // Bounded so the suffix never overlaps the prefix.
    let room = old.len().min(new.len()) - prefix;
    let suffix = old
        .iter()
        .rev()
        .zip(new.iter().rev())
        .take(room)
        .take_while(|(a, b)| same_value(a, b))
        .count();
    let old_mid = &old[prefix..old.len() - suffix];
    let new_mid = &new[prefix..new.len() - suffix];
    let paired = old_mid.len().min(new_mid.len());
    let base = path.len();

    for (i, (a, b)) in old_mid.iter().zip(new_mid).enumerate() {
        push_index(path, prefix + i);
        diff_value(path, a, b, out);
        path.truncate(base);
    }
    // Ascending: each add lands before the old suffix, after the previous add.
    for (i, b) in new_mid.iter().enumerate().skip(paired) {
        push_index(path, prefix + i);
        out.push(change(path, None, Some(b)));
        path.truncate(base);
    }
    // Descending: removing from the end first keeps the earlier indices valid.
    for (i, a) in old_mid.iter().enumerate().skip(paired).rev() {
        push_index(path, prefix + i);
        out.push(change(path, Some(a), None));
        path.truncate(base);
    }
}

fn needs_escape(c: char) -> bool {
    matches!(c, '.' | '[' | ']' | '\\')
}

fn push_key(path: &mut String, key: &str, top: bool) {
    if !top {
        path.push('.');
    }
    if key.contains(needs_escape) {
        for c in key.chars() {
            if needs_escape(c) {
                path.push('\\');
            }
            path.push(c);
        }
    } else {
        path.push_str(key);
    }
}

fn push_index(path: &mut String, index: usize) {
    // Writing to a String cannot fail.
    let _ = write!(path, "[{index}]");
}

/// Writes segments as a document path (see the module docs). The first
/// segment should be a [`PathSegment::Key`]; a leading index is written as is
/// and reads back after an empty attribute name.
pub fn format_path(segments: &[PathSegment]) -> String {
    let mut path = String::new();
    for (i, seg) in segments.iter().enumerate() {
        match seg {
            PathSegment::Key(k) => push_key(&mut path, k, i == 0),
            PathSegment::Index(n) => push_index(&mut path, *n),
        }
    }
    path
}

/// Reads a document path written by [`format_path`]. The result always
/// starts with a [`PathSegment::Key`].
pub fn parse_path(path: &str) -> Result<Vec<PathSegment>, DiffError> {
    enum Mode {
        Key,
        Index(Option<usize>),
        AfterIndex,
    }
    let bad = |reason| DiffError::BadPath {
        path: path.to_owned(),
        reason,
    };
    let mut segments = Vec::new();
    let mut key = String::new();
    let mut mode = Mode::Key;
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        mode = match (mode, c) {
            (Mode::Key, '\\') => match chars.next() {
                Some(e) if needs_escape(e) => {
                    key.push(e);
                    Mode::Key
                }
                _ => return Err(bad("a backslash must be followed by one of . [ ] \\")),
            },
            (Mode::Key, '.') => {
                segments.push(PathSegment::Key(std::mem::take(&mut key)));
                Mode::Key
            }
            (Mode::Key, '[') => {
                segments.push(PathSegment::Key(std::mem::take(&mut key)));
                Mode::Index(None)
            }
            (Mode::Key, ']') => return Err(bad("unmatched ] (escape it as \\] in a name)")),
            (Mode::Key, c) => {
                key.push(c);
                Mode::Key
            }
            (Mode::Index(Some(0)), '0'..='9') => {
                return Err(bad("a list index has no leading zeros"))
            }
            (Mode::Index(n), d @ '0'..='9') => {
                let digit = d as usize - '0' as usize;
                let n = n
                    .unwrap_or(0)
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(digit))
                    .ok_or_else(|| bad("list index too large"))?;
                Mode::Index(Some(n))
            }
            (Mode::Index(Some(n)), ']') => {
                segments.push(PathSegment::Index(n));
                Mode::AfterIndex
            }
            (Mode::Index(_), _) => return Err(bad("a list index must be digits closed by ]")),
            (Mode::AfterIndex, '.') => Mode::Key,
            (Mode::AfterIndex, '[') => Mode::Index(None),
            (Mode::AfterIndex, _) => return Err(bad("expected . or [ after ]")),
        };
    }
    match mode {
        Mode::Key => segments.push(PathSegment::Key(key)),
        Mode::Index(_) => return Err(bad("unclosed [")),
        Mode::AfterIndex => {}
    }
    Ok(segments)
}

/// Applies `changes` in order to `old` (an empty item when `None`) and
/// returns the result. Strict, because it is how an audit trail is checked:
/// an add where a value exists or at an index past the end, a remove or
/// replace of nothing, an `old` that does not match the current value (by
/// [`same_value`]), or `added`/`removed` lists that disagree with `old` and
/// `new` are errors naming the change's path.
pub fn apply_changes(old: Option<&Item>, changes: &[Change]) -> Result<Item, DiffError> {
    let mut item = old.cloned().unwrap_or_default();
    for c in changes {
        apply_one(&mut item, c)?;
    }
    Ok(item)
}

enum Parent<'a> {
    Map(&'a mut BTreeMap<String, AttrValue>),
    List(&'a mut Vec<AttrValue>),
}

fn apply_one(item: &mut Item, c: &Change) -> Result<(), DiffError> {
    let path = || c.path.clone();
    if c.old.is_none() && c.new.is_none() {
        return Err(DiffError::Empty { path: path() });
    }
    check_set_delta(c)?;
    let segments = parse_path(&c.path)?;
    let Some((last, along)) = segments.split_last() else {
        return Err(DiffError::Missing { path: path() });
    };
    let shape = |expected, found| DiffError::Shape {
        path: path(),
        expected,
        found,
    };

    let mut parent = Parent::Map(item);
    for seg in along {
        let next = match (parent, seg) {
            (Parent::Map(m), PathSegment::Key(k)) => m.get_mut(k),
            (Parent::List(l), PathSegment::Index(i)) => l.get_mut(*i),
            (Parent::Map(_), PathSegment::Index(_)) => return Err(shape("L", "M")),
            (Parent::List(_), PathSegment::Key(_)) => return Err(shape("M", "L")),
        };
        parent = match next.ok_or_else(|| DiffError::Missing { path: path() })? {
            AttrValue::M(m) => Parent::Map(m),
            AttrValue::L(l) => Parent::List(l),
            other => return Err(shape("M or L", other.type_name())),
        };
    }

    let matches_old = |current: &AttrValue| match &c.old {
        Some(old) if !same_value(current, old) => Err(DiffError::OldMismatch { path: path() }),
        _ => Ok(()),
    };
    match (parent, last) {
        (Parent::Map(m), PathSegment::Key(k)) => match (&c.old, &c.new) {
            (None, Some(new)) => {
                if m.contains_key(k) {
                    return Err(DiffError::Exists { path: path() });
                }
                m.insert(k.clone(), new.clone());
            }
            (_, new) => {
                let current = m
                    .get_mut(k)
                    .ok_or_else(|| DiffError::Missing { path: path() })?;
                matches_old(current)?;
                match new {
                    Some(new) => *current = new.clone(),
                    None => {
                        m.remove(k);
                    }
                }
            }
        },
        (Parent::List(l), PathSegment::Index(i)) => {
            let (i, len) = (*i, l.len());
            let out_of_range = || DiffError::IndexOutOfRange {
                path: path(),
                index: i,
                len,
            };
            match (&c.old, &c.new) {
                (None, Some(new)) => {
                    if i > len {
                        return Err(out_of_range());
                    }
                    l.insert(i, new.clone());
                }
                (_, new) => {
                    let current = l.get_mut(i).ok_or_else(out_of_range)?;
                    matches_old(current)?;
                    match new {
                        Some(new) => *current = new.clone(),
                        None => {
                            l.remove(i);
                        }
                    }
                }
            }
        }
        (Parent::Map(_), PathSegment::Index(_)) => return Err(shape("L", "M")),
        (Parent::List(_), PathSegment::Key(_)) => return Err(shape("M", "L")),
    }
    Ok(())
}

fn check_set_delta(c: &Change) -> Result<(), DiffError> {
    if c.added.is_none() && c.removed.is_none() {
        return Ok(());
    }
    let bad = || DiffError::SetDelta {
        path: c.path.clone(),
    };
    let (Some(old), Some(new)) = (&c.old, &c.new) else {
        return Err(bad());
    };
    let (added, removed) = set_delta(old, new).ok_or_else(bad)?;
    // Another writer may list elements in another order: compare as sorted.
    let agrees = |given: &Option<Vec<String>>, mut computed: Vec<String>| match given {
        None => true,
        Some(given) => {
            let mut given = given.clone();
            given.sort_unstable();
            computed.sort_unstable();
            given == computed
        }
    };
    if agrees(&c.added, added) && agrees(&c.removed, removed) {
        Ok(())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn item(json: Value) -> Item {
        serde_json::from_value(json).unwrap()
    }

    fn same_item(a: &Item, b: &Item) -> bool {
        same_value(&AttrValue::M(a.clone()), &AttrValue::M(b.clone()))
    }

    /// The changes from `old` to `new`, as their JSON, after checking that
    /// they rebuild `new`.
    fn diff(old: Value, new: Value) -> Value {
        let (old, new) = (item(old), item(new));
        let changes = diff_images(Some(&old), Some(&new));
        let rebuilt = apply_changes(Some(&old), &changes).unwrap();
        assert!(same_item(&rebuilt, &new), "{changes:?} gave {rebuilt:?}");
        serde_json::to_value(&changes).unwrap()
    }

    #[test]
    fn scalar_changes_of_every_type_are_replaces() {
        let pairs = [
            (json!({"S": "a"}), json!({"S": "b"})),
            (json!({"N": "1"}), json!({"N": "2.5"})),
            (json!({"B": "aGk="}), json!({"B": "AP8="})),
            (json!({"BOOL": false}), json!({"BOOL": true})),
            (json!({"NULL": true}), json!({"S": ""})),
        ];
        for (a, b) in pairs {
            assert_eq!(
                diff(
                    json!({"pk": {"S": "k"}, "v": a}),
                    json!({"pk": {"S": "k"}, "v": b})
                ),
                json!([{"path": "v", "old": a, "new": b}])
            );
        }
    }

    #[test]
    fn equal_values_are_not_changes() {
        let v = json!({
            "n": {"N": "1.0"}, "big": {"N": "1e2"},
            "ns": {"NS": ["1", "2"]}, "ss": {"SS": ["a", "b"]},
            "m": {"M": {"x": {"L": [{"N": "3"}, {"NULL": true}]}}},
            "b": {"B": "aGk="}, "t": {"BOOL": true}
        });
        let w = json!({
            "n": {"N": "1"}, "big": {"N": "100"},
            "ns": {"NS": ["2", "1.00"]}, "ss": {"SS": ["b", "a"]},
            "m": {"M": {"x": {"L": [{"N": "3.0"}, {"NULL": true}]}}},
            "b": {"B": "aGk="}, "t": {"BOOL": true}
        });
        assert_eq!(diff(v, w), json!([]));
    }

    #[test]
    fn top_level_attributes_added_and_removed_in_key_order() {
        assert_eq!(
            diff(
                json!({"a": {"S": "1"}, "c": {"S": "3"}, "z": {"N": "0"}}),
                json!({"b": {"S": "2"}, "c": {"S": "3"}, "d": {"L": []}})
            ),
            json!([
                {"path": "a", "old": {"S": "1"}},
                {"path": "b", "new": {"S": "2"}},
                {"path": "d", "new": {"L": []}},
                {"path": "z", "old": {"N": "0"}},
            ])
        );
    }

    #[test]
    fn nested_maps_and_lists_to_depth() {
        let rule = |v: &str| {
            json!({"M": {"conditions": {"L": [
                {"M": {"field": {"S": "plan"}, "value": {"S": v}}}
            ]}}})
        };
        let old = json!({
            "profile": {"M": {"name": {"S": "Ann"}, "age": {"N": "40"}}},
            "rules": {"L": [rule("free"), rule("enterprise")]}
        });
        let new = json!({
            "profile": {"M": {"name": {"S": "Bob"}, "age": {"N": "40"}}},
            "rules": {"L": [rule("free"), rule("pro")]}
        });
        assert_eq!(
            diff(old, new),
            json!([
                {"path": "profile.name", "old": {"S": "Ann"}, "new": {"S": "Bob"}},
                {"path": "rules[1].conditions[0].value", "old": {"S": "enterprise"}, "new": {"S": "pro"}},
            ])
        );
    }

    fn list(items: &[&str]) -> Value {
        json!({"l": {"L": items.iter().map(|s| json!({"S": s})).collect::<Vec<_>>()}})
    }

    fn paths(changes: &Value) -> Vec<String> {
        changes
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let kind = match (c.get("old"), c.get("new")) {
                    (None, Some(_)) => "add",
                    (Some(_), None) => "remove",
                    _ => "replace",
                };
                format!("{kind} {}", c["path"].as_str().unwrap())
            })
            .collect()
    }

    #[test]
    fn list_growth_adds_at_ascending_indices() {
        let d = diff(list(&["a", "b"]), list(&["a", "b", "c", "d"]));
        assert_eq!(paths(&d), ["add l[2]", "add l[3]"]);
        assert_eq!(d[0]["new"], json!({"S": "c"}));
    }

    #[test]
    fn list_shrink_removes_at_descending_indices() {
        let d = diff(list(&["a", "b", "c", "d"]), list(&["a", "b"]));
        assert_eq!(paths(&d), ["remove l[3]", "remove l[2]"]);
        assert_eq!(d[0]["old"], json!({"S": "d"}));
        let d = diff(list(&["a", "b", "c"]), list(&["c"]));
        assert_eq!(paths(&d), ["remove l[1]", "remove l[0]"]);
    }

    #[test]
    fn insert_or_delete_in_the_middle_is_one_change() {
        let long: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        let mut inserted = long.clone();
        inserted.insert(20, "new");
        let d = diff(list(&long), list(&inserted));
        assert_eq!(d, json!([{"path": "l[20]", "new": {"S": "new"}}]));

        let mut deleted = long.clone();
        deleted.remove(30);
        let d = diff(list(&long), list(&deleted));
        assert_eq!(d, json!([{"path": "l[30]", "old": {"S": "30"}}]));
    }

    #[test]
    fn list_middle_pairs_then_adds_or_removes() {
        let d = diff(
            list(&["a", "b", "c", "z"]),
            list(&["a", "x", "y", "w", "z"]),
        );
        assert_eq!(paths(&d), ["replace l[1]", "replace l[2]", "add l[3]"]);
        let d = diff(list(&["a", "b", "c", "d", "z"]), list(&["a", "x", "z"]));
        assert_eq!(paths(&d), ["replace l[1]", "remove l[3]", "remove l[2]"]);
        // Repeated elements: prefix and suffix must not overlap.
        let d = diff(list(&["a", "a", "a"]), list(&["a", "a"]));
        assert_eq!(paths(&d), ["remove l[2]"]);
        let d = diff(list(&["a", "a"]), list(&["a", "a", "a"]));
        assert_eq!(paths(&d), ["add l[2]"]);
    }

    #[test]
    fn type_change_is_a_replace() {
        let cases = [
            (json!({"S": "1"}), json!({"N": "1"})),
            (json!({"M": {"a": {"S": "x"}}}), json!({"L": [{"S": "x"}]})),
            (json!({"L": []}), json!({"S": "x"})),
            (json!({"M": {}}), json!({"NULL": true})),
        ];
        for (a, b) in cases {
            assert_eq!(
                diff(json!({"v": a}), json!({"v": b})),
                json!([{"path": "v", "old": a, "new": b}])
            );
        }
        // Set to a set of another type: a plain replace, no element lists.
        assert_eq!(
            diff(json!({"v": {"SS": ["1"]}}), json!({"v": {"NS": ["1"]}})),
            json!([{"path": "v", "old": {"SS": ["1"]}, "new": {"NS": ["1"]}}])
        );
    }

    #[test]
    fn empty_maps_and_lists() {
        assert_eq!(
            diff(
                json!({"m": {"M": {}}, "l": {"L": []}}),
                json!({"m": {"M": {"a": {"N": "1"}}}, "l": {"L": [{"S": "x"}]}})
            ),
            json!([
                {"path": "l[0]", "new": {"S": "x"}},
                {"path": "m.a", "new": {"N": "1"}},
            ])
        );
        assert_eq!(
            diff(
                json!({"m": {"M": {"a": {"N": "1"}}}, "l": {"L": [{"S": "x"}]}}),
                json!({"m": {"M": {}}, "l": {"L": []}})
            ),
            json!([
                {"path": "l[0]", "old": {"S": "x"}},
                {"path": "m.a", "old": {"N": "1"}},
            ])
        );
    }

    #[test]
    fn sets_change_whole_with_added_and_removed() {
        assert_eq!(
            diff(
                json!({"tags": {"SS": ["a", "b", "c"]}}),
                json!({"tags": {"SS": ["d", "c", "a"]}})
            ),
            json!([{
                "path": "tags",
                "old": {"SS": ["a", "b", "c"]}, "new": {"SS": ["d", "c", "a"]},
                "added": ["d"], "removed": ["b"],
            }])
        );
        assert_eq!(
            diff(
                json!({"n": {"NS": ["1", "2.0"]}}),
                json!({"n": {"NS": ["2", "1", "10"]}})
            ),
            json!([{
                "path": "n",
                "old": {"NS": ["1", "2.0"]}, "new": {"NS": ["2", "1", "10"]},
                "added": ["10"], "removed": [],
            }])
        );
        assert_eq!(
            diff(
                json!({"b": {"BS": ["aGk=", "AP8="]}}),
                json!({"b": {"BS": ["aGk="]}})
            ),
            json!([{
                "path": "b",
                "old": {"BS": ["aGk=", "AP8="]}, "new": {"BS": ["aGk="]},
                "added": [], "removed": ["AP8="],
            }])
        );
        // A set inside a list inside a map.
        let d = diff(
            json!({"m": {"M": {"l": {"L": [{"SS": ["x"]}]}}}}),
            json!({"m": {"M": {"l": {"L": [{"SS": ["x", "y"]}]}}}}),
        );
        assert_eq!(d[0]["path"], "m.l[0]");
        assert_eq!(d[0]["added"], json!(["y"]));
    }

    #[test]
    fn insert_and_remove_images() {
        let image =
            item(json!({"pk": {"S": "u1"}, "m": {"M": {"a": {"N": "1"}}}, "s": {"SS": ["x"]}}));
        let empty = Item::new();
        // An INSERT is every attribute new, a REMOVE every attribute old.
        for (side, before, after) in [("new", None, Some(&image)), ("old", Some(&image), None)] {
            let changes = diff_images(before, after);
            let whole = |path: &str, value: Value| json!({"path": path, side: value});
            assert_eq!(
                serde_json::to_value(&changes).unwrap(),
                json!([
                    whole("m", json!({"M": {"a": {"N": "1"}}})),
                    whole("pk", json!({"S": "u1"})),
                    whole("s", json!({"SS": ["x"]})),
                ]),
                "{side}"
            );
            let applied = apply_changes(before, &changes).unwrap();
            assert_eq!(&applied, after.unwrap_or(&empty), "{side}");
        }
        assert!(diff_images(None, None).is_empty());
    }

    #[test]
    fn odd_attribute_names_are_escaped() {
        let d = diff(
            json!({"a.b": {"S": "1"}, "m": {"M": {"x[0]": {"S": "1"}, "back\\slash]": {"S": "1"}}}}),
            json!({"a.b": {"S": "2"}, "m": {"M": {"x[0]": {"S": "2"}, "back\\slash]": {"S": "2"}}}}),
        );
        assert_eq!(
            paths(&d),
            [
                r"replace a\.b",
                r"replace m.back\\slash\]",
                r"replace m.x\[0\]"
            ]
        );
        assert_eq!(
            parse_path(r"m.back\\slash\]").unwrap(),
            [
                PathSegment::Key("m".into()),
                PathSegment::Key(r"back\slash]".into())
            ]
        );
    }

    #[test]
    fn paths_format_and_parse() {
        use PathSegment::{Index, Key};
        let cases: Vec<(Vec<PathSegment>, &str)> = vec![
            (vec![Key("a".into())], "a"),
            (
                vec![Key("a".into()), Key("b".into()), Index(2), Key("c".into())],
                "a.b[2].c",
            ),
            (
                vec![Key("rules".into()), Index(1), Index(0), Index(10)],
                "rules[1][0][10]",
            ),
            (vec![Key("a.b".into()), Key("[x]".into())], r"a\.b.\[x\]"),
            (vec![Key(String::new())], ""),
            (vec![Key(String::new()), Key(String::new())], "."),
            (vec![Key("é 名".into()), Index(0)], "é 名[0]"),
        ];
        for (segments, path) in cases {
            assert_eq!(format_path(&segments), path);
            assert_eq!(parse_path(path).unwrap(), segments, "{path}");
        }
    }

    #[test]
    fn bad_paths_are_rejected() {
        for (path, reason) in [
            ("a[", "unclosed ["),
            ("a[1", "unclosed ["),
            ("a[]", "a list index must be digits closed by ]"),
            ("a[x]", "a list index must be digits closed by ]"),
            ("a[-1]", "a list index must be digits closed by ]"),
            ("a[01]", "a list index has no leading zeros"),
            ("a[99999999999999999999999]", "list index too large"),
            ("a]", "unmatched ] (escape it as \\] in a name)"),
            ("a[0]b", "expected . or [ after ]"),
            ("a\\", "a backslash must be followed by one of . [ ] \\"),
            ("a\\b", "a backslash must be followed by one of . [ ] \\"),
        ] {
            assert_eq!(
                parse_path(path),
                Err(DiffError::BadPath {
                    path: path.to_owned(),
                    reason
                })
            );
        }
    }

    fn add(path: &str, new: Value) -> Change {
        Change {
            path: path.into(),
            old: None,
            new: Some(serde_json::from_value(new).unwrap()),
            added: None,
            removed: None,
        }
    }

    fn remove(path: &str, old: Value) -> Change {
        Change {
            path: path.into(),
            old: Some(serde_json::from_value(old).unwrap()),
            new: None,
            added: None,
            removed: None,
        }
    }

    #[test]
    fn apply_is_strict() {
        let base =
            item(json!({"l": {"L": [{"S": "a"}]}, "m": {"M": {"k": {"N": "1"}}}, "s": {"S": "x"}}));
        let apply = |c: Change| apply_changes(Some(&base), &[c]).unwrap_err();
        let p = |s: &str| s.to_owned();

        let out_of_range = |path: &str, index: usize| DiffError::IndexOutOfRange {
            path: p(path),
            index,
            len: 1,
        };
        let missing = |path: &str| DiffError::Missing { path: p(path) };
        let mismatch = |path: &str| DiffError::OldMismatch { path: p(path) };
        let shape = |path: &str, expected: &'static str, found: &'static str| DiffError::Shape {
            path: p(path),
            expected,
            found,
        };
        let (a, n) = (json!({"S": "a"}), json!({"N": "1"}));
        let y = json!({"S": "y"});
        for (change, refused) in [
            (add("l[2]", json!({"S": "b"})), out_of_range("l[2]", 2)),
            (remove("l[1]", a.clone()), out_of_range("l[1]", 1)),
            (remove("nope", a.clone()), missing("nope")),
            (remove("m.nope", a.clone()), missing("m.nope")),
            (add("x.y", a.clone()), missing("x.y")),
            (remove("m.k", json!({"N": "2"})), mismatch("m.k")),
            (remove("s", n), mismatch("s")),
            (add("s", y.clone()), DiffError::Exists { path: p("s") }),
            (add("s.x", y.clone()), shape("s.x", "M or L", "S")),
            (add("l.x", y.clone()), shape("l.x", "M", "L")),
            (add("m[0]", y), shape("m[0]", "L", "M")),
        ] {
            let path = change.path.clone();
            assert_eq!(apply(change), refused, "{path}");
        }
        let empty = Change {
            path: p("s"),
            old: None,
            new: None,
            added: None,
            removed: None,
        };
        assert_eq!(apply(empty), DiffError::Empty { path: p("s") });
        assert!(matches!(
            apply(add("a[", json!({"S": "y"}))),
            DiffError::BadPath { .. }
        ));

        // The old value is matched by value, not by spelling.
        let ok = apply_changes(Some(&base), &[remove("m.k", json!({"N": "1.00"}))]).unwrap();
        assert_eq!(ok["m"], AttrValue::M(BTreeMap::new()));
    }

    #[test]
    fn apply_checks_set_element_lists() {
        let base = item(json!({"t": {"SS": ["a", "b"]}}));
        let mut c = Change {
            path: "t".into(),
            old: Some(serde_json::from_value(json!({"SS": ["b", "a"]})).unwrap()),
            new: Some(serde_json::from_value(json!({"SS": ["a", "c"]})).unwrap()),
            added: Some(vec!["c".into()]),
            removed: Some(vec!["b".into()]),
        };
        assert!(apply_changes(Some(&base), std::slice::from_ref(&c)).is_ok());
        c.added = Some(vec!["z".into()]);
        assert_eq!(
            apply_changes(Some(&base), &[c.clone()]),
            Err(DiffError::SetDelta { path: "t".into() })
        );
        c.new = None;
        assert_eq!(
            apply_changes(Some(&base), &[c]),
            Err(DiffError::SetDelta { path: "t".into() })
        );
    }

    #[test]
    fn error_messages_name_the_path() {
        let err = DiffError::IndexOutOfRange {
            path: "a.b[3]".into(),
            index: 3,
            len: 1,
        };
        assert_eq!(
            err.to_string(),
            "change at a.b[3]: index 3 is out of range for a list of 1"
        );
        let err = DiffError::BadPath {
            path: "a[".into(),
            reason: "unclosed [",
        };
        assert_eq!(err.to_string(), r#"bad path "a[": unclosed ["#);
    }
}
