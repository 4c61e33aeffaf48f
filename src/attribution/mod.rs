//! Who made a change, beyond what the item says: the IAM principal of the
//! CloudTrail data event behind each audit entry.
//!
//! Streams records carry values but no caller; CloudTrail data events carry
//! the caller but no values. This module joins them: [`cloudtrail`] parses
//! the log files a trail delivers to S3, [`matcher`] pairs each write with its
//! entry (table, key, kind of write, time), and [`reader`] is the daemon task
//! that reads new log files, checkpoints its position and writes one
//! write-once attribution record per matched entry.

pub use crate::entry::{Confidence, Principal};

pub mod cloudtrail;
pub mod matcher;

pub mod dynamo;
pub mod reader;
pub mod s3;

/// An [`AuditStore`](crate::store::AuditStore) that tells the CloudTrail
/// reader about every entry it writes, so that entries whose event never
/// comes can be counted. Everything else passes through.
#[derive(Clone, Debug)]
pub struct Watched<A> {
    inner: A,
    tx: Option<tokio::sync::mpsc::Sender<reader::WrittenEntry>>,
}

impl<A> Watched<A> {
    /// `tx: None`: no reader, nothing told.
    pub fn new(inner: A, tx: Option<tokio::sync::mpsc::Sender<reader::WrittenEntry>>) -> Self {
        Watched { inner, tx }
    }

    /// Passes a put's result through, telling the reader of an entry this
    /// write stored (not of one already there).
    fn tell(
        &self,
        entry: &crate::entry::AuditEntry,
        put: crate::store::StoreResult<crate::store::PutOutcome>,
    ) -> crate::store::StoreResult<crate::store::PutOutcome> {
        if let (Some(tx), Ok(crate::store::PutOutcome::Written)) = (&self.tx, &put) {
            // Counting is best effort: a full channel must never slow the
            // audit path down.
            let _ = tx.try_send(reader::WrittenEntry {
                table: entry.table.clone(),
                sk: dynamo::sort_key_of(&entry.stream_arn, &entry.sequence_number),
                event_time: entry.event_time.as_deref().and_then(|t| {
                    chrono::DateTime::parse_from_rfc3339(t)
                        .ok()
                        .map(|t| t.with_timezone(&chrono::Utc))
                }),
            });
        }
        put
    }
}

impl<A: crate::store::AuditStore> crate::store::AuditStore for Watched<A> {
    async fn put_entry(
        &self,
        entry: &crate::entry::AuditEntry,
    ) -> crate::store::StoreResult<crate::store::PutOutcome> {
        self.tell(entry, self.inner.put_entry(entry).await)
    }

    async fn put_linked_entry(
        &self,
        entry: &crate::entry::AuditEntry,
        link: &crate::proof::Link,
    ) -> crate::store::StoreResult<crate::store::PutOutcome> {
        self.tell(entry, self.inner.put_linked_entry(entry, link).await)
    }

    async fn put_linked_gap(
        &self,
        gap: &crate::entry::Gap,
        link: &crate::proof::Link,
    ) -> crate::store::StoreResult<crate::store::PutOutcome> {
        self.inner.put_linked_gap(gap, link).await
    }

    async fn gap_link(
        &self,
        gap: &crate::entry::Gap,
    ) -> crate::store::StoreResult<Option<crate::proof::Link>> {
        self.inner.gap_link(gap).await
    }

    async fn history(
        &self,
        table: &str,
        key: &crate::value::Item,
    ) -> crate::store::StoreResult<Vec<crate::entry::AuditEntry>> {
        self.inner.history(table, key).await
    }

    async fn put_gap(
        &self,
        gap: &crate::entry::Gap,
    ) -> crate::store::StoreResult<crate::store::PutOutcome> {
        self.inner.put_gap(gap).await
    }

    async fn gaps(&self) -> crate::store::StoreResult<Vec<crate::entry::Gap>> {
        self.inner.gaps().await
    }

    async fn item_predecessor(
        &self,
        table: &str,
        key: &crate::value::Item,
        before_sort_key: &str,
    ) -> crate::store::StoreResult<Option<crate::store::ItemPredecessor>> {
        self.inner
            .item_predecessor(table, key, before_sort_key)
            .await
    }
}

/// Starts the CloudTrail reader when `[attribution.cloudtrail]` is set (as
/// its own task, stopping with its `stop` token), and gives the audit store
/// the daemon writes through: it tells the reader of every entry written.
pub fn start(
    config: &crate::config::Config,
    sdk: &aws_config::SdkConfig,
    store: &crate::store::dynamo::DynamoStore,
    retry: crate::retry::RetryPolicy,
) -> (
    Watched<crate::store::dynamo::DynamoStore>,
    Option<CloudTrailTask>,
) {
    let Some(ct) = &config.attribution.cloudtrail else {
        return (Watched::new(store.clone(), None), None);
    };
    let (tx, rx) = tokio::sync::mpsc::channel(10_000);
    let mut reader_settings = reader::ReaderSettings::new(
        ct,
        &config.exact_tables(),
        sdk.region().map(|r| r.to_string()),
        retry,
    );
    reader_settings.selection = config.selection().ok().filter(|s| s.needs_listing());
    // Tables a pattern finds get their series as they are counted.
    let stats = std::sync::Arc::new(reader::Stats::new(&config.exact_tables()));
    let reader = reader::Reader::new(
        s3::S3Logs::new(sdk, &ct.bucket),
        store.clone(),
        reader_settings,
        stats.clone(),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    // Idle until the daemon says this replica holds the reader's lease.
    let (turn, my_turn) = tokio::sync::watch::channel(false);
    let reader = reader.taking_turns(my_turn);
    let handle = tokio::spawn(reader.run(stop.clone(), Some(rx)));
    (
        Watched::new(store.clone(), Some(tx)),
        Some(CloudTrailTask {
            handle,
            stats,
            stop,
            turn: std::sync::Arc::new(turn),
        }),
    )
}

/// The running reader: await `handle` at shutdown; `stats` for metrics
/// (attributed / ambiguous / unmatched per table, the reader's lag).
pub struct CloudTrailTask {
    pub handle: tokio::task::JoinHandle<()>,
    pub stats: std::sync::Arc<reader::Stats>,
    /// Stops the reader; `daemon::run` cancels it when the daemon stops.
    pub stop: tokio_util::sync::CancellationToken,
    /// Whether this replica reads CloudTrail now: set by `daemon::run`
    /// from the reader's lease (one replica at a time).
    pub turn: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}
