//! The service's limits (page sizes, calls per second) and the call counts
//! tests and benchmarks assert cost with.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::SimStream;

/// `at` lies at least `age` before `now` (an overflowing `at + age` is never).
pub(super) fn older_than(at: Instant, age: Duration, now: Instant) -> bool {
    at.checked_add(age).is_some_and(|t| t <= now)
}

/// GetRecords returns at most this many records per call.
pub const MAX_RECORDS_PER_CALL: usize = 1000;
/// GetRecords returns at most this many bytes (by `SizeBytes`) per call.
pub const MAX_BYTES_PER_CALL: i64 = 1024 * 1024;
/// DescribeStream returns at most this many shards per page.
pub const MAX_SHARDS_PER_PAGE: usize = 100;

/// Calls made to the simulator, per operation. Every call is counted,
/// including ones that failed or were throttled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub describe_table: u64,
    pub list_streams: u64,
    /// ListTables pages.
    pub list_tables: u64,
    /// ListTagsOfResource calls.
    pub list_tags: u64,
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

/// Sliding one-second window: admits the call (and remembers it) unless
/// `limit` calls were admitted in the last second.
pub(super) fn admit(window: &mut VecDeque<Instant>, now: Instant, limit: usize) -> bool {
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

impl SimStream {
    /// Calls so far.
    pub fn calls(&self) -> CallCounts {
        let st = self.lock();
        let mut per_shard = BTreeMap::new();
        for stream in &st.streams {
            for sh in &stream.shards {
                if sh.get_records_calls > 0 {
                    per_shard.insert(sh.id.clone(), sh.get_records_calls);
                }
            }
        }
        // The state counts each call as it happens; the totals derived from
        // those counts and the per-shard ones kept on the shards are filled
        // in here.
        CallCounts {
            throttled: st.counts.throttled_get_records + st.counts.throttled_describe_stream,
            get_records_per_shard: per_shard,
            ..st.counts.clone()
        }
    }

    /// Zeroes the call counters (throttling windows are unaffected).
    pub fn reset_calls(&self) {
        let mut st = self.lock();
        st.counts = CallCounts::default();
        for stream in &mut st.streams {
            for sh in &mut stream.shards {
                sh.get_records_calls = 0;
            }
        }
    }
}
