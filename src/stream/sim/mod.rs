//! An in-memory simulator of DynamoDB + DynamoDB Streams with real state:
//! tables and items, streams per enablement, shards with hash ranges that
//! rotate and split, retention, iterator expiry, throttling, and the brief
//! listing inconsistency. Behaviour follows `design/streams-facts.md`.
//!
//! The simulator is a *backend*, not a script: tests write items and move
//! tokio's (paused) clock; the consumer under test sees what the service would
//! show. It counts calls so tests and benchmarks can assert cost. Faults that
//! the service only produces by accident (5xx, latency) live in
//! [`super::faults::FaultStream`], which wraps this or the real client.
//!
//! All time is `tokio::time::Instant`, so `#[tokio::test(start_paused = true)]`
//! with `tokio::time::advance` drives retention, expiry, throttling and
//! automatic rotation deterministically. Randomness comes from one seeded
//! `StdRng`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::{
    DescribeStreamRequest, IteratorPosition, RecordsPage, Shard, StreamApi, StreamDescription,
    StreamError, StreamRecord, StreamResult, StreamStatus, StreamSummary, TableStream,
    UserIdentity, TTL_PRINCIPAL,
};
use crate::value::{AttrValue, Item};

/// GetRecords returns at most this many records per call.
pub const MAX_RECORDS_PER_CALL: usize = 1000;
/// GetRecords returns at most this many bytes (by `SizeBytes`) per call.
pub const MAX_BYTES_PER_CALL: i64 = 1024 * 1024;
/// DescribeStream returns at most this many shards per page.
pub const MAX_SHARDS_PER_PAGE: usize = 100;

/// How often listed shards are trimmed and expired ones swept out of the
/// listing order. The listing skips them anyway; the sweep bounds memory and
/// the work of skipping.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// First sequence number handed out: 21 digits, as the brief asks, so that
/// text comparison and numeric comparison agree only by accident.
const FIRST_SEQUENCE: u128 = 100_000_000_000_000_000_000;

/// `StreamViewType`: what a record carries besides the keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewType {
    KeysOnly,
    NewImage,
    OldImage,
    NewAndOldImages,
}

impl ViewType {
    /// The service's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ViewType::KeysOnly => "KEYS_ONLY",
            ViewType::NewImage => "NEW_IMAGE",
            ViewType::OldImage => "OLD_IMAGE",
            ViewType::NewAndOldImages => "NEW_AND_OLD_IMAGES",
        }
    }

    fn keeps_new(self) -> bool {
        matches!(self, ViewType::NewImage | ViewType::NewAndOldImages)
    }

    fn keeps_old(self) -> bool {
        matches!(self, ViewType::OldImage | ViewType::NewAndOldImages)
    }
}

/// Knobs of the simulated service. `Default` is the service as documented.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seeds every random choice (sequence gaps, shard ids, listing order,
    /// event ids), so a run is reproducible.
    pub seed: u64,
    /// Wall time at the moment the simulator is created; wall time advances
    /// with tokio's clock from there.
    pub base_wall: DateTime<Utc>,
    pub region: String,
    pub account: String,
    /// Records older than this are trimmed; closed shards older than this
    /// (since closing) disappear from listings.
    pub retention: Duration,
    /// Iterators expire this long after they were issued.
    pub iterator_ttl: Duration,
    /// LimitExceeded on too many GetRecords / DescribeStream calls per second.
    pub throttling: bool,
    pub get_records_per_shard_per_sec: usize,
    pub describe_stream_per_stream_per_sec: usize,
    /// For this many DescribeStream calls (on the same stream) after a shard
    /// closes, listings still show it open although its children are listed.
    pub stale_parent_describe_calls: u64,
    /// Close every open shard and open a successor this long after the shard
    /// opened (community-observed about every 4 h). `None`: only on request.
    pub auto_rotate: Option<Duration>,
    /// Open shards of a new stream, partitioning the key-hash space evenly.
    pub initial_shards: u32,
    /// GetRecords byte budget per call (by `SizeBytes`).
    pub max_bytes_per_call: i64,
    /// Keep every record ever written in the write log (the tests' oracle:
    /// `write_log`, `is_trimmed`). Off for long benchmark runs, whose
    /// memory would otherwise be the log's.
    pub keep_write_log: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            // 2026-11-23T00:00:00Z
            base_wall: DateTime::from_timestamp(1_795_392_000, 0).unwrap_or_default(),
            region: "us-east-1".to_string(),
            account: "000000000000".to_string(),
            retention: Duration::from_secs(24 * 3600),
            iterator_ttl: Duration::from_secs(15 * 60),
            throttling: true,
            get_records_per_shard_per_sec: 5,
            describe_stream_per_stream_per_sec: 10,
            stale_parent_describe_calls: 2,
            auto_rotate: None,
            initial_shards: 1,
            max_bytes_per_call: MAX_BYTES_PER_CALL,
            keep_write_log: true,
        }
    }
}

impl SimConfig {
    pub fn with_seed(seed: u64) -> Self {
        SimConfig {
            seed,
            ..SimConfig::default()
        }
    }
}

/// Calls made to the simulator, per operation. Every call is counted,
/// including ones that failed or were throttled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub describe_table: u64,
    pub list_streams: u64,
    /// All DescribeStream calls: full-listing pages plus child-filter calls.
    pub describe_stream: u64,
    /// DescribeStream calls without a shard filter (one per listing page).
    pub describe_stream_full_pages: u64,
    /// DescribeStream calls with `ShardFilter{CHILD_SHARDS}`.
    pub describe_stream_children: u64,
    pub get_shard_iterator: u64,
    pub get_records: u64,
    /// Successful GetRecords calls that returned no records.
    pub get_records_empty: u64,
    /// Records returned by all GetRecords calls.
    pub records_returned: u64,
    /// All throttled calls (GetRecords + DescribeStream).
    pub throttled: u64,
    pub throttled_get_records: u64,
    pub throttled_describe_stream: u64,
    /// GetRecords calls per shard id (shards never read are absent).
    pub get_records_per_shard: BTreeMap<String, u64>,
}

/// One record as the simulator wrote it, with where it went.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedRecord {
    pub stream_arn: String,
    pub shard_id: String,
    pub record: StreamRecord,
}

/// The simulated service. Cheap to clone: clones share state.
#[derive(Clone)]
pub struct SimStream {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("SimStream")
            .field("tables", &st.tables.len())
            .field("streams", &st.streams.len())
            .field("shards", &st.shard_index.len())
            .finish()
    }
}

impl Default for SimStream {
    fn default() -> Self {
        SimStream::new(SimConfig::default())
    }
}

// ---------------------------------------------------------------------------
// Internal state

#[derive(Default)]
struct Counters {
    describe_table: u64,
    list_streams: u64,
    describe_stream: u64,
    describe_stream_full_pages: u64,
    describe_stream_children: u64,
    get_shard_iterator: u64,
    get_records: u64,
    get_records_empty: u64,
    records_returned: u64,
    throttled_get_records: u64,
    throttled_describe_stream: u64,
}

struct Table {
    key_attrs: Vec<String>,
    /// Items by canonical key.
    items: HashMap<String, Item>,
    /// The latest stream of this table (enabled or not).
    current_stream: Option<usize>,
}

struct SimRecord {
    seq: u128,
    at: Instant,
    size: i64,
    record: StreamRecord,
}

struct ShardState {
    id: String,
    parent: Option<usize>,
    children: Vec<usize>,
    /// Inclusive range of key hashes this shard receives while open.
    range: (u64, u64),
    /// Position of the shard in its stream's (shuffled) listing order.
    order_key: u64,
    starting_seq: u128,
    ending_seq: Option<u128>,
    created_at: Instant,
    closed_at: Option<Instant>,
    /// Listings show the shard open while the stream's DescribeStream call
    /// count is at most this (the brief inconsistency after closing).
    stale_until_call: u64,
    records: VecDeque<SimRecord>,
    /// Absolute index of `records[0]`: everything before it was trimmed.
    /// Iterator positions are absolute, so trimming never shifts them.
    base: u64,
    last_trimmed_seq: Option<u128>,
    get_records_window: VecDeque<Instant>,
    get_records_calls: u64,
}

impl ShardState {
    fn end(&self) -> u64 {
        self.base + self.records.len() as u64
    }

    fn trim(&mut self, now: Instant, retention: Duration) {
        while let Some(front) = self.records.front() {
            if !older_than(front.at, retention, now) {
                break;
            }
            self.last_trimmed_seq = Some(front.seq);
            self.records.pop_front();
            self.base += 1;
        }
    }

    /// Closed long enough ago that all its records are trimmed: the service
    /// no longer lists it or hands out iterators for it.
    fn expired(&self, now: Instant, retention: Duration) -> bool {
        self.closed_at
            .is_some_and(|closed| older_than(closed, retention, now))
    }
}

struct StreamState {
    arn: String,
    label: String,
    table: String,
    view: ViewType,
    enabled: bool,
    disabled_at: Option<Instant>,
    shards: Vec<ShardState>,
    /// Open shards by the start of their hash range; their ranges partition
    /// the whole hash space, so every key has exactly one.
    open: BTreeMap<u64, usize>,
    /// (order key, shard index), sorted when `order_dirty` is false.
    order: Vec<(u64, usize)>,
    order_dirty: bool,
    salt: u64,
    describe_calls: u64,
    describe_window: VecDeque<Instant>,
}

impl StreamState {
    fn retained(&self, now: Instant, retention: Duration) -> bool {
        self.enabled
            || self
                .disabled_at
                .is_none_or(|at| !older_than(at, retention, now))
    }

    /// The shard as DescribeStream shows it on call number `call`.
    fn view_shard(&self, idx: usize, call: u64) -> Shard {
        let sh = &self.shards[idx];
        let shown_closed = sh.ending_seq.is_some() && call > sh.stale_until_call;
        Shard {
            shard_id: sh.id.clone(),
            parent_shard_id: sh.parent.map(|p| self.shards[p].id.clone()),
            starting_sequence_number: Some(sh.starting_seq.to_string()),
            ending_sequence_number: if shown_closed {
                sh.ending_seq.map(|s| s.to_string())
            } else {
                None
            },
        }
    }

    /// The shard as it really is.
    fn true_shard(&self, idx: usize) -> Shard {
        let sh = &self.shards[idx];
        Shard {
            shard_id: sh.id.clone(),
            parent_shard_id: sh.parent.map(|p| self.shards[p].id.clone()),
            starting_sequence_number: Some(sh.starting_seq.to_string()),
            ending_sequence_number: sh.ending_seq.map(|s| s.to_string()),
        }
    }
}

