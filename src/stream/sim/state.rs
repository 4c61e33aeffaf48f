//! The simulator's state behind the lock: tables and items, the streams,
//! the write log, the counters; the clock, sequence numbers, and writes.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::Rng;
use tokio::time::Instant;

use super::keys::{canon_key, item_size, key_hash, key_of};
use super::limits::Counters;
use super::shards::{StreamState, PRUNE_EVERY};
use super::{LoggedRecord, SimConfig};
use crate::stream::{StreamError, StreamRecord, StreamResult, UserIdentity};
use crate::value::Item;

/// First sequence number handed out: 21 digits, as the brief asks, so that
/// text comparison and numeric comparison agree only by accident.
pub(super) const FIRST_SEQUENCE: u128 = 100_000_000_000_000_000_000;

pub(super) struct Table {
    pub(super) key_attrs: Vec<String>,
    /// Items by canonical key.
    pub(super) items: HashMap<String, Item>,
    /// The latest stream of this table (enabled or not).
    pub(super) current_stream: Option<usize>,
}

pub(super) struct SimRecord {
    pub(super) seq: u128,
    pub(super) at: Instant,
    pub(super) size: i64,
    pub(super) record: StreamRecord,
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
    pub(super) counts: Counters,
    pub(super) next_auto_rotate: Option<Instant>,
    pub(super) next_prune: Instant,
}

/// `at` lies at least `age` before `now` (an overflowing `at + age` is never).
pub(super) fn older_than(at: Instant, age: Duration, now: Instant) -> bool {
    at.checked_add(age).is_some_and(|t| t <= now)
}

pub(super) fn not_found(what: impl fmt::Display) -> StreamError {
    StreamError::NotFound(what.to_string())
}

pub(super) fn invalid(what: impl fmt::Display) -> StreamError {
    StreamError::Other(format!("ValidationException: {what}"))
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
