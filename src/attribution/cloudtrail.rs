//! CloudTrail log files and the DynamoDB data events in them, as the
//! DynamoDB developer guide's "Understanding DynamoDB log file entries"
//! shows them: a gzipped JSON object `{"Records": [...]}`, each record with
//! `userIdentity`, `eventTime`, `eventSource`, `eventName`,
//! `sourceIPAddress`, `userAgent`, `requestParameters`, `requestID`,
//! `eventID`, and `errorCode` when the call failed.
//!
//! What a data event says about the items it wrote:
//! - PutItem, UpdateItem, DeleteItem: `requestParameters.tableName` and
//!   `.key` (the key's values, untyped: `{"Artist": "No One You Know"}`).
//! - TransactWriteItems: `requestParameters.requestItems[]`, each with
//!   `operation` (`Put`, `Update`, `Delete`, `ConditionCheck`), `tableName`
//!   and `key`. The guide's own example spells these `tableName`/`TableName`
//!   and `key`/`Key` in one request: both are accepted.
//! - BatchWriteItem (no example in the guide): `requestParameters.requestItems`
//!   maps a table name to a list of `putRequest`/`deleteRequest`, each with a
//!   `key`; a request without a key cannot be matched and is counted.
//! - ExecuteStatement (`requestParameters.statement`), BatchExecuteStatement
//!   (`requestItems[].statement`), ExecuteTransaction (`transactStatements[]
//!   .statement`): PartiQL with non-key values redacted as `***(Redacted)`.
//!   The key comes from the `WHERE` clause of an UPDATE or DELETE; an INSERT's
//!   values are redacted in the guide's example, so it cannot be matched.
//!   SELECTs write nothing.
//!
//! A failed call (`errorCode`, e.g. `ConditionalCheckFailedException` or
//! `TransactionCanceledException`) wrote nothing and is skipped.

use std::collections::BTreeMap;
use std::io::Read as _;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Confidence, Principal};

/// The kind of write a data event made to one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum WriteKind {
    /// PutItem, a Put of a batch or transaction: INSERT or MODIFY.
    Put,
    /// UpdateItem, an Update of a transaction, PartiQL UPDATE: INSERT or MODIFY
    /// (an UpdateItem may create the item).
    Update,
    /// DeleteItem, a Delete of a batch or transaction, PartiQL DELETE: REMOVE.
    Delete,
}

impl WriteKind {
    /// Whether a stream event of this name can come from this kind of write.
    pub fn allows(self, event: &str) -> bool {
        match self {
            WriteKind::Put | WriteKind::Update => matches!(event, "INSERT" | "MODIFY"),
            WriteKind::Delete => event == "REMOVE",
        }
    }
}

/// One item written by one data event.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ItemWrite {
    pub table: String,
    /// The key's attribute values as CloudTrail logs them (untyped strings
    /// or numbers).
    pub key: BTreeMap<String, Value>,
    pub kind: WriteKind,
    pub event_time: DateTime<Utc>,
    /// The event's caller; `confidence` is set by the matcher.
    pub principal: Principal,
}

/// What one log file held, for the reader's counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedLog {
    pub writes: Vec<ItemWrite>,
    /// DynamoDB write events whose items cannot be told (a PartiQL INSERT
    /// with redacted values, a batch request without a key).
    pub unkeyed: BTreeMap<String, usize>,
    /// Records that were not DynamoDB item writes, or failed calls.
    pub ignored: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log file {key}: not gzip: {message}")]
    Gzip { key: String, message: String },
    #[error("log file {key}: not CloudTrail JSON (an object with `Records`): {message}")]
    Json { key: String, message: String },
}

/// Parses one log file (gzipped unless it does not start with the gzip
/// magic bytes: some tools copy logs uncompressed). Keeps the item writes to
/// `tables`; everything else is counted, never an error: one odd record must
/// not stop the reader.
pub fn parse_log(key: &str, bytes: &[u8], tables: &[String]) -> Result<ParsedLog, LogError> {
    parse_log_for(key, bytes, &|t: &str| tables.iter().any(|c| c == t))
}

