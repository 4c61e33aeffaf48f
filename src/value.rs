//! DynamoDB attribute values in an SDK-neutral form, and their DynamoDB JSON.
//!
//! Numbers stay strings (no precision lost); maps are ordered so that diffs
//! and JSON output are deterministic.
//!
//! The serde form of [`AttrValue`] is DynamoDB JSON exactly as the AWS CLI
//! prints it (`{"S":"x"}`, `{"N":"1.5"}`, `{"B":"<base64>"}`, `{"NULL":true}`,
//! ...); reading it is strict, because it is also how stored audit entries
//! come back. Equality that matters to an audit trail is [`same_value`], not
//! `==`: `==` compares spellings (`"1.0"` and `"1"` differ), `same_value`
//! compares values.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bigdecimal::BigDecimal;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One item (or key): attribute name to value.
pub type Item = BTreeMap<String, AttrValue>;

/// A DynamoDB attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    S(String),
    /// A number as DynamoDB sends it: a decimal string.
    N(String),
    B(Vec<u8>),
    Bool(bool),
    Null,
    M(BTreeMap<String, AttrValue>),
    L(Vec<AttrValue>),
    Ss(Vec<String>),
    Ns(Vec<String>),
    Bs(Vec<Vec<u8>>),
    /// Not a DynamoDB type: a value `[redaction]` kept out of the trail,
    /// replaced by its keyed commitment (`hmac-sha256:<hex>`, see
    /// `crate::redact`). DynamoDB JSON `{"redacted":"hmac-sha256:…"}`; two
    /// are the same value exactly when their commitments are equal.
    Redacted(String),
}

// serde_dynamo's AttributeValue is the bridge from both SDKs (aws-sdk-dynamodb
// and aws-sdk-dynamodbstreams have distinct AttributeValue types): adapters
// convert SDK → serde_dynamo → AttrValue, so one conversion serves both.
impl From<serde_dynamo::AttributeValue> for AttrValue {
    fn from(value: serde_dynamo::AttributeValue) -> Self {
        use serde_dynamo::AttributeValue as D;
        match value {
            D::S(s) => AttrValue::S(s),
            D::N(n) => AttrValue::N(n),
            D::B(b) => AttrValue::B(b),
            D::Bool(b) => AttrValue::Bool(b),
            D::Null(_) => AttrValue::Null,
            D::M(m) => AttrValue::M(m.into_iter().map(|(k, v)| (k, v.into())).collect()),
            D::L(l) => AttrValue::L(l.into_iter().map(Into::into).collect()),
            D::Ss(s) => AttrValue::Ss(s),
            D::Ns(n) => AttrValue::Ns(n),
            D::Bs(b) => AttrValue::Bs(b),
        }
    }
}

impl From<AttrValue> for serde_dynamo::AttributeValue {
    fn from(value: AttrValue) -> Self {
        use serde_dynamo::AttributeValue as D;
        match value {
            AttrValue::S(s) => D::S(s),
            AttrValue::N(n) => D::N(n),
            AttrValue::B(b) => D::B(b),
            AttrValue::Bool(b) => D::Bool(b),
            AttrValue::Null => D::Null(true),
            AttrValue::M(m) => D::M(m.into_iter().map(|(k, v)| (k, v.into())).collect()),
            AttrValue::L(l) => D::L(l.into_iter().map(Into::into).collect()),
            AttrValue::Ss(s) => D::Ss(s),
            AttrValue::Ns(n) => D::Ns(n),
            AttrValue::Bs(b) => D::Bs(b),
            // Never written to a table: revert refuses a redacted value
            // before it converts anything. Kept recognisable if it were.
            AttrValue::Redacted(c) => {
                D::M([("redacted".to_string(), D::S(c))].into_iter().collect())
            }
        }
    }
}

/// An item from any map of values convertible into [`AttrValue`].
pub fn item_from<V: Into<AttrValue>>(map: impl IntoIterator<Item = (String, V)>) -> Item {
    map.into_iter().map(|(k, v)| (k, v.into())).collect()
}

