//! An independent JSON-patch applier for audit entries: the tests never
//! trust the library's own.

use std::str::FromStr;

use bigdecimal::BigDecimal;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Seg {
    Name(String),
    Index(usize),
}

/// `a.b[2].c` → [Name a, Name b, Index 2, Name c].
pub fn parse_path(path: &str) -> Result<Vec<Seg>, String> {
    let mut segs = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() {
            return Err(format!("bad path {path:?}"));
        }
        segs.push(Seg::Name(name.to_string()));
        while !rest.is_empty() {
            let close = rest.find(']').ok_or(format!("bad path {path:?}"))?;
            let idx: usize = rest[1..close]
                .parse()
                .map_err(|_| format!("bad index in path {path:?}"))?;
            segs.push(Seg::Index(idx));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(format!("bad path {path:?}"));
            }
        }
    }
    Ok(segs)
}

/// Applies an entry's changes, in order, to an item image (`None` = no
/// item; an item left with no attributes becomes `None`).
pub fn apply_entry(state: &mut Option<Value>, changes: &[Value]) -> Result<(), String> {
    let mut root = json!({ "M": state.take().unwrap_or(json!({})) });
    for c in changes {
        apply_change(&mut root, c)?;
    }
    let attrs = root["M"].take();
    *state = if attrs.as_object().is_some_and(|m| m.is_empty()) {
        None
    } else {
        Some(attrs)
    };
    Ok(())
}

/// One change, RFC 6902 style: no `old` = add (insert at a list index),
/// no `new` = remove (a list shifts), both = replace. `old` must match what
/// is there; set `added`/`removed` must be `new − old` / `old − new`.
pub fn apply_change(root: &mut Value, c: &Value) -> Result<(), String> {
    let path = c["path"]
        .as_str()
        .ok_or(format!("change without a path: {c}"))?;
    let segs = parse_path(path)?;
    let (last, parents) = segs.split_last().ok_or("empty path")?;
    let old = c.get("old");
    let new = c.get("new");
    check_set_delta(c, old, new)?;
    let mut cur: &mut Value = root;
    for s in parents {
        cur = match (s, typed_mut(cur)) {
            (Seg::Name(n), ("M", inner)) => inner
                .as_object_mut()
                .unwrap()
                .get_mut(n)
                .ok_or(format!("{path}: no attribute {n} on the way"))?,
            (Seg::Index(i), ("L", inner)) => inner
                .as_array_mut()
                .unwrap()
                .get_mut(*i)
                .ok_or(format!("{path}: no index {i} on the way"))?,
            (s, (t, _)) => return Err(format!("{path}: {s:?} into a {t}")),
        };
    }
    let matches_old = |existing: Option<&Value>| -> Result<(), String> {
        match (existing, old) {
            (Some(e), Some(o)) if dyn_eq(e, o) => Ok(()),
            (Some(e), Some(o)) => Err(format!("{path}: old {o} but the value is {e}")),
            (None, Some(_)) => Err(format!("{path}: old given but nothing is there")),
            (Some(e), None) => Err(format!("{path}: add, but {e} is already there")),
            (None, None) => Ok(()),
        }
    };
    match (last, typed_mut(cur)) {
        (Seg::Name(n), ("M", inner)) => {
            let m = inner.as_object_mut().unwrap();
            matches_old(m.get(n))?;
            match new {
                Some(v) => {
                    m.insert(n.clone(), v.clone());
                }
                None if old.is_some() => {
                    m.remove(n);
                }
                None => return Err(format!("{path}: neither old nor new")),
            }
        }
        (Seg::Index(i), ("L", inner)) => {
            let l = inner.as_array_mut().unwrap();
            match (old, new) {
                (Some(_), Some(v)) => {
                    matches_old(l.get(*i))?;
                    l[*i] = v.clone();
                }
                (None, Some(v)) => {
                    if *i > l.len() {
                        return Err(format!("{path}: insert past the end ({})", l.len()));
                    }
                    l.insert(*i, v.clone());
                }
                (Some(_), None) => {
                    matches_old(l.get(*i))?;
                    l.remove(*i);
                }
                (None, None) => return Err(format!("{path}: neither old nor new")),
            }
        }
        (s, (t, _)) => return Err(format!("{path}: {s:?} into a {t}")),
    }
    Ok(())
}

