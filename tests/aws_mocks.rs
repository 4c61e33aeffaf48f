//! The AWS adapters against mocked SDK clients: error mapping from real wire
//! error bodies, client-side ShardFilter, pagination, and the store's
//! write-once and missing-table behaviour. (`tests/dynamo_store.rs` runs the
//! same code against moto's server.)

use std::collections::BTreeMap;

use aws_config::retry::RetryConfig;
use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_smithy_mocks::{create_mock_http_client, mock, MockResponseInterceptor, Rule, RuleMode};
use ddb_audit::entry::AuditEntry;
use ddb_audit::store::dynamo::DynamoStore;
use ddb_audit::store::{
    AuditStore, CheckpointStore, PutOutcome, ShardCheckpoint, StoreError, TableNames,
};
use ddb_audit::stream::aws::AwsStream;
use ddb_audit::stream::{DescribeStreamRequest, StreamApi, StreamError};
use ddb_audit::value::AttrValue;

fn interceptor(rules: &[&Rule]) -> MockResponseInterceptor {
    rules.iter().fold(
        MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny),
        |i, r| i.with_rule(r),
    )
}

fn dynamodb(rules: &[&Rule]) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .retry_config(RetryConfig::disabled())
            .http_client(create_mock_http_client())
            .interceptor(interceptor(rules))
            .build(),
    )
}

fn streams(rules: &[&Rule]) -> aws_sdk_dynamodbstreams::Client {
    aws_sdk_dynamodbstreams::Client::from_conf(
        aws_sdk_dynamodbstreams::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .retry_config(RetryConfig::disabled())
            .http_client(create_mock_http_client())
            .interceptor(interceptor(rules))
            .build(),
    )
}

/// An error body exactly as DynamoDB (Streams) sends it.
fn error_body(code: &str, message: &str) -> Option<String> {
    Some(format!(
        r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"{message}"}}"#
    ))
}

