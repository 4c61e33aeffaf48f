//! What a stream's supervisor knows of each shard, in one record per shard:
//! its last saved row, its cooldown, its running task, and the lineage tail
//! it hands on once it has left memory. The shard graph itself (parents,
//! children, which may start) is `lineage`.

use std::collections::{BTreeMap, HashMap};

use tokio::time::Instant;

use super::shard::{last_saved, LineageTail, SavedCheckpoint};
use crate::store::ShardCheckpoint;

/// One shard, as its stream's supervisor knows it.
#[derive(Default)]
struct Known {
    /// Its last durably saved checkpoint. A running shard publishes its own
    /// as it saves it (`task`), and it is taken back here however the task
    /// ends, so a restart never starts from a stale position.
    row: Option<ShardCheckpoint>,
    /// Failed: it may start again from then on.
    cooldown_until: Option<Instant>,
    /// Running: where its task publishes its checkpoint.
    task: Option<SavedCheckpoint>,
    /// Drained and dropped from memory once its children started, with the
    /// lineage tail it hands on; pruned to what the stream lists.
    forgotten: Option<Option<LineageTail>>,
    /// It read nothing yet and hands on its ancestors' tail: kept when those
    /// ancestors' rows leave memory, so a later gap in the lineage still
    /// starts after the last record handled in it.
    inherited: Option<LineageTail>,
}

impl Known {
    fn is_empty(&self) -> bool {
        self.row.is_none()
            && self.cooldown_until.is_none()
            && self.task.is_none()
            && self.forgotten.is_none()
            && self.inherited.is_none()
    }
}

/// Every shard a stream's supervisor knows, by id.
#[derive(Default)]
pub(crate) struct Shards {
    by_id: BTreeMap<String, Known>,
    /// Which shard each running task reads.
    tasks: HashMap<tokio::task::Id, String>,
}

impl Shards {
    fn known(&mut self, id: &str) -> &mut Known {
        self.by_id.entry(id.to_string()).or_default()
    }

    /// Drops a record that holds nothing any more: memory follows what the
    /// stream lists, not the uptime.
    fn prune(&mut self, id: &str) {
        if self.by_id.get(id).is_some_and(Known::is_empty) {
            self.by_id.remove(id);
        }
    }

    // ------------------------------------------------------------ rows

    /// The rows loaded at the stream's start.
    pub(crate) fn load_rows(&mut self, rows: Vec<ShardCheckpoint>) {
        for row in rows {
            self.set_row(row);
        }
    }

    pub(crate) fn row(&self, id: &str) -> Option<&ShardCheckpoint> {
        self.by_id.get(id).and_then(|k| k.row.as_ref())
    }

    pub(crate) fn has_row(&self, id: &str) -> bool {
        self.row(id).is_some()
    }

    pub(crate) fn set_row(&mut self, row: ShardCheckpoint) {
        let id = row.shard_id.clone();
        self.known(&id).row = Some(row);
    }

    pub(crate) fn drop_row(&mut self, id: &str) {
        if let Some(k) = self.by_id.get_mut(id) {
            k.row = None;
        }
        self.prune(id);
    }

    pub(crate) fn rows(&self) -> impl Iterator<Item = &ShardCheckpoint> {
        self.by_id.values().filter_map(|k| k.row.as_ref())
    }

    // ------------------------------------------------------------ cooldowns

    pub(crate) fn is_cooling(&self, id: &str) -> bool {
        self.by_id
            .get(id)
            .is_some_and(|k| k.cooldown_until.is_some())
    }

    pub(crate) fn cool(&mut self, id: &str, until: Instant) {
        self.known(id).cooldown_until = Some(until);
    }

    /// When the first cooldown ends, if any shard is cooling down.
    pub(crate) fn next_cooldown_end(&self) -> Option<Instant> {
        self.by_id.values().filter_map(|k| k.cooldown_until).min()
    }