/// [`parse_log`], keeping the writes to the tables `selected` says yes to
/// (the ones `tables` patterns select as well as its names).
pub fn parse_log_for(
    key: &str,
    bytes: &[u8],
    selected: &dyn Fn(&str) -> bool,
) -> Result<ParsedLog, LogError> {
    let text = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| LogError::Gzip {
                key: key.to_string(),
                message: e.to_string(),
            })?;
        out
    } else {
        bytes.to_vec()
    };
    let doc: Value = serde_json::from_slice(&text).map_err(|e| LogError::Json {
        key: key.to_string(),
        message: e.to_string(),
    })?;
    let records = doc
        .get("Records")
        .and_then(Value::as_array)
        .ok_or_else(|| LogError::Json {
            key: key.to_string(),
            message: "no `Records` array".into(),
        })?;
    let mut parsed = ParsedLog::default();
    for record in records {
        parse_record(record, selected, &mut parsed);
    }
    Ok(parsed)
}

/// One record's item writes, appended to `out`.
pub fn parse_record(record: &Value, selected: &dyn Fn(&str) -> bool, out: &mut ParsedLog) {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let is_dynamodb = s(record, "eventSource").as_deref() == Some("dynamodb.amazonaws.com");
    let name = s(record, "eventName").unwrap_or_default();
    let failed = record.get("errorCode").is_some_and(|c| !c.is_null());
    let time = s(record, "eventTime")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc));
    let (true, false, Some(event_time)) = (is_dynamodb, failed, time) else {
        out.ignored += 1;
        return;
    };
    let params = record
        .get("requestParameters")
        .cloned()
        .unwrap_or(Value::Null);
    let principal = principal_of(record);
    let mut items: Vec<Target> = Vec::new();
    match name.as_str() {
        "PutItem" | "UpdateItem" | "DeleteItem" => {
            let kind = match name.as_str() {
                "PutItem" => WriteKind::Put,
                "UpdateItem" => WriteKind::Update,
                _ => WriteKind::Delete,
            };
            if let Some(table) = field(&params, "tableName").and_then(Value::as_str) {
                items.push((table.to_string(), key_of(field(&params, "key")), kind));
            }
        }
        "TransactWriteItems" => {
            for item in field(&params, "requestItems")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let kind = match field(item, "operation").and_then(Value::as_str) {
                    Some("Put") => WriteKind::Put,
                    Some("Update") => WriteKind::Update,
                    Some("Delete") => WriteKind::Delete,
                    _ => continue, // ConditionCheck writes nothing
                };
                if let Some(table) = field(item, "tableName").and_then(Value::as_str) {
                    items.push((table.to_string(), key_of(field(item, "key")), kind));
                }
            }
        }
        "BatchWriteItem" => {
            if let Some(map) = field(&params, "requestItems").and_then(Value::as_object) {
                for (table, requests) in map {
                    for request in requests.as_array().into_iter().flatten() {
                        let (kind, body) = if let Some(b) = field(request, "putRequest") {
                            (WriteKind::Put, b)
                        } else if let Some(b) = field(request, "deleteRequest") {
                            (WriteKind::Delete, b)
                        } else {
                            continue;
                        };
                        items.push((table.clone(), key_of(field(body, "key")), kind));
                    }
                }
            }
        }
        "ExecuteStatement" => {
            if let Some(st) = field(&params, "statement").and_then(Value::as_str) {
                push_statement(st, &mut items, out);
            }
        }
        "BatchExecuteStatement" | "ExecuteTransaction" => {
            for list in ["requestItems", "transactStatements", "statements"] {
                for item in field(&params, list)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(st) = field(item, "statement").and_then(Value::as_str) {
                        push_statement(st, &mut items, out);
                    }
                }
            }
        }
        _ => {
            out.ignored += 1;
            return;
        }
    }
    for (table, key, kind) in items {
        let table = table_name(&table);
        if !selected(&table) {
            continue;
        }
        match key {
            Some(key) if !key.is_empty() => out.writes.push(ItemWrite {
                table,
                key,
                kind,
                event_time,
                principal: principal.clone(),
            }),
            _ => *out.unkeyed.entry(table).or_default() += 1,
        }
    }
}

/// One item a request names: table, key (if logged), kind of write.
type Target = (String, Option<BTreeMap<String, Value>>, WriteKind);

/// A field by its documented name, or with its first letter upper-cased
/// (the guide's TransactWriteItems example uses both spellings).
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.get(name).or_else(|| {
        let mut c = name.chars();
        let upper: String = c
            .next()
            .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
            .unwrap_or_default();
        v.get(upper)
    })
}

fn key_of(v: Option<&Value>) -> Option<BTreeMap<String, Value>> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// `tableName` may be a table ARN (`arn:aws:dynamodb:…:table/Music`).
fn table_name(name: &str) -> String {
    match name.rsplit_once(":table/") {
        Some((_, rest)) => rest.split('/').next().unwrap_or(rest).to_string(),
        None => name.to_string(),
    }
}