fn typed_mut(v: &mut Value) -> (&'static str, &mut Value) {
    let obj = v.as_object_mut().expect("DynamoDB JSON value");
    let (t, inner) = obj.iter_mut().next().expect("typed value");
    let t: &'static str = match t.as_str() {
        "M" => "M",
        "L" => "L",
        "S" => "S",
        "N" => "N",
        "B" => "B",
        "BOOL" => "BOOL",
        "NULL" => "NULL",
        "SS" => "SS",
        "NS" => "NS",
        "BS" => "BS",
        _ => "?",
    };
    (t, inner)
}

fn type_of(v: &Value) -> Option<(&str, &Value)> {
    let o = v.as_object()?;
    if o.len() != 1 {
        return None;
    }
    o.iter().next().map(|(k, v)| (k.as_str(), v))
}

fn set_elems(t: &str, v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let s = s.as_str().unwrap_or_default();
                    if t == "NS" {
                        dec_key(s)
                    } else {
                        s.to_string()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

fn dec_key(s: &str) -> String {
    BigDecimal::from_str(s)
        .map(|d| d.normalized().to_string())
        .unwrap_or_else(|_| format!("not-a-number:{s}"))
}

/// For a set replaced by a set, `added` = new − old and `removed` = old − new
/// (an absent list is empty). Where a whole set is added or removed the
/// lists are optional, but must be right when given.
fn check_set_delta(c: &Value, old: Option<&Value>, new: Option<&Value>) -> Result<(), String> {
    fn set_type(v: Option<&Value>) -> Option<(&str, &Value)> {
        v.and_then(type_of)
            .filter(|(t, _)| matches!(*t, "SS" | "NS" | "BS"))
    }
    let (o, n) = (set_type(old), set_type(new));
    let has_lists = c.get("added").is_some() || c.get("removed").is_some();
    let t = match (o, n) {
        (Some((a, _)), Some((b, _))) if a != b => return Ok(()), // a type change
        (Some((t, _)), Some(_)) => t,
        (Some((t, _)), None) if new.is_none() => t,
        (None, Some((t, _))) if old.is_none() => t,
        _ if has_lists => return Err(format!("added/removed on a non-set change: {c}")),
        _ => return Ok(()),
    };
    let whole = old.is_none() || new.is_none();
    if whole && !has_lists {
        return Ok(());
    }
    let elems = |x: Option<(&str, &Value)>| x.map(|(_, v)| set_elems(t, v)).unwrap_or_default();
    let (oe, ne) = (elems(o), elems(n));
    let want_added: Vec<String> = ne.iter().filter(|e| !oe.contains(e)).cloned().collect();
    let want_removed: Vec<String> = oe.iter().filter(|e| !ne.contains(e)).cloned().collect();
    let got = |k: &str| c.get(k).map(|v| set_elems(t, v)).unwrap_or_default();
    if got("added") != want_added || got("removed") != want_removed {
        return Err(format!(
            "set change {c}: expected added {want_added:?}, removed {want_removed:?}"
        ));
    }
    Ok(())
}

/// Equality of DynamoDB JSON values: numbers as decimals, sets unordered.
pub fn dyn_eq(a: &Value, b: &Value) -> bool {
    let (Some((ta, va)), Some((tb, vb))) = (type_of(a), type_of(b)) else {
        return false;
    };
    if ta != tb {
        return false;
    }
    match ta {
        "N" => match (va.as_str(), vb.as_str()) {
            (Some(x), Some(y)) => match (BigDecimal::from_str(x), BigDecimal::from_str(y)) {
                (Ok(x), Ok(y)) => x == y,
                _ => false,
            },
            _ => false,
        },
        "SS" | "NS" | "BS" => set_elems(ta, va) == set_elems(ta, vb),
        "L" => match (va.as_array(), vb.as_array()) {
            (Some(x), Some(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| dyn_eq(p, q)),
            _ => false,
        },
        "M" => match (va.as_object(), vb.as_object()) {
            (Some(x), Some(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| y.get(k).is_some_and(|w| dyn_eq(v, w)))
            }
            _ => false,
        },
        _ => va == vb,
    }
}