    /// Ends the cooldowns that are over at `now`.
    pub(crate) fn end_cooldowns(&mut self, now: Instant) {
        let over: Vec<String> = self
            .by_id
            .iter()
            .filter(|(_, k)| k.cooldown_until.is_some_and(|until| until <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in over {
            self.known(&id).cooldown_until = None;
            self.prune(&id);
        }
    }

    // ------------------------------------------------------------ tasks

    pub(crate) fn started(&mut self, task: tokio::task::Id, id: &str, saved: SavedCheckpoint) {
        self.known(id).task = Some(saved);
        self.tasks.insert(task, id.to_string());
    }

    /// A task ended: which shard it read, with the row it saved last taken
    /// back as the shard's row.
    pub(crate) fn ended(&mut self, task: tokio::task::Id) -> Option<String> {
        let id = self.tasks.remove(&task)?;
        let saved = self.known(&id).task.take();
        if let Some(row) = saved.as_ref().and_then(last_saved) {
            self.known(&id).row = Some(row);
        }
        self.prune(&id);
        Some(id)
    }

    pub(crate) fn is_running(&self, id: &str) -> bool {
        self.by_id.get(id).is_some_and(|k| k.task.is_some())
    }

    /// Running shards whose task has saved a row already.
    pub(crate) fn running_with_a_row(&self) -> impl Iterator<Item = &String> {
        self.by_id
            .iter()
            .filter(|(_, k)| {
                k.task
                    .as_ref()
                    .is_some_and(|cell| cell.lock().is_ok_and(|c| c.is_some()))
            })
            .map(|(id, _)| id)
    }

    // ------------------------------------------------------------ tails

    /// A forgotten shard's tail: `Some(tail)` once it has left memory.
    pub(crate) fn forgotten_tail(&self, id: &str) -> Option<&Option<LineageTail>> {
        self.by_id.get(id).and_then(|k| k.forgotten.as_ref())
    }

    pub(crate) fn is_forgotten(&self, id: &str) -> bool {
        self.forgotten_tail(id).is_some()
    }

    /// A drained shard leaves memory, keeping only the tail it hands on.
    pub(crate) fn forget(&mut self, id: &str, tail: Option<LineageTail>) {
        let k = self.known(id);
        k.row = None;
        k.forgotten = Some(tail);
    }

    /// Forgotten shards that `needed` does not keep are dropped; returns them.
    pub(crate) fn drop_forgotten(&mut self, needed: impl Fn(&String) -> bool) -> Vec<String> {
        self.release(needed, |k| &mut k.forgotten)
    }

    pub(crate) fn inherited_tail(&self, id: &str) -> Option<&LineageTail> {
        self.by_id.get(id).and_then(|k| k.inherited.as_ref())
    }

    pub(crate) fn inherit(&mut self, id: &str, tail: LineageTail) {
        self.known(id).inherited = Some(tail);
    }

    /// Keeps only the inherited tails that `needed` names.
    pub(crate) fn keep_inherited(&mut self, needed: impl Fn(&String) -> bool) {
        self.release(needed, |k| &mut k.inherited);
    }

    /// Clears the `held` slot of every shard that has it set and that
    /// `needed` does not keep; returns those shards.
    fn release<T>(
        &mut self,
        needed: impl Fn(&String) -> bool,
        held: impl Fn(&mut Known) -> &mut Option<T>,
    ) -> Vec<String> {
        let unneeded: Vec<String> = self
            .by_id
            .iter_mut()
            .filter_map(|(id, k)| (held(k).is_some() && !needed(id)).then(|| id.clone()))
            .collect();
        for id in &unneeded {
            *held(self.known(id)) = None;
            self.prune(id);
        }
        unneeded
    }

    /// The last record handled in the lineage ending at `shard_id`: its own
    /// last record, or its nearest ancestor's. Every tail a shard hands on
    /// is read here: a forgotten shard's, a row's own record or the tail it
    /// kept while it read nothing, an inherited one; `parent_of` answers
    /// for shards without a row (the lineage graph).
    pub(crate) fn tail_of(
        &self,
        shard_id: &str,
        parent_of: impl Fn(&str) -> Option<String>,
    ) -> Option<LineageTail> {
        let mut id = shard_id.to_string();
        // Bounded: a lineage is a chain, but stored data could loop.
        for _ in 0..64 {
            if let Some(tail) = self.forgotten_tail(&id) {
                return tail.clone();
            }
            let cp = self.row(&id);
            if let Some(cp) = cp {
                if let Some(seq) = &cp.sequence_no {
                    return Some(LineageTail {
                        shard_id: id,
                        sequence_no: seq.clone(),
                        record_time: cp.last_record_time,
                    });
                }
                if let Some(tail) = &cp.lineage_tail {
                    return Some(tail.clone());
                }
            }
            if let Some(tail) = self.inherited_tail(&id) {
                return Some(tail.clone());
            }
            let parent = cp
                .and_then(|c| c.parent_shard_id.clone())
                .or_else(|| parent_of(&id))?;
            id = parent;
        }
        None
    }

    /// What is held in memory for the stream: rows, forgotten shards and
    /// inherited tails (`/readyz` reports the total).
    pub(crate) fn held(&self) -> usize {
        self.by_id
            .values()
            .map(|k| {
                usize::from(k.row.is_some())
                    + usize::from(k.forgotten.is_some())
                    + usize::from(k.inherited.is_some())
            })
            .sum()
    }
}