fn principal_of(record: &Value) -> Principal {
    let id = record.get("userIdentity").cloned().unwrap_or(Value::Null);
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Principal {
        arn: s(&id, "arn")
            .or_else(|| s(&id, "invokedBy"))
            .or_else(|| s(&id, "principalId")),
        kind: s(&id, "type"),
        source_ip: s(record, "sourceIPAddress"),
        user_agent: s(record, "userAgent"),
        request_id: s(record, "requestID"),
        event_id: s(record, "eventID"),
        confidence: Confidence::High,
        candidates: Vec::new(),
    }
}

fn push_statement(statement: &str, items: &mut Vec<Target>, out: &mut ParsedLog) {
    match parse_statement(statement) {
        Statement::Write { table, kind, key } => items.push((table, key, kind)),
        Statement::Insert { table } => items.push((table, None, WriteKind::Put)),
        Statement::Other => out.ignored += 1,
    }
}

#[derive(Debug, PartialEq)]
enum Statement {
    Write {
        table: String,
        kind: WriteKind,
        key: Option<BTreeMap<String, Value>>,
    },
    /// Its key values are redacted: which item it wrote cannot be told.
    Insert { table: String },
    /// A SELECT, or nothing we understand.
    Other,
}

/// The table, kind and key of a PartiQL UPDATE or DELETE, from the
/// equality conditions of its `WHERE` clause (`k = 'v' AND k2 = 5`). A
/// condition whose value is redacted is not a key value we can use.
fn parse_statement(statement: &str) -> Statement {
    let words: Vec<&str> = statement.split_whitespace().collect();
    let upper = |i: usize| words.get(i).map(|w| w.to_ascii_uppercase());
    let (kind, table) = match upper(0).as_deref() {
        Some("UPDATE") => (WriteKind::Update, words.get(1)),
        Some("DELETE") if upper(1).as_deref() == Some("FROM") => (WriteKind::Delete, words.get(2)),
        Some("INSERT") if upper(1).as_deref() == Some("INTO") => {
            return match words.get(2) {
                Some(t) => Statement::Insert {
                    table: t.trim_matches('"').to_string(),
                },
                None => Statement::Other,
            }
        }
        _ => return Statement::Other,
    };
    let Some(table) = table else {
        return Statement::Other;
    };
    let table = table.trim_matches('"').to_string();
    let lower = statement.to_ascii_lowercase();
    let Some(pos) = lower.find(" where ") else {
        return Statement::Write {
            table,
            kind,
            key: None,
        };
    };
    let clause = &statement[pos + 7..];
    let mut key = BTreeMap::new();
    for cond in split_and(clause) {
        let Some((name, value)) = cond.split_once('=') else {
            continue;
        };
        let name = name.trim().trim_matches('"').to_string();
        let value = value.trim();
        if name.is_empty() || value.contains("(Redacted)") {
            continue;
        }
        let v = if let Some(s) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            Value::String(s.replace("''", "'"))
        } else if crate::value::is_decimal(value) {
            Value::String(value.to_string())
        } else {
            continue;
        };
        key.insert(name, v);
    }
    Statement::Write {
        table,
        kind,
        key: Some(key),
    }
}

