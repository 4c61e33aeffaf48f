//! The CloudTrail reader: a task of `run` that lists the trail's bucket for
//! new log files, in key order, parses each, matches its writes to audit
//! entries and writes one attribution record per matched entry.
//!
//! Position: after each log file, the last key read and the writes still
//! waiting for their entry are saved in the shards table (see
//! [`super::dynamo`]), so a restart lists from there: it neither reads a
//! file again nor skips one. A log file delivered twice, or an event that
//! appears in two files, changes nothing: a write whose event id is already
//! recorded for its item is dropped, and attribution records are write-once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::cloudtrail::{parse_log_for, ItemWrite};
use super::matcher::{match_item, Candidate};
use super::Confidence;
pub use crate::observe::attribution::{Stats, TableCounts};
use crate::retry::{retry, Retried, RetryPolicy, Transient};
pub use crate::store::attribution::{apply, AttributionRecord};
use crate::store::{PutOutcome, StoreError};
use crate::value::{AttrValue, Item};

/// At most this many log files per listing (one S3 ListObjectsV2 page); the
/// next poll goes on from there.
pub const LIST_PAGE: usize = 1000;
/// Writes waiting for their entry, at most (a stream far behind its trail);
/// the oldest beyond this are given up and counted as unmatched.
const MAX_PENDING: usize = 5000;
/// Entries watched for an event at most (about 20 MB); beyond, new entries
/// are not counted as unmatched if their event never comes.
const MAX_WATCHED: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum AttributionError {
    /// Throttling, 5xx, timeouts: retry.
    #[error("transient error: {0}")]
    Transient(String),
    #[error("{0}")]
    Other(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Transient for AttributionError {
    fn is_transient(&self) -> bool {
        match self {
            AttributionError::Transient(_) => true,
            AttributionError::Store(e) => e.is_retryable(),
            AttributionError::Other(_) => false,
        }
    }
}

pub type AttributionResult<T> = Result<T, AttributionError>;

/// Where the trail's log files are (S3 in production).
pub trait LogSource: Send + Sync + 'static {
    /// Keys under `prefix` that sort after `start_after`, ascending, at
    /// most [`LIST_PAGE`].
    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> impl Future<Output = AttributionResult<Vec<String>>> + Send;
    /// One object's bytes.
    fn get(&self, key: &str) -> impl Future<Output = AttributionResult<Vec<u8>>> + Send;
}

/// The type of a key attribute (`S`, `N` or `B`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    S,
    N,
    B,
}

/// What the matcher needs of one item's stored trail.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ItemEntries {
    pub candidates: Vec<Candidate>,
    /// Event ids already used by the item's attribution records.
    pub event_ids: HashSet<String>,
    /// Each entry's own place in its item's chain, by sort key (entries
    /// written before entries were hashed have none).
    pub links: std::collections::HashMap<String, crate::store::ItemPredecessor>,
}

/// The reader's own state in the daemon's tables.
pub trait AttributionStore: Send + Sync + 'static {
    /// The audited table's key attributes and their types.
    fn key_schema(
        &self,
        table: &str,
    ) -> impl Future<Output = AttributionResult<Vec<(String, KeyType)>>> + Send;
    /// The item's entries from `since` on (at least), and its attributions.
    fn item_entries(
        &self,
        table: &str,
        key: &Item,
        since: DateTime<Utc>,
    ) -> impl Future<Output = AttributionResult<ItemEntries>> + Send;
    fn put_attribution(
        &self,
        table: &str,
        key: &Item,
        record: &AttributionRecord,
    ) -> impl Future<Output = AttributionResult<PutOutcome>> + Send;
    fn load_position(
        &self,
        source: &str,
    ) -> impl Future<Output = AttributionResult<Option<Position>>> + Send;
    fn save_position(
        &self,
        source: &str,
        position: &Position,
    ) -> impl Future<Output = AttributionResult<()>> + Send;
}

/// Where the reader is: the last log file read, and the writes read but not
/// yet matched (their entries not written yet).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub last_key: Option<String>,
    #[serde(default)]
    pub pending: Vec<ItemWrite>,
}

/// An entry just written, told to the reader so that it can count entries
/// whose event never came.
#[derive(Clone, Debug, PartialEq)]
pub struct WrittenEntry {
    pub table: String,
    pub sk: String,
    pub event_time: Option<DateTime<Utc>>,
}