impl AttrValue {
    /// The DynamoDB type tag, as written in DynamoDB JSON.
    pub fn type_name(&self) -> &'static str {
        match self {
            AttrValue::S(_) => "S",
            AttrValue::N(_) => "N",
            AttrValue::B(_) => "B",
            AttrValue::Bool(_) => "BOOL",
            AttrValue::Null => "NULL",
            AttrValue::M(_) => "M",
            AttrValue::L(_) => "L",
            AttrValue::Ss(_) => "SS",
            AttrValue::Ns(_) => "NS",
            AttrValue::Bs(_) => "BS",
            AttrValue::Redacted(_) => "redacted",
        }
    }
}

/// Errors from parsing values given on the command line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("expected NAME=TYPE:VALUE with TYPE one of S, N, B (got {0:?})")]
    BadKeyArg(String),
    #[error("expected TYPE:VALUE with TYPE one of S, N, B (got {0:?})")]
    BadTypedValue(String),
    #[error("{value:?} is not a decimal number; expected N:NUMBER such as N:42 or N:-1.5e3 (got {arg:?})")]
    BadNumber { value: String, arg: String },
    #[error("{value:?} is not standard base64 ({reason}); expected B:BASE64 such as B:aGk= (got {arg:?})")]
    BadBase64 {
        value: String,
        reason: String,
        arg: String,
    },
}

/// Parses a CLI value `TYPE:VALUE` (TYPE one of S, N, B; B is standard base64).
pub fn parse_typed_value(s: &str) -> Result<AttrValue, ValueError> {
    parse_typed(s, s).ok_or_else(|| ValueError::BadTypedValue(s.to_owned()))?
}

/// Parses a CLI key argument `NAME=TYPE:VALUE`, e.g. `pk=S:123`.
pub fn parse_key_arg(s: &str) -> Result<(String, AttrValue), ValueError> {
    let bad = || ValueError::BadKeyArg(s.to_owned());
    let (name, typed) = s.split_once('=').ok_or_else(bad)?;
    if name.is_empty() {
        return Err(bad());
    }
    let value = parse_typed(typed, s).ok_or_else(bad)??;
    Ok((name.to_owned(), value))
}

/// `None` when the `TYPE:` part itself is wrong, so each caller can show the
/// form it expects; `Some(Err)` when the type is right but the value is not.
/// `arg` is the whole argument, echoed in errors.
fn parse_typed(s: &str, arg: &str) -> Option<Result<AttrValue, ValueError>> {
    let (ty, value) = s.split_once(':')?;
    Some(match ty {
        "S" => Ok(AttrValue::S(value.to_owned())),
        "N" if is_decimal(value) => Ok(AttrValue::N(value.to_owned())),
        "N" => Err(ValueError::BadNumber {
            value: value.to_owned(),
            arg: arg.to_owned(),
        }),
        "B" => BASE64
            .decode(value)
            .map(AttrValue::B)
            .map_err(|e| ValueError::BadBase64 {
                value: value.to_owned(),
                reason: e.to_string(),
                arg: arg.to_owned(),
            }),
        _ => return None,
    })
}

