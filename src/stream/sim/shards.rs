//! Streams and their shards: hash ranges, the listing order, and the
//! lineage that rotation and splits grow; retention prunes them.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::DateTime;
use rand::Rng;
use tokio::time::Instant;

use super::keys::order_key;
use super::state::{invalid, not_found, older_than, SimRecord, State};
use super::ViewType;
use crate::stream::{Shard, StreamResult};

/// How often listed shards are trimmed and expired ones swept out of the
/// listing order. The listing skips them anyway; the sweep bounds memory and
/// the work of skipping.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub(super) struct ShardState {
    pub(super) id: String,
    pub(super) parent: Option<usize>,
    pub(super) children: Vec<usize>,
    /// Inclusive range of key hashes this shard receives while open.
    pub(super) range: (u64, u64),
    /// Position of the shard in its stream's (shuffled) listing order.
    pub(super) order_key: u64,
    pub(super) starting_seq: u128,
    pub(super) ending_seq: Option<u128>,
    pub(super) created_at: Instant,
    pub(super) closed_at: Option<Instant>,
    /// Listings show the shard open while the stream's DescribeStream call
    /// count is at most this (the brief inconsistency after closing).
    pub(super) stale_until_call: u64,
    pub(super) records: VecDeque<SimRecord>,
    /// Absolute index of `records[0]`: everything before it was trimmed.
    /// Iterator positions are absolute, so trimming never shifts them.
    pub(super) base: u64,
    pub(super) last_trimmed_seq: Option<u128>,
    pub(super) get_records_window: VecDeque<Instant>,
    pub(super) get_records_calls: u64,
}

impl ShardState {
    pub(super) fn end(&self) -> u64 {
        self.base + self.records.len() as u64
    }

    pub(super) fn trim(&mut self, now: Instant, retention: Duration) {
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
    pub(super) fn expired(&self, now: Instant, retention: Duration) -> bool {
        self.closed_at
            .is_some_and(|closed| older_than(closed, retention, now))
    }
}

pub(super) struct StreamState {
    pub(super) arn: String,
    pub(super) label: String,
    pub(super) table: String,
    pub(super) view: ViewType,
    pub(super) enabled: bool,
    pub(super) disabled_at: Option<Instant>,
    pub(super) shards: Vec<ShardState>,
    /// Open shards by the start of their hash range; their ranges partition
    /// the whole hash space, so every key has exactly one.
    pub(super) open: BTreeMap<u64, usize>,
    /// (order key, shard index), sorted when `order_dirty` is false.
    pub(super) order: Vec<(u64, usize)>,
    pub(super) order_dirty: bool,
    pub(super) salt: u64,
    pub(super) describe_calls: u64,
    pub(super) describe_window: VecDeque<Instant>,
}

impl StreamState {
    pub(super) fn retained(&self, now: Instant, retention: Duration) -> bool {
        self.enabled
            || self
                .disabled_at
                .is_none_or(|at| !older_than(at, retention, now))
    }

    /// The shard as DescribeStream shows it on call number `call`.
    pub(super) fn view_shard(&self, idx: usize, call: u64) -> Shard {
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
    pub(super) fn true_shard(&self, idx: usize) -> Shard {
        let sh = &self.shards[idx];
        Shard {
            shard_id: sh.id.clone(),
            parent_shard_id: sh.parent.map(|p| self.shards[p].id.clone()),
            starting_sequence_number: Some(sh.starting_seq.to_string()),
            ending_sequence_number: sh.ending_seq.map(|s| s.to_string()),
        }
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