/// The reader's settings, from `[attribution.cloudtrail]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ReaderSettings {
    /// Names the position row: `s3://<bucket>/<prefix>`.
    pub source: String,
    /// `<prefix>AWSLogs/`.
    pub list_prefix: String,
    /// Only files under `/CloudTrail/<region>/`.
    pub region: Option<String>,
    pub tables: Vec<String>,
    /// The config's selection, when `tables` has patterns: the writes to
    /// the tables it finds are joined too.
    pub selection: Option<crate::selection::TableSelection>,
    pub poll_interval: Duration,
    pub delivery_window: Duration,
    pub tolerance: Duration,
    pub retry: RetryPolicy,
}

impl ReaderSettings {
    pub fn new(
        ct: &crate::config::CloudTrail,
        tables: &[String],
        region: Option<String>,
        retry: RetryPolicy,
    ) -> Self {
        let prefix = match ct.prefix.trim_end_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        ReaderSettings {
            source: format!("s3://{}/{prefix}", ct.bucket),
            list_prefix: format!("{prefix}AWSLogs/"),
            region: ct.region.clone().or(region),
            tables: tables.to_vec(),
            selection: None,
            poll_interval: Duration::from_secs(ct.poll_interval_secs),
            delivery_window: Duration::from_secs(ct.delivery_window_secs),
            tolerance: Duration::from_secs(ct.match_tolerance_secs),
            retry,
        }
    }
}

pub struct Reader<L, S> {
    logs: L,
    store: S,
    settings: ReaderSettings,
    stats: Arc<Stats>,
    schemas: HashMap<String, Vec<(String, KeyType)>>,
    /// Entries written by this process and not yet attributed: deadline.
    watch: HashMap<(String, String), DateTime<Utc>>,
    /// With several replicas, only the one holding the reader's lease
    /// reads the logs: whether it is this one (`None`: always).
    turn: Option<tokio::sync::watch::Receiver<bool>>,
}

impl<L: LogSource, S: AttributionStore> Reader<L, S> {
    pub fn new(logs: L, store: S, settings: ReaderSettings, stats: Arc<Stats>) -> Self {
        Reader {
            logs,
            store,
            settings,
            stats,
            schemas: HashMap::new(),
            watch: HashMap::new(),
            turn: None,
        }
    }

    /// Reads the logs only while `turn` says so (the replica holding the
    /// reader's lease); idle otherwise, and from the stored position again
    /// when its turn comes back.
    pub fn taking_turns(mut self, turn: tokio::sync::watch::Receiver<bool>) -> Self {
        self.turn = Some(turn);
        self
    }

    fn my_turn(&self) -> bool {
        self.turn.as_ref().is_none_or(|t| *t.borrow())
    }

    /// Runs until `stop`: one poll, then a wait of `poll_interval`, and again.
    pub async fn run(
        mut self,
        stop: CancellationToken,
        mut entries: Option<mpsc::Receiver<WrittenEntry>>,
    ) {
        let source = self.settings.source.clone();
        info!(source = %source, "CloudTrail reader started");
        // Loaded when our turn begins: another replica may have moved it.
        let mut position: Option<Position> = None;
        let mut last_counts = self.stats.tables();
        loop {
            if let Some(rx) = entries.as_mut() {
                while let Ok(e) = rx.try_recv() {
                    self.watch_entry(e);
                }
            }
            if !self.my_turn() {
                if position.take().is_some() {
                    info!(source = %source, "another replica reads CloudTrail now");
                }
                self.watch.clear();
            } else {
                if position.is_none() {
                    match retry(
                        self.settings.retry,
                        &stop,
                        "loading the CloudTrail position",
                        || self.store.load_position(&source),
                    )
                    .await
                    {
                        Ok(p) => position = Some(p.unwrap_or_default()),
                        Err(Retried::Cancelled) => return,
                        Err(Retried::Failed(e)) => {
                            error!(source = %source, error = %e, "cannot load the CloudTrail reader's position; attribution is off");
                            return;
                        }
                    }
                }
                if let Some(position) = position.as_mut() {
                    match self.poll(position, &stop).await {
                        Ok(()) => {}
                        Err(Retried::Cancelled) => break,
                        Err(Retried::Failed(e)) => {
                            error!(source = %source, error = %e, "CloudTrail reader: poll failed; trying again at the next interval")
                        }
                    }
                }
            }
            self.expire_watch(Utc::now());
            let now_counts = self.stats.tables();
            if now_counts != last_counts {
                for (table, c) in &now_counts {
                    info!(
                        table = %table, attributed = c.attributed, ambiguous = c.ambiguous,
                        unmatched_entries = c.unmatched_entries, unmatched_events = c.unmatched_events,
                        unkeyed = c.unkeyed, lag_seconds = self.stats.lag_seconds(Utc::now()),
                        "CloudTrail attribution so far"
                    );
                }
                last_counts = now_counts;
            }
            // Between polls, keep taking the entries being written, so the
            // channel never fills up while the shard loops are busy.
            let wake = tokio::time::sleep(self.settings.poll_interval);
            tokio::pin!(wake);
            loop {
                let next = async {
                    match entries.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => {
                        info!(source = %source, "CloudTrail reader stopped");
                        return;
                    }
                    _ = &mut wake => break,
                    e = next => match e {
                        Some(e) => self.watch_entry(e),
                        None => entries = None,
                    },
                }
            }
        }
        info!(source = %source, "CloudTrail reader stopped");
    }

