//! DynamoDB attribute values in an SDK-neutral form, and their DynamoDB JSON.
//!
//! Numbers stay strings (no precision lost); maps are ordered so that diffs
//! and JSON output are deterministic.

use std::collections::BTreeMap;

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
}