/// Whether `s` is a decimal number as DynamoDB writes them:
/// `[+-]digits[.digits][e[+-]digits]`, with digits on at least one side of
/// the point. Checked by hand so that validation never allocates.
pub fn is_decimal(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let mut mantissa = digits(&mut i);
    if b.get(i) == Some(&b'.') {
        i += 1;
        mantissa += digits(&mut i);
    }
    if mantissa == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Semantic equality of two values: numbers as decimals (`"1.0"` equals
/// `"1"`), sets as sets (order and repetition ignored), maps and lists
/// element by element. Different types are never equal.
pub fn same_value(a: &AttrValue, b: &AttrValue) -> bool {
    use AttrValue as V;
    match (a, b) {
        (V::S(x), V::S(y)) => x == y,
        (V::N(x), V::N(y)) => same_number(x, y),
        (V::B(x), V::B(y)) => x == y,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Null, V::Null) => true,
        (V::M(x), V::M(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
        }
        (V::L(x), V::L(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_value(p, q)),
        (V::Ss(x), V::Ss(y)) => same_set(x, y, |s| s.as_str()),
        (V::Bs(x), V::Bs(y)) => same_set(x, y, |s| s.as_slice()),
        (V::Ns(x), V::Ns(y)) => {
            // Unchanged sets usually come back in the same order: no parsing then.
            (x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p == q))
                || sorted_numbers(x) == sorted_numbers(y)
        }
        // Equal commitments are equal values (the HMAC input is canonical).
        (V::Redacted(x), V::Redacted(y)) => x == y,
        _ => false,
    }
}

fn same_number(a: &str, b: &str) -> bool {
    a == b
        || match (BigDecimal::from_str(a), BigDecimal::from_str(b)) {
            (Ok(x), Ok(y)) => x == y,
            // Not numbers after all (only a malformed source could say so):
            // the strings already differ, so neither do the values.
            _ => false,
        }
}

fn same_set<'a, T, K: Ord + ?Sized + 'a>(
    a: &'a [T],
    b: &'a [T],
    key: impl Fn(&'a T) -> &'a K,
) -> bool {
    if a.len() == b.len() && a.iter().zip(b).all(|(p, q)| key(p) == key(q)) {
        return true;
    }
    let sorted = |v: &'a [T]| {
        let mut keys: Vec<&K> = v.iter().map(&key).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    };
    sorted(a) == sorted(b)
}

/// A number-set element ordered by value; strings that do not parse (never
/// seen from DynamoDB) sort after all numbers and compare as strings.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum NumKey<'a> {
    Num(BigDecimal),
    Raw(&'a str),
}

impl<'a> NumKey<'a> {
    fn new(s: &'a str) -> Self {
        BigDecimal::from_str(s).map_or(NumKey::Raw(s), NumKey::Num)
    }
}

fn sorted_numbers(v: &[String]) -> Vec<NumKey<'_>> {
    let mut keys: Vec<NumKey<'_>> = v.iter().map(|s| NumKey::new(s)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// For two sets of the same type: the elements `new` has that `old` lacks,
/// and those `old` has that `new` lacks, as strings (NS elements as written,
/// BS elements base64), each list in ascending element order and without
/// repeats. `None` when the values are not two sets of the same type.
pub fn set_delta(old: &AttrValue, new: &AttrValue) -> Option<(Vec<String>, Vec<String>)> {
    use AttrValue as V;
    Some(match (old, new) {
        (V::Ss(o), V::Ss(n)) => delta(o, n, |s| s.as_str(), |s| s.clone()),
        (V::Bs(o), V::Bs(n)) => delta(o, n, |s| s.as_slice(), |s| BASE64.encode(s)),
        (V::Ns(o), V::Ns(n)) => delta(o, n, |s| NumKey::new(s), |s| s.clone()),
        _ => return None,
    })
}

fn delta<'a, T, K: Ord + 'a>(
    old: &'a [T],
    new: &'a [T],
    key: impl Fn(&'a T) -> K,
    show: impl Fn(&'a T) -> String,
) -> (Vec<String>, Vec<String>) {
    let keyed = |v: &'a [T]| {
        let mut keyed: Vec<(K, &'a T)> = v.iter().map(|e| (key(e), e)).collect();
        keyed.sort_by(|p, q| p.0.cmp(&q.0));
        keyed.dedup_by(|p, q| p.0 == q.0);
        keyed
    };
    let (o, n) = (keyed(old), keyed(new));
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    // Merge walk over the two sorted, deduplicated sides.
    loop {
        match (o.get(i), n.get(j)) {
            (Some(p), Some(q)) if p.0 == q.0 => {
                i += 1;
                j += 1;
            }
            (Some(p), q) if q.is_none_or(|q| p.0 < q.0) => {
                removed.push(show(p.1));
                i += 1;
            }
            (_, Some(q)) => {
                added.push(show(q.1));
                j += 1;
            }
            (_, None) => break,
        }
    }
    (added, removed)
}

// ---- DynamoDB JSON ----------------------------------------------------------

/// Writes bytes as base64 straight into the serializer's output.
struct Base64Bytes<'a>(&'a [u8]);

impl Serialize for Base64Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Base64Display::new(self.0, &BASE64))
    }
}

struct Base64List<'a>(&'a [Vec<u8>]);

impl Serialize for Base64List<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for b in self.0 {
            seq.serialize_element(&Base64Bytes(b))?;
        }
        seq.end()
    }
}