    fn watch_entry(&mut self, e: WrittenEntry) {
        // Counting unmatched entries is best effort; memory is bounded. Only
        // the replica reading CloudTrail counts (its own entries).
        if self.watch.len() < MAX_WATCHED && self.my_turn() {
            let deadline = e.event_time.unwrap_or_else(Utc::now) + window(&self.settings);
            self.watch.insert((e.table, e.sk), deadline);
        }
    }

    fn expire_watch(&mut self, now: DateTime<Utc>) {
        let expired: Vec<(String, String)> = self
            .watch
            .iter()
            .filter(|(_, deadline)| **deadline < now)
            .map(|(k, _)| k.clone())
            .collect();
        for (table, sk) in expired {
            self.watch.remove(&(table.clone(), sk.clone()));
            warn!(table = %table, entry = %sk, "no CloudTrail event for this entry within the delivery window: unattributed");
            self.stats.count(&table, |c| c.unmatched_entries += 1);
        }
    }

    /// Reads every new log file, and matches what is pending.
    pub async fn poll(
        &mut self,
        position: &mut Position,
        stop: &CancellationToken,
    ) -> Result<(), Retried<AttributionError>> {
        let policy = self.settings.retry;
        let prefix = self.settings.list_prefix.clone();
        let after = position.last_key.clone();
        let keys = retry(policy, stop, "listing CloudTrail log files", || {
            self.logs.list(&prefix, after.as_deref())
        })
        .await?;
        let listed = keys.len();
        let region = self.settings.region.clone();
        let wanted = |k: &str| {
            (k.ends_with(".json.gz") || k.ends_with(".json"))
                && k.contains("/CloudTrail/")
                && region
                    .as_ref()
                    .is_none_or(|r| k.contains(&format!("/CloudTrail/{r}/")))
        };
        let mut changed = false;
        for key in keys {
            if stop.is_cancelled() {
                return Err(Retried::Cancelled);
            }
            if wanted(&key) {
                let bytes = retry(policy, stop, "reading a CloudTrail log file", || {
                    self.logs.get(&key)
                })
                .await?;
                self.stats.file_read();
                let settings = &self.settings;
                let selected = |t: &str| {
                    settings.tables.iter().any(|c| c == t)
                        || settings
                            .selection
                            .as_ref()
                            .is_some_and(|s| s.name_matches(t))
                };
                match parse_log_for(&key, &bytes, &selected) {
                    Ok(parsed) => {
                        info!(
                            source = %self.settings.source, file = %key, writes = parsed.writes.len(),
                            unkeyed = parsed.unkeyed.values().sum::<usize>(), "CloudTrail log file read"
                        );
                        for (t, n) in &parsed.unkeyed {
                            self.stats.count(t, |c| c.unkeyed += *n as u64);
                        }
                        add_pending(&mut position.pending, parsed.writes);
                    }
                    Err(e) => {
                        self.stats.bad_file();
                        error!(source = %self.settings.source, error = %e, "skipping an unreadable CloudTrail log file");
                    }
                }
                self.settle(&mut position.pending, &key, stop).await?;
            }
            position.last_key = Some(key);
            self.save(position, stop).await?;
            changed = false;
        }
        if listed == 0 && !position.pending.is_empty() {
            let before = position.pending.len();
            let file = position.last_key.clone().unwrap_or_default();
            self.settle(&mut position.pending, &file, stop).await?;
            changed = position.pending.len() != before;
        }
        if changed {
            self.save(position, stop).await?;
        }
        if listed < LIST_PAGE {
            self.stats.caught_up(Utc::now());
        }
        Ok(())
    }

