//! Whether each configured table is being audited, and why not: the state
//! the supervisor sets and every report of readiness reads.

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
}

impl TableState {
    pub fn name(&self) -> &'static str {
        match self {
            TableState::Starting => "starting",
            TableState::Auditing => "auditing",
            TableState::Draining(_) => "draining",
            TableState::Failing(_) => "failing",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            TableState::Draining(r) | TableState::Failing(r) => Some(r),
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
