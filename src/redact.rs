//! Redaction: values at `[redaction] paths` never reach the trail.
//!
//! Each is replaced, before anything is written or hashed, by a keyed
//! commitment, `{"redacted":"hmac-sha256:<hex>"}`, where the hex is
//! HMAC-SHA256 under `[redaction] key_file` of
//! `"ddb-audit.redaction.v1\n" ‖ canonical DynamoDB JSON of the value`
//! (`crate::value::canonical_value_json`: names sorted, numbers as
//! DynamoDB prints them, set elements sorted). Equal values therefore give
//! equal commitments: a change to a redacted field still appears (its old
//! and new commitments differ), an unchanged one does not, and whoever holds
//! the key can answer "is it equal to X?" ([`RedactionKey::matches`]); nobody
//! else can, even for a value with few possibilities, because the HMAC is
//! keyed.
//!
//! A path is a document path as in the entries' `changes` (`card.number`,
//! `contacts[2].phone`), where a segment written `*` (`a.*`, `a[*]`, or a
//! leading `*.`) stands for any one map key or list index. A path covers the
//! value there and everything below it. The stream record's images are
//! redacted before the diff ([`Redactor::redact_record`]; a SNAPSHOT's item
//! likewise), so the entry's changes are the diff of commitments: a covered
//! value changes as a whole (old and new commitments, no `added`/`removed`
//! set elements), and a change above it (an INSERT's top-level `card`, a
//! list element added whole) carries its value with each covered part
//! replaced.
//!
//! An entry that could not be interpreted keeps no `raw` record on a table
//! with redaction: `raw` becomes `‹redacted› hmac-sha256:<hex>` of the raw
//! bytes (domain `ddb-audit.redaction.raw.v1\n`), since what the record holds
//! cannot be told apart. Keys cannot be redacted: the trail is stored and
//! indexed by them, so a path naming a key attribute is refused
//! ([`Redactor::check_keys`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::diff::{parse_path, PathSegment};
use crate::entry::AuditEntry;
use crate::stream::StreamRecord;
use crate::value::{canonical_value_json, AttrValue, Item};
pub use crate::value::{is_commitment, SCHEME};

/// What readable output shows for a redacted value.
pub const MARK: &str = "‹redacted›";
/// The shortest key accepted: HMAC-SHA256's own output size.
pub const MIN_KEY_BYTES: usize = 32;

const VALUE_DOMAIN: &[u8] = b"ddb-audit.redaction.v1\n";
const RAW_DOMAIN: &[u8] = b"ddb-audit.redaction.raw.v1\n";

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedactError {
    #[error("`{key}`: bad path {path:?}: {reason}")]
    BadPath {
        key: String,
        path: String,
        reason: String,
    },
    #[error("`redaction.key_file` {path}: cannot read it ({reason}); give a readable file holding at least {MIN_KEY_BYTES} bytes of key, e.g. `openssl rand -hex 32 > {path}`")]
    KeyUnreadable { path: String, reason: String },
    #[error("`redaction.key_file` {path}: the key is {len} bytes; it needs at least {MIN_KEY_BYTES}, e.g. `openssl rand -hex 32 > {path}`")]
    KeyTooShort { path: String, len: usize },
    #[error("`redaction.key_file` is not set, but `redaction.paths` needs it: add key_file = \"redaction.key\" (create it with `openssl rand -hex 32 > redaction.key`)")]
    KeyMissing,
    #[error("`{key}`: path {path:?} names key attribute `{attribute}` of table {table}; keys cannot be redacted (the trail is stored and indexed by them): remove the path, or keep the secret out of the table's key")]
    KeyAttribute {
        key: String,
        path: String,
        attribute: String,
        table: String,
    },
}

/// One segment of a redaction path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
    /// `*`: any one map key or list index.
    Any,
}

impl Segment {
    fn matches_key(&self, name: &str) -> bool {
        match self {
            Segment::Any => true,
            Segment::Key(k) => k == name,
            Segment::Index(_) => false,
        }
    }

