//! The simulator's state behind the lock: tables and items, the streams,
//! the write log, the counters; the clock, sequence numbers, and writes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::Rng;
use tokio::time::Instant;

use super::errors::{invalid, not_found};
use super::keys::order_key;
use super::keys::{canon_key, item_size, key_hash, key_of};
use super::limits::CallCounts;
use super::shards::{ShardState, SimRecord, StreamState, PRUNE_EVERY};
use super::{LoggedRecord, SimConfig, ViewType};
use crate::stream::{StreamError, StreamRecord, StreamResult, UserIdentity};
use crate::value::Item;

/// First sequence number handed out: 21 digits, as the service's are, so that
/// text comparison and numeric comparison agree only by accident.
pub(super) const FIRST_SEQUENCE: u128 = 100_000_000_000_000_000_000;

pub(super) struct Table {
    pub(super) key_attrs: Vec<String>,
    /// Items by canonical key.
    pub(super) items: HashMap<String, Item>,
    /// The latest stream of this table (enabled or not).
    pub(super) current_stream: Option<usize>,
    pub(super) tags: crate::stream::Tags,
    /// Other regions holding a replica (a Global Table), as DescribeTable
    /// lists them.
    pub(super) replicas: Vec<String>,
}

pub(super) struct Logged {
    pub(super) key: String,
    pub(super) seq: u128,
    pub(super) at: Instant,
    pub(super) entry: LoggedRecord,
}

pub(super) struct State {
    pub(super) cfg: SimConfig,
    pub(super) epoch: Instant,
    pub(super) rng: StdRng,
    pub(super) last_seq: u128,
    pub(super) last_label_ms: i64,
    pub(super) tables: HashMap<String, Table>,
    pub(super) streams: Vec<StreamState>,
    pub(super) streams_by_arn: HashMap<String, usize>,
    /// Streams by table name; kept after the table is deleted, since its
    /// streams stay readable until trimmed.
    pub(super) streams_by_table: HashMap<String, Vec<usize>>,
    pub(super) shard_index: HashMap<String, (usize, usize)>,
    pub(super) logs: HashMap<String, Vec<Logged>>,
    pub(super) counts: CallCounts,
    pub(super) next_auto_rotate: Option<Instant>,
    pub(super) next_prune: Instant,
}

impl State {
    /// The table `name`, or the service's not-found error.
    pub(super) fn table(&self, name: &str) -> StreamResult<&Table> {
        self.tables
            .get(name)
            .ok_or_else(|| not_found(format!("table {name}")))
    }

    pub(super) fn table_mut(&mut self, name: &str) -> StreamResult<&mut Table> {
        self.tables
            .get_mut(name)
            .ok_or_else(|| not_found(format!("table {name}")))
    }

    pub(super) fn elapsed(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.epoch)
    }

    pub(super) fn wall_ms(&self, at: Instant) -> i64 {
        let ms = i64::try_from(self.elapsed(at).as_millis()).unwrap_or(i64::MAX);
        self.cfg.base_wall.timestamp_millis().saturating_add(ms)
    }

    pub(super) fn wall(&self, at: Instant) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.wall_ms(at)).unwrap_or(self.cfg.base_wall)
    }

    /// Sequence numbers grow with random gaps: consumers must not assume
    /// consecutive numbers.
    pub(super) fn alloc_seq(&mut self) -> u128 {
        self.last_seq += self.rng.random_range(1..=16u128);
        self.last_seq
    }

    /// Every entry point calls this first: it applies automatic rotation that
    /// fell due while the clock moved.
    pub(super) fn tick(&mut self) -> Instant {
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

    /// The enabled stream of a table, if any.
    pub(super) fn enabled_stream(&self, table: &str) -> StreamResult<Option<usize>> {
        let t = self.table(table)?;
        Ok(t.current_stream.filter(|&s| self.streams[s].enabled))
    }

    /// Appends the record for one change to the stream (if enabled) and the
    /// write log. Returns the record as written.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn emit(
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

    pub(super) fn remove_item(
        &mut self,
        table: &str,
        key: &Item,
        identity: Option<UserIdentity>,
    ) -> StreamResult<Option<StreamRecord>> {
        let now = self.tick();
        let t = self.table_mut(table)?;
        let keys = key_of(&t.key_attrs, key)?;
        let canon = canon_key(&keys);
        let Some(old) = t.items.remove(&canon) else {
            return Ok(None);
        };
        self.emit(now, table, canon, keys, "REMOVE", Some(old), None, identity)
    }
}

impl State {
    /// Trims every listed shard and drops the expired ones from the listing
    /// order, so that memory and the cost of a call follow the shards the
    /// service still holds, not every shard the stream ever had. (A closed
    /// shard nobody reads would otherwise keep its records forever.)
    pub(super) fn prune(&mut self, now: Instant) {
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

    pub(super) fn auto_rotate(&mut self, now: Instant) {
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
    pub(super) fn rotate_at(&mut self, s: usize, idx: usize, at: Instant) -> usize {
        let range = self.streams[s].shards[idx].range;
        self.close_shard(s, idx, at);
        self.open_shard(s, Some(idx), range, at)
    }

    /// Close + two children halving the range; `None` if it can't be halved.
    pub(super) fn split_at(&mut self, s: usize, idx: usize, at: Instant) -> Option<(usize, usize)> {
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

    pub(super) fn open_shard_of(&self, shard_id: &str) -> StreamResult<(usize, usize)> {
        let &(s, idx) = self
            .shard_index
            .get(shard_id)
            .ok_or_else(|| not_found(format!("shard {shard_id}")))?;
        if self.streams[s].shards[idx].ending_seq.is_some() {
            return Err(invalid(format!("shard {shard_id} is closed")));
        }
        Ok((s, idx))
    }

    pub(super) fn create_stream(&mut self, table: &str, view: ViewType, now: Instant) -> usize {
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

    pub(super) fn disable(&mut self, s: usize, now: Instant) {
        let open: Vec<usize> = self.streams[s].open.values().copied().collect();
        for idx in open {
            self.close_shard(s, idx, now);
        }
        let stream = &mut self.streams[s];
        stream.enabled = false;
        stream.disabled_at = Some(now);
    }
}
