//! [`StreamApi`] on the AWS SDK: DynamoDB Streams, plus DynamoDB's
//! DescribeTable to find a table's current stream.
//!
//! Every SDK error becomes a [`StreamError`] by what the caller must do about
//! it; every record becomes a [`StreamRecord`], even one we cannot fully
//! interpret (it then carries `problem` and `raw`), because dropping a record
//! would silently lose an audit entry.

use std::collections::HashMap;

use aws_config::SdkConfig;
use aws_sdk_dynamodbstreams::types::{
    AttributeValue as SAttr, Record, ShardFilter, ShardFilterType, ShardIteratorType,
    StreamStatus as SdkStreamStatus,
};
use chrono::{DateTime, Utc};

use crate::aws::{classify, ErrorKind};
use crate::stream::{
    DescribeStreamRequest, IteratorPosition, RecordsPage, Shard, ShardIteratorRequest, StreamApi,
    StreamDescription, StreamError, StreamRecord, StreamResult, StreamStatus, StreamSummary,
    TableStream, TablesPage, Tags, UserIdentity,
};
use crate::value::fnv1a64;
use crate::value::{AttrValue, Item};

/// DynamoDB Streams through the AWS SDK.
#[derive(Clone, Debug)]
pub struct AwsStream {
    dynamodb: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
}

impl AwsStream {
    pub fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        streams: aws_sdk_dynamodbstreams::Client,
    ) -> Self {
        AwsStream { dynamodb, streams }
    }

    /// Both clients from one configuration (see [`crate::aws::load_sdk_config`]).
    pub fn from_config(config: &SdkConfig) -> Self {
        AwsStream::new(
            crate::aws::dynamodb_client(config),
            crate::aws::streams_client(config),
        )
    }
}

/// An SDK error as the stream seam's error.
fn stream_error<E>(err: aws_sdk_dynamodbstreams::error::SdkError<E>) -> StreamError
where
    E: aws_sdk_dynamodbstreams::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let c = classify(&err);
    match c.kind {
        ErrorKind::Throttled => StreamError::Throttled(c.message),
        ErrorKind::Transient => StreamError::Transient(c.message),
        ErrorKind::Trimmed => StreamError::Trimmed(c.message),
        ErrorKind::ExpiredIterator => StreamError::ExpiredIterator(c.message),
        ErrorKind::NotFound => StreamError::NotFound(c.message),
        ErrorKind::ConditionFailed
        | ErrorKind::ResourceInUse
        | ErrorKind::Validation
        | ErrorKind::Other => StreamError::Other(c.message),
    }
}

