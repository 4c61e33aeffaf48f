//! What the observer remembers per table and shard: each shard's state and
//! lag, the table's health as the supervisor last set it, and the readiness
//! `/readyz` reports from them.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::health::{shard_lag, TableState};
use super::Observer;

/// The states a shard is counted in (`ddb_audit_shards{table,state}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardState {
    /// Known, not being read: its parent is not drained yet, or it waits
    /// for a slot among the closed shards drained at once.
    Waiting,
    /// A task is reading it.
    Reading,
    /// Its last read failed with an error retrying cannot fix; it is
    /// restarted from its checkpoint after a cool-down.
    Failing,
    /// Read to its end, and still tracked (drained shards are forgotten once
    /// their children run: `ShardForgotten`).
    Drained,
}

impl ShardState {
    pub const ALL: [ShardState; 4] = [
        ShardState::Waiting,
        ShardState::Reading,
        ShardState::Failing,
        ShardState::Drained,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            ShardState::Waiting => "waiting",
            ShardState::Reading => "reading",
            ShardState::Failing => "failing",
            ShardState::Drained => "drained",
        }
    }
}

/// What is known of how far behind a shard's reading is.
#[derive(Clone, Debug)]
pub(super) struct ShardLag {
    /// When its last page came back (or when reading began).
    pub(super) last_page: DateTime<Utc>,
    /// The last page was empty: nothing more to read as of `last_page`.
    pub(super) caught_up: bool,
    /// Creation time of the newest record handled.
    pub(super) newest_record: Option<DateTime<Utc>>,
}

#[derive(Debug)]
pub(super) struct ShardObs {
    pub(super) state: ShardState,
    /// Present while the shard is not drained.
    pub(super) lag: Option<ShardLag>,
    pub(super) error: Option<String>,
}

#[derive(Debug)]
pub(super) struct TableObs {
    /// As the supervisor last set it (`Engine::health`).
    pub(super) health: TableState,
    /// Keyed by (stream ARN, shard id).
    pub(super) shards: HashMap<(String, String), ShardObs>,
    /// Shards per state, kept with `shards`: a table tracks thousands of
    /// shards and every state change publishes, so counting must not scan.
    pub(super) counts: HashMap<ShardState, i64>,
}

impl TableObs {
    pub(super) fn new() -> Self {
        TableObs {
            health: TableState::Starting,
            shards: HashMap::new(),
            counts: HashMap::new(),
        }
    }

    /// The shard's observation, created in `state` if new (and counted).
    pub(super) fn shard_entry(
        &mut self,
        key: (String, String),
        state: ShardState,
    ) -> &mut ShardObs {
        let counts = &mut self.counts;
        self.shards.entry(key).or_insert_with(|| {
            *counts.entry(state).or_default() += 1;
            ShardObs {
                state,
                lag: None,
                error: None,
            }
        })
    }

    pub(super) fn set_state(&mut self, key: (String, String), state: ShardState) -> &mut ShardObs {
        let counts = &mut self.counts;
        match self.shards.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let obs = e.into_mut();
                if obs.state != state {
                    *counts.entry(obs.state).or_default() -= 1;
                    *counts.entry(state).or_default() += 1;
                    obs.state = state;
                }
                obs
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                *counts.entry(state).or_default() += 1;
                e.insert(ShardObs {
                    state,
                    lag: None,
                    error: None,
                })
            }
        }
    }

    pub(super) fn remove(&mut self, stream: &str, shard: Option<&str>) {
        match shard {
            Some(id) => {
                if let Some(obs) = self.shards.remove(&(stream.to_string(), id.to_string())) {
                    *self.counts.entry(obs.state).or_default() -= 1;
                }
            }
            None => {
                let counts = &mut self.counts;
                self.shards.retain(|(s, _), obs| {
                    let keep = s != stream;
                    if !keep {
                        *counts.entry(obs.state).or_default() -= 1;
                    }
                    keep
                });
            }
        }
    }

    pub(super) fn count(&self, state: ShardState) -> i64 {
        self.counts.get(&state).copied().unwrap_or(0)
    }
}

/// One table's readiness, as `/readyz` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableReadiness {
    pub table: String,
    pub ready: bool,
    /// `starting`, `auditing`, `draining` (deleted or stream disabled: its
    /// old streams are read) or `failing`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The `/readyz` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub tables: Vec<TableReadiness>,
    /// Why the region's tables cannot be listed (patterns in `tables`), and
    /// the fix; absent when they can.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery: Option<String>,
    /// With several replicas: which one this is and what it reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaView>,
}

/// This replica's share of the work, as its last lease scan saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReplicaView {
    pub id: String,
    /// Stream ARNs whose lease it holds.
    pub owned: Vec<String>,
    /// Replicas whose heartbeat moves (itself included).
    pub live_replicas: usize,
    /// Streams of the configured tables nobody live owns.
    pub unowned_streams: usize,
    /// Tasks that run on one replica at a time and run here (`cloudtrail`).
    pub tasks: Vec<String>,
}

pub(super) struct State {
    pub(super) tables: BTreeMap<String, TableObs>,
    /// A shard whose last page is older than this is not "caught up" any
    /// more: its lag counts from that page, so a stalled reader shows.
    pub(super) stale_after: Duration,
    /// The daemon's loops are running (`/healthz`).
    pub(super) alive: bool,
    /// The region's tables have been listed (patterns in `tables`): no
    /// table matching yet is then a ready daemon, not one still starting.
    pub(super) listed: bool,
    /// Why the last listing failed, until one succeeds.
    pub(super) listing_problem: Option<String>,
    pub(super) replica: Option<ReplicaView>,
}

/// Idle shards poll every `idle_poll_max_ms` (5 s by default); this much
/// more than that without a page means reading has stalled.
pub(super) const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30);

pub(super) fn table_readiness(name: &str, t: &TableObs) -> TableReadiness {
    let failing: Vec<String> = {
        let mut v: Vec<String> = t
            .shards
            .iter()
            .filter(|(_, s)| s.state == ShardState::Failing)
            .map(|((_, shard), s)| {
                format!(
                    "shard {shard} failing: {}",
                    s.error.as_deref().unwrap_or("unknown error")
                )
            })
            .collect();
        v.sort();
        v
    };
    let (state, reason) = match &t.health {
        TableState::Starting => (
            "starting",
            Some("starting: checking the table and its stream".to_string()),
        ),
        TableState::Auditing if !failing.is_empty() => ("failing", Some(failing.join("; "))),
        TableState::Auditing => ("auditing", None),
        other => (
            other.name(),
            Some(other.reason().unwrap_or("not audited").to_string()),
        ),
    };
    TableReadiness {
        table: name.to_string(),
        // Audited by its home region's daemon: nothing wrong here.
        ready: reason.is_none() || matches!(t.health, TableState::Elsewhere(_)),
        state,
        reason,
    }
}

impl Observer {
    /// The table's lag now: the largest of its shards' (see `lag_seconds`).
    pub(super) fn table_lag(&self, st: &State, table: &str, now: DateTime<Utc>) -> f64 {
        let Some(t) = st.tables.get(table) else {
            return 0.0;
        };
        let stale = chrono::Duration::from_std(st.stale_after).unwrap_or(chrono::Duration::MAX);
        t.shards
            .values()
            .filter_map(|s| s.lag.as_ref())
            .filter_map(|lag| {
                shard_lag(
                    lag.caught_up,
                    lag.newest_record,
                    Some(lag.last_page),
                    stale,
                    now,
                )
            })
            .map(|d| (d.num_milliseconds() as f64) / 1000.0)
            .fold(0.0, f64::max)
    }
}
