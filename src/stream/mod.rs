//! The stream seam: DynamoDB Streams (plus the one DescribeTable call that finds
//! a table's stream) in domain types. Business logic is generic over
//! [`StreamApi`]; `aws` adapts the SDK, `sim` simulates the service (feature
//! `test-util`, with the `faults` decorator: neither ships).

pub mod aws;
pub mod observed;

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::value::Item;

#[cfg(any(test, feature = "test-util"))]
pub mod faults;
#[cfg(any(test, feature = "test-util"))]
pub mod sim;

/// What DescribeTable says about a table's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableStream {
    pub table: String,
    /// The table's current stream, if one is enabled.
    pub latest_stream_arn: Option<String>,
    pub stream_enabled: bool,
    /// `NEW_AND_OLD_IMAGES`, `NEW_IMAGE`, `OLD_IMAGE` or `KEYS_ONLY`.
    pub view_type: Option<String>,
    /// `arn:aws:dynamodb:REGION:ACCOUNT:table/NAME`: what ListTagsOfResource
    /// asks for, and the region the answer comes from.
    pub table_arn: Option<String>,
    /// The regions of a Global Table's replicas (version 2019.11.21), as
    /// DescribeTable lists them; empty for a table of one region.
    pub replicas: Vec<String>,
}

/// One page of ListTables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TablesPage {
    pub names: Vec<String>,
    /// More pages follow, from after this name, when set.
    pub last_evaluated: Option<String>,
}

/// A table's tags, key to value.
pub type Tags = std::collections::BTreeMap<String, String>;

/// One stream of a table as ListStreams reports it (old, disabled streams
/// stay listed while their records are readable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    pub stream_arn: String,
    pub table: String,
    pub stream_label: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamStatus {
    Enabling,
    Enabled,
    Disabling,
    Disabled,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub shard_id: String,
    pub parent_shard_id: Option<String>,
    pub starting_sequence_number: Option<String>,
    /// Set once the shard is closed: it gets no new records.
    pub ending_sequence_number: Option<String>,
}

impl Shard {
    pub fn is_closed(&self) -> bool {
        self.ending_sequence_number.is_some()
    }
}

/// A DescribeStream call: one page of the listing, optionally only the
/// children of one shard (`ShardFilter{Type: CHILD_SHARDS}`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DescribeStreamRequest {
    pub stream_arn: String,
    pub exclusive_start_shard_id: Option<String>,
    pub children_of: Option<String>,
    pub limit: Option<i32>,
}

/// A GetShardIterator call: where in which shard reading starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardIteratorRequest<'a> {
    pub stream_arn: &'a str,
    pub shard_id: &'a str,
    pub position: &'a IteratorPosition,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamDescription {
    pub stream_arn: String,
    pub table: String,
    pub status: StreamStatus,
    pub shards: Vec<Shard>,
    /// More pages follow when set.
    pub last_evaluated_shard_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IteratorPosition {
    TrimHorizon,
    Latest,
    AtSequence(String),
    AfterSequence(String),
}

/// `userIdentity` of a record: present for TTL deletions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserIdentity {
    pub kind: String,
    pub principal_id: String,
}

/// The principal that DynamoDB names on TTL deletions.
pub const TTL_PRINCIPAL: &str = "dynamodb.amazonaws.com";

impl UserIdentity {
    pub fn is_ttl_expiry(&self) -> bool {
        self.kind == "Service" && self.principal_id == TTL_PRINCIPAL
    }
}

/// One stream record. Adapters never drop a record they cannot fully
/// interpret: they fill what they can and say what is wrong in `problem`,
/// with the record as received in `raw`, so it still becomes an entry.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamRecord {
    pub event_id: String,
    /// INSERT, MODIFY or REMOVE as the stream says (anything else is a problem).
    pub event_name: String,
    pub keys: Item,
    pub new_image: Option<Item>,
    pub old_image: Option<Item>,
    pub sequence_number: String,
    pub size_bytes: Option<i64>,
    pub approximate_creation: Option<DateTime<Utc>>,
    pub user_identity: Option<UserIdentity>,
    pub problem: Option<String>,
    pub raw: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RecordsPage {
    pub records: Vec<StreamRecord>,
    /// `None` only when a closed shard has been read to its end.
    pub next_iterator: Option<String>,
}

/// The service's errors, by what a caller must do about them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// LimitExceededException / ThrottlingException: back off and retry.
    #[error("throttled: {0}")]
    Throttled(String),
    /// 5xx, timeouts, connection errors: retry.
    #[error("transient service error: {0}")]
    Transient(String),
    /// TrimmedDataAccessException: the position is older than retention.
    #[error("trimmed: {0}")]
    Trimmed(String),
    /// ExpiredIteratorException: get a new iterator.
    #[error("iterator expired: {0}")]
    ExpiredIterator(String),
    /// ResourceNotFoundException: table, stream or shard gone.
    #[error("not found: {0}")]
    NotFound(String),
    /// Anything else (validation, access denied): not retried.
    #[error("{0}")]
    Other(String),
}