impl StreamApi for AwsStream {
    async fn describe_table(&self, table: &str) -> StreamResult<TableStream> {
        let out = self
            .dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| match stream_error(e) {
                // Name the table: the service's message does not.
                StreamError::NotFound(m) => StreamError::NotFound(format!("table {table}: {m}")),
                other => other,
            })?;
        let Some(desc) = out.table() else {
            return Err(StreamError::Other(format!(
                "DescribeTable for {table} returned no table description"
            )));
        };
        let spec = desc.stream_specification();
        Ok(TableStream {
            table: desc.table_name().unwrap_or(table).to_string(),
            latest_stream_arn: desc.latest_stream_arn().map(str::to_string),
            stream_enabled: spec.map(|s| s.stream_enabled()).unwrap_or(false),
            view_type: spec
                .and_then(|s| s.stream_view_type())
                .map(|v| v.as_str().to_string()),
            table_arn: desc.table_arn().map(str::to_string),
            replicas: desc
                .replicas()
                .iter()
                .filter_map(|r| r.region_name())
                .map(str::to_string)
                .collect(),
        })
    }

    async fn list_streams(&self, table: &str) -> StreamResult<Vec<StreamSummary>> {
        all_pages(|start| async move {
            let out = self
                .streams
                .list_streams()
                .table_name(table)
                .set_exclusive_start_stream_arn(start)
                .send()
                .await
                .map_err(stream_error)?;
            let found = out
                .streams()
                .iter()
                // ListStreams is asked for one table; an answer about another
                // (an emulator ignoring the filter) is not ours to follow.
                .filter(|s| s.table_name().is_none_or(|t| t == table))
                .filter_map(|s| {
                    let arn = s.stream_arn()?;
                    Some(StreamSummary {
                        stream_arn: arn.to_string(),
                        table: s.table_name().unwrap_or(table).to_string(),
                        stream_label: s
                            .stream_label()
                            .map(str::to_string)
                            .unwrap_or_else(|| crate::stream::stream_label(arn).to_string()),
                    })
                })
                .collect();
            Ok((found, out.last_evaluated_stream_arn().map(str::to_string)))
        })
        .await
    }

    async fn list_tables(&self, exclusive_start: Option<&str>) -> StreamResult<TablesPage> {
        let out = self
            .dynamodb
            .list_tables()
            .set_exclusive_start_table_name(exclusive_start.map(str::to_string))
            .send()
            .await
            .map_err(stream_error)?;
        let last = out
            .last_evaluated_table_name()
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        Ok(TablesPage {
            names: out.table_names().to_vec(),
            // A cursor that repeats (an emulator bug) ends the listing
            // instead of looping.
            last_evaluated: last.filter(|l| Some(l.as_str()) != exclusive_start),
        })
    }

    async fn list_tags(&self, table_arn: &str) -> StreamResult<Tags> {
        let tags = all_pages(|token| async move {
            let out = self
                .dynamodb
                .list_tags_of_resource()
                .resource_arn(table_arn)
                .set_next_token(token)
                .send()
                .await
                .map_err(stream_error)?;
            let found = out
                .tags()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect();
            Ok((found, out.next_token().map(str::to_string)))
        })
        .await?;
        Ok(tags.into_iter().collect())
    }

    async fn describe_stream(
        &self,
        request: &DescribeStreamRequest,
    ) -> StreamResult<StreamDescription> {
        let mut call = self
            .streams
            .describe_stream()
            .stream_arn(&request.stream_arn)
            .set_exclusive_start_shard_id(request.exclusive_start_shard_id.clone())
            .set_limit(request.limit);
        if let Some(parent) = &request.children_of {
            call = call.shard_filter(
                ShardFilter::builder()
                    .r#type(ShardFilterType::ChildShards)
                    .shard_id(parent)
                    .build(),
            );
        }
        let out = call.send().await.map_err(stream_error)?;
        let Some(desc) = out.stream_description() else {
            return Err(StreamError::Other(format!(
                "DescribeStream for {} returned no description",
                request.stream_arn
            )));
        };
        let status = match desc.stream_status() {
            Some(SdkStreamStatus::Enabling) => StreamStatus::Enabling,
            Some(SdkStreamStatus::Enabled) => StreamStatus::Enabled,
            Some(SdkStreamStatus::Disabling) => StreamStatus::Disabling,
            Some(SdkStreamStatus::Disabled) => StreamStatus::Disabled,
            other => {
                // Shards say for themselves whether they are closed; treating
                // an unknown status as enabled keeps reading and loses nothing.
                tracing::warn!(
                    stream = %request.stream_arn,
                    status = ?other.map(|s| s.as_str()),
                    "unknown stream status, treated as ENABLED"
                );
                StreamStatus::Enabled
            }
        };
        let shards = desc
            .shards()
            .iter()
            .filter_map(|s| {
                let shard_id = s.shard_id()?.to_string();
                let range = s.sequence_number_range();
                Some(Shard {
                    shard_id,
                    parent_shard_id: s.parent_shard_id().map(str::to_string),
                    starting_sequence_number: range
                        .and_then(|r| r.starting_sequence_number())
                        .map(str::to_string),
                    ending_sequence_number: range
                        .and_then(|r| r.ending_sequence_number())
                        .map(str::to_string),
                })
            })
            // moto ignores ShardFilter and returns every shard: filter here too,
            // so callers get the same answer from the service and the emulator.
            .filter(|s| match &request.children_of {
                Some(parent) => s.parent_shard_id.as_deref() == Some(parent.as_str()),
                None => true,
            })
            .collect();
        Ok(StreamDescription {
            stream_arn: desc.stream_arn().unwrap_or(&request.stream_arn).to_string(),
            table: desc.table_name().unwrap_or_default().to_string(),
            status,
            shards,
            last_evaluated_shard_id: desc.last_evaluated_shard_id().map(str::to_string),
        })
    }

    async fn get_shard_iterator(&self, request: &ShardIteratorRequest<'_>) -> StreamResult<String> {
        let ShardIteratorRequest {
            stream_arn,
            shard_id,
            position,
        } = *request;
        let (kind, sequence) = match position {
            IteratorPosition::TrimHorizon => (ShardIteratorType::TrimHorizon, None),
            IteratorPosition::Latest => (ShardIteratorType::Latest, None),
            IteratorPosition::AtSequence(s) => (ShardIteratorType::AtSequenceNumber, Some(s)),
            IteratorPosition::AfterSequence(s) => (ShardIteratorType::AfterSequenceNumber, Some(s)),
        };
        let out = self
            .streams
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(shard_id)
            .shard_iterator_type(kind)
            .set_sequence_number(sequence.cloned())
            .send()
            .await
            .map_err(stream_error)?;
        out.shard_iterator.ok_or_else(|| {
            StreamError::Other(format!(
                "GetShardIterator for {stream_arn} {shard_id} returned no iterator"
            ))
        })
    }

    async fn get_records(&self, iterator: &str, limit: Option<i32>) -> StreamResult<RecordsPage> {
        let out = self
            .streams
            .get_records()
            .shard_iterator(iterator)
            .set_limit(limit)
            .send()
            .await
            .map_err(stream_error)?;
        Ok(RecordsPage {
            records: out
                .records
                .unwrap_or_default()
                .into_iter()
                .map(convert_record)
                .collect(),
            next_iterator: out.next_shard_iterator,
        })
    }
}