    fn matches_index(&self, index: usize) -> bool {
        match self {
            Segment::Any => true,
            Segment::Index(i) => *i == index,
            Segment::Key(_) => false,
        }
    }
}

/// A parsed `[redaction]` path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    /// As configured, for messages.
    pub text: String,
    /// Which config key it came from (`redaction.paths`, `redaction.tables.orders`).
    pub origin: String,
    pub segments: Vec<Segment>,
}

impl Pattern {
    /// Parses a path in the `changes` syntax (`crate::diff`), with `*` for a
    /// segment; `origin` names the config key in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Pattern, RedactError> {
        let bad = |reason: String| RedactError::BadPath {
            key: origin.to_string(),
            path: text.to_string(),
            reason,
        };
        if text.is_empty() {
            return Err(bad(
                "is empty; write a document path such as card.number or contacts[*].phone".into(),
            ));
        }
        // A `*` cannot be told from a name by parse_path: swap each unescaped
        // wildcard for a marker no real path holds, then map it back.
        const ANY: &str = "\u{0}*\u{0}";
        let mut marked = String::with_capacity(text.len() + 8);
        let mut chars = text.chars().peekable();
        let mut at_segment_start = true;
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    marked.push(c);
                    if let Some(e) = chars.next() {
                        marked.push(e);
                    }
                    at_segment_start = false;
                }
                '*' if at_segment_start && matches!(chars.peek(), None | Some('.' | '[')) => {
                    marked.push_str(ANY);
                    at_segment_start = false;
                }
                '[' if chars.peek() == Some(&'*') => {
                    chars.next();
                    if chars.next() != Some(']') {
                        return Err(bad("`[*` must be closed as `[*]`".into()));
                    }
                    marked.push('.');
                    marked.push_str(ANY);
                    at_segment_start = false;
                }
                '.' => {
                    marked.push(c);
                    at_segment_start = true;
                }
                '\u{0}' => return Err(bad("holds a NUL character".into())),
                c => {
                    marked.push(c);
                    at_segment_start = false;
                }
            }
        }
        let parsed = parse_path(&marked).map_err(|e| match e {
            crate::diff::DiffError::BadPath { reason, .. } => bad(reason.to_string()),
            other => bad(other.to_string()),
        })?;
        let segments: Vec<Segment> = parsed
            .into_iter()
            .map(|s| match s {
                PathSegment::Key(k) if k == ANY => Segment::Any,
                PathSegment::Key(k) => Segment::Key(k),
                PathSegment::Index(i) => Segment::Index(i),
            })
            .collect();
        if segments
            .iter()
            .any(|s| matches!(s, Segment::Key(k) if k.is_empty()))
        {
            return Err(bad(
                "has an empty name (two dots, or a leading or trailing dot)".into(),
            ));
        }
        if segments == [Segment::Any] {
            return Err(bad(
                "`*` alone would cover every attribute, the key included; name the attributes"
                    .into(),
            ));
        }
        Ok(Pattern {
            text: text.to_string(),
            origin: origin.to_string(),
            segments,
        })
    }

    /// Whether this path starts at top-level attribute `name` (so covers
    /// it or something inside it).
    pub fn starts_at(&self, name: &str) -> bool {
        self.segments.first().is_some_and(|s| s.matches_key(name))
    }
}

/// The HMAC key of the commitments. Its Debug never shows it.
#[derive(Clone)]
pub struct RedactionKey {
    len: usize,
    /// Keyed once: each commitment clones it instead of hashing the key's
    /// two pads again (half the work for a short value).
    keyed: HmacSha256,
    /// SHA-256 of the key, for equality only.
    id: [u8; 32],
}

impl PartialEq for RedactionKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for RedactionKey {}

impl std::fmt::Debug for RedactionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedactionKey({} bytes)", self.len)
    }
}

