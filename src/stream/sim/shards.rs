//! Streams and their shards: hash ranges, the listing order, and the
//! lineage that rotation and splits grow; retention prunes them.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::limits::older_than;
use super::ViewType;
use crate::stream::{Shard, StreamRecord};

/// How often listed shards are trimmed and expired ones swept out of the
/// listing order. The listing skips them anyway; the sweep bounds memory and
/// the work of skipping.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// A record as the service holds it: its number, when it was written, its size.
pub(super) struct SimRecord {
    pub(super) seq: u128,
    pub(super) at: Instant,
    pub(super) size: i64,
    pub(super) record: StreamRecord,
}

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