/// The SDK record as a domain record. Never fails: what is missing or odd is
/// named in `problem`, and the record's Debug text goes to `raw`.
/// Every page of a listing: `page` reads the one at a cursor (`None`: the
/// first) and returns what it holds and the next cursor. Stops on the last
/// page, and on a cursor that repeats (a service or emulator bug must not
/// become an endless loop).
async fn all_pages<T, F, Fut>(mut page: F) -> StreamResult<Vec<T>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = StreamResult<(Vec<T>, Option<String>)>>,
{
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (found, next) = page(cursor.clone()).await?;
        all.extend(found);
        let next = next.filter(|n| !n.is_empty());
        if next.is_none() || next == cursor {
            return Ok(all);
        }
        cursor = next;
    }
}

fn convert_record(record: Record) -> StreamRecord {
    // Find every problem first, by reference, so `raw` can show the record
    // exactly as received before any of it is moved out.
    let problems = record_problems(&record);
    let raw = (!problems.is_empty()).then(|| format!("{record:?}"));

    let event_id = record.event_id.unwrap_or_default();
    let event_name = record
        .event_name
        .map(|n| n.as_str().to_string())
        .unwrap_or_default();
    let user_identity = record.user_identity.map(|u| UserIdentity {
        kind: u.r#type.unwrap_or_default(),
        principal_id: u.principal_id.unwrap_or_default(),
    });
    let mut problem = problems;

    let (keys, new_image, old_image, sequence_number, size_bytes, approximate_creation) =
        match record.dynamodb {
            Some(d) => (
                d.keys.map(convert_image).unwrap_or_default(),
                d.new_image.map(convert_image),
                d.old_image.map(convert_image),
                d.sequence_number,
                d.size_bytes,
                d.approximate_creation_date_time
                    .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos())),
            ),
            None => (Item::new(), None, None, None, None, None),
        };

    let sequence_number = match sequence_number {
        Some(s) => s,
        None => {
            // Without a sequence number the record still needs a stable,
            // deterministic identity so a re-delivery is recognised; it is
            // not a number, so it must never become a checkpoint.
            let fallback = if event_id.is_empty() {
                format!(
                    "raw:{:016x}",
                    fnv1a64(raw.as_deref().unwrap_or("").as_bytes())
                )
            } else {
                format!("eventID:{event_id}")
            };
            problem.push(format!(
                "sequence_number is a stand-in ({fallback}), not a stream position"
            ));
            fallback
        }
    };

    StreamRecord {
        event_id,
        event_name,
        keys,
        new_image,
        old_image,
        sequence_number,
        size_bytes,
        approximate_creation,
        user_identity,
        problem: (!problem.is_empty()).then(|| problem.join("; ")),
        raw,
    }
}