impl RedactionKey {
    /// The key is the file's bytes, less one trailing newline (`\n` or
    /// `\r\n`), so `openssl rand -hex 32 > F` and an editor's file agree.
    pub fn load(path: &Path) -> Result<RedactionKey, RedactError> {
        let shown = path.display().to_string();
        let mut bytes = std::fs::read(path).map_err(|e| RedactError::KeyUnreadable {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        RedactionKey::from_bytes(bytes).map_err(|len| RedactError::KeyTooShort { path: shown, len })
    }

    /// `Err(len)` when shorter than [`MIN_KEY_BYTES`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<RedactionKey, usize> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(bytes.len());
        }
        // HMAC takes a key of any length: this cannot fail.
        let keyed = <HmacSha256 as KeyInit>::new_from_slice(&bytes).map_err(|_| bytes.len())?;
        use sha2::Digest as _;
        Ok(RedactionKey {
            len: bytes.len(),
            keyed,
            id: Sha256::digest(&bytes).into(),
        })
    }

    fn mac(&self, domain: &[u8], message: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(domain);
        mac.update(message);
        mac
    }

    /// The commitment of a value: `hmac-sha256:<hex>`.
    pub fn commit(&self, value: &AttrValue) -> String {
        let canonical = canonical_value_json(value);
        let tag = self
            .mac(VALUE_DOMAIN, canonical.as_bytes())
            .finalize()
            .into_bytes();
        format!("{SCHEME}{}", hex::encode(tag))
    }

    /// The commitment of an uninterpretable record's raw text.
    pub fn commit_raw(&self, raw: &str) -> String {
        let tag = self.mac(RAW_DOMAIN, raw.as_bytes()).finalize().into_bytes();
        format!("{SCHEME}{}", hex::encode(tag))
    }

    /// Whether `commitment` (`hmac-sha256:<hex>`, or the whole
    /// `{"redacted":…}` value) is the commitment of `value`; compared in
    /// constant time.
    pub fn matches(&self, value: &AttrValue, commitment: &str) -> bool {
        let Some(tag) = commitment
            .strip_prefix(SCHEME)
            .and_then(|h| hex::decode(h).ok())
        else {
            return false;
        };
        let canonical = canonical_value_json(value);
        self.mac(VALUE_DOMAIN, canonical.as_bytes())
            .verify_slice(&tag)
            .is_ok()
    }
}

/// The path of the first redacted value in `item` (depth first, in name
/// order), if any: what a revert cannot write or compare.
pub fn first_redacted(item: &crate::value::Item) -> Option<String> {
    let mut path = Vec::new();
    for (name, v) in item {
        path.push(PathSegment::Key(name.clone()));
        if find_redacted(v, &mut path) {
            return Some(crate::diff::format_path(&path));
        }
        path.pop();
    }
    None
}

/// Whether `v` is or holds a redacted value; `path` is left at it if so.
pub fn find_redacted(v: &AttrValue, path: &mut Vec<PathSegment>) -> bool {
    match v {
        AttrValue::Redacted(_) => true,
        AttrValue::M(m) => m.iter().any(|(k, inner)| {
            path.push(PathSegment::Key(k.clone()));
            let found = find_redacted(inner, path);
            if !found {
                path.pop();
            }
            found
        }),
        AttrValue::L(l) => l.iter().enumerate().any(|(i, inner)| {
            path.push(PathSegment::Index(i));
            let found = find_redacted(inner, path);
            if !found {
                path.pop();
            }
            found
        }),
        _ => false,
    }
}

/// A commitment as a user copies it from an entry: bare, or the whole
/// `{"redacted":"…"}` value. `None` if it is neither.
pub fn parse_commitment(text: &str) -> Option<String> {
    let text = text.trim();
    if is_commitment(text) {
        return Some(text.to_string());
    }
    match serde_json::from_str::<AttrValue>(text).ok()? {
        AttrValue::Redacted(c) => Some(c),
        _ => None,
    }
}

/// The redaction of one table: its paths and the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redactor {
    key: Arc<RedactionKey>,
    patterns: Vec<Pattern>,
}

impl Redactor {
    pub fn new(key: Arc<RedactionKey>, patterns: Vec<Pattern>) -> Self {
        Redactor { key, patterns }
    }

