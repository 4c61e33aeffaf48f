//! Whether each configured table is being audited, and why not: the state
//! the supervisor sets and every report of readiness reads.
//!
//! [`Health`] owns it. [`Health::set`] is the only way it changes, and the
//! only sender of the event the metrics and `/readyz` follow; the row that
//! `status` reads from another process is written beside it, by the
//! supervisor's `record_state`.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};

/// Where a configured table stands. `Failing` tables are retried on the
/// discovery timer while the others are audited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableState {
    /// Its first check has not answered yet (transient errors are retried).
    Starting,
    /// Its current stream is being read.
    Auditing,
    /// Deleted, or its stream disabled: what its old streams still hold is
    /// read, and the table is watched for a new stream.
    Draining(String),
    /// It cannot be audited (missing, no stream, wrong view type, access
    /// denied): retried on the discovery timer.
    Failing(String),
    /// A Global Table whose home is another region: that region's daemon
    /// audits it, this one reads nothing of it (every replica's stream
    /// carries every write, so reading two would write each change twice).
    /// Not a failure. Holds the sentence `status` and `/readyz` show.
    Elsewhere(String),
}

impl TableState {
    pub fn name(&self) -> &'static str {
        match self {
            TableState::Starting => "starting",
            TableState::Auditing => "auditing",
            TableState::Draining(_) => "draining",
            TableState::Failing(_) => "failing",
            TableState::Elsewhere(_) => "elsewhere",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            TableState::Draining(r) | TableState::Failing(r) | TableState::Elsewhere(r) => Some(r),
            _ => None,
        }
    }
}

/// The per-table states, readable by whatever reports readiness.
#[derive(Debug, Default)]
pub struct Health {
    tables: Mutex<BTreeMap<String, (TableState, DateTime<Utc>)>>,
    /// Per stream being read: shards held in memory (lineage, checkpoints,
    /// drained ids). Bounded by what the stream lists, not by uptime.
    tracked: Mutex<BTreeMap<String, usize>>,
}

impl Health {
    /// Records a table's state; returns true when it changed.
    pub fn set(&self, table: &str, state: TableState) -> bool {
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        match tables.get(table) {
            Some((old, _)) if *old == state => false,
            _ => {
                super::Event::emit(super::TableStateChanged {
                    table,
                    state: &state,
                });
                tables.insert(table.to_string(), (state, Utc::now()));
                true
            }
        }
    }

    /// Whether the table counts as ready: audited here, or in its home region.
    pub fn is_ready(state: &TableState) -> bool {
        matches!(state, TableState::Auditing | TableState::Elsewhere(_))
    }

    /// Forgets a table no longer selected: it leaves `/readyz` and its
    /// per-table gauges.
    pub fn remove(&self, table: &str) {
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        if tables.remove(table).is_some() {
            super::Event::emit(super::TableUnselected { table });
        }
    }

    pub fn get(&self, table: &str) -> Option<TableState> {
        let tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        tables.get(table).map(|(s, _)| s.clone())
    }

    pub fn set_tracked(&self, stream_arn: &str, shards: usize) {
        let mut tracked = self.tracked.lock().unwrap_or_else(PoisonError::into_inner);
        if shards == 0 {
            tracked.remove(stream_arn);
        } else {
            tracked.insert(stream_arn.to_string(), shards);
        }
    }

    /// Shards held in memory, over every stream being read.
    pub fn tracked_shards(&self) -> usize {
        self.tracked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }

    /// Every table's state and since when.
    pub fn snapshot(&self) -> BTreeMap<String, (TableState, DateTime<Utc>)> {
        self.tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// How far one shard's reading is behind at `now`: the one formula behind
/// `ddb_audit_lag_seconds`, `/readyz`'s view and `status`.
///
/// A caught-up shard is not behind however old its last record (a quiet
/// table has lag 0), unless its last page is older than `stale_after`: then
/// reading has stalled and the lag counts from that page. `last_page` is
/// `None` where it is not known (`status` reads saved checkpoints, which an
/// idle poll does not rewrite), and then nothing counts as stalled. `None`
/// back: nothing is known to be behind yet.
pub fn shard_lag(
    caught_up: bool,
    newest_record: Option<DateTime<Utc>>,
    last_page: Option<DateTime<Utc>>,
    stale_after: chrono::Duration,
    now: DateTime<Utc>,
) -> Option<chrono::Duration> {
    let stalled = last_page
        .map(|page| now - page)
        .filter(|since| *since > stale_after);
    let lag = match (caught_up, newest_record) {
        (true, _) => Some(stalled.unwrap_or_else(chrono::Duration::zero)),
        (false, Some(record)) => Some(now - record),
        (false, None) => stalled,
    };
    lag.map(|d| d.max(chrono::Duration::zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_zero_when_caught_up_and_counts_from_the_last_page_once_stalled() {
        let now = Utc::now();
        let secs = chrono::Duration::seconds;
        let stale = secs(30);
        let old = Some(now - secs(600));
        assert_eq!(
            shard_lag(true, old, Some(now - secs(5)), stale, now),
            Some(secs(0))
        );
        assert_eq!(shard_lag(true, old, None, stale, now), Some(secs(0)));
        assert_eq!(
            shard_lag(true, old, Some(now - secs(90)), stale, now),
            Some(secs(90))
        );
        assert_eq!(
            shard_lag(false, old, Some(now), stale, now),
            Some(secs(600))
        );
        assert_eq!(
            shard_lag(false, None, Some(now - secs(5)), stale, now),
            None
        );
        assert_eq!(
            shard_lag(false, None, Some(now - secs(40)), stale, now),
            Some(secs(40))
        );
        assert_eq!(shard_lag(false, None, None, stale, now), None);
        // A record stamped ahead of this clock is not negative lag.
        assert_eq!(
            shard_lag(false, Some(now + secs(3)), None, stale, now),
            Some(secs(0))
        );
    }
}