impl Serialize for AttrValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        let tag = self.type_name();
        match self {
            AttrValue::S(v) | AttrValue::N(v) => m.serialize_entry(tag, v)?,
            AttrValue::B(v) => m.serialize_entry(tag, &Base64Bytes(v))?,
            AttrValue::Bool(v) => m.serialize_entry(tag, v)?,
            AttrValue::Null => m.serialize_entry(tag, &true)?,
            AttrValue::M(v) => m.serialize_entry(tag, v)?,
            AttrValue::L(v) => m.serialize_entry(tag, v)?,
            AttrValue::Ss(v) | AttrValue::Ns(v) => m.serialize_entry(tag, v)?,
            AttrValue::Bs(v) => m.serialize_entry(tag, &Base64List(v))?,
            AttrValue::Redacted(v) => m.serialize_entry(tag, v)?,
        }
        m.end()
    }
}

const EXPECTED_VALUE: &str =
    "a DynamoDB JSON value: an object with exactly one type key (S, N, B, BOOL, NULL, M, L, SS, NS, BS), such as {\"S\":\"x\"}";

#[derive(Clone, Copy)]
enum Tag {
    S,
    N,
    B,
    Bool,
    Null,
    M,
    L,
    Ss,
    Ns,
    Bs,
    Redacted,
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TagVisitor;
        impl Visitor<'_> for TagVisitor {
            type Value = Tag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a DynamoDB type tag")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Tag, E> {
                Ok(match v {
                    "S" => Tag::S,
                    "N" => Tag::N,
                    "B" => Tag::B,
                    "BOOL" => Tag::Bool,
                    "NULL" => Tag::Null,
                    "M" => Tag::M,
                    "L" => Tag::L,
                    "SS" => Tag::Ss,
                    "NS" => Tag::Ns,
                    "BS" => Tag::Bs,
                    "redacted" => Tag::Redacted,
                    other => {
                        return Err(E::custom(format_args!(
                            "unknown DynamoDB type tag {other:?} (expected one of S, N, B, BOOL, NULL, M, L, SS, NS, BS)"
                        )))
                    }
                })
            }
        }
        d.deserialize_identifier(TagVisitor)
    }
}

/// A string in a DynamoDB JSON value; a number must be a valid decimal.
#[derive(Clone, Copy)]
struct Text {
    number: bool,
}

impl<'de> DeserializeSeed<'de> for Text {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Text {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.number {
            "a decimal number written as a string, as in {\"N\":\"1.5\"}"
        } else {
            "a string"
        })
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if self.number && !is_decimal(v) {
            return Err(E::custom(format_args!(
                "{v:?} is not a decimal number (expected a number written as a string, as in {{\"N\":\"1.5\"}})"
            )));
        }
        Ok(v.to_owned())
    }
}

/// Binary in a DynamoDB JSON value: a standard base64 string.
#[derive(Clone, Copy)]
struct Binary;

impl<'de> DeserializeSeed<'de> for Binary {
    type Value = Vec<u8>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Binary {
    type Value = Vec<u8>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("base64 written as a string, as in {\"B\":\"aGk=\"}")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        BASE64
            .decode(v)
            .map_err(|e| E::custom(format_args!("{v:?} is not standard base64: {e}")))
    }
}

/// The array of a set, each element read by the inner seed.
struct Elements<T>(T);