    pub fn key(&self) -> &RedactionKey {
        &self.key
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Refuses a path that covers one of the table's key attributes.
    pub fn check_keys(&self, table: &str, key_names: &[String]) -> Result<(), RedactError> {
        for p in &self.patterns {
            // A key attribute is a scalar: only a one-segment path reaches it.
            if p.segments.len() != 1 {
                continue;
            }
            if let Some(name) = key_names.iter().find(|k| p.starts_at(k)) {
                return Err(RedactError::KeyAttribute {
                    key: p.origin.clone(),
                    path: p.text.clone(),
                    attribute: name.clone(),
                    table: table.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Replaces every covered value of both images of `record` by its
    /// commitment, in place (a copy of every record would cost more than
    /// the HMACs). The entry is then built from it as from any record, so
    /// the diff compares commitments: a covered value that changed is a
    /// change (old and new commitments), one that did not is none, and a
    /// value redacted whole (a map) changes as a whole. `raw` is left for
    /// [`Redactor::redact_raw`].
    pub fn redact_record(&self, record: &mut StreamRecord) {
        for image in [record.old_image.as_mut(), record.new_image.as_mut()]
            .into_iter()
            .flatten()
        {
            self.redact_item(image);
        }
    }

    /// An item with every covered value replaced by its commitment.
    pub fn redact_item(&self, item: &mut Item) {
        for p in &self.patterns {
            let Some((first, rest)) = p.segments.split_first() else {
                continue;
            };
            for (name, v) in item.iter_mut() {
                if first.matches_key(name) {
                    self.redact_within(v, rest);
                }
            }
        }
    }

    /// An entry's `raw` record (kept when a record could not be
    /// interpreted) becomes the commitment of its text: what an
    /// uninterpretable record holds cannot be told apart.
    pub fn redact_raw(&self, entry: &mut AuditEntry) {
        if let Some(raw) = &entry.raw {
            entry.raw = Some(format!("{MARK} {}", self.key.commit_raw(raw)));
        }
    }

    fn seal(&self, v: &mut AttrValue) {
        if !matches!(v, AttrValue::Redacted(_)) {
            *v = AttrValue::Redacted(self.key.commit(v));
        }
    }

    fn redact_within(&self, v: &mut AttrValue, rest: &[Segment]) {
        let Some((first, rest)) = rest.split_first() else {
            self.seal(v);
            return;
        };
        match v {
            AttrValue::M(m) => {
                for (k, inner) in m.iter_mut() {
                    if first.matches_key(k) {
                        self.redact_within(inner, rest);
                    }
                }
            }
            AttrValue::L(l) => {
                for (i, inner) in l.iter_mut().enumerate() {
                    if first.matches_index(i) {
                        self.redact_within(inner, rest);
                    }
                }
            }
            // A scalar or a set has nothing below it: the path does not
            // reach into this value.
            _ => {}
        }
    }
}

/// The redactors of every configured table that has paths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Redactions {
    tables: BTreeMap<String, Redactor>,
    /// For a table not named (one a pattern of `tables` found): `paths`.
    other: Option<Redactor>,
}

impl Redactions {
    /// Redactors by table, as [`Redactions::from_config`] builds them.
    pub fn new(tables: impl IntoIterator<Item = (String, Redactor)>) -> Self {
        Redactions {
            tables: tables.into_iter().collect(),
            other: None,
        }
    }

    /// `redactor` applies to every table not named.
    pub fn otherwise(self, redactor: Redactor) -> Self {
        Redactions {
            other: Some(redactor),
            ..self
        }
    }

    pub fn for_table(&self, table: &str) -> Option<&Redactor> {
        self.tables.get(table).or(self.other.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.other.is_none()
    }

    pub fn tables(&self) -> impl Iterator<Item = (&String, &Redactor)> {
        self.tables.iter()
    }
}

/// The key for `redaction check`: `--key-file`, else the config's.
pub fn key_for_check(
    key_file: Option<&Path>,
    config_key_file: Option<&PathBuf>,
) -> Result<RedactionKey, RedactError> {
    let path = key_file
        .or(config_key_file.map(PathBuf::as_path))
        .ok_or(RedactError::KeyMissing)?;
    RedactionKey::load(path)
}

#[cfg(test)]
mod tests;