    async fn save(
        &self,
        position: &Position,
        stop: &CancellationToken,
    ) -> Result<(), Retried<AttributionError>> {
        let source = &self.settings.source;
        retry(
            self.settings.retry,
            stop,
            "saving the CloudTrail position",
            || self.store.save_position(source, position),
        )
        .await
    }

    /// Matches the pending writes that can be matched now; keeps the rest
    /// until their delivery window ends.
    async fn settle(
        &mut self,
        pending: &mut Vec<ItemWrite>,
        file: &str,
        stop: &CancellationToken,
    ) -> Result<(), Retried<AttributionError>> {
        let now = Utc::now();
        let mut groups: BTreeMap<(String, String), Vec<ItemWrite>> = BTreeMap::new();
        for w in pending.drain(..) {
            let id = serde_json::to_string(&w.key).unwrap_or_default();
            groups.entry((w.table.clone(), id)).or_default().push(w);
        }
        let tolerance = chrono::Duration::from_std(self.settings.tolerance)
            .unwrap_or_else(|_| chrono::Duration::seconds(2));
        for ((table, _), mut writes) in groups {
            let Some(key) = self.typed_key(&table, &writes[0], stop).await? else {
                self.stats
                    .count(&table, |c| c.unkeyed += writes.len() as u64);
                continue;
            };
            let since = writes.iter().map(|w| w.event_time).min().unwrap_or(now) - tolerance;
            let stored = retry(
                self.settings.retry,
                stop,
                "reading an item's entries",
                || self.store.item_entries(&table, &key, since),
            )
            .await?;
            // A duplicate delivery: its event is already used for this item.
            writes.retain(|w| {
                w.principal
                    .event_id
                    .as_ref()
                    .is_none_or(|id| !stored.event_ids.contains(id))
            });
            let matched = match_item(&writes, &stored.candidates, tolerance);
            for d in &matched.decisions {
                let record = AttributionRecord {
                    entry_sk: d.sk.clone(),
                    principal: d.principal.clone(),
                    event_ids: d
                        .writes
                        .iter()
                        .filter_map(|&i| writes[i].principal.event_id.clone())
                        .collect(),
                    entry_time: stored
                        .candidates
                        .iter()
                        .find(|c| c.sk == d.sk)
                        .and_then(|c| c.time),
                    log_file: file.to_string(),
                    matched_at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
                    entry_link: stored.links.get(&d.sk).cloned(),
                };
                let outcome = retry(self.settings.retry, stop, "writing an attribution", || {
                    self.store.put_attribution(&table, &key, &record)
                })
                .await?;
                self.watch.remove(&(table.clone(), d.sk.clone()));
                if outcome == PutOutcome::Written {
                    if d.principal.confidence == Confidence::Ambiguous {
                        warn!(
                            table = %table, entry = %d.sk, candidates = ?d.principal.candidates,
                            "ambiguous CloudTrail match: several principals wrote this item in one second"
                        );
                        self.stats.count(&table, |c| c.ambiguous += 1);
                    } else {
                        info!(
                            table = %table, entry = %d.sk, principal = ?d.principal.arn,
                            confidence = d.principal.confidence.as_str(), "entry attributed"
                        );
                        self.stats.count(&table, |c| c.attributed += 1);
                    }
                }
            }
            let window = window(&self.settings);
            for i in matched.pending {
                let w = writes[i].clone();
                if w.event_time + window < now {
                    warn!(
                        table = %table, event_id = ?w.principal.event_id,
                        "CloudTrail write whose entry never appeared within the delivery window: dropped"
                    );
                    self.stats.count(&table, |c| c.unmatched_events += 1);
                } else {
                    pending.push(w);
                }
            }
        }
        if pending.len() > MAX_PENDING {
            pending.sort_by_key(|w| w.event_time);
            let over = pending.len() - MAX_PENDING;
            for w in pending.drain(..over) {
                self.stats.count(&w.table, |c| c.unmatched_events += 1);
            }
            warn!(
                dropped = over,
                "too many CloudTrail writes waiting for their entries; dropped the oldest"
            );
        }
        Ok(())
    }