impl<'de, T: DeserializeSeed<'de> + Copy> DeserializeSeed<'de> for Elements<T> {
    type Value = Vec<T::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: DeserializeSeed<'de> + Copy> Visitor<'de> for Elements<T> {
    type Value = Vec<T::Value>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of strings")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // The hint comes from the input: cap it so a hostile length cannot
        // reserve memory up front.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(e) = seq.next_element_seed(self.0)? {
            out.push(e);
        }
        Ok(out)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = AttrValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(EXPECTED_VALUE)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AttrValue, A::Error> {
        let Some(tag) = map.next_key::<Tag>()? else {
            return Err(de::Error::custom(format_args!(
                "empty object; expected {EXPECTED_VALUE}"
            )));
        };
        let value = match tag {
            Tag::S => AttrValue::S(map.next_value_seed(Text { number: false })?),
            Tag::N => AttrValue::N(map.next_value_seed(Text { number: true })?),
            Tag::B => AttrValue::B(map.next_value_seed(Binary)?),
            Tag::Bool => AttrValue::Bool(map.next_value()?),
            Tag::Null => {
                if !map.next_value::<bool>()? {
                    return Err(de::Error::custom(
                        "NULL must be true, as in {\"NULL\":true}",
                    ));
                }
                AttrValue::Null
            }
            Tag::M => AttrValue::M(map.next_value()?),
            Tag::L => AttrValue::L(map.next_value()?),
            Tag::Ss => AttrValue::Ss(map.next_value_seed(Elements(Text { number: false }))?),
            Tag::Ns => AttrValue::Ns(map.next_value_seed(Elements(Text { number: true }))?),
            Tag::Bs => AttrValue::Bs(map.next_value_seed(Elements(Binary))?),
            Tag::Redacted => {
                let c: String = map.next_value()?;
                if !is_commitment(&c) {
                    return Err(de::Error::custom(format_args!(
                        "{c:?} is not a redaction commitment (expected \"hmac-sha256:\" and 64 lower-case hex digits)"
                    )));
                }
                AttrValue::Redacted(c)
            }
        };
        if let Some(extra) = map.next_key::<String>()? {
            return Err(de::Error::custom(format_args!(
                "more than one key (extra key {extra:?}); expected {EXPECTED_VALUE}"
            )));
        }
        Ok(value)
    }
}

impl<'de> Deserialize<'de> for AttrValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ValueVisitor)
    }
}