/// Everything wrong with a record, in words.
fn record_problems(record: &Record) -> Vec<String> {
    let mut problems = Vec::new();
    if record.event_id.as_deref().is_none_or(str::is_empty) {
        problems.push("record has no eventID".to_string());
    }
    match record.event_name.as_ref().map(|n| n.as_str()) {
        Some("INSERT" | "MODIFY" | "REMOVE") => {}
        Some(other) => problems.push(format!("unknown eventName {other:?}")),
        None => problems.push("record has no eventName".to_string()),
    }
    let Some(d) = &record.dynamodb else {
        problems.push("record has no dynamodb section".to_string());
        problems.push("record has no SequenceNumber".to_string());
        return problems;
    };
    match &d.sequence_number {
        None => problems.push("record has no SequenceNumber".to_string()),
        Some(s) if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) => {
            problems.push(format!("SequenceNumber {s:?} is not a decimal number"))
        }
        Some(_) => {}
    }
    match &d.keys {
        None => problems.push("record has no Keys".to_string()),
        Some(k) if k.is_empty() => problems.push("record has empty Keys".to_string()),
        Some(_) => {}
    }
    for (name, image) in [
        ("Keys", &d.keys),
        ("NewImage", &d.new_image),
        ("OldImage", &d.old_image),
    ] {
        if let Some(path) = image.as_ref().and_then(unknown_value_path) {
            problems.push(format!(
                "{name} has a value of a type this SDK does not know at {path} (left out)"
            ));
        }
    }
    if let Some(t) = &d.approximate_creation_date_time {
        if DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()).is_none() {
            problems.push(format!("ApproximateCreationDateTime {t:?} is out of range"));
        }
    }
    problems
}

/// The path of the first value of an unknown type (a type added to DynamoDB
/// after this SDK was built), if any.
fn unknown_value_path(image: &HashMap<String, SAttr>) -> Option<String> {
    fn walk(v: &SAttr, path: String) -> Option<String> {
        match v {
            SAttr::M(m) => m.iter().find_map(|(k, v)| walk(v, format!("{path}.{k}"))),
            SAttr::L(l) => l
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(v, format!("{path}[{i}]"))),
            v if is_known_scalar(v) => None,
            _ => Some(path),
        }
    }
    image.iter().find_map(|(k, v)| walk(v, k.clone()))
}

/// An SDK image as an [`Item`], through serde_dynamo. serde_dynamo panics on
/// a value of an unknown type, so those are left out here (and named in
/// `problem` by [`record_problems`]).
fn convert_image(image: HashMap<String, SAttr>) -> Item {
    image
        .into_iter()
        .filter_map(|(k, v)| convert_value(v).map(|v| (k, v)))
        .collect()
}

fn convert_value(value: SAttr) -> Option<AttrValue> {
    match value {
        // Containers are rebuilt here so an unknown value deep inside only
        // drops itself, never its siblings.
        SAttr::M(m) => Some(AttrValue::M(
            m.into_iter()
                .filter_map(|(k, v)| convert_value(v).map(|v| (k, v)))
                .collect(),
        )),
        SAttr::L(l) => Some(AttrValue::L(
            l.into_iter().filter_map(convert_value).collect(),
        )),
        v if is_known_scalar(&v) => Some(serde_dynamo::AttributeValue::from(v).into()),
        _ => None,
    }
}