struct Logged {
    key: String,
    seq: u128,
    at: Instant,
    entry: LoggedRecord,
}

struct State {
    cfg: SimConfig,
    epoch: Instant,
    rng: StdRng,
    last_seq: u128,
    last_label_ms: i64,
    tables: HashMap<String, Table>,
    streams: Vec<StreamState>,
    streams_by_arn: HashMap<String, usize>,
    /// Streams by table name; kept after the table is deleted, since its
    /// streams stay readable until trimmed.
    streams_by_table: HashMap<String, Vec<usize>>,
    shard_index: HashMap<String, (usize, usize)>,
    logs: HashMap<String, Vec<Logged>>,
    counts: Counters,
    next_auto_rotate: Option<Instant>,
    next_prune: Instant,
}

/// `at` lies at least `age` before `now` (an overflowing `at + age` is never).
fn older_than(at: Instant, age: Duration, now: Instant) -> bool {
    at.checked_add(age).is_some_and(|t| t <= now)
}

fn not_found(what: impl fmt::Display) -> StreamError {
    StreamError::NotFound(what.to_string())
}

fn invalid(what: impl fmt::Display) -> StreamError {
    StreamError::Other(format!("ValidationException: {what}"))
}

// ---------------------------------------------------------------------------
// Keys, hashing, sizes

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64's finaliser: FNV's high bits are poorly mixed for short keys,
/// and shard ranges split on the high bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn key_hash(canon: &str) -> u64 {
    mix(fnv1a(canon.as_bytes()))
}

fn order_key(salt: u64, shard_id: &str) -> u64 {
    mix(salt ^ fnv1a(shard_id.as_bytes()))
}

fn canon_value(v: &AttrValue, out: &mut String) {
    use std::fmt::Write;
    // Length-prefixed so that no two different values share a form.
    let _ = match v {
        AttrValue::S(s) => write!(out, "S{}:{s}", s.len()),
        AttrValue::N(n) => write!(out, "N{}:{n}", n.len()),
        AttrValue::B(b) => {
            let _ = write!(out, "B{}:", b.len());
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
            Ok(())
        }
        AttrValue::Bool(b) => write!(out, "T{b}"),
        AttrValue::Null => write!(out, "0"),
        AttrValue::M(m) => {
            let _ = write!(out, "M{}{{", m.len());
            for (k, v) in m {
                let _ = write!(out, "{}:{k}=", k.len());
                canon_value(v, out);
            }
            write!(out, "}}")
        }
        AttrValue::L(l) => {
            let _ = write!(out, "L{}[", l.len());
            for v in l {
                canon_value(v, out);
            }
            write!(out, "]")
        }
        AttrValue::Ss(s) => write!(out, "SS{s:?}"),
        AttrValue::Ns(n) => write!(out, "NS{n:?}"),
        AttrValue::Bs(b) => write!(out, "BS{b:?}"),
        // A source table never holds one; kept distinct if it did.
        AttrValue::Redacted(c) => write!(out, "R{c:?}"),
    };
}

fn canon_key(key: &Item) -> String {
    let mut out = String::new();
    for (name, value) in key {
        out.push_str(&name.len().to_string());
        out.push(':');
        out.push_str(name);
        out.push('=');
        canon_value(value, &mut out);
        out.push(';');
    }
    out
}

/// Approximately DynamoDB's item size: names plus values.
fn value_size(v: &AttrValue) -> i64 {
    let len = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    match v {
        AttrValue::S(s) => len(s.len()),
        AttrValue::N(n) => len(n.len()).div_euclid(2) + 1,
        AttrValue::B(b) => len(b.len()),
        AttrValue::Bool(_) | AttrValue::Null => 1,
        AttrValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| len(k.len()) + value_size(v) + 1)
                .sum::<i64>()
        }
        AttrValue::L(l) => 3 + l.iter().map(|v| value_size(v) + 1).sum::<i64>(),
        AttrValue::Ss(s) => s.iter().map(|x| len(x.len())).sum(),
        AttrValue::Ns(n) => n.iter().map(|x| len(x.len()).div_euclid(2) + 1).sum(),
        AttrValue::Bs(b) => b.iter().map(|x| len(x.len())).sum(),
        AttrValue::Redacted(c) => len(c.len()),
    }
}

fn item_size(item: &Item) -> i64 {
    item.iter()
        .map(|(k, v)| i64::try_from(k.len()).unwrap_or(i64::MAX) + value_size(v))
        .sum()
}

fn key_of(key_attrs: &[String], item: &Item) -> StreamResult<Item> {
    key_attrs
        .iter()
        .map(|name| match item.get(name) {
            Some(v) => Ok((name.clone(), v.clone())),
            None => Err(invalid(format!("missing key attribute {name}"))),
        })
        .collect()
}

// Iterators are opaque to consumers; the simulator encodes where to read.
const ITERATOR_PREFIX: &str = "simitr-";

fn encode_iterator(stream: usize, shard: usize, pos: u64, issued_nanos: u64) -> String {
    format!("{ITERATOR_PREFIX}{stream}-{shard}-{pos}-{issued_nanos}")
}

fn decode_iterator(s: &str) -> Option<(usize, usize, u64, u64)> {
    let mut parts = s.strip_prefix(ITERATOR_PREFIX)?.split('-');
    let stream = parts.next()?.parse().ok()?;
    let shard = parts.next()?.parse().ok()?;
    let pos = parts.next()?.parse().ok()?;
    let issued = parts.next()?.parse().ok()?;
    parts
        .next()
        .is_none()
        .then_some((stream, shard, pos, issued))
}

/// Sliding one-second window: admits the call (and remembers it) unless
/// `limit` calls were admitted in the last second.
fn admit(window: &mut VecDeque<Instant>, now: Instant, limit: usize) -> bool {
    while window
        .front()
        .is_some_and(|&t| older_than(t, Duration::from_secs(1), now))
    {
        window.pop_front();
    }
    if window.len() >= limit {
        return false;
    }
    window.push_back(now);
    true
}

// ---------------------------------------------------------------------------
// State: time, topology, writes