impl crate::retry::Transient for StreamError {
    fn is_transient(&self) -> bool {
        self.is_retryable()
    }
}

impl StreamError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StreamError::Throttled(_) | StreamError::Transient(_))
    }
}

pub type StreamResult<T> = Result<T, StreamError>;

/// DynamoDB Streams, as the daemon uses it.
pub trait StreamApi: Send + Sync + 'static {
    /// DescribeTable: the table's current stream and view type.
    fn describe_table(&self, table: &str)
        -> impl Future<Output = StreamResult<TableStream>> + Send;
    /// ListStreams for one table (all pages).
    fn list_streams(
        &self,
        table: &str,
    ) -> impl Future<Output = StreamResult<Vec<StreamSummary>>> + Send;
    fn describe_stream(
        &self,
        request: &DescribeStreamRequest,
    ) -> impl Future<Output = StreamResult<StreamDescription>> + Send;
    fn get_shard_iterator(
        &self,
        request: &ShardIteratorRequest<'_>,
    ) -> impl Future<Output = StreamResult<String>> + Send;
    fn get_records(
        &self,
        iterator: &str,
        limit: Option<i32>,
    ) -> impl Future<Output = StreamResult<RecordsPage>> + Send;
    /// ListTables: one page of the region's table names (up to 100), after
    /// `exclusive_start`. Only a config with patterns calls it.
    fn list_tables(
        &self,
        exclusive_start: Option<&str>,
    ) -> impl Future<Output = StreamResult<TablesPage>> + Send;
    /// ListTagsOfResource on a table's ARN (all pages). Only a config with
    /// `[discovery] tags` calls it.
    fn list_tags(&self, table_arn: &str) -> impl Future<Output = StreamResult<Tags>> + Send;
}

/// The label that ends a stream ARN (`.../table/T/stream/LABEL`). Labels are
/// creation timestamps, so they order a table's streams in time.
pub fn stream_label(stream_arn: &str) -> &str {
    stream_arn
        .rsplit_once("/stream/")
        .map(|(_, label)| label)
        .unwrap_or(stream_arn)
}

/// Whether `s` can be a sequence number (a decimal string of up to 40 digits).
pub fn is_sequence_number(s: &str) -> bool {
    !s.is_empty() && s.len() <= 40 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Sequence numbers are decimal strings of up to 40 digits: compare them as
/// numbers, not as text.
pub fn cmp_sequence(a: &str, b: &str) -> std::cmp::Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The seven [`StreamApi`] methods of a type that wraps another stream:
/// each call goes to `$inner` (an expression of the wrapper, `$this`), and
/// its future through `$wrap(operation, future)`, `operation` being the
/// API's name of the call (`"GetRecords"`).
macro_rules! wrap_stream_api {
    (|$this:ident| $inner:expr, $wrap:expr) => {
        $crate::stream::wrap_stream_api!(@each |$this| $inner, $wrap;
            describe_table(table: &str) -> $crate::stream::TableStream, "DescribeTable";
            list_streams(table: &str) -> Vec<$crate::stream::StreamSummary>, "ListStreams";
            describe_stream(request: &$crate::stream::DescribeStreamRequest)
                -> $crate::stream::StreamDescription, "DescribeStream";
            get_shard_iterator(request: &$crate::stream::ShardIteratorRequest<'_>)
                -> String, "GetShardIterator";
            get_records(iterator: &str, limit: Option<i32>)
                -> $crate::stream::RecordsPage, "GetRecords";
            list_tables(exclusive_start: Option<&str>)
                -> $crate::stream::TablesPage, "ListTables";
            list_tags(table_arn: &str) -> $crate::stream::Tags, "ListTagsOfResource";
        );
    };
    (@each |$this:ident| $inner:expr, $wrap:expr;
        $($name:ident($($arg:ident: $ty:ty),*) -> $out:ty, $op:literal;)*) => {$(
        fn $name(
            &self,
            $($arg: $ty),*
        ) -> impl std::future::Future<Output = $crate::stream::StreamResult<$out>> + Send {
            let $this = self;
            $wrap($op, $inner.$name($($arg),*))
        }
    )*};
}
pub(crate) use wrap_stream_api;

impl<T: StreamApi> StreamApi for std::sync::Arc<T> {
    wrap_stream_api!(|arc| **arc, |_, call| call);
}