/// A value of a type other than a map or a list that this SDK knows (and
/// serde_dynamo converts without panicking).
fn is_known_scalar(v: &SAttr) -> bool {
    matches!(
        v,
        SAttr::S(_)
            | SAttr::N(_)
            | SAttr::B(_)
            | SAttr::Bool(_)
            | SAttr::Null(_)
            | SAttr::Ss(_)
            | SAttr::Ns(_)
            | SAttr::Bs(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::types::{Identity, OperationType, StreamRecord as SRec};

    fn good_record() -> Record {
        Record::builder()
            .event_id("e1")
            .event_name(OperationType::Modify)
            .dynamodb(
                SRec::builder()
                    .keys("pk", SAttr::S("u1".into()))
                    .new_image("pk", SAttr::S("u1".into()))
                    .new_image(
                        "profile",
                        SAttr::M(HashMap::from([("name".into(), SAttr::S("Bob".into()))])),
                    )
                    .old_image("pk", SAttr::S("u1".into()))
                    .sequence_number("110000000001745442301")
                    .size_bytes(42)
                    .approximate_creation_date_time(aws_smithy_types::DateTime::from_secs(
                        1_800_000_000,
                    ))
                    .build(),
            )
            .build()
    }

    #[test]
    fn converts_a_good_record() {
        let r = convert_record(good_record());
        assert_eq!(r.problem, None);
        assert_eq!(r.raw, None);
        assert_eq!(r.event_id, "e1");
        assert_eq!(r.event_name, "MODIFY");
        assert_eq!(r.sequence_number, "110000000001745442301");
        assert_eq!(r.keys.get("pk"), Some(&AttrValue::S("u1".into())));
        let new = r.new_image.unwrap_or_default();
        assert_eq!(
            new.get("profile"),
            Some(&AttrValue::M(
                [("name".to_string(), AttrValue::S("Bob".into()))].into()
            ))
        );
        assert_eq!(
            r.approximate_creation.map(|t| t.timestamp()),
            Some(1_800_000_000)
        );
        assert_eq!(r.size_bytes, Some(42));
    }

    #[test]
    fn ttl_identity() {
        let rec = Record::builder()
            .event_id("e2")
            .event_name(OperationType::Remove)
            .user_identity(
                Identity::builder()
                    .r#type("Service")
                    .principal_id("dynamodb.amazonaws.com")
                    .build(),
            )
            .dynamodb(
                SRec::builder()
                    .keys("pk", SAttr::S("u1".into()))
                    .sequence_number("5")
                    .build(),
            )
            .build();
        let r = convert_record(rec);
        assert!(r.user_identity.is_some_and(|u| u.is_ttl_expiry()));
        assert_eq!(r.problem, None);
    }

    #[test]
    fn unknown_event_name_is_kept_with_a_problem() {
        let mut rec = good_record();
        rec.event_name = Some(OperationType::from("UPSERT"));
        let r = convert_record(rec);
        assert_eq!(r.event_name, "UPSERT");
        assert!(r.problem.as_deref().is_some_and(|p| p.contains("UPSERT")));
        assert!(r.raw.is_some());
        assert_eq!(r.sequence_number, "110000000001745442301");
    }

    #[test]
    fn missing_dynamodb_section_is_kept_with_a_stand_in_sequence() {
        let rec = Record::builder()
            .event_id("e3")
            .event_name(OperationType::Insert)
            .build();
        let r = convert_record(rec);
        assert_eq!(r.sequence_number, "eventID:e3");
        let p = r.problem.unwrap_or_default();
        assert!(p.contains("no dynamodb section"), "{p}");
        assert!(p.contains("stand-in"), "{p}");
        assert!(r.raw.is_some_and(|raw| raw.contains("e3")));
    }

    #[test]
    fn missing_everything_still_gives_a_deterministic_identity() {
        let a = convert_record(Record::builder().build());
        let b = convert_record(Record::builder().build());
        assert!(a.sequence_number.starts_with("raw:"));
        assert_eq!(a.sequence_number, b.sequence_number);
    }

    #[test]
    fn non_numeric_sequence_is_a_problem() {
        let mut rec = good_record();
        if let Some(d) = rec.dynamodb.as_mut() {
            d.sequence_number = Some("12a".into());
        }
        let r = convert_record(rec);
        assert!(r.problem.is_some());
        assert_eq!(r.sequence_number, "12a");
    }
}