impl State {
    fn elapsed(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.epoch)
    }

    fn wall_ms(&self, at: Instant) -> i64 {
        let ms = i64::try_from(self.elapsed(at).as_millis()).unwrap_or(i64::MAX);
        self.cfg.base_wall.timestamp_millis().saturating_add(ms)
    }

    fn wall(&self, at: Instant) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.wall_ms(at)).unwrap_or(self.cfg.base_wall)
    }

    /// Sequence numbers grow with random gaps: consumers must not assume
    /// consecutive numbers.
    fn alloc_seq(&mut self) -> u128 {
        self.last_seq += self.rng.random_range(1..=16u128);
        self.last_seq
    }

    /// Every entry point calls this first: it applies automatic rotation that
    /// fell due while the clock moved.
    fn tick(&mut self) -> Instant {
        let now = Instant::now();
        if self.next_auto_rotate.is_some_and(|due| due <= now) {
            self.auto_rotate(now);
        }
        if now >= self.next_prune {
            self.prune(now);
            self.next_prune = now + PRUNE_EVERY;
        }
        now
    }

    /// Trims every listed shard and drops the expired ones from the listing
    /// order, so that memory and the cost of a call follow the shards the
    /// service still holds, not every shard the stream ever had. (A closed
    /// shard nobody reads would otherwise keep its records forever.)
    fn prune(&mut self, now: Instant) {
        let retention = self.cfg.retention;
        for stream in &mut self.streams {
            let StreamState { order, shards, .. } = stream;
            order.retain(|&(_, i)| {
                let sh = &mut shards[i];
                sh.trim(now, retention);
                let keep = !sh.expired(now, retention);
                if !keep {
                    sh.records = VecDeque::new();
                    sh.get_records_window = VecDeque::new();
                }
                keep
            });
        }
    }

    fn auto_rotate(&mut self, now: Instant) {
        let Some(period) = self.cfg.auto_rotate.filter(|p| !p.is_zero()) else {
            self.next_auto_rotate = None;
            return;
        };
        let mut next: Option<Instant> = None;
        for s in 0..self.streams.len() {
            if !self.streams[s].enabled {
                continue;
            }
            let open: Vec<usize> = self.streams[s].open.values().copied().collect();
            for mut idx in open {
                // Catch up on every period that passed, so a long `advance`
                // leaves the chain of successors the service would have made.
                while let Some(due) = self.streams[s].shards[idx].created_at.checked_add(period) {
                    if due > now {
                        next = Some(next.map_or(due, |n| n.min(due)));
                        break;
                    }
                    idx = self.rotate_at(s, idx, due);
                }
            }
        }
        self.next_auto_rotate = next;
    }

    fn schedule_auto_rotate(&mut self, opened_at: Instant) {
        if let Some(due) = self
            .cfg
            .auto_rotate
            .filter(|p| !p.is_zero())
            .and_then(|p| opened_at.checked_add(p))
        {
            self.next_auto_rotate = Some(self.next_auto_rotate.map_or(due, |n| n.min(due)));
        }
    }

    fn new_shard_id(&mut self, at: Instant) -> String {
        let ms = self.wall_ms(at).max(0);
        loop {
            let id = format!("shardId-{ms:020}-{:08x}", self.rng.random::<u32>());
            if !self.shard_index.contains_key(&id) {
                return id;
            }
        }
    }

    fn open_shard(
        &mut self,
        s: usize,
        parent: Option<usize>,
        range: (u64, u64),
        at: Instant,
    ) -> usize {
        let id = self.new_shard_id(at);
        let starting_seq = self.alloc_seq();
        let stream = &mut self.streams[s];
        let idx = stream.shards.len();
        let key = order_key(stream.salt, &id);
        stream.shards.push(ShardState {
            id: id.clone(),
            parent,
            children: Vec::new(),
            range,
            order_key: key,
            starting_seq,
            ending_seq: None,
            created_at: at,
            closed_at: None,
            stale_until_call: 0,
            records: VecDeque::new(),
            base: 0,
            last_trimmed_seq: None,
            get_records_window: VecDeque::new(),
            get_records_calls: 0,
        });
        stream.open.insert(range.0, idx);
        stream.order.push((key, idx));
        stream.order_dirty = true;
        if let Some(p) = parent {
            stream.shards[p].children.push(idx);
        }
        self.shard_index.insert(id, (s, idx));
        self.schedule_auto_rotate(at);
        idx
    }

    fn close_shard(&mut self, s: usize, idx: usize, at: Instant) {
        let ending = self.alloc_seq();
        let stale = self.cfg.stale_parent_describe_calls;
        let stream = &mut self.streams[s];
        let calls = stream.describe_calls;
        let sh = &mut stream.shards[idx];
        sh.ending_seq = Some(ending);
        sh.closed_at = Some(at);
        sh.stale_until_call = calls.saturating_add(stale);
        let start = sh.range.0;
        stream.open.remove(&start);
    }

    /// Close + one successor over the same range; returns the successor.
    fn rotate_at(&mut self, s: usize, idx: usize, at: Instant) -> usize {
        let range = self.streams[s].shards[idx].range;
        self.close_shard(s, idx, at);
        self.open_shard(s, Some(idx), range, at)
    }

    /// Close + two children halving the range; `None` if it can't be halved.
    fn split_at(&mut self, s: usize, idx: usize, at: Instant) -> Option<(usize, usize)> {
        let (lo, hi) = self.streams[s].shards[idx].range;
        if hi <= lo {
            return None;
        }
        let mid = lo + (hi - lo) / 2;
        self.close_shard(s, idx, at);
        let a = self.open_shard(s, Some(idx), (lo, mid), at);
        let b = self.open_shard(s, Some(idx), (mid + 1, hi), at);
        Some((a, b))
    }

    fn open_shard_of(&self, shard_id: &str) -> StreamResult<(usize, usize)> {
        let &(s, idx) = self
            .shard_index
            .get(shard_id)
            .ok_or_else(|| not_found(format!("shard {shard_id}")))?;
        if self.streams[s].shards[idx].ending_seq.is_some() {
            return Err(invalid(format!("shard {shard_id} is closed")));
        }
        Ok((s, idx))
    }

    fn create_stream(&mut self, table: &str, view: ViewType, now: Instant) -> usize {
        // Labels are creation timestamps with millis; two streams created in
        // the same millisecond still get distinct, increasing labels.
        let ms = self.wall_ms(now).max(self.last_label_ms + 1);
        self.last_label_ms = ms;
        let label = DateTime::from_timestamp_millis(ms)
            .unwrap_or(self.cfg.base_wall)
            .format("%Y-%m-%dT%H:%M:%S%.3f")
            .to_string();
        let arn = format!(
            "arn:aws:dynamodb:{}:{}:table/{table}/stream/{label}",
            self.cfg.region, self.cfg.account
        );
        let s = self.streams.len();
        let salt = self.rng.random();
        self.streams.push(StreamState {
            arn: arn.clone(),
            label,
            table: table.to_string(),
            view,
            enabled: true,
            disabled_at: None,
            shards: Vec::new(),
            open: BTreeMap::new(),
            order: Vec::new(),
            order_dirty: false,
            salt,
            describe_calls: 0,
            describe_window: VecDeque::new(),
        });
        self.streams_by_arn.insert(arn, s);
        self.streams_by_table
            .entry(table.to_string())
            .or_default()
            .push(s);
        let n = u128::from(self.cfg.initial_shards.max(1));
        let space = u128::from(u64::MAX) + 1;
        for i in 0..n {
            let lo = u64::try_from(space * i / n).unwrap_or(u64::MAX);
            let hi = u64::try_from(space * (i + 1) / n - 1).unwrap_or(u64::MAX);
            self.open_shard(s, None, (lo, hi), now);
        }
        if let Some(t) = self.tables.get_mut(table) {
            t.current_stream = Some(s);
        }
        s
    }

    fn disable(&mut self, s: usize, now: Instant) {
        let open: Vec<usize> = self.streams[s].open.values().copied().collect();
        for idx in open {
            self.close_shard(s, idx, now);
        }
        let stream = &mut self.streams[s];
        stream.enabled = false;
        stream.disabled_at = Some(now);
    }

    /// The enabled stream of a table, if any.
    fn enabled_stream(&self, table: &str) -> StreamResult<Option<usize>> {
        let t = self
            .tables
            .get(table)
            .ok_or_else(|| not_found(format!("table {table}")))?;
        Ok(t.current_stream.filter(|&s| self.streams[s].enabled))
    }

    /// Appends the record for one change to the stream (if enabled) and the
    /// write log. Returns the record as written.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        now: Instant,
        table: &str,
        canon: String,
        keys: Item,
        event: &str,
        old: Option<Item>,
        new: Option<Item>,
        identity: Option<UserIdentity>,
    ) -> StreamResult<Option<StreamRecord>> {
        let Some(s) = self.enabled_stream(table)? else {
            return Ok(None);
        };
        let view = self.streams[s].view;
        let hash = key_hash(&canon);
        let idx = *self.streams[s]
            .open
            .range(..=hash)
            .next_back()
            .map(|(_, idx)| idx)
            .ok_or_else(|| StreamError::Other("simulator: no open shard covers key".into()))?;
        let seq = self.alloc_seq();
        let event_id = format!("{:032x}", self.rng.random::<u128>());
        let old = old.filter(|_| view.keeps_old());
        let new = new.filter(|_| view.keeps_new());
        let size = item_size(&keys)
            + old.as_ref().map_or(0, item_size)
            + new.as_ref().map_or(0, item_size);
        let secs = self.wall_ms(now).div_euclid(1000);
        let record = StreamRecord {
            event_id,
            event_name: event.to_string(),
            keys,
            new_image: new,
            old_image: old,
            sequence_number: seq.to_string(),
            size_bytes: Some(size),
            approximate_creation: DateTime::from_timestamp(secs, 0),
            user_identity: identity,
            problem: None,
            raw: None,
        };
        let retention = self.cfg.retention;
        let stream = &mut self.streams[s];
        let sh = &mut stream.shards[idx];
        sh.trim(now, retention);
        sh.records.push_back(SimRecord {
            seq,
            at: now,
            size,
            record: record.clone(),
        });
        if self.cfg.keep_write_log {
            let entry = LoggedRecord {
                stream_arn: stream.arn.clone(),
                shard_id: sh.id.clone(),
                record: record.clone(),
            };
            self.logs
                .entry(table.to_string())
                .or_default()
                .push(Logged {
                    key: canon,
                    seq,
                    at: now,
                    entry,
                });
        }
        Ok(Some(record))
    }

    fn remove_item(
        &mut self,
        table: &str,
        key: &Item,
        identity: Option<UserIdentity>,
    ) -> StreamResult<Option<StreamRecord>> {
        let now = self.tick();
        let t = self
            .tables
            .get_mut(table)
            .ok_or_else(|| not_found(format!("table {table}")))?;
        let keys = key_of(&t.key_attrs, key)?;
        let canon = canon_key(&keys);
        let Some(old) = t.items.remove(&canon) else {
            return Ok(None);
        };
        self.emit(now, table, canon, keys, "REMOVE", Some(old), None, identity)
    }
}

// ---------------------------------------------------------------------------
// State: the API

impl State {
    fn api_describe_table(&mut self, table: &str) -> StreamResult<TableStream> {
        self.tick();
        self.counts.describe_table += 1;
        let t = self
            .tables
            .get(table)
            .ok_or_else(|| not_found(format!("table {table}")))?;
        let stream = t.current_stream.map(|s| &self.streams[s]);
        let enabled = stream.is_some_and(|s| s.enabled);
        Ok(TableStream {
            table: table.to_string(),
            // Like the service, a disabled stream stays the table's latest.
            latest_stream_arn: stream.map(|s| s.arn.clone()),
            stream_enabled: enabled,
            view_type: stream
                .filter(|s| s.enabled)
                .map(|s| s.view.as_str().to_string()),
        })
    }

    fn api_list_streams(&mut self, table: &str) -> StreamResult<Vec<StreamSummary>> {
        let now = self.tick();
        self.counts.list_streams += 1;
        let retention = self.cfg.retention;
        let streams: Vec<StreamSummary> = self
            .streams_by_table
            .get(table)
            .into_iter()
            .flatten()
            .map(|&s| &self.streams[s])
            .filter(|s| s.retained(now, retention))
            .map(|s| StreamSummary {
                stream_arn: s.arn.clone(),
                table: s.table.clone(),
                stream_label: s.label.clone(),
            })
            .collect();
        if streams.is_empty() && !self.tables.contains_key(table) {
            return Err(not_found(format!("table {table}")));
        }
        Ok(streams)
    }

    fn api_describe_stream(
        &mut self,
        req: &DescribeStreamRequest,
    ) -> StreamResult<StreamDescription> {
        let now = self.tick();
        self.counts.describe_stream += 1;
        if req.children_of.is_some() {
            self.counts.describe_stream_children += 1;
        } else {
            self.counts.describe_stream_full_pages += 1;
        }
        let retention = self.cfg.retention;
        let s = *self
            .streams_by_arn
            .get(&req.stream_arn)
            .ok_or_else(|| not_found(format!("stream {}", req.stream_arn)))?;
        if !self.streams[s].retained(now, retention) {
            return Err(not_found(format!("stream {}", req.stream_arn)));
        }
        if self.cfg.throttling
            && !admit(
                &mut self.streams[s].describe_window,
                now,
                self.cfg.describe_stream_per_stream_per_sec,
            )
        {
            self.counts.throttled_describe_stream += 1;
            return Err(StreamError::Throttled(format!(
                "LimitExceededException: DescribeStream on {}",
                req.stream_arn
            )));
        }
        let limit = match req.limit {
            None => MAX_SHARDS_PER_PAGE,
            Some(l) if (1..=100).contains(&l) => usize::try_from(l).unwrap_or(MAX_SHARDS_PER_PAGE),
            Some(l) => return Err(invalid(format!("Limit {l} not in 1..=100"))),
        };
        let stream = &mut self.streams[s];
        stream.describe_calls += 1;
        let call = stream.describe_calls;

        let mut shards = Vec::new();
        let mut last_evaluated = None;
        if let Some(parent_id) = &req.children_of {
            let idx = match self.shard_index.get(parent_id) {
                Some(&(si, idx)) if si == s => idx,
                _ => return Err(not_found(format!("shard {parent_id}"))),
            };
            for &c in &stream.shards[idx].children {
                if !stream.shards[c].expired(now, retention) {
                    shards.push(stream.view_shard(c, call));
                }
            }
        } else {
            if stream.order_dirty {
                stream.order.sort_unstable();
                stream.order_dirty = false;
            }
            // Resume right after the start shard's place in the (stable,
            // shuffled) order, even if that shard has since disappeared.
            let start = match &req.exclusive_start_shard_id {
                None => 0,
                Some(id) => match self.shard_index.get(id) {
                    Some(&(si, idx)) if si == s => {
                        let k = stream.shards[idx].order_key;
                        stream.order.partition_point(|&e| e <= (k, idx))
                    }
                    _ => {
                        let k = order_key(stream.salt, id);
                        stream.order.partition_point(|&(key, _)| key <= k)
                    }
                },
            };
            for &(_, idx) in &stream.order[start..] {
                if stream.shards[idx].expired(now, retention) {
                    continue;
                }
                if shards.len() == limit {
                    last_evaluated = shards.last().map(|sh: &Shard| sh.shard_id.clone());
                    break;
                }
                shards.push(stream.view_shard(idx, call));
            }
        }
        Ok(StreamDescription {
            stream_arn: stream.arn.clone(),
            table: stream.table.clone(),
            status: if stream.enabled {
                StreamStatus::Enabled
            } else {
                StreamStatus::Disabled
            },
            shards,
            last_evaluated_shard_id: last_evaluated,
        })
    }