    /// The typed key of a write, from the table's key schema; `None` when
    /// the logged key does not fit it.
    async fn typed_key(
        &mut self,
        table: &str,
        write: &ItemWrite,
        stop: &CancellationToken,
    ) -> Result<Option<Item>, Retried<AttributionError>> {
        if !self.schemas.contains_key(table) {
            let schema = retry(
                self.settings.retry,
                stop,
                "reading a table's key schema",
                || self.store.key_schema(table),
            )
            .await?;
            self.schemas.insert(table.to_string(), schema);
        }
        let schema = &self.schemas[table];
        Ok(typed_key(schema, &write.key))
    }
}

fn window(settings: &ReaderSettings) -> chrono::Duration {
    chrono::Duration::from_std(settings.delivery_window)
        .unwrap_or_else(|_| chrono::Duration::minutes(20))
}

/// Adds newly read writes, dropping any already pending (one event delivered
/// in two files).
fn add_pending(pending: &mut Vec<ItemWrite>, writes: Vec<ItemWrite>) {
    let seen = |p: &[ItemWrite], w: &ItemWrite| {
        w.principal.event_id.is_some()
            && p.iter().any(|x| {
                x.principal.event_id == w.principal.event_id && x.table == w.table && x.key == w.key
            })
    };
    for w in writes {
        if !seen(pending, &w) {
            pending.push(w);
        }
    }
}

