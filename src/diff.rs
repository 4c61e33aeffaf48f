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

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::entry::Change;
use crate::value::{same_value, set_delta, AttrValue, Item};

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
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((ko, _)), Some((kn, _))) => ko.cmp(kn),
        };
        match step {
            std::cmp::Ordering::Less => {
                if let Some((k, v)) = o.next() {
                    push_key(path, k, top);
                    out.push(change(path, Some(v), None));
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some((k, v)) = n.next() {
                    push_key(path, k, top);
                    out.push(change(path, None, Some(v)));
                }
            }
            std::cmp::Ordering::Equal => {
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
