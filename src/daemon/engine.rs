//! What every task of the daemon shares: the three seams, the settings, the
//! process-wide DescribeStream pacer, and the two shutdown tokens.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, Polling};
pub use crate::observe::health::{Health, TableState};
use crate::pace::Pacer;
use crate::retry::RetryPolicy;
use crate::store::{AuditStore, CheckpointStore, StoreError};
use crate::stream::{StreamApi, StreamError};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub actor_attribute: Option<String>,
    /// `[attribution] correlation_attribute`: copied into each entry's `correlation`.
    pub correlation_attribute: Option<String>,
    pub polling: Polling,
    /// Fixes retry jitter (tests that replay a seed); `None` in production.
    pub jitter_seed: Option<u64>,
    /// `[redaction]`, with its key read: applied to every entry before it
    /// is chained and written. Empty unless the caller loads it
    /// ([`crate::redact::Redactions::from_config`] reads a file and can fail).
    pub redactions: crate::redact::Redactions,
    /// `[discovery] home_region`: where a Global Table is audited.
    pub home_region: Option<String>,
    /// `[proof] item_cache_entries`: the item chain's cache, in items.
    pub item_cache_entries: ItemCacheEntries,
}

/// The item chain cache's capacity in items; its default is the config's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemCacheEntries(pub usize);

impl Default for ItemCacheEntries {
    fn default() -> Self {
        ItemCacheEntries(crate::config::DEFAULT_ITEM_CACHE_ENTRIES)
    }
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Settings {
            actor_attribute: config.attribution.actor_attribute.clone(),
            correlation_attribute: config.attribution.correlation_attribute.clone(),
            polling: config.polling.clone(),
            jitter_seed: None,
            redactions: crate::redact::Redactions::default(),
            home_region: config.discovery.home_region.clone(),
            item_cache_entries: ItemCacheEntries(config.proof.item_cache_entries),
        }
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            jitter_seed: self.jitter_seed,
            ..RetryPolicy::new(self.polling.retry_min(), self.polling.retry_max())
        }
    }
}

pub struct Engine<S, C, A> {
    pub stream: S,
    pub checkpoints: C,
    pub audit: A,
    pub settings: Settings,
    /// DescribeStream is limited per account and region, not per stream.
    pub describe_pacer: Pacer,
    /// Whether each configured table is being audited, and why not.
    pub health: Health,
    /// Every table read since the start (found by a pattern included): the
    /// digest task signs where each one's trail ends.
    pub read_tables: TableSet,
    /// Each recently changed item's newest entry, for the item chain.
    pub items: crate::daemon::itemchain::ItemChains,
}

/// A set of table names shared between tasks (the supervisor adds, the
/// digest task reads).
#[derive(Clone, Debug, Default)]
pub struct TableSet(std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>);

impl TableSet {
    pub fn new(tables: impl IntoIterator<Item = String>) -> Self {
        let set = TableSet::default();
        for t in tables {
            set.insert(&t);
        }
        set
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn insert(&self, table: &str) {
        let mut set = self.lock();
        if !set.contains(table) {
            set.insert(table.to_string());
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }
}

impl<S: StreamApi, C: CheckpointStore, A: AuditStore> Engine<S, C, A> {
    pub fn new(stream: S, checkpoints: C, audit: A, settings: Settings) -> Self {
        let describe_pacer = Pacer::per_second(settings.polling.describe_stream_per_sec);
        Engine {
            stream,
            checkpoints,
            audit,
            describe_pacer,
            health: Health::default(),
            read_tables: TableSet::default(),
            items: crate::daemon::itemchain::ItemChains::new(settings.item_cache_entries.0),
            settings,
        }
    }
}

/// Graceful shutdown in two steps: `stop` ends polling (in-flight pages are
/// still written and checkpointed); `abort`, after the grace period, ends
/// even that. Whatever was not checkpointed is read again at the next start
/// and deduplicated by the write-once store.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    pub stop: CancellationToken,
    pub abort: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops polling now, and aborts in-flight writes after `grace`.
    pub fn begin(&self, grace: Duration) {
        self.stop.cancel();
        let abort = self.abort.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            abort.cancel();
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "table `{table}` does not exist: check `tables` in the config, and AWS_REGION / AWS_ENDPOINT_URL"
    )]
    TableNotFound { table: String },
    #[error(
        "table `{table}` has no stream enabled; ddb-audit needs one with view type NEW_AND_OLD_IMAGES: \
         aws dynamodb update-table --table-name {table} \
         --stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES"
    )]
    NoStream { table: String },
    #[error(
        "table `{table}` has a stream with view type {view_type}; ddb-audit needs NEW_AND_OLD_IMAGES \
         to record old and new values. The view type cannot be changed in place: disable the stream, \
         then enable it with StreamViewType=NEW_AND_OLD_IMAGES: \
         aws dynamodb update-table --table-name {table} --stream-specification StreamEnabled=false \
         && aws dynamodb update-table --table-name {table} \
         --stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES"
    )]
    WrongViewType { table: String, view_type: String },
    #[error(
        "table `{table}`: access denied: {message}; the daemon's role needs dynamodb:DescribeTable \
         on the table and dynamodb:ListStreams, DescribeStream, GetShardIterator and GetRecords on \
         its streams (the DaemonPolicy of infra/cloudformation grants them); check with \
         aws dynamodb describe-table --table-name {table}"
    )]
    AccessDenied { table: String, message: String },
    #[error("table `{table}`: {source}")]
    Stream {
        table: String,
        #[source]
        source: StreamError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} tables cannot be audited:\n  {1}")]
    Several(usize, String),
    #[error("table `{table}`: cannot be audited: {reason}")]
    Unauditable { table: String, reason: String },
    #[error(
        "audited in {home}: a Global Table is audited in one region only, its home \
         (`[discovery] home_region`, else the replica region that sorts first), since every \
         replica's stream carries every write"
    )]
    Elsewhere { home: String },
}