async fn get_records_error(status: u16, body: Option<String>) -> StreamError {
    let rule = mock!(aws_sdk_dynamodbstreams::Client::get_records)
        .sequence()
        .http_status(status, body)
        .build();
    let stream = AwsStream::new(dynamodb(&[]), streams(&[&rule]));
    match stream.get_records("it", Some(100)).await {
        Ok(page) => panic!("expected an error, got {page:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn stream_errors_map_by_what_the_caller_must_do() {
    type Check = fn(&StreamError) -> bool;
    let cases: Vec<(u16, Option<String>, Check)> = vec![
        (
            400,
            error_body("LimitExceededException", "slow down"),
            |e| matches!(e, StreamError::Throttled(m) if m.contains("slow down")),
        ),
        (400, error_body("ThrottlingException", "slow"), |e| {
            matches!(e, StreamError::Throttled(_))
        }),
        (
            400,
            error_body("TrimmedDataAccessException", "too old"),
            |e| matches!(e, StreamError::Trimmed(m) if m.contains("too old")),
        ),
        (
            400,
            error_body("ExpiredIteratorException", "expired"),
            |e| matches!(e, StreamError::ExpiredIterator(_)),
        ),
        (400, error_body("ResourceNotFoundException", "gone"), |e| {
            matches!(e, StreamError::NotFound(_))
        }),
        (500, error_body("InternalServerError", "oops"), |e| {
            matches!(e, StreamError::Transient(_))
        }),
        (503, None, |e| matches!(e, StreamError::Transient(_))),
        (
            400,
            error_body("AccessDeniedException", "no way"),
            |e| matches!(e, StreamError::Other(m) if m.contains("AccessDeniedException") && m.contains("no way")),
        ),
    ];
    for (status, body, check) in cases {
        let err = get_records_error(status, body.clone()).await;
        assert!(check(&err), "{status} {body:?} gave {err:?}");
    }
}

#[tokio::test]
async fn connection_failures_are_transient() {
    // A port nobody listens on: the request fails before reaching a service.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let config = aws_sdk_dynamodbstreams::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .retry_config(RetryConfig::disabled())
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .build();
    let stream = AwsStream::new(
        dynamodb(&[]),
        aws_sdk_dynamodbstreams::Client::from_conf(config),
    );
    let err = stream.get_records("it", None).await.unwrap_err();
    assert!(matches!(err, StreamError::Transient(_)), "{err:?}");
}

#[tokio::test]
async fn describe_table_missing_is_not_found_naming_the_table() {
    let rule = mock!(aws_sdk_dynamodb::Client::describe_table)
        .sequence()
        .http_status(
            400,
            error_body("ResourceNotFoundException", "Requested resource not found"),
        )
        .build();
    let stream = AwsStream::new(dynamodb(&[&rule]), streams(&[]));
    let err = stream.describe_table("orders").await.unwrap_err();
    assert!(
        matches!(&err, StreamError::NotFound(m) if m.contains("orders")),
        "{err:?}"
    );
}

#[tokio::test]
async fn children_of_filters_client_side_and_sends_the_filter() {
    use aws_sdk_dynamodbstreams::operation::describe_stream::DescribeStreamOutput;
    use aws_sdk_dynamodbstreams::types::{
        SequenceNumberRange, Shard, ShardFilterType, StreamDescription, StreamStatus,
    };
    let shard = |id: &str, parent: Option<&str>, closed: bool| {
        let mut range = SequenceNumberRange::builder().starting_sequence_number("100");
        if closed {
            range = range.ending_sequence_number("200");
        }
        Shard::builder()
            .shard_id(id)
            .set_parent_shard_id(parent.map(str::to_string))
            .sequence_number_range(range.build())
            .build()
    };
    // An emulator that ignores ShardFilter: answers with every shard.
    let rule = mock!(aws_sdk_dynamodbstreams::Client::describe_stream)
        .match_requests(|req| {
            req.shard_filter().is_some_and(|f| {
                f.r#type() == Some(&ShardFilterType::ChildShards) && f.shard_id() == Some("p")
            })
        })
        .then_output(move || {
            DescribeStreamOutput::builder()
                .stream_description(
                    StreamDescription::builder()
                        .stream_arn("arn:s")
                        .table_name("t")
                        .stream_status(StreamStatus::Enabled)
                        .shards(shard("p", None, true))
                        .shards(shard("c1", Some("p"), false))
                        .shards(shard("c2", Some("p"), false))
                        .shards(shard("x", Some("other"), false))
                        .build(),
                )
                .build()
        });
    let stream = AwsStream::new(dynamodb(&[]), streams(&[&rule]));
    let desc = stream
        .describe_stream(&DescribeStreamRequest {
            stream_arn: "arn:s".into(),
            children_of: Some("p".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = desc.shards.iter().map(|s| s.shard_id.as_str()).collect();
    assert_eq!(ids, ["c1", "c2"]);
    assert!(desc.shards.iter().all(|s| !s.is_closed()));
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn list_streams_follows_pages() {
    use aws_sdk_dynamodbstreams::operation::list_streams::ListStreamsOutput;
    use aws_sdk_dynamodbstreams::types::Stream;
    let stream_of = |label: &str| {
        Stream::builder()
            .stream_arn(format!(
                "arn:aws:dynamodb:us-east-1:1:table/t/stream/{label}"
            ))
            .table_name("t")
            .stream_label(label)
            .build()
    };
    let first = mock!(aws_sdk_dynamodbstreams::Client::list_streams)
        .match_requests(|req| req.exclusive_start_stream_arn().is_none())
        .then_output(move || {
            ListStreamsOutput::builder()
                .streams(stream_of("A"))
                .last_evaluated_stream_arn("arn:aws:dynamodb:us-east-1:1:table/t/stream/A")
                .build()
        });
    let second = mock!(aws_sdk_dynamodbstreams::Client::list_streams)
        .match_requests(|req| req.exclusive_start_stream_arn().is_some())
        .then_output(move || ListStreamsOutput::builder().streams(stream_of("B")).build());
    let stream = AwsStream::new(dynamodb(&[]), streams(&[&first, &second]));
    let all = stream.list_streams("t").await.unwrap();
    let labels: Vec<_> = all.iter().map(|s| s.stream_label.as_str()).collect();
    assert_eq!(labels, ["A", "B"]);
}

fn entry() -> AuditEntry {
    AuditEntry {
        event: "INSERT".into(),
        stream_arn: "arn:aws:dynamodb:us-east-1:1:table/orders/stream/2026-11-23T00:00:00.000"
            .into(),
        ..AuditEntry::fixture(
            "orders",
            BTreeMap::from([("pk".to_string(), AttrValue::S("u1".into()))]),
            "100",
        )
    }
}

async fn put_with(status: u16, body: Option<String>) -> Result<PutOutcome, StoreError> {
    let rule = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|req| {
            req.condition_expression() == Some("attribute_not_exists(pk)")
                && req.table_name() == Some("ddb-audit-entries")
        })
        .sequence()
        .http_status(status, body)
        .build();
    DynamoStore::new(dynamodb(&[&rule]), TableNames::default())
        .put_entry(&entry())
        .await
}

#[tokio::test]
async fn store_put_is_write_once_and_maps_errors() {
    let outcome = put_with(
        400,
        error_body(
            "ConditionalCheckFailedException",
            "The conditional request failed",
        ),
    )
    .await;
    assert!(
        matches!(outcome, Ok(PutOutcome::AlreadyPresent)),
        "{outcome:?}"
    );

    let outcome = put_with(200, Some("{}".into())).await;
    assert!(matches!(outcome, Ok(PutOutcome::Written)), "{outcome:?}");

    let outcome = put_with(
        400,
        error_body("ResourceNotFoundException", "Requested resource not found"),
    )
    .await;
    match outcome {
        Err(e @ StoreError::MissingTable { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("ddb-audit-entries") && text.contains("ddb-audit init"),
                "{text}"
            );
        }
        other => panic!("expected MissingTable, got {other:?}"),
    }

    let outcome = put_with(
        400,
        error_body("ProvisionedThroughputExceededException", "slow"),
    )
    .await;
    assert!(
        matches!(outcome, Err(StoreError::Transient(_))),
        "{outcome:?}"
    );

    let outcome = put_with(500, None).await;
    assert!(
        matches!(outcome, Err(StoreError::Transient(_))),
        "{outcome:?}"
    );

    let outcome = put_with(
        400,
        error_body(
            "ValidationException",
            "Item size has exceeded the maximum allowed size",
        ),
    )
    .await;
    assert!(
        matches!(&outcome, Err(StoreError::Rejected(m)) if m.contains("too large")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn stale_checkpoint_is_kept_not_an_error() {
    let rule = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|req| {
            req.condition_expression()
                .is_some_and(|c| c.contains("#sequence_key <= :sequence_key"))
        })
        .sequence()
        .http_status(
            400,
            error_body(
                "ConditionalCheckFailedException",
                "The conditional request failed",
            ),
        )
        .build();
    let store = DynamoStore::new(dynamodb(&[&rule]), TableNames::default());
    let result = store
        .save_shard(&ShardCheckpoint {
            sequence_no: Some("100".into()),
            ..ShardCheckpoint::fresh("orders", "arn:s", "s1", None)
        })
        .await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(rule.num_calls(), 1);
}

/// Keys BatchGetItem leaves unprocessed, and a throttle of the whole call,
/// go through the one retry layer: asked again for just those keys until
/// they are read, never reported as an error.
#[tokio::test(start_paused = true)]
async fn batch_get_asks_again_for_unprocessed_keys_and_after_a_throttle() {
    use ddb_audit::store::ReadStore;
    let unprocessed = r#"{"Responses":{"ddb-audit-entries":[]},"UnprocessedKeys":{"ddb-audit-entries":{"Keys":[{"pk":{"S":"p"},"sk":{"S":"s2"}}],"ConsistentRead":true}}}"#;
    let done = r#"{"Responses":{"ddb-audit-entries":[]},"UnprocessedKeys":{}}"#;
    let rule = mock!(aws_sdk_dynamodb::Client::batch_get_item)
        .sequence()
        .http_status(200, Some(unprocessed.into()))
        .http_status(
            400,
            error_body("ProvisionedThroughputExceededException", "slow down"),
        )
        .http_status(200, Some(done.into()))
        .build();
    let store = DynamoStore::new(dynamodb(&[&rule]), TableNames::default());
    let refs = vec![
        ("p".to_string(), "s1".to_string()),
        ("p".to_string(), "s2".to_string()),
    ];
    let found = store
        .fetch_entries(&refs)
        .await
        .expect("no error reaches the caller");
    assert_eq!(found, vec![None, None]);
    assert_eq!(
        rule.num_calls(),
        3,
        "one call, one for the unprocessed key, one after the throttle"
    );
}
