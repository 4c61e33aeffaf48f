//! DynamoDB JSON (`{"S": ..}`) to and from the SDKs' attribute values.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use serde_json::{json, Map, Value};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

macro_rules! av_to_json {
    ($name:ident, $av:path) => {
        pub fn $name(v: &$av) -> Value {
            use $av as A;
            match v {
                A::S(s) => json!({ "S": s }),
                A::N(n) => json!({ "N": n }),
                A::B(b) => json!({ "B": b64(b.as_ref()) }),
                A::Bool(b) => json!({ "BOOL": b }),
                A::Null(b) => json!({ "NULL": b }),
                A::Ss(v) => json!({ "SS": v }),
                A::Ns(v) => json!({ "NS": v }),
                A::Bs(v) => json!({ "BS": v.iter().map(|b| b64(b.as_ref())).collect::<Vec<_>>() }),
                A::L(v) => json!({ "L": v.iter().map($name).collect::<Vec<_>>() }),
                A::M(m) => {
                    let obj: Map<String, Value> =
                        m.iter().map(|(k, v)| (k.clone(), $name(v))).collect();
                    json!({ "M": obj })
                }
                other => panic!("unknown attribute value {other:?}"),
            }
        }
    };
}

av_to_json!(av_to_json, aws_sdk_dynamodb::types::AttributeValue);
av_to_json!(
    streams_av_to_json,
    aws_sdk_dynamodbstreams::types::AttributeValue
);

/// An item (attribute map) as DynamoDB JSON: `{"attr": {"S": ..}, ..}`.
pub fn item_to_json(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), av_to_json(v)))
            .collect(),
    )
}

pub(super) fn streams_item_to_json(
    item: &HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>,
) -> Value {
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), streams_av_to_json(v)))
            .collect(),
    )
}

pub fn json_to_av(v: &Value) -> AttributeValue {
    use aws_sdk_dynamodb::primitives::Blob;
    let (t, x) = v
        .as_object()
        .and_then(|o| o.iter().next())
        .unwrap_or_else(|| panic!("not DynamoDB JSON: {v}"));
    let strs = |x: &Value| -> Vec<String> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let unb64 = |s: &str| {
        Blob::new(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .expect("base64"),
        )
    };
    match t.as_str() {
        "S" => AttributeValue::S(x.as_str().unwrap().into()),
        "N" => AttributeValue::N(x.as_str().unwrap().into()),
        "B" => AttributeValue::B(unb64(x.as_str().unwrap())),
        "BOOL" => AttributeValue::Bool(x.as_bool().unwrap()),
        "NULL" => AttributeValue::Null(true),
        "SS" => AttributeValue::Ss(strs(x)),
        "NS" => AttributeValue::Ns(strs(x)),
        "BS" => AttributeValue::Bs(strs(x).iter().map(|s| unb64(s)).collect()),
        "L" => AttributeValue::L(x.as_array().unwrap().iter().map(json_to_av).collect()),
        "M" => AttributeValue::M(
            x.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), json_to_av(v)))
                .collect(),
        ),
        other => panic!("unknown DynamoDB JSON type {other}"),
    }
}

/// An item in DynamoDB JSON to an SDK attribute map.
pub fn json_to_item(item: &Value) -> HashMap<String, AttributeValue> {
    item.as_object()
        .expect("item map")
        .iter()
        .map(|(k, v)| (k.clone(), json_to_av(v)))
        .collect()
}