/// CloudTrail logs key values untyped; the table's schema types them.
pub fn typed_key(
    schema: &[(String, KeyType)],
    key: &BTreeMap<String, serde_json::Value>,
) -> Option<Item> {
    if schema.len() != key.len() {
        return None;
    }
    let mut item = Item::new();
    for (name, kind) in schema {
        let text = match key.get(name)? {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let value = match kind {
            KeyType::S => AttrValue::S(text),
            KeyType::N if crate::value::is_decimal(&text) => AttrValue::N(text),
            KeyType::N => return None,
            KeyType::B => AttrValue::B(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()?,
            ),
        };
        item.insert(name.clone(), value);
    }
    Some(item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{ActorSource, AuditEntry, Principal};
    use serde_json::json;
    use std::sync::Mutex;

    /// Log files in memory.
    #[derive(Default)]
    struct Files(Mutex<BTreeMap<String, Vec<u8>>>);

    impl LogSource for Files {
        async fn list(&self, prefix: &str, after: Option<&str>) -> AttributionResult<Vec<String>> {
            let files = self.0.lock().unwrap();
            Ok(files
                .keys()
                .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
                .take(LIST_PAGE)
                .cloned()
                .collect())
        }
        async fn get(&self, key: &str) -> AttributionResult<Vec<u8>> {
            Ok(self.0.lock().unwrap()[key].clone())
        }
    }

    /// One item's entries and the attribution records written.
    #[derive(Default)]
    struct Trail {
        entries: Mutex<Vec<Candidate>>,
        records: Mutex<Vec<AttributionRecord>>,
        position: Mutex<Option<Position>>,
    }

    impl AttributionStore for Trail {
        async fn key_schema(&self, _: &str) -> AttributionResult<Vec<(String, KeyType)>> {
            Ok(vec![("pk".into(), KeyType::S)])
        }
        async fn item_entries(
            &self,
            _: &str,
            _: &Item,
            _: DateTime<Utc>,
        ) -> AttributionResult<ItemEntries> {
            let records = self.records.lock().unwrap();
            let mut candidates = self.entries.lock().unwrap().clone();
            for c in &mut candidates {
                c.attributed = records.iter().any(|r| r.entry_sk == c.sk);
            }
            Ok(ItemEntries {
                candidates,
                event_ids: records.iter().flat_map(|r| r.event_ids.clone()).collect(),
                ..Default::default()
            })
        }
        async fn put_attribution(
            &self,
            _: &str,
            _: &Item,
            record: &AttributionRecord,
        ) -> AttributionResult<PutOutcome> {
            let mut records = self.records.lock().unwrap();
            if records.iter().any(|r| r.entry_sk == record.entry_sk) {
                return Ok(PutOutcome::AlreadyPresent);
            }
            records.push(record.clone());
            Ok(PutOutcome::Written)
        }
        async fn load_position(&self, _: &str) -> AttributionResult<Option<Position>> {
            Ok(self.position.lock().unwrap().clone())
        }
        async fn save_position(&self, _: &str, p: &Position) -> AttributionResult<()> {
            *self.position.lock().unwrap() = Some(p.clone());
            Ok(())
        }
    }

    fn log_file(events: &[(&str, &str, DateTime<Utc>)]) -> Vec<u8> {
        let records: Vec<serde_json::Value> = events
            .iter()
            .map(|(id, arn, t)| {
                json!({
                    "userIdentity": {"type": "AssumedRole", "arn": arn},
                    "eventTime": t.to_rfc3339_opts(SecondsFormat::Secs, true),
                    "eventSource": "dynamodb.amazonaws.com",
                    "eventName": "DeleteItem",
                    "requestParameters": {"tableName": "t", "key": {"pk": "u1"}},
                    "requestID": format!("r-{id}"),
                    "eventID": id,
                })
            })
            .collect();
        serde_json::to_vec(&json!({ "Records": records })).unwrap()
    }

    fn reader(window_secs: u64) -> Reader<Files, Trail> {
        let ct = crate::config::CloudTrail {
            bucket: "b".into(),
            delivery_window_secs: window_secs,
            ..Default::default()
        };
        let settings = ReaderSettings::new(
            &ct,
            &["t".to_string()],
            Some("us-east-1".into()),
            RetryPolicy::new(Duration::from_millis(1), Duration::from_millis(2)),
        );
        Reader::new(
            Files::default(),
            Trail::default(),
            settings,
            Arc::new(Stats::new(&["t".to_string()])),
        )
    }

    const DIR: &str = "AWSLogs/1/CloudTrail/us-east-1/2026/11/23/";

    #[tokio::test]
    async fn an_event_waits_for_its_entry_then_matches_and_files_are_read_once() {
        let mut r = reader(1200);
        let now = chrono::Timelike::with_nanosecond(&Utc::now(), 0).unwrap();
        let a = format!("{DIR}1_CloudTrail_us-east-1_20261123T1905Z_a.json.gz");
        let other_region = "AWSLogs/1/CloudTrail/eu-west-1/2026/11/23/x.json.gz".to_string();
        for key in [&a, &other_region] {
            r.logs
                .0
                .lock()
                .unwrap()
                .insert(key.clone(), log_file(&[("e1", "arn:x", now)]));
        }
        let stop = CancellationToken::new();
        let mut pos = Position::default();
        r.poll(&mut pos, &stop).await.unwrap();
        // Read (one file of this region), but its entry is not written yet.
        assert_eq!(r.stats.files_read(), 1);
        assert_eq!(pos.pending.len(), 1);
        assert_eq!(
            pos.last_key.as_deref(),
            Some(other_region.as_str()).max(Some(a.as_str()))
        );
        assert_eq!(r.store.position.lock().unwrap().as_ref(), Some(&pos));
        r.store.entries.lock().unwrap().push(Candidate {
            sk: "s1".into(),
            event: "REMOVE".into(),
            time: Some(now),
            attributed: false,
        });
        r.poll(&mut pos, &stop).await.unwrap();
        assert_eq!(r.stats.files_read(), 1, "no file read twice");
        assert!(pos.pending.is_empty());
        let records = r.store.records.lock().unwrap().clone();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].principal.arn.as_deref(), Some("arn:x"));
        assert_eq!(records[0].event_ids, ["e1"]);
        assert_eq!(r.stats.tables()["t"].attributed, 1);
        // The same event in a later file: nothing new.
        let b = format!("{DIR}1_CloudTrail_us-east-1_20261123T1910Z_b.json.gz");
        r.logs
            .0
            .lock()
            .unwrap()
            .insert(b, log_file(&[("e1", "arn:x", now)]));
        r.poll(&mut pos, &stop).await.unwrap();
        assert_eq!(r.store.records.lock().unwrap().len(), 1);
        assert!(pos.pending.is_empty());
    }

    #[tokio::test]
    async fn writes_without_entries_are_given_up_after_the_window_and_bad_files_skipped() {
        let mut r = reader(60);
        let old = Utc::now() - chrono::Duration::minutes(5);
        let a = format!("{DIR}a.json.gz");
        let bad = format!("{DIR}b.json.gz");
        r.logs
            .0
            .lock()
            .unwrap()
            .insert(a, log_file(&[("e1", "arn:x", old)]));
        r.logs
            .0
            .lock()
            .unwrap()
            .insert(bad.clone(), b"\x1f\x8bgarbage".to_vec());
        let mut pos = Position::default();
        r.poll(&mut pos, &CancellationToken::new()).await.unwrap();
        assert!(pos.pending.is_empty());
        assert_eq!(r.stats.tables()["t"].unmatched_events, 1);
        assert_eq!(r.stats.bad_files(), 1);
        assert_eq!(
            pos.last_key,
            Some(bad),
            "an unreadable file does not block the reader"
        );
        // Entries written by the daemon and never matched are counted once
        // their window ends.
        r.watch_entry(WrittenEntry {
            table: "t".into(),
            sk: "s9".into(),
            event_time: Some(old),
        });
        r.expire_watch(Utc::now());
        assert_eq!(r.stats.tables()["t"].unmatched_entries, 1);
        assert!(r.watch.is_empty());
    }

    #[test]
    fn keys_are_typed_by_the_table_schema() {
        let schema = vec![
            ("pk".to_string(), KeyType::S),
            ("n".to_string(), KeyType::N),
        ];
        let key: BTreeMap<String, serde_json::Value> =
            [("pk".to_string(), json!("u1")), ("n".to_string(), json!(7))].into();
        let item = typed_key(&schema, &key).unwrap();
        assert_eq!(item["pk"], AttrValue::S("u1".into()));
        assert_eq!(item["n"], AttrValue::N("7".into()));
        let bad: BTreeMap<String, serde_json::Value> = [
            ("pk".to_string(), json!("u1")),
            ("n".to_string(), json!("x")),
        ]
        .into();
        assert_eq!(typed_key(&schema, &bad), None);
        let short: BTreeMap<String, serde_json::Value> = [("pk".to_string(), json!("u1"))].into();
        assert_eq!(typed_key(&schema, &short), None);
    }

    #[test]
    fn applying_a_principal_makes_it_the_actor_unless_ambiguous() {
        let mut e: AuditEntry = serde_json::from_value(json!({
            "table": "t", "key": {"pk": {"S": "u1"}}, "event": "REMOVE",
            "sequence_number": "1", "shard_id": "s", "event_time": null,
            "actor": null, "actor_source": null, "last_writer": "bob", "changes": []
        }))
        .unwrap();
        let p = Principal {
            arn: Some("arn:aws:sts::1:assumed-role/X/s".into()),
            kind: Some("AssumedRole".into()),
            source_ip: None,
            user_agent: None,
            request_id: Some("r".into()),
            event_id: Some("e".into()),
            confidence: Confidence::High,
            candidates: vec![],
        };
        let mut amb = e.clone();
        apply(&mut e, &p);
        assert_eq!(e.actor.as_deref(), Some("arn:aws:sts::1:assumed-role/X/s"));
        assert_eq!(e.actor_source, Some(ActorSource::Cloudtrail));
        assert_eq!(e.item_actor, None, "a REMOVE had no actor to keep");
        let j = serde_json::to_value(&e).unwrap();
        assert!(j.get("item_actor").is_none());
        assert_eq!(
            j["principal"]["arn"],
            json!("arn:aws:sts::1:assumed-role/X/s")
        );
        assert_eq!(j["principal"]["type"], json!("AssumedRole"));
        assert_eq!(j["principal"]["confidence"], json!("high"));
        assert_eq!(j["last_writer"], json!("bob"));
        apply(
            &mut amb,
            &Principal {
                arn: None,
                confidence: Confidence::Ambiguous,
                candidates: vec!["a".into(), "b".into()],
                ..p
            },
        );
        assert_eq!((amb.actor, amb.actor_source), (None, None));
        assert_eq!(amb.principal.unwrap().confidence, Confidence::Ambiguous);
    }

    #[test]
    fn a_write_seen_twice_is_pending_once() {
        let w: ItemWrite = serde_json::from_value(json!({
            "table": "t", "key": {"pk": "u1"}, "kind": "Delete",
            "event_time": "2026-11-23T19:05:00Z",
            "principal": {"arn": "a", "type": null, "source_ip": null, "user_agent": null,
                          "request_id": null, "event_id": "e1", "confidence": "high"}
        }))
        .unwrap();
        let mut pending = vec![];
        add_pending(&mut pending, vec![w.clone()]);
        add_pending(&mut pending, vec![w]);
        assert_eq!(pending.len(), 1);
    }
}