/// Splits a WHERE clause at ` AND ` outside quoted strings.
fn split_and(clause: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let chars: Vec<char> = clause.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            quoted = !quoted;
        }
        if !quoted && c.is_whitespace() {
            let rest: String = chars[i..].iter().take(5).collect();
            if rest.len() == 5
                && rest[1..4].eq_ignore_ascii_case("and")
                && rest.ends_with(char::is_whitespace)
            {
                parts.push(std::mem::take(&mut current));
                i += 5;
                continue;
            }
        }
        current.push(c);
        i += 1;
    }
    parts.push(current);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The developer guide's examples, verbatim where they matter.
    fn identity() -> Value {
        json!({
            "type": "AssumedRole",
            "principalId": "AKIAIOSFODNN7EXAMPLE:bob",
            "arn": "arn:aws:sts::111122223333:assumed-role/users/bob",
            "accountId": "111122223333",
            "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": "AKIAI44QH8DHBEXAMPLE",
                    "arn": "arn:aws:iam::444455556666:role/admin-role",
                    "accountId": "444455556666",
                    "userName": "bob"
                },
                "attributes": {"creationDate": "2020-09-03T22:14:13Z", "mfaAuthenticated": "false"}
            }
        })
    }

    fn record(name: &str, params: Value) -> Value {
        json!({
            "eventVersion": "1.07",
            "userIdentity": identity(),
            "eventTime": "2020-09-03T21:48:12Z",
            "eventSource": "dynamodb.amazonaws.com",
            "eventName": name,
            "awsRegion": "us-west-1",
            "sourceIPAddress": "192.0.2.0",
            "userAgent": "aws-cli/1.15.64 Python/2.7.16 Darwin/17.7.0 botocore/1.10.63",
            "requestParameters": params,
            "responseElements": null,
            "requestID": "45EN32OM6TQSMV2MI65O4L5TNFVV4KQNSO5AEMVJF66Q9ASUAAJG",
            "eventID": "4f1cc78b-5c94-4174-a6ad-3ee78605381c",
            "readOnly": false,
            "resources": [{"accountId": "111122223333", "type": "AWS::DynamoDB::Table",
                           "ARN": "arn:aws:dynamodb:us-west-2:123456789012:table/Music"}],
            "eventType": "AwsApiCall",
            "apiVersion": "2012-08-10",
            "managementEvent": false,
            "recipientAccountId": "111122223333",
            "eventCategory": "Data"
        })
    }

    fn parse(records: Vec<Value>) -> ParsedLog {
        let doc = serde_json::to_vec(&json!({ "Records": records })).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &doc).unwrap();
        parse_log("k", &gz.finish().unwrap(), &["Music".to_string()]).unwrap()
    }

    fn keys(p: &ParsedLog) -> Vec<(String, WriteKind)> {
        p.writes
            .iter()
            .map(|w| (w.key["SongTitle"].as_str().unwrap().to_string(), w.kind))
            .collect()
    }

    #[test]
    fn put_item_names_the_key_and_the_caller() {
        let p = parse(vec![record(
            "PutItem",
            json!({"tableName": "Music",
                   "key": {"Artist": "No One You Know", "SongTitle": "Scared of My Shadow"},
                   "item": ["Artist", "SongTitle", "AlbumTitle"],
                   "returnConsumedCapacity": "TOTAL"}),
        )]);
        assert_eq!(p.writes.len(), 1);
        let w = &p.writes[0];
        assert_eq!(w.table, "Music");
        assert_eq!(w.kind, WriteKind::Put);
        assert_eq!(w.key["Artist"], json!("No One You Know"));
        assert_eq!(w.event_time.to_rfc3339(), "2020-09-03T21:48:12+00:00");
        let pr = &w.principal;
        assert_eq!(
            pr.arn.as_deref(),
            Some("arn:aws:sts::111122223333:assumed-role/users/bob")
        );
        assert_eq!(pr.kind.as_deref(), Some("AssumedRole"));
        assert_eq!(pr.source_ip.as_deref(), Some("192.0.2.0"));
        assert!(pr.user_agent.as_deref().unwrap().starts_with("aws-cli/"));
        assert_eq!(
            pr.request_id.as_deref(),
            Some("45EN32OM6TQSMV2MI65O4L5TNFVV4KQNSO5AEMVJF66Q9ASUAAJG")
        );
        assert_eq!(
            pr.event_id.as_deref(),
            Some("4f1cc78b-5c94-4174-a6ad-3ee78605381c")
        );
    }

    #[test]
    fn transact_write_items_gives_each_written_item_in_both_spellings() {
        // The guide's successful TransactWriteItems, mixed spellings included.
        let p = parse(vec![record(
            "TransactWriteItems",
            json!({"requestItems": [
                {"operation": "Put", "tableName": "Music",
                 "key": {"Artist": "No One You Know", "SongTitle": "Call Me Today"},
                 "items": ["Artist", "SongTitle", "AlbumTitle"]},
                {"operation": "Update", "tableName": "Music",
                 "key": {"Artist": "No One You Know", "SongTitle": "Call Me Tomorrow"},
                 "updateExpression": "SET #AT = :newval"},
                {"operation": "Delete", "TableName": "Music",
                 "key": {"Artist": "No One You Know", "SongTitle": "Call Me Yesterday"}},
                {"operation": "ConditionCheck", "TableName": "Music",
                 "Key": {"Artist": "No One You Know", "SongTitle": "Call Me Now"}}
            ], "returnConsumedCapacity": "TOTAL"}),
        )]);
        assert_eq!(
            keys(&p),
            [
                ("Call Me Today".into(), WriteKind::Put),
                ("Call Me Tomorrow".into(), WriteKind::Update),
                ("Call Me Yesterday".into(), WriteKind::Delete),
            ]
        );
    }

    #[test]
    fn failed_calls_and_other_tables_write_nothing() {
        let mut failed = record(
            "TransactWriteItems",
            json!({"requestItems": [{"operation": "Put", "tableName": "Music",
                   "key": {"Artist": "A", "SongTitle": "B"}}]}),
        );
        failed["errorCode"] = json!("TransactionCanceledException");
        let mut cond = record(
            "UpdateItem",
            json!({"tableName": "Music", "key": {"Artist": "A", "SongTitle": "C"}}),
        );
        cond["errorCode"] = json!("ConditionalCheckFailedException");
        let other = record(
            "DeleteItem",
            json!({"tableName": "Other", "key": {"Artist": "A", "SongTitle": "D"}}),
        );
        let mut table_update = record("UpdateTable", json!({}));
        table_update["eventSource"] = json!("dynamodb.amazonaws.com");
        let p = parse(vec![failed, cond, other, table_update]);
        assert!(p.writes.is_empty(), "{:?}", p.writes);
        assert_eq!(p.ignored, 3);
    }

    #[test]
    fn partiql_updates_and_deletes_are_keyed_by_their_where_clause() {
        let p = parse(vec![
            record(
                "ExecuteStatement",
                json!({"statement": "DELETE FROM Music WHERE Artist = 'No One You Know' AND SongTitle = 'It''s Me'"}),
            ),
            record(
                "BatchExecuteStatement",
                json!({"requestItems": [
                    {"statement": "UPDATE Music SET Album = ***(Redacted) WHERE Artist = 'No One You Know' AND SongTitle = 'Call Me Today'"},
                    {"statement": "INSERT INTO Music VALUE {'Artist' : ***(Redacted), 'SongTitle' : ***(Redacted), 'Album' : ***(Redacted)}"}
                ]}),
            ),
            record(
                "ExecuteStatement",
                json!({"statement": "SELECT * FROM Music WHERE Artist = 'No One You Know' AND SongTitle = 'Call Me Today' AND nonKeyAttr = ***(Redacted)"}),
            ),
            record(
                "ExecuteTransaction",
                json!({"transactStatements": [
                    {"statement": "UPDATE \"Music\" SET x = ***(Redacted) WHERE Artist = 'A' AND SongTitle = 'T1'"}
                ]}),
            ),
        ]);
        assert_eq!(
            keys(&p),
            [
                ("It's Me".into(), WriteKind::Delete),
                ("Call Me Today".into(), WriteKind::Update),
                ("T1".into(), WriteKind::Update),
            ]
        );
        assert_eq!(p.writes[0].key["Artist"], json!("No One You Know"));
        assert_eq!(p.unkeyed["Music"], 1, "the redacted INSERT");
        assert_eq!(p.ignored, 1, "the SELECT");
    }

    #[test]
    fn batch_write_item_requests_are_items_of_their_table() {
        let p = parse(vec![record(
            "BatchWriteItem",
            json!({"requestItems": {"Music": [
                {"putRequest": {"item": ["Artist", "SongTitle"], "key": {"Artist": "A", "SongTitle": "P"}}},
                {"deleteRequest": {"key": {"Artist": "A", "SongTitle": "D"}}},
                {"putRequest": {"item": ["Artist", "SongTitle"]}}
            ], "Other": [{"deleteRequest": {"key": {"Artist": "A", "SongTitle": "X"}}}]}}),
        )]);
        assert_eq!(
            keys(&p),
            [
                ("P".into(), WriteKind::Put),
                ("D".into(), WriteKind::Delete)
            ]
        );
        assert_eq!(p.unkeyed["Music"], 1);
    }

    #[test]
    fn bad_files_are_errors_naming_the_file() {
        let e = parse_log("AWSLogs/x.json.gz", b"\x1f\x8bnot gzip", &[]).unwrap_err();
        assert!(e.to_string().contains("AWSLogs/x.json.gz"), "{e}");
        let e = parse_log("k2", b"{\"nope\": 1}", &[]).unwrap_err();
        assert!(e.to_string().contains("Records"), "{e}");
        assert_eq!(
            table_name("arn:aws:dynamodb:us-west-2:1:table/Music"),
            "Music"
        );
    }
}