/// A key as `--key` arguments take it: `pk=S:u1 sk=N:7`.
pub fn key_text(key: &Item) -> String {
    key.iter()
        .map(|(name, v)| match v {
            AttrValue::S(s) => format!("{name}=S:{s}"),
            AttrValue::N(n) => format!("{name}=N:{n}"),
            other => format!(
                "{name}={}",
                serde_json::to_string(other).unwrap_or_default()
            ),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Canonical DynamoDB JSON of a key (or any item): names sorted (an [`Item`]
/// is a BTreeMap), numbers canonical, set elements sorted. Written by hand,
/// not through serde, because stored partition keys depend on it byte for
/// byte and must not change when the entry JSON format evolves.
pub fn canonical_key_json(key: &Item) -> String {
    let mut out = String::new();
    write_map(&mut out, key);
    out
}

/// Canonical DynamoDB JSON of one value, by the rules of
/// [`canonical_key_json`]: what a redaction commitment is computed over.
pub fn canonical_value_json(value: &AttrValue) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_map(out: &mut String, map: &std::collections::BTreeMap<String, AttrValue>) {
    out.push('{');
    for (i, (name, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, name);
        out.push(':');
        write_value(out, value);
    }
    out.push('}');
}

fn write_value(out: &mut String, v: &AttrValue) {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut tagged = |tag: &str, f: &mut dyn FnMut(&mut String)| {
        out.push_str("{\"");
        out.push_str(tag);
        out.push_str("\":");
        f(out);
        out.push('}');
    };
    match v {
        AttrValue::S(x) => tagged("S", &mut |o| write_str(o, x)),
        AttrValue::N(x) => tagged("N", &mut |o| write_str(o, &canonical_number(x))),
        AttrValue::B(x) => tagged("B", &mut |o| write_str(o, &b64(x))),
        AttrValue::Bool(x) => tagged("BOOL", &mut |o| {
            o.push_str(if *x { "true" } else { "false" })
        }),
        AttrValue::Null => tagged("NULL", &mut |o| o.push_str("true")),
        AttrValue::M(m) => tagged("M", &mut |o| write_map(o, m)),
        AttrValue::L(l) => tagged("L", &mut |o| write_seq(o, l, write_value)),
        AttrValue::Ss(x) => tagged("SS", &mut |o| write_strs(o, x.to_vec())),
        AttrValue::Ns(x) => tagged("NS", &mut |o| {
            write_strs(o, x.iter().map(|n| canonical_number(n)).collect())
        }),
        AttrValue::Bs(x) => tagged("BS", &mut |o| {
            write_strs(o, x.iter().map(|b| b64(b)).collect())
        }),
        AttrValue::Redacted(c) => tagged("redacted", &mut |o| write_str(o, c)),
    }
}

fn write_strs(out: &mut String, mut items: Vec<String>) {
    items.sort();
    write_seq(out, &items, |o, x| write_str(o, x));
}

/// `[a,b,…]`, each item written by `write`.
fn write_seq<T>(out: &mut String, items: &[T], mut write: impl FnMut(&mut String, &T)) {
    out.push('[');
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write(out, x);
    }
    out.push(']');
}

fn write_str(out: &mut String, s: &str) {
    // serde_json's escaping, without a fallible call.
    out.push_str(&serde_json::Value::String(s.to_string()).to_string());
}

/// A number as DynamoDB itself prints it (`1.50` → `1.5`, `1e2` → `100`), so a
/// key typed by a user finds the partition the stream's key was written to.
fn canonical_number(n: &str) -> String {
    match bigdecimal::BigDecimal::from_str(n.trim()) {
        Ok(d) => d.normalized().to_plain_string(),
        Err(_) => n.to_string(),
    }
}

/// FNV-1a, 64 bit: a stable, dependency-free fingerprint (not security).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Whether `s` has the form of a commitment (`hmac-sha256:` and 64
/// lower-case hex digits).
pub fn is_commitment(s: &str) -> bool {
    s.strip_prefix(SCHEME).is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The commitment's scheme prefix.
pub const SCHEME: &str = "hmac-sha256:";

/// An item of string attributes (`&[("pk", "a")]`), for tests.
#[cfg(test)]
pub(crate) fn string_item(pairs: &[(&str, &str)]) -> Item {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), AttrValue::S(v.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> AttrValue {
        AttrValue::N(s.to_owned())
    }

    fn s(s: &str) -> AttrValue {
        AttrValue::S(s.to_owned())
    }

    fn every_type() -> Vec<(AttrValue, &'static str)> {
        vec![
            (s("x"), r#"{"S":"x"}"#),
            (n("1.5"), r#"{"N":"1.5"}"#),
            (AttrValue::B(b"hi".to_vec()), r#"{"B":"aGk="}"#),
            (AttrValue::Bool(true), r#"{"BOOL":true}"#),
            (AttrValue::Null, r#"{"NULL":true}"#),
            (
                AttrValue::M(BTreeMap::from([
                    ("a".to_owned(), s("y")),
                    ("b".to_owned(), n("2")),
                ])),
                r#"{"M":{"a":{"S":"y"},"b":{"N":"2"}}}"#,
            ),
            (
                AttrValue::L(vec![
                    s("y"),
                    AttrValue::L(vec![]),
                    AttrValue::M(BTreeMap::new()),
                ]),
                r#"{"L":[{"S":"y"},{"L":[]},{"M":{}}]}"#,
            ),
            (
                AttrValue::Ss(vec!["a".into(), "b".into()]),
                r#"{"SS":["a","b"]}"#,
            ),
            (
                AttrValue::Ns(vec!["1".into(), "-2.5e3".into()]),
                r#"{"NS":["1","-2.5e3"]}"#,
            ),
            (
                AttrValue::Bs(vec![b"hi".to_vec(), vec![0, 255]]),
                r#"{"BS":["aGk=","AP8="]}"#,
            ),
        ]
    }

    #[test]
    fn type_names() {
        let names: Vec<_> = every_type().iter().map(|(v, _)| v.type_name()).collect();
        assert_eq!(
            names,
            ["S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"]
        );
    }

    #[test]
    fn json_is_dynamodb_json_and_round_trips() {
        for (value, json) in every_type() {
            assert_eq!(serde_json::to_string(&value).unwrap(), json);
            let back: AttrValue = serde_json::from_str(json).unwrap();
            assert_eq!(back, value, "{json}");
            // Through serde_json::Value too: the engine may build entries that way.
            let via_value: AttrValue =
                serde_json::from_value(serde_json::to_value(&value).unwrap()).unwrap();
            assert_eq!(via_value, value);
        }
    }

    #[test]
    fn item_is_an_object_of_values() {
        let item: Item = item_from([("pk".to_owned(), s("u1")), ("n".to_owned(), n("7"))]);
        let json = serde_json::to_string(&item).unwrap();
        assert_eq!(json, r#"{"n":{"N":"7"},"pk":{"S":"u1"}}"#);
        assert_eq!(serde_json::from_str::<Item>(&json).unwrap(), item);
    }

    fn de_err(json: &str) -> String {
        match serde_json::from_str::<AttrValue>(json) {
            Ok(v) => panic!("{json} parsed as {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn deserialize_rejects_what_dynamodb_json_is_not() {
        let cases = [
            (r#"{"X":"1"}"#, "unknown DynamoDB type tag \"X\""),
            (r#"{"s":"1"}"#, "unknown DynamoDB type tag \"s\""),
            (
                r#"{"S":"a","N":"1"}"#,
                "more than one key (extra key \"N\")",
            ),
            (r#"{}"#, "empty object"),
            (r#""x""#, "expected a DynamoDB JSON value"),
            (
                r#"{"N":1}"#,
                "expected a decimal number written as a string",
            ),
            (r#"{"N":"abc"}"#, "\"abc\" is not a decimal number"),
            (r#"{"N":"1e"}"#, "\"1e\" is not a decimal number"),
            (r#"{"NS":["1","x"]}"#, "\"x\" is not a decimal number"),
            (
                r#"{"NS":[1]}"#,
                "expected a decimal number written as a string",
            ),
            (r#"{"B":"not base64!"}"#, "is not standard base64"),
            (r#"{"BS":["aGk=","%%"]}"#, "\"%%\" is not standard base64"),
            (r#"{"NULL":false}"#, "NULL must be true"),
            (r#"{"BOOL":"true"}"#, "expected a boolean"),
            (r#"{"SS":"a"}"#, "expected an array of strings"),
            (r#"{"M":{"a":{"S":1}}}"#, "expected a string"),
            (r#"{"L":[{"Q":1}]}"#, "unknown DynamoDB type tag \"Q\""),
        ];
        for (json, want) in cases {
            let got = de_err(json);
            assert!(got.contains(want), "{json}: {got:?} lacks {want:?}");
        }
    }

    #[test]
    fn decimals() {
        for ok in [
            "0", "-1", "+1", "1.5", "1.", ".5", "1e2", "1E-2", "-1.5e+38", "007",
        ] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in [
            "", "-", ".", "e2", "1e", "1e+", "1.2.3", "abc", "1 ", " 1", "NaN", "Infinity", "0x10",
            "1_0",
        ] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }

    #[test]
    fn numbers_compare_as_decimals() {
        assert!(same_value(&n("1.0"), &n("1")));
        assert!(same_value(&n("1e2"), &n("100")));
        assert!(same_value(&n("100"), &n("1E+2")));
        assert!(same_value(&n("-0"), &n("0.000")));
        assert!(same_value(&n("0.10"), &n(".1")));
        // Every form `is_decimal` accepts must also compare by value.
        assert!(same_value(&n("1."), &n("1")));
        assert!(same_value(&n("+1"), &n("1")));
        assert!(same_value(&n("007"), &n("7e0")));
        assert!(!same_value(
            &n("1"),
            &n("1.0000000000000000000000000000000000001")
        ));
        assert!(!same_value(&n("1"), &n("-1")));
        assert!(!same_value(&n("1e100000000"), &n("1")));
        // Far-apart exponents must not make the comparison build huge numbers.
        assert!(!same_value(&n("123456789e100000000"), &n("123456789")));
        assert!(!same_value(&n("1e-100000000"), &n("1e100000000")));
        assert!(!same_value(&n("9999999999e-100000000"), &n("-1e100000000")));
        assert!(!same_value(&n("1e99999999999999999999"), &n("1")));
        assert!(!same_value(&n("1"), &s("1")), "types differ");
    }

    #[test]
    fn sets_compare_as_sets() {
        let ss = |v: &[&str]| AttrValue::Ss(v.iter().map(|e| e.to_string()).collect());
        let ns = |v: &[&str]| AttrValue::Ns(v.iter().map(|e| e.to_string()).collect());
        assert!(same_value(&ss(&["a", "b"]), &ss(&["b", "a"])));
        assert!(!same_value(&ss(&["a", "b"]), &ss(&["a", "c"])));
        assert!(!same_value(&ss(&["a"]), &ss(&["a", "b"])));
        assert!(same_value(&ns(&["1.0", "2"]), &ns(&["2e0", "1"])));
        assert!(!same_value(&ns(&["1", "2"]), &ns(&["1", "3"])));
        assert!(same_value(
            &AttrValue::Bs(vec![vec![1], vec![2]]),
            &AttrValue::Bs(vec![vec![2], vec![1]])
        ));
        assert!(!same_value(&ss(&["1"]), &ns(&["1"])), "SS is not NS");
    }

    #[test]
    fn maps_and_lists_compare_deeply() {
        let m = |k: &str, v: AttrValue| AttrValue::M(BTreeMap::from([(k.to_owned(), v)]));
        assert!(same_value(
            &m("a", AttrValue::L(vec![n("1.0")])),
            &m("a", AttrValue::L(vec![n("1")]))
        ));
        assert!(!same_value(&m("a", n("1")), &m("b", n("1"))));
        assert!(!same_value(
            &AttrValue::L(vec![n("1"), n("2")]),
            &AttrValue::L(vec![n("2"), n("1")])
        ));
        assert!(!same_value(
            &AttrValue::L(vec![]),
            &AttrValue::M(BTreeMap::new())
        ));
    }

    #[test]
    fn set_delta_lists_elements_in_order() {
        let ns = |v: &[&str]| AttrValue::Ns(v.iter().map(|e| e.to_string()).collect());
        assert_eq!(
            set_delta(&ns(&["10", "2", "1.0"]), &ns(&["1", "3.50", "-4", "3.50"])),
            Some((
                vec!["-4".to_owned(), "3.50".to_owned()],
                vec!["2".to_owned(), "10".to_owned()]
            ))
        );
        assert_eq!(
            set_delta(
                &AttrValue::Bs(vec![b"hi".to_vec()]),
                &AttrValue::Bs(vec![vec![0, 255]])
            ),
            Some((vec!["AP8=".to_owned()], vec!["aGk=".to_owned()]))
        );
        assert_eq!(
            set_delta(&ns(&["1"]), &AttrValue::Ss(vec!["1".into()])),
            None
        );
        assert_eq!(set_delta(&s("a"), &s("b")), None);
    }

    #[test]
    fn typed_values_and_key_args() {
        assert_eq!(parse_typed_value("S:a:b"), Ok(s("a:b")));
        assert_eq!(parse_typed_value("S:"), Ok(s("")));
        assert_eq!(parse_typed_value("N:-1.5e3"), Ok(n("-1.5e3")));
        assert_eq!(
            parse_typed_value("B:aGk="),
            Ok(AttrValue::B(b"hi".to_vec()))
        );
        assert_eq!(parse_key_arg("pk=S:a=b"), Ok(("pk".to_owned(), s("a=b"))));
        assert_eq!(parse_key_arg("sk=N:42"), Ok(("sk".to_owned(), n("42"))));
    }

    #[test]
    fn typed_value_errors_show_the_expected_form() {
        let err = |r: Result<(String, AttrValue), ValueError>| r.unwrap_err().to_string();
        assert_eq!(
            err(parse_key_arg("pk=X:1")),
            r#"expected NAME=TYPE:VALUE with TYPE one of S, N, B (got "pk=X:1")"#
        );
        for bad in ["pk", "=S:1", "pk=1", "pk=s:1", "pk=BOOL:true"] {
            assert_eq!(
                parse_key_arg(bad),
                Err(ValueError::BadKeyArg(bad.to_owned()))
            );
        }
        assert_eq!(
            err(parse_key_arg("pk=N:abc")),
            r#""abc" is not a decimal number; expected N:NUMBER such as N:42 or N:-1.5e3 (got "pk=N:abc")"#
        );
        assert!(err(parse_key_arg("pk=B:%%")).starts_with(r#""%%" is not standard base64 ("#));
        assert_eq!(
            parse_typed_value("X:1").unwrap_err().to_string(),
            r#"expected TYPE:VALUE with TYPE one of S, N, B (got "X:1")"#
        );
        assert_eq!(
            parse_typed_value("1"),
            Err(ValueError::BadTypedValue("1".to_owned()))
        );
        assert!(matches!(
            parse_typed_value("N:"),
            Err(ValueError::BadNumber { .. })
        ));
    }
}
