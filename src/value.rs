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
        }
    }
}

/// An item from any map of values convertible into [`AttrValue`].
pub fn item_from<V: Into<AttrValue>>(map: impl IntoIterator<Item = (String, V)>) -> Item {
    map.into_iter().map(|(k, v)| (k, v.into())).collect()
}