    fn api_get_shard_iterator(
        &mut self,
        stream_arn: &str,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> StreamResult<String> {
        let now = self.tick();
        self.counts.get_shard_iterator += 1;
        let retention = self.cfg.retention;
        let s = *self
            .streams_by_arn
            .get(stream_arn)
            .ok_or_else(|| not_found(format!("stream {stream_arn}")))?;
        let idx = match self.shard_index.get(shard_id) {
            Some(&(si, idx)) if si == s => idx,
            _ => return Err(not_found(format!("shard {shard_id} in {stream_arn}"))),
        };
        let last_seq = self.last_seq;
        let issued = u64::try_from(self.elapsed(now).as_nanos()).unwrap_or(u64::MAX);
        let stream = &mut self.streams[s];
        if !stream.retained(now, retention) {
            return Err(not_found(format!("stream {stream_arn}")));
        }
        let sh = &mut stream.shards[idx];
        if sh.expired(now, retention) {
            return Err(not_found(format!("shard {shard_id} (trimmed)")));
        }
        sh.trim(now, retention);
        let pos = match position {
            IteratorPosition::TrimHorizon => sh.base,
            IteratorPosition::Latest => sh.end(),
            IteratorPosition::AtSequence(seq) | IteratorPosition::AfterSequence(seq) => {
                let after = matches!(position, IteratorPosition::AfterSequence(_));
                let n: u128 = seq
                    .parse()
                    .map_err(|_| invalid(format!("bad sequence number {seq:?}")))?;
                let upper = sh.ending_seq.unwrap_or(last_seq);
                if n < sh.starting_seq || n > upper {
                    return Err(invalid(format!(
                        "sequence number {seq} is not in shard {shard_id}"
                    )));
                }
                match sh.last_trimmed_seq {
                    // AFTER the newest trimmed record loses nothing; anything
                    // older would silently skip trimmed records.
                    Some(t) if after && n == t => sh.base,
                    Some(t) if n <= t => {
                        return Err(StreamError::Trimmed(format!(
                            "TrimmedDataAccessException: {seq} in {shard_id} is beyond retention"
                        )))
                    }
                    _ if n == sh.starting_seq => sh.base,
                    _ if Some(n) == sh.ending_seq => sh.end(),
                    _ => {
                        let i = sh
                            .records
                            .binary_search_by(|r| r.seq.cmp(&n))
                            .map_err(|_| {
                                invalid(format!("sequence number {seq} is not in shard {shard_id}"))
                            })?;
                        sh.base + i as u64 + u64::from(after)
                    }
                }
            }
        };
        Ok(encode_iterator(s, idx, pos, issued))
    }

    fn api_get_records(&mut self, iterator: &str, limit: Option<i32>) -> StreamResult<RecordsPage> {
        let now = self.tick();
        self.counts.get_records += 1;
        let (s, idx, pos, issued) = decode_iterator(iterator)
            .filter(|&(s, idx, _, _)| self.streams.get(s).is_some_and(|st| idx < st.shards.len()))
            .ok_or_else(|| invalid("invalid shard iterator"))?;
        let cfg = &self.cfg;
        let elapsed_nanos =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let stream = &mut self.streams[s];
        let sh = &mut stream.shards[idx];
        sh.get_records_calls += 1;
        if cfg.throttling
            && !admit(
                &mut sh.get_records_window,
                now,
                cfg.get_records_per_shard_per_sec,
            )
        {
            self.counts.throttled_get_records += 1;
            return Err(StreamError::Throttled(format!(
                "LimitExceededException: GetRecords on {}",
                sh.id
            )));
        }
        let limit = match limit {
            None => MAX_RECORDS_PER_CALL,
            Some(l) if (1..=1000).contains(&l) => {
                usize::try_from(l).unwrap_or(MAX_RECORDS_PER_CALL)
            }
            Some(l) => return Err(invalid(format!("Limit {l} not in 1..=1000"))),
        };
        let ttl_nanos = u64::try_from(cfg.iterator_ttl.as_nanos()).unwrap_or(u64::MAX);
        if issued.saturating_add(ttl_nanos) <= elapsed_nanos {
            return Err(StreamError::ExpiredIterator(format!(
                "ExpiredIteratorException: iterator for {} expired",
                sh.id
            )));
        }
        sh.trim(now, cfg.retention);
        if pos < sh.base {
            return Err(StreamError::Trimmed(format!(
                "TrimmedDataAccessException: iterator position in {} is beyond retention",
                sh.id
            )));
        }
        let start = usize::try_from(pos - sh.base).unwrap_or(usize::MAX);
        let mut records = Vec::new();
        let mut bytes = 0i64;
        for r in sh.records.iter().skip(start) {
            // At least one record per page, however large.
            if records.len() == limit
                || (!records.is_empty() && bytes + r.size > cfg.max_bytes_per_call)
            {
                break;
            }
            bytes += r.size;
            records.push(r.record.clone());
        }
        let next = pos.max(sh.base) + records.len() as u64;
        // A closed shard read to its end is the only "done" signal; an open
        // shard always hands out a next iterator, even on an empty page.
        let next_iterator = if sh.ending_seq.is_some() && next >= sh.end() {
            None
        } else {
            Some(encode_iterator(s, idx, next, elapsed_nanos))
        };
        if records.is_empty() {
            self.counts.get_records_empty += 1;
        }
        self.counts.records_returned += records.len() as u64;
        Ok(RecordsPage {
            records,
            next_iterator,
        })
    }
}

// ---------------------------------------------------------------------------
// The public face: constructor, test controls, counters

impl SimStream {
    pub fn new(cfg: SimConfig) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed);
        SimStream {
            state: Arc::new(Mutex::new(State {
                cfg,
                epoch: Instant::now(),
                rng,
                last_seq: FIRST_SEQUENCE,
                last_label_ms: i64::MIN,
                tables: HashMap::new(),
                streams: Vec::new(),
                streams_by_arn: HashMap::new(),
                streams_by_table: HashMap::new(),
                shard_index: HashMap::new(),
                logs: HashMap::new(),
                counts: Counters::default(),
                next_auto_rotate: None,
                next_prune: Instant::now() + PRUNE_EVERY,
            })),
        }
    }

    pub fn with_seed(seed: u64) -> Self {
        SimStream::new(SimConfig::with_seed(seed))
    }

    // The lock is never held across an await: every method is synchronous.
    // A panic in a test thread must not wedge every other user, so a
    // poisoned lock is taken over as is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The configuration in force.
    pub fn config(&self) -> SimConfig {
        self.lock().cfg.clone()
    }

    pub fn set_throttling(&self, on: bool) {
        self.lock().cfg.throttling = on;
    }

    pub fn set_stale_parent_describe_calls(&self, calls: u64) {
        self.lock().cfg.stale_parent_describe_calls = calls;
    }

    /// Turns automatic rotation on (every `period` of shard age) or off.
    pub fn set_auto_rotate(&self, period: Option<Duration>) {
        let mut st = self.lock();
        st.cfg.auto_rotate = period;
        st.next_auto_rotate = None;
        if period.is_some() {
            let now = Instant::now();
            st.next_auto_rotate = Some(now);
            st.auto_rotate(now);
        }
    }

    /// The simulated wall clock now.
    pub fn now_wall(&self) -> DateTime<Utc> {
        let st = self.lock();
        st.wall(Instant::now())
    }

    /// Creates a table keyed by `key_attrs`, with a stream if `stream` is set.
    pub fn create_table(
        &self,
        table: &str,
        key_attrs: &[&str],
        stream: Option<ViewType>,
    ) -> StreamResult<()> {
        let mut st = self.lock();
        let now = st.tick();
        if st.tables.contains_key(table) {
            return Err(invalid(format!("table {table} already exists")));
        }
        if key_attrs.is_empty() {
            return Err(invalid("a table needs at least one key attribute"));
        }
        st.tables.insert(
            table.to_string(),
            Table {
                key_attrs: key_attrs.iter().map(|k| k.to_string()).collect(),
                items: HashMap::new(),
                current_stream: None,
            },
        );
        if let Some(view) = stream {
            st.create_stream(table, view, now);
        }
        Ok(())
    }

    /// PutItem of a whole item: INSERT, MODIFY, or nothing if unchanged.
    pub fn put(&self, table: &str, item: Item) -> StreamResult<Option<StreamRecord>> {
        let mut st = self.lock();
        let now = st.tick();
        let t = st
            .tables
            .get_mut(table)
            .ok_or_else(|| not_found(format!("table {table}")))?;
        let keys = key_of(&t.key_attrs, &item)?;
        let canon = canon_key(&keys);
        let old = t.items.insert(canon.clone(), item.clone());
        if old.as_ref() == Some(&item) {
            // The service writes no record for a write that changed nothing.
            return Ok(None);
        }
        let event = if old.is_some() { "MODIFY" } else { "INSERT" };
        st.emit(now, table, canon, keys, event, old, Some(item), None)
    }

    /// UpdateItem: `change` edits the current item (or just the key if the
    /// item doesn't exist). It must not change key attributes.
    pub fn update(
        &self,
        table: &str,
        key: &Item,
        change: impl FnOnce(&mut Item),
    ) -> StreamResult<Option<StreamRecord>> {
        let (key_attrs, keys, mut item) = {
            let st = self.lock();
            let t = st
                .tables
                .get(table)
                .ok_or_else(|| not_found(format!("table {table}")))?;
            let keys = key_of(&t.key_attrs, key)?;
            let item = t
                .items
                .get(&canon_key(&keys))
                .cloned()
                .unwrap_or(keys.clone());
            (t.key_attrs.clone(), keys, item)
        };
        // Outside the lock: the closure may itself use the simulator. (Not
        // atomic with concurrent writes to the same item, which tests that
        // drive the simulator from one task never do.)
        change(&mut item);
        if key_of(&key_attrs, &item)? != keys {
            return Err(invalid("an update cannot change key attributes"));
        }
        self.put(table, item)
    }

    /// DeleteItem: REMOVE with the old image, or nothing if absent.
    pub fn delete(&self, table: &str, key: &Item) -> StreamResult<Option<StreamRecord>> {
        self.lock().remove_item(table, key, None)
    }

    /// A TTL deletion: REMOVE by the service principal.
    pub fn ttl_expire(&self, table: &str, key: &Item) -> StreamResult<Option<StreamRecord>> {
        let identity = UserIdentity {
            kind: "Service".to_string(),
            principal_id: TTL_PRINCIPAL.to_string(),
        };
        self.lock().remove_item(table, key, Some(identity))
    }

    /// GetItem.
    pub fn get_item(&self, table: &str, key: &Item) -> Option<Item> {
        let st = self.lock();
        let t = st.tables.get(table)?;
        let keys = key_of(&t.key_attrs, key).ok()?;
        t.items.get(&canon_key(&keys)).cloned()
    }

    /// Every item of the table, in no particular order.
    pub fn items(&self, table: &str) -> Vec<Item> {
        let st = self.lock();
        st.tables
            .get(table)
            .map(|t| t.items.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every record written to the table's streams (all of them, across
    /// re-enablements), in write order: the ground truth an audit trail is
    /// compared against. Kept after trimming and after the table is deleted.
    pub fn write_log(&self, table: &str) -> Vec<StreamRecord> {
        let st = self.lock();
        st.logs
            .get(table)
            .map(|l| l.iter().map(|l| l.entry.record.clone()).collect())
            .unwrap_or_default()
    }

    /// The write log of one item (`key` may be the whole item).
    pub fn write_log_for(&self, table: &str, key: &Item) -> StreamResult<Vec<StreamRecord>> {
        let st = self.lock();
        let key_attrs = match st.tables.get(table) {
            Some(t) => t.key_attrs.clone(),
            // A deleted table: its log is still there, keyed by whatever
            // attributes the records carry as keys.
            None => st
                .logs
                .get(table)
                .and_then(|l| l.first())
                .map(|l| l.entry.record.keys.keys().cloned().collect())
                .ok_or_else(|| not_found(format!("table {table}")))?,
        };
        let canon = canon_key(&key_of(&key_attrs, key)?);
        Ok(st
            .logs
            .get(table)
            .map(|l| {
                l.iter()
                    .filter(|l| l.key == canon)
                    .map(|l| l.entry.record.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The write log with the stream and shard each record went to.
    pub fn write_log_routed(&self, table: &str) -> Vec<LoggedRecord> {
        let st = self.lock();
        st.logs
            .get(table)
            .map(|l| l.iter().map(|l| l.entry.clone()).collect())
            .unwrap_or_default()
    }

    /// Whether the record with this sequence number, written to `table`,
    /// is trimmed by now (older than retention): a consumer that had not
    /// read it by now can only record a gap.
    pub fn is_trimmed(&self, table: &str, sequence_number: &str) -> bool {
        let st = self.lock();
        let now = Instant::now();
        let Ok(seq) = sequence_number.parse::<u128>() else {
            return false;
        };
        let Some(log) = st.logs.get(table) else {
            return false;
        };
        // The log is in write order, and sequence numbers only grow.
        log.binary_search_by(|l| l.seq.cmp(&seq))
            .is_ok_and(|i| older_than(log[i].at, st.cfg.retention, now))
    }

    /// The table's latest stream ARN (enabled or not).
    pub fn stream_arn(&self, table: &str) -> Option<String> {
        let st = self.lock();
        let s = st.tables.get(table)?.current_stream?;
        Some(st.streams[s].arn.clone())
    }

    /// Every shard of a stream still retained, as it really is (no listing
    /// inconsistency, no pages), in creation order.
    pub fn shards(&self, stream_arn: &str) -> StreamResult<Vec<Shard>> {
        self.shards_where(stream_arn, true)
    }

    /// Every shard the stream has ever had, trimmed away or not: the truth a
    /// test's oracle needs for lineage (which shard was whose parent) after
    /// the service has forgotten.
    pub fn all_shards(&self, stream_arn: &str) -> StreamResult<Vec<Shard>> {
        self.shards_where(stream_arn, false)
    }

    fn shards_where(&self, stream_arn: &str, retained_only: bool) -> StreamResult<Vec<Shard>> {
        let st = self.lock();
        let now = Instant::now();
        let s = *st
            .streams_by_arn
            .get(stream_arn)
            .ok_or_else(|| not_found(format!("stream {stream_arn}")))?;
        let stream = &st.streams[s];
        Ok((0..stream.shards.len())
            .filter(|&i| !retained_only || !stream.shards[i].expired(now, st.cfg.retention))
            .map(|i| stream.true_shard(i))
            .collect())
    }

    /// Ids of the open shards of the table's enabled stream.
    pub fn open_shards(&self, table: &str) -> StreamResult<Vec<String>> {
        let mut st = self.lock();
        st.tick();
        let Some(s) = st.enabled_stream(table)? else {
            return Ok(Vec::new());
        };
        let stream = &st.streams[s];
        Ok(stream
            .open
            .values()
            .map(|&i| stream.shards[i].id.clone())
            .collect())
    }

    /// The open shard an item's next record would go to.
    pub fn shard_for_key(&self, table: &str, key: &Item) -> StreamResult<Option<String>> {
        let mut st = self.lock();
        st.tick();
        let key_attrs = st
            .tables
            .get(table)
            .ok_or_else(|| not_found(format!("table {table}")))?
            .key_attrs
            .clone();
        let hash = key_hash(&canon_key(&key_of(&key_attrs, key)?));
        let Some(s) = st.enabled_stream(table)? else {
            return Ok(None);
        };
        let stream = &st.streams[s];
        Ok(stream
            .open
            .range(..=hash)
            .next_back()
            .map(|(_, &i)| stream.shards[i].id.clone()))
    }

    /// Closes an open shard and opens one successor with the same range.
    /// Returns the successor's id.
    pub fn rotate_shard(&self, shard_id: &str) -> StreamResult<String> {
        let mut st = self.lock();
        let now = st.tick();
        let (s, idx) = st.open_shard_of(shard_id)?;
        let child = st.rotate_at(s, idx, now);
        Ok(st.streams[s].shards[child].id.clone())
    }

    /// Closes an open shard and opens two children halving its range.
    pub fn split_shard(&self, shard_id: &str) -> StreamResult<(String, String)> {
        let mut st = self.lock();
        let now = st.tick();
        let (s, idx) = st.open_shard_of(shard_id)?;
        let (a, b) = st
            .split_at(s, idx, now)
            .ok_or_else(|| invalid(format!("shard {shard_id} is too narrow to split")))?;
        let shards = &st.streams[s].shards;
        Ok((shards[a].id.clone(), shards[b].id.clone()))
    }

    /// Rotates every open shard of every enabled stream; returns how many.
    pub fn rotate_all(&self) -> usize {
        let mut st = self.lock();
        let now = st.tick();
        let mut rotated = 0;
        for s in 0..st.streams.len() {
            if !st.streams[s].enabled {
                continue;
            }
            let open: Vec<usize> = st.streams[s].open.values().copied().collect();
            for idx in open {
                st.rotate_at(s, idx, now);
                rotated += 1;
            }
        }
        rotated
    }

    /// Adds `n` closed, empty shards to the table's enabled stream, as a
    /// busy day does: mostly rotations, with an occasional split (about one
    /// in twenty, while fewer than 16 shards are open), so the result is a
    /// long chain that fans out a little and ends in the open shard(s).
    /// Existing open shards (with their records) are the first to close.
    pub fn add_empty_closed_shards(&self, table: &str, n: usize) -> StreamResult<()> {
        let mut st = self.lock();
        let now = st.tick();
        let s = st
            .enabled_stream(table)?
            .ok_or_else(|| invalid(format!("table {table} has no enabled stream")))?;
        for _ in 0..n {
            let open: Vec<usize> = st.streams[s].open.values().copied().collect();
            if open.is_empty() {
                break;
            }
            let pick = open[st.rng.random_range(0..open.len())];
            let split = open.len() < 16 && st.rng.random_ratio(1, 20);
            if !(split && st.split_at(s, pick, now).is_some()) {
                st.rotate_at(s, pick, now);
            }
        }
        Ok(())
    }

    /// Disables the table's stream: every open shard closes, no new records.
    pub fn disable_stream(&self, table: &str) -> StreamResult<()> {
        let mut st = self.lock();
        let now = st.tick();
        let s = st
            .enabled_stream(table)?
            .ok_or_else(|| invalid(format!("table {table} has no enabled stream")))?;
        st.disable(s, now);
        Ok(())
    }

    /// Enables a stream on a table whose stream is disabled (or never was):
    /// a new stream ARN. Older streams stay readable until trimmed.
    pub fn enable_stream(&self, table: &str, view: ViewType) -> StreamResult<String> {
        let mut st = self.lock();
        let now = st.tick();
        if st.enabled_stream(table)?.is_some() {
            return Err(invalid(format!("table {table} already has a stream")));
        }
        let s = st.create_stream(table, view, now);
        Ok(st.streams[s].arn.clone())
    }

    /// Deletes the table: its stream is disabled and DescribeTable says
    /// NotFound; the streams' records stay readable until trimmed.
    pub fn delete_table(&self, table: &str) -> StreamResult<()> {
        let mut st = self.lock();
        let now = st.tick();
        if let Some(s) = st.enabled_stream(table)? {
            st.disable(s, now);
        }
        st.tables.remove(table);
        Ok(())
    }

    /// Calls so far.
    pub fn calls(&self) -> CallCounts {
        let st = self.lock();
        let c = &st.counts;
        let mut per_shard = BTreeMap::new();
        for stream in &st.streams {
            for sh in &stream.shards {
                if sh.get_records_calls > 0 {
                    per_shard.insert(sh.id.clone(), sh.get_records_calls);
                }
            }
        }
        CallCounts {
            describe_table: c.describe_table,
            list_streams: c.list_streams,
            describe_stream: c.describe_stream,
            describe_stream_full_pages: c.describe_stream_full_pages,
            describe_stream_children: c.describe_stream_children,
            get_shard_iterator: c.get_shard_iterator,
            get_records: c.get_records,
            get_records_empty: c.get_records_empty,
            records_returned: c.records_returned,
            throttled: c.throttled_get_records + c.throttled_describe_stream,
            throttled_get_records: c.throttled_get_records,
            throttled_describe_stream: c.throttled_describe_stream,
            get_records_per_shard: per_shard,
        }
    }

    /// Zeroes the call counters (throttling windows are unaffected).
    pub fn reset_calls(&self) {
        let mut st = self.lock();
        st.counts = Counters::default();
        for stream in &mut st.streams {
            for sh in &mut stream.shards {
                sh.get_records_calls = 0;
            }
        }
    }
}

impl StreamApi for SimStream {
    async fn describe_table(&self, table: &str) -> StreamResult<TableStream> {
        self.lock().api_describe_table(table)
    }

    async fn list_streams(&self, table: &str) -> StreamResult<Vec<StreamSummary>> {
        self.lock().api_list_streams(table)
    }

    async fn describe_stream(
        &self,
        request: &DescribeStreamRequest,
    ) -> StreamResult<StreamDescription> {
        self.lock().api_describe_stream(request)
    }

    async fn get_shard_iterator(
        &self,
        stream_arn: &str,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> StreamResult<String> {
        self.lock()
            .api_get_shard_iterator(stream_arn, shard_id, position)
    }

    async fn get_records(&self, iterator: &str, limit: Option<i32>) -> StreamResult<RecordsPage> {
        self.lock().api_get_records(iterator, limit)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use tokio::time::advance;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn item(pairs: &[(&str, &str)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), AttrValue::S(v.to_string())))
            .collect()
    }

    fn key(pk: &str) -> Item {
        item(&[("pk", pk)])
    }

    /// A simulator without throttling (tests that want it turn it on) and
    /// with one table `T` keyed by `pk`.
    fn sim_with(cfg: SimConfig) -> SimStream {
        let sim = SimStream::new(SimConfig {
            throttling: false,
            ..cfg
        });
        sim.create_table("T", &["pk"], Some(ViewType::NewAndOldImages))
            .unwrap();
        sim
    }

    fn sim() -> SimStream {
        sim_with(SimConfig::default())
    }

    fn arn(sim: &SimStream) -> String {
        sim.stream_arn("T").unwrap()
    }

    async fn list_all(sim: &impl StreamApi, arn: &str, limit: Option<i32>) -> Vec<Vec<Shard>> {
        let mut pages = Vec::new();
        let mut start = None;
        loop {
            let page = sim
                .describe_stream(&DescribeStreamRequest {
                    stream_arn: arn.to_string(),
                    exclusive_start_shard_id: start.clone(),
                    children_of: None,
                    limit,
                })
                .await
                .unwrap();
            start = page.last_evaluated_shard_id.clone();
            pages.push(page.shards);
            if start.is_none() {
                return pages;
            }
        }
    }

    async fn children(sim: &SimStream, arn: &str, parent: &str) -> Vec<Shard> {
        sim.describe_stream(&DescribeStreamRequest {
            stream_arn: arn.to_string(),
            children_of: Some(parent.to_string()),
            ..Default::default()
        })
        .await
        .unwrap()
        .shards
    }

    /// Reads a shard from `position` until it ends (closed) or an empty page
    /// (open); returns the records and whether the shard ended.
    async fn read(
        sim: &SimStream,
        arn: &str,
        shard: &str,
        position: IteratorPosition,
    ) -> (Vec<StreamRecord>, bool) {
        let mut it = sim.get_shard_iterator(arn, shard, &position).await.unwrap();
        let mut out = Vec::new();
        loop {
            let page = sim.get_records(&it, None).await.unwrap();
            let empty = page.records.is_empty();
            out.extend(page.records);
            match page.next_iterator {
                None => return (out, true),
                Some(_) if empty => return (out, false),
                Some(next) => it = next,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn writes_produce_records_of_the_documented_shape() {
        let sim = sim();
        let a1 = item(&[("pk", "a"), ("v", "1")]);
        let a2 = item(&[("pk", "a"), ("v", "2")]);

        let ins = sim.put("T", a1.clone()).unwrap().unwrap();
        assert_eq!(ins.event_name, "INSERT");
        assert_eq!(ins.keys, key("a"));
        assert_eq!(ins.new_image.as_ref(), Some(&a1));
        assert_eq!(ins.old_image, None);
        assert_eq!(ins.user_identity, None);
        assert!(ins.size_bytes.unwrap() > 0);

        // A write that changes nothing writes no record.
        assert_eq!(sim.put("T", a1.clone()).unwrap(), None);

        advance(Duration::from_millis(1500)).await;
        let modify = sim.put("T", a2.clone()).unwrap().unwrap();
        assert_eq!(modify.event_name, "MODIFY");
        assert_eq!(modify.old_image.as_ref(), Some(&a1));
        assert_eq!(modify.new_image.as_ref(), Some(&a2));
        // Base wall time + elapsed, whole seconds.
        assert_eq!(
            modify.approximate_creation.unwrap().to_rfc3339(),
            "2026-11-23T00:00:01+00:00"
        );

        let remove = sim.delete("T", &key("a")).unwrap().unwrap();
        assert_eq!(remove.event_name, "REMOVE");
        assert_eq!(remove.old_image.as_ref(), Some(&a2));
        assert_eq!(remove.new_image, None);
        assert_eq!(sim.delete("T", &key("a")).unwrap(), None);

        sim.put("T", item(&[("pk", "b")])).unwrap();
        let ttl = sim.ttl_expire("T", &key("b")).unwrap().unwrap();
        assert!(ttl.user_identity.as_ref().unwrap().is_ttl_expiry());

        let log = sim.write_log("T");
        assert_eq!(log.len(), 5);
        for pair in log.windows(2) {
            let (a, b) = (&pair[0].sequence_number, &pair[1].sequence_number);
            assert_eq!(a.len(), 21);
            assert_eq!(crate::stream::cmp_sequence(a, b), std::cmp::Ordering::Less);
        }
        let ids: BTreeSet<_> = log.iter().map(|r| r.event_id.clone()).collect();
        assert_eq!(ids.len(), log.len());
        assert_eq!(sim.write_log_for("T", &a1).unwrap().len(), 3);

        // The stream holds exactly the write log.
        let shard = sim.open_shards("T").unwrap().remove(0);
        let (read, ended) = read(&sim, &arn(&sim), &shard, IteratorPosition::TrimHorizon).await;
        assert!(!ended);
        assert_eq!(read, log);
    }

    #[tokio::test(start_paused = true)]
    async fn update_edits_the_current_item_and_keeps_its_key() {
        let sim = sim();
        let r = sim
            .update("T", &key("a"), |it| {
                it.insert("n".into(), AttrValue::N("1".into()));
            })
            .unwrap()
            .unwrap();
        assert_eq!(r.event_name, "INSERT");
        let r = sim
            .update("T", &key("a"), |it| {
                it.insert("n".into(), AttrValue::N("2".into()));
            })
            .unwrap()
            .unwrap();
        assert_eq!(r.event_name, "MODIFY");
        assert_eq!(r.old_image.unwrap()["n"], AttrValue::N("1".into()));
        assert_eq!(sim.update("T", &key("a"), |_| {}).unwrap(), None);
        assert!(sim
            .update("T", &key("a"), |it| {
                it.insert("pk".into(), AttrValue::S("b".into()));
            })
            .is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn view_types_limit_images_and_tables_without_streams_write_none() {
        let sim = SimStream::new(SimConfig::default());
        sim.create_table("K", &["pk"], Some(ViewType::KeysOnly))
            .unwrap();
        sim.create_table("O", &["pk", "sk"], Some(ViewType::OldImage))
            .unwrap();
        sim.create_table("N", &["pk"], None).unwrap();
        let r = sim
            .put("K", item(&[("pk", "a"), ("x", "1")]))
            .unwrap()
            .unwrap();
        assert_eq!((r.new_image, r.old_image), (None, None));
        let it = item(&[("pk", "a"), ("sk", "1"), ("x", "1")]);
        sim.put("O", it.clone()).unwrap();
        let r = sim
            .put("O", item(&[("pk", "a"), ("sk", "1"), ("x", "2")]))
            .unwrap()
            .unwrap();
        assert_eq!(r.keys, item(&[("pk", "a"), ("sk", "1")]));
        assert_eq!((r.new_image, r.old_image), (None, Some(it)));
        assert_eq!(sim.put("N", key("a")).unwrap(), None);
        assert_eq!(sim.get_item("N", &key("a")), Some(key("a")));
        assert!(sim.put("O", key("a")).is_err(), "missing sort key");
        let t = sim.describe_table("N").await.unwrap();
        assert_eq!((t.latest_stream_arn, t.stream_enabled), (None, false));
        let t = sim.describe_table("K").await.unwrap();
        assert_eq!(t.view_type.as_deref(), Some("KEYS_ONLY"));
        assert!(matches!(
            sim.describe_table("missing").await,
            Err(StreamError::NotFound(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn records_of_an_item_follow_its_lineage_through_rotations_and_splits() {
        let sim = sim_with(SimConfig {
            initial_shards: 2,
            stale_parent_describe_calls: 0,
            ..SimConfig::with_seed(7)
        });
        let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        let mut version = 0;
        let mut write_all = |sim: &SimStream| {
            version += 1;
            for k in &keys {
                sim.put("T", item(&[("pk", k), ("v", &version.to_string())]))
                    .unwrap();
            }
        };
        write_all(&sim);
        for round in 0..6 {
            let open = sim.open_shards("T").unwrap();
            if round % 2 == 0 {
                sim.split_shard(&open[0]).unwrap();
            } else {
                sim.rotate_shard(&open[open.len() - 1]).unwrap();
            }
            write_all(&sim);
        }
        let shards: HashMap<String, Shard> = sim
            .shards(&arn(&sim))
            .unwrap()
            .into_iter()
            .map(|s| (s.shard_id.clone(), s))
            .collect();
        let is_ancestor = |anc: &str, of: &str| {
            let mut cur = Some(of.to_string());
            while let Some(id) = cur {
                if id == anc {
                    return true;
                }
                cur = shards[&id].parent_shard_id.clone();
            }
            false
        };
        let mut per_key: HashMap<String, Vec<String>> = HashMap::new();
        for l in sim.write_log_routed("T") {
            let AttrValue::S(k) = &l.record.keys["pk"] else {
                panic!("key")
            };
            per_key.entry(k.clone()).or_default().push(l.shard_id);
        }
        let mut used = BTreeSet::new();
        for (k, route) in &per_key {
            assert_eq!(route.len(), 7);
            for pair in route.windows(2) {
                assert!(is_ancestor(&pair[0], &pair[1]), "{k}: {route:?}");
            }
            let last = route.last().unwrap();
            assert_eq!(
                sim.shard_for_key("T", &key(k)).unwrap().as_deref(),
                Some(last.as_str())
            );
            used.extend(route.iter().cloned());
        }
        // Both halves of every split got some keys.
        assert!(used.len() > 8, "{used:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn listing_pages_cover_every_shard_exactly_once() {
        let sim = sim_with(SimConfig {
            stale_parent_describe_calls: 0,
            ..SimConfig::with_seed(3)
        });
        sim.put("T", key("a")).unwrap();
        sim.add_empty_closed_shards("T", 3000).unwrap();
        let truth = sim.shards(&arn(&sim)).unwrap();
        let open = sim.open_shards("T").unwrap();
        assert_eq!(truth.len(), 3001 + open.len() - 1);
        for limit in [None, Some(7), Some(100)] {
            let pages = list_all(&sim, &arn(&sim), limit).await;
            let max = limit.unwrap_or(100) as usize;
            assert!(pages.iter().all(|p| p.len() <= max && !p.is_empty()));
            let listed: Vec<Shard> = pages.into_iter().flatten().collect();
            assert_eq!(listed.len(), truth.len(), "each shard exactly once");
            let mut sorted = listed.clone();
            sorted.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
            let mut expected = truth.clone();
            expected.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
            assert_eq!(sorted, expected);
            // Not in creation order.
            assert_ne!(listed, truth);
        }
        // A chain/fan: one root, every other shard's parent is listed, and
        // only the open shards have no children.
        let ids: BTreeSet<&str> = truth.iter().map(|s| s.shard_id.as_str()).collect();
        let roots = truth.iter().filter(|s| s.parent_shard_id.is_none()).count();
        assert_eq!(roots, 1);
        assert!(truth
            .iter()
            .filter_map(|s| s.parent_shard_id.as_deref())
            .all(|p| ids.contains(p)));
        let parents: BTreeSet<&str> = truth
            .iter()
            .filter_map(|s| s.parent_shard_id.as_deref())
            .collect();
        for s in &truth {
            assert_eq!(s.is_closed(), parents.contains(s.shard_id.as_str()));
            assert_eq!(!s.is_closed(), open.contains(&s.shard_id));
        }
        // The one record is in the root, which reads to its end.
        let root = truth.iter().find(|s| s.parent_shard_id.is_none()).unwrap();
        let (records, ended) = read(
            &sim,
            &arn(&sim),
            &root.shard_id,
            IteratorPosition::TrimHorizon,
        )
        .await;
        assert_eq!((records.len(), ended), (1, true));
        let c = sim.calls();
        assert_eq!(c.describe_stream, c.describe_stream_full_pages);
        let n = truth.len() as u64;
        assert_eq!(
            c.describe_stream_full_pages,
            2 * n.div_ceil(100) + n.div_ceil(7)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn child_filter_returns_only_that_shards_children() {
        let sim = sim_with(SimConfig {
            stale_parent_describe_calls: 0,
            ..SimConfig::default()
        });
        let root = sim.open_shards("T").unwrap().remove(0);
        let (a, b) = sim.split_shard(&root).unwrap();
        let a2 = sim.rotate_shard(&a).unwrap();
        let arn = arn(&sim);
        let ids =
            |v: Vec<Shard>| -> BTreeSet<String> { v.into_iter().map(|s| s.shard_id).collect() };
        assert_eq!(
            ids(children(&sim, &arn, &root).await),
            BTreeSet::from([a.clone(), b.clone()])
        );
        assert_eq!(
            ids(children(&sim, &arn, &a).await),
            BTreeSet::from([a2.clone()])
        );
        assert!(children(&sim, &arn, &b).await.is_empty());
        let err = sim
            .describe_stream(&DescribeStreamRequest {
                stream_arn: arn.clone(),
                children_of: Some("shardId-nope".into()),
                ..Default::default()
            })
            .await;
        assert!(matches!(err, Err(StreamError::NotFound(_))));
        let c = sim.calls();
        assert_eq!(
            (c.describe_stream_children, c.describe_stream_full_pages),
            (4, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_parent_briefly_shows_open_while_its_children_are_listed() {
        let sim = sim_with(SimConfig {
            stale_parent_describe_calls: 2,
            ..SimConfig::default()
        });
        let arn = arn(&sim);
        let parent = sim.open_shards("T").unwrap().remove(0);
        let child = sim.rotate_shard(&parent).unwrap();
        for call in 1..=3 {
            let listed = list_all(&sim, &arn, None).await.concat();
            let p = listed.iter().find(|s| s.shard_id == parent).unwrap();
            let c = listed.iter().find(|s| s.shard_id == child).unwrap();
            assert_eq!(c.parent_shard_id.as_deref(), Some(parent.as_str()));
            assert_eq!(p.is_closed(), call == 3, "call {call}");
        }
        // The shard is really closed all along: reading it ends.
        let (_, ended) = read(&sim, &arn, &parent, IteratorPosition::TrimHorizon).await;
        assert!(ended);
    }

    #[tokio::test(start_paused = true)]
    async fn iterators_expire_fifteen_minutes_after_issue() {
        let sim = sim();
        let arn = arn(&sim);
        let shard = sim.open_shards("T").unwrap().remove(0);
        let it = sim
            .get_shard_iterator(&arn, &shard, &IteratorPosition::TrimHorizon)
            .await
            .unwrap();
        advance(Duration::from_secs(15 * 60 - 1)).await;
        let page = sim.get_records(&it, None).await.unwrap();
        let next = page.next_iterator.unwrap();
        advance(Duration::from_secs(1)).await;
        assert!(matches!(
            sim.get_records(&it, None).await,
            Err(StreamError::ExpiredIterator(_))
        ));
        // The next iterator was issued by the later call, so it still works.
        sim.get_records(&next, None).await.unwrap();
        advance(Duration::from_secs(15 * 60)).await;
        assert!(matches!(
            sim.get_records(&next, None).await,
            Err(StreamError::ExpiredIterator(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn records_older_than_retention_are_trimmed() {
        let sim = sim();
        let arn = arn(&sim);
        let shard = sim.open_shards("T").unwrap().remove(0);
        let r1 = sim.put("T", key("a")).unwrap().unwrap();
        advance(23 * HOUR).await;
        let r2 = sim.put("T", key("b")).unwrap().unwrap();
        let start = sim.shards(&arn).unwrap()[0]
            .starting_sequence_number
            .clone()
            .unwrap();
        advance(HOUR - Duration::from_secs(60)).await;
        let early = sim
            .get_shard_iterator(&arn, &shard, &IteratorPosition::TrimHorizon)
            .await
            .unwrap();
        assert!(!sim.is_trimmed("T", &r1.sequence_number));
        advance(Duration::from_secs(61)).await;
        assert!(sim.is_trimmed("T", &r1.sequence_number));
        assert!(!sim.is_trimmed("T", &r2.sequence_number));

        // An iterator whose position has since been trimmed.
        assert!(matches!(
            sim.get_records(&early, None).await,
            Err(StreamError::Trimmed(_))
        ));
        // AT a trimmed record, or AFTER anything older than the newest
        // trimmed record, would skip data: Trimmed.
        for pos in [
            IteratorPosition::AtSequence(r1.sequence_number.clone()),
            IteratorPosition::AfterSequence(start.clone()),
            IteratorPosition::AtSequence(start),
        ] {
            assert!(
                matches!(
                    sim.get_shard_iterator(&arn, &shard, &pos).await,
                    Err(StreamError::Trimmed(_))
                ),
                "{pos:?}"
            );
        }
        // AFTER the newest trimmed record loses nothing.
        let (after, _) = read(
            &sim,
            &arn,
            &shard,
            IteratorPosition::AfterSequence(r1.sequence_number.clone()),
        )
        .await;
        assert_eq!(after, vec![r2.clone()]);
        let (horizon, _) = read(&sim, &arn, &shard, IteratorPosition::TrimHorizon).await;
        assert_eq!(horizon, vec![r2]);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_shards_disappear_after_retention_leaving_orphaned_children() {
        let sim = sim_with(SimConfig {
            stale_parent_describe_calls: 0,
            ..SimConfig::default()
        });
        let arn = arn(&sim);
        let parent = sim.open_shards("T").unwrap().remove(0);
        sim.put("T", key("a")).unwrap();
        let child = sim.rotate_shard(&parent).unwrap();
        advance(24 * HOUR - Duration::from_secs(1)).await;
        assert_eq!(list_all(&sim, &arn, None).await.concat().len(), 2);
        advance(Duration::from_secs(1)).await;
        let listed = list_all(&sim, &arn, None).await.concat();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].shard_id, child);
        assert_eq!(listed[0].parent_shard_id.as_deref(), Some(parent.as_str()));
        assert!(matches!(
            sim.get_shard_iterator(&arn, &parent, &IteratorPosition::TrimHorizon)
                .await,
            Err(StreamError::NotFound(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn get_records_pages_by_count_and_size_and_ends_closed_shards() {
        let sim = sim();
        let arn = arn(&sim);
        let shard = sim.open_shards("T").unwrap().remove(0);
        for i in 0..1500 {
            sim.put("T", key(&format!("k{i}"))).unwrap();
        }
        let it = sim
            .get_shard_iterator(&arn, &shard, &IteratorPosition::TrimHorizon)
            .await
            .unwrap();
        let p1 = sim.get_records(&it, None).await.unwrap();
        assert_eq!(p1.records.len(), 1000);
        let p2 = sim
            .get_records(p1.next_iterator.as_ref().unwrap(), Some(10))
            .await
            .unwrap();
        assert_eq!(p2.records.len(), 10);
        assert!(matches!(
            sim.get_records(p2.next_iterator.as_ref().unwrap(), Some(1001))
                .await,
            Err(StreamError::Other(_))
        ));

        // ~400 KB items: a MODIFY record carries two images, ~800 KB, so a
        // 1 MB page holds one.
        let big = |v: &str| item(&[("pk", "big"), ("blob", &v.repeat(400_000))]);
        sim.put("T", big("a")).unwrap();
        sim.put("T", big("b")).unwrap();
        sim.put("T", big("c")).unwrap();
        let pos = IteratorPosition::AfterSequence(sim.write_log("T")[1499].sequence_number.clone());
        let it = sim.get_shard_iterator(&arn, &shard, &pos).await.unwrap();
        let mut it = Some(it);
        let mut sizes = Vec::new();
        while let Some(i) = it {
            let page = sim.get_records(&i, None).await.unwrap();
            if page.records.is_empty() {
                break;
            }
            sizes.push(
                page.records
                    .iter()
                    .map(|r| r.size_bytes.unwrap())
                    .collect::<Vec<_>>(),
            );
            it = page.next_iterator;
        }
        // INSERT (~400 KB) + MODIFY (~800 KB) exceed 1 MB: one record a page.
        assert_eq!(sizes.len(), 3, "{sizes:?}");
        assert!(sizes.iter().all(|p| p.len() == 1));
        assert!(sizes[1][0] > 800_000);

        // An open shard at its end: empty page, still a next iterator.
        let latest = sim
            .get_shard_iterator(&arn, &shard, &IteratorPosition::Latest)
            .await
            .unwrap();
        let empty = sim.get_records(&latest, None).await.unwrap();
        assert!(empty.records.is_empty());
        let next = empty.next_iterator.unwrap();
        // Closing it: the page that reaches the end carries no next iterator.
        sim.put("T", key("last")).unwrap();
        sim.rotate_shard(&shard).unwrap();
        let last = sim.get_records(&next, None).await.unwrap();
        assert_eq!(last.records.len(), 1);
        assert_eq!(last.next_iterator, None);
        let c = sim.calls();
        assert_eq!(
            c.get_records_empty, 2,
            "the loop's last read and the LATEST read"
        );
        assert_eq!(c.get_records_per_shard[&shard], c.get_records);
    }

    #[tokio::test(start_paused = true)]
    async fn sequence_numbers_are_validated_against_the_shard() {
        let sim = sim();
        let arn = arn(&sim);
        let first = sim.open_shards("T").unwrap().remove(0);
        let r1 = sim.put("T", key("a")).unwrap().unwrap();
        let second = sim.rotate_shard(&first).unwrap();
        let r2 = sim.put("T", key("b")).unwrap().unwrap();
        let at = |s: &StreamRecord| IteratorPosition::AtSequence(s.sequence_number.clone());
        for (shard, pos) in [(&second, at(&r1)), (&first, at(&r2))] {
            assert!(matches!(
                sim.get_shard_iterator(&arn, shard, &pos).await,
                Err(StreamError::Other(_))
            ));
        }
        for bad in ["x", "99999999999999999999999999"] {
            let pos = IteratorPosition::AfterSequence(bad.into());
            assert!(sim.get_shard_iterator(&arn, &second, &pos).await.is_err());
        }
        let (got, ended) = read(&sim, &arn, &first, at(&r1)).await;
        assert_eq!((got, ended), (vec![r1.clone()], true));
        let after = IteratorPosition::AfterSequence(r1.sequence_number.clone());
        let (got, ended) = read(&sim, &arn, &first, after).await;
        assert_eq!((got.len(), ended), (0, true));
        assert!(matches!(
            sim.get_shard_iterator(&arn, "shardId-none", &IteratorPosition::Latest)
                .await,
            Err(StreamError::NotFound(_))
        ));
        assert!(matches!(
            sim.get_records("garbage", None).await,
            Err(StreamError::Other(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_limits_get_records_per_shard_and_describe_stream_per_stream() {
        let sim = sim_with(SimConfig {
            throttling: true,
            initial_shards: 2,
            ..SimConfig::default()
        });
        sim.set_throttling(true);
        let arn = arn(&sim);
        let shards = sim.open_shards("T").unwrap();
        let mut its = Vec::new();
        for s in &shards {
            its.push(
                sim.get_shard_iterator(&arn, s, &IteratorPosition::Latest)
                    .await
                    .unwrap(),
            );
        }
        for _ in 0..5 {
            sim.get_records(&its[0], None).await.unwrap();
        }
        assert!(matches!(
            sim.get_records(&its[0], None).await,
            Err(StreamError::Throttled(_))
        ));
        // Another shard has its own budget.
        sim.get_records(&its[1], None).await.unwrap();
        advance(Duration::from_millis(999)).await;
        assert!(sim.get_records(&its[0], None).await.is_err());
        advance(Duration::from_millis(1)).await;
        sim.get_records(&its[0], None).await.unwrap();

        let req = DescribeStreamRequest {
            stream_arn: arn.clone(),
            ..Default::default()
        };
        for _ in 0..10 {
            sim.describe_stream(&req).await.unwrap();
        }
        assert!(matches!(
            sim.describe_stream(&req).await,
            Err(StreamError::Throttled(_))
        ));
        let c = sim.calls();
        assert_eq!(
            (
                c.throttled,
                c.throttled_get_records,
                c.throttled_describe_stream
            ),
            (3, 2, 1)
        );
        assert_eq!((c.get_records, c.describe_stream), (9, 11));
        assert_eq!(c.get_records_per_shard[&shards[0]], 8);
        sim.reset_calls();
        assert_eq!(sim.calls(), CallCounts::default());
        // Throttling off: no limit.
        sim.set_throttling(false);
        for _ in 0..50 {
            sim.describe_stream(&req).await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn re_enabled_stream_has_a_new_arn_and_the_old_one_stays_readable() {
        let sim = sim();
        let old_arn = arn(&sim);
        let old_shard = sim.open_shards("T").unwrap().remove(0);
        let r1 = sim.put("T", key("a")).unwrap().unwrap();
        sim.disable_stream("T").unwrap();
        let t = sim.describe_table("T").await.unwrap();
        assert_eq!(
            (
                t.latest_stream_arn.as_deref(),
                t.stream_enabled,
                t.view_type
            ),
            (Some(old_arn.as_str()), false, None)
        );
        // Written while disabled: no record anywhere.
        assert_eq!(sim.put("T", key("b")).unwrap(), None);
        assert!(sim.open_shards("T").unwrap().is_empty());
        assert!(sim.enable_stream("T", ViewType::NewImage).is_ok());
        // Enabled in the same millisecond: still a distinct, later label.
        let new_arn = arn(&sim);
        assert_ne!(new_arn, old_arn);
        assert!(crate::stream::stream_label(&new_arn) > crate::stream::stream_label(&old_arn));
        assert!(sim.enable_stream("T", ViewType::NewImage).is_err());
        let r3 = sim.put("T", key("c")).unwrap().unwrap();
        assert_eq!(sim.write_log_routed("T")[1].stream_arn, new_arn);

        let streams = sim.list_streams("T").await.unwrap();
        assert_eq!(
            streams
                .iter()
                .map(|s| s.stream_arn.clone())
                .collect::<Vec<_>>(),
            vec![old_arn.clone(), new_arn.clone()]
        );
        let desc = sim
            .describe_stream(&DescribeStreamRequest {
                stream_arn: old_arn.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(desc.status, StreamStatus::Disabled);
        let (got, ended) = read(&sim, &old_arn, &old_shard, IteratorPosition::TrimHorizon).await;
        assert_eq!((got, ended), (vec![r1], true));
        assert_eq!(sim.write_log("T").last(), Some(&r3));

        advance(24 * HOUR).await;
        let streams = sim.list_streams("T").await.unwrap();
        assert_eq!(streams.len(), 1);
        assert_eq!(streams[0].stream_arn, new_arn);
        assert!(matches!(
            sim.describe_stream(&DescribeStreamRequest {
                stream_arn: old_arn,
                ..Default::default()
            })
            .await,
            Err(StreamError::NotFound(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_table_is_gone_but_its_stream_is_readable_until_trimmed() {
        let sim = sim();
        let arn = arn(&sim);
        let shard = sim.open_shards("T").unwrap().remove(0);
        let r = sim.put("T", key("a")).unwrap().unwrap();
        sim.delete_table("T").unwrap();
        assert!(matches!(
            sim.describe_table("T").await,
            Err(StreamError::NotFound(_))
        ));
        assert!(sim.put("T", key("a")).is_err());
        assert_eq!(sim.list_streams("T").await.unwrap().len(), 1);
        let (got, ended) = read(&sim, &arn, &shard, IteratorPosition::TrimHorizon).await;
        assert_eq!((got, ended), (vec![r.clone()], true));
        assert_eq!(sim.write_log_for("T", &key("a")).unwrap(), vec![r]);
        advance(24 * HOUR).await;
        assert!(matches!(
            sim.list_streams("T").await,
            Err(StreamError::NotFound(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn shards_rotate_automatically_on_a_timer() {
        let sim = sim_with(SimConfig {
            auto_rotate: Some(4 * HOUR),
            ..SimConfig::default()
        });
        let arn = arn(&sim);
        sim.put("T", key("a")).unwrap();
        advance(9 * HOUR).await;
        sim.put("T", key("b")).unwrap();
        let shards = sim.shards(&arn).unwrap();
        assert_eq!(shards.len(), 3);
        assert_eq!(shards.iter().filter(|s| !s.is_closed()).count(), 1);
        let routed = sim.write_log_routed("T");
        assert_eq!(routed[0].shard_id, shards[0].shard_id);
        assert_eq!(routed[1].shard_id, shards[2].shard_id);
        assert_eq!(
            shards[2].parent_shard_id.as_ref(),
            Some(&shards[1].shard_id)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_seed_gives_the_same_run() {
        let run = |seed| {
            let sim = sim_with(SimConfig::with_seed(seed));
            sim.put("T", key("a")).unwrap();
            sim.add_empty_closed_shards("T", 50).unwrap();
            sim.put("T", key("b")).unwrap();
            (sim.shards(&arn(&sim)).unwrap(), sim.write_log("T"))
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1).0, run(2).0);
    }

    #[tokio::test(start_paused = true)]
    async fn arns_and_shard_ids_look_like_the_service() {
        let sim = sim();
        assert_eq!(
            arn(&sim),
            "arn:aws:dynamodb:us-east-1:000000000000:table/T/stream/2026-11-23T00:00:00.000"
        );
        let id = sim.open_shards("T").unwrap().remove(0);
        let (prefix, rest) = id.split_at("shardId-".len());
        assert_eq!(prefix, "shardId-");
        let (ts, suffix) = rest.split_once('-').unwrap();
        assert_eq!(ts, "00000001795392000000");
        assert_eq!(suffix.len(), 8);
    }
}
