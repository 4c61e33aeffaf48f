//! A decorator that injects errors and latency into any checkpoint + audit
//! store (the memory store or DynamoDB), by rule — the store's counterpart of
//! `stream::faults`, so tests make writes fail without the store knowing.
//!
//! A fault happens *instead of* the call: an injected error never reaches the
//! wrapped store.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::entry::{AuditEntry, Gap};
use crate::store::{
    AuditStore, CheckpointStore, PutOutcome, ShardCheckpoint, StoreError, StoreResult, StreamRow,
    TableHealthRow,
};
use crate::stream::faults::When;
use crate::value::Item;

/// The store operation a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreOp {
    PutEntry,
    History,
    PutGap,
    Gaps,
    LoadShards,
    SaveShard,
    SaveStream,
    LoadStreams,
    /// Every operation.
    Any,
}

/// One rule: on matching calls selected by `when`, wait `latency` and/or fail
/// with `error`. `sequence_number` narrows `PutEntry` to one record's entry.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreFault {
    pub op: StoreOp,
    pub error: Option<StoreError>,
    pub latency: Option<Duration>,
    pub when: When,
    pub sequence_number: Option<String>,
}

impl StoreFault {
    pub fn error(op: StoreOp, error: StoreError) -> Self {
        StoreFault {
            op,
            error: Some(error),
            latency: None,
            when: When::Always,
            sequence_number: None,
        }
    }

    pub fn when(self, when: When) -> Self {
        StoreFault { when, ..self }
    }

    /// Only entries of this record.
    pub fn for_sequence(self, sequence_number: &str) -> Self {
        StoreFault {
            sequence_number: Some(sequence_number.to_string()),
            ..self
        }
    }
}

struct Rule {
    fault: StoreFault,
    matched: u64,
}

struct State {
    rng: StdRng,
    rules: Vec<Rule>,
    injected: u64,
}

/// Wraps a store and injects faults by rule. Clones share rules and counts.
#[derive(Clone)]
pub struct FaultStore<T> {
    inner: T,
    state: Arc<Mutex<State>>,
}

impl<T> FaultStore<T> {
    pub fn new(inner: T, seed: u64) -> Self {
        FaultStore {
            inner,
            state: Arc::new(Mutex::new(State {
                rng: StdRng::seed_from_u64(seed),
                rules: Vec::new(),
                injected: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn inner(&self) -> &T {
        &self.inner
    }

    pub fn add(&self, fault: StoreFault) {
        self.lock().rules.push(Rule { fault, matched: 0 });
    }

    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// Errors injected so far.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    /// The first rule that fires for this call: its latency and error.
    fn decide(
        &self,
        op: StoreOp,
        sequence_number: Option<&str>,
    ) -> (Option<Duration>, Option<StoreError>) {
        let mut st = self.lock();
        let State { rng, rules, .. } = &mut *st;
        let mut outcome = (None, None);
        for rule in rules.iter_mut() {
            let f = &rule.fault;
            if !(f.op == StoreOp::Any || f.op == op) {
                continue;
            }
            if f.sequence_number.is_some() && f.sequence_number.as_deref() != sequence_number {
                continue;
            }
            rule.matched += 1;
            if rule.fault.when.fires(rule.matched, rng) {
                outcome = (rule.fault.latency, rule.fault.error.clone());
                break;
            }
        }
        if outcome.1.is_some() {
            st.injected += 1;
        }
        outcome
    }

    async fn fault(&self, op: StoreOp, sequence_number: Option<&str>) -> StoreResult<()> {
        let (latency, error) = self.decide(op, sequence_number);
        if let Some(latency) = latency {
            tokio::time::sleep(latency).await;
        }
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl<T: AuditStore + Clone> AuditStore for FaultStore<T> {
    async fn put_entry(&self, entry: &AuditEntry) -> StoreResult<PutOutcome> {
        self.fault(StoreOp::PutEntry, Some(&entry.sequence_number))
            .await?;
        self.inner.put_entry(entry).await
    }

    async fn history(&self, table: &str, key: &Item) -> StoreResult<Vec<AuditEntry>> {
        self.fault(StoreOp::History, None).await?;
        self.inner.history(table, key).await
    }

    async fn put_gap(&self, gap: &Gap) -> StoreResult<PutOutcome> {
        self.fault(StoreOp::PutGap, None).await?;
        self.inner.put_gap(gap).await
    }

    async fn gaps(&self) -> StoreResult<Vec<Gap>> {
        self.fault(StoreOp::Gaps, None).await?;
        self.inner.gaps().await
    }

    async fn put_linked_entry(
        &self,
        entry: &AuditEntry,
        link: &crate::proof::Link,
    ) -> StoreResult<PutOutcome> {
        self.fault(StoreOp::PutEntry, Some(&entry.sequence_number))
            .await?;
        self.inner.put_linked_entry(entry, link).await
    }

    async fn item_predecessor(
        &self,
        table: &str,
        key: &Item,
        before_sort_key: &str,
    ) -> StoreResult<Option<crate::store::ItemPredecessor>> {
        self.fault(StoreOp::History, None).await?;
        self.inner
            .item_predecessor(table, key, before_sort_key)
            .await
    }
}

impl<T: CheckpointStore + Clone> CheckpointStore for FaultStore<T> {
    async fn load_shards(&self, stream_arn: &str) -> StoreResult<Vec<ShardCheckpoint>> {
        self.fault(StoreOp::LoadShards, None).await?;
        self.inner.load_shards(stream_arn).await
    }

    async fn load_shard(
        &self,
        stream_arn: &str,
        shard_id: &str,
    ) -> StoreResult<Option<ShardCheckpoint>> {
        self.fault(StoreOp::LoadShards, None).await?;
        self.inner.load_shard(stream_arn, shard_id).await
    }

    async fn release_shard(
        &self,
        stream_arn: &str,
        shard_id: &str,
        after: std::time::Duration,
    ) -> StoreResult<()> {
        self.fault(StoreOp::SaveShard, None).await?;
        self.inner.release_shard(stream_arn, shard_id, after).await
    }

    async fn save_shard(&self, checkpoint: &ShardCheckpoint) -> StoreResult<()> {
        self.fault(StoreOp::SaveShard, checkpoint.sequence_no.as_deref())
            .await?;
        self.inner.save_shard(checkpoint).await
    }

    async fn save_stream(&self, row: &StreamRow) -> StoreResult<()> {
        self.fault(StoreOp::SaveStream, None).await?;
        self.inner.save_stream(row).await
    }

    async fn load_streams(&self, table: Option<&str>) -> StoreResult<Vec<StreamRow>> {
        self.fault(StoreOp::LoadStreams, None).await?;
        self.inner.load_streams(table).await
    }

    async fn save_table_health(&self, row: &TableHealthRow) -> StoreResult<()> {
        self.fault(StoreOp::SaveStream, None).await?;
        self.inner.save_table_health(row).await
    }

    async fn load_table_health(&self, table: &str) -> StoreResult<Option<TableHealthRow>> {
        self.fault(StoreOp::LoadStreams, None).await?;
        self.inner.load_table_health(table).await
    }

    async fn load_all_table_health(&self) -> StoreResult<Vec<TableHealthRow>> {
        self.fault(StoreOp::LoadStreams, None).await?;
        self.inner.load_all_table_health().await
    }

    async fn fresh_items(&self, table: &str, stream_arn: &str) -> StoreResult<bool> {
        self.fault(StoreOp::LoadStreams, None).await?;
        self.inner.fresh_items(table, stream_arn).await
    }

    async fn set_fresh_items(&self, table: &str, stream_arn: &str, fresh: bool) -> StoreResult<()> {
        self.fault(StoreOp::SaveStream, None).await?;
        self.inner.set_fresh_items(table, stream_arn, fresh).await
    }

    // Lease rows are not faulted: the faults are about the data path.
    async fn beat(&self, beat: &crate::store::ReplicaBeat) -> StoreResult<()> {
        self.inner.beat(beat).await
    }

    async fn task_lease(&self, name: &str) -> StoreResult<crate::store::Lease> {
        self.inner.task_lease(name).await
    }

    async fn replicas(&self) -> StoreResult<Vec<crate::store::ReplicaBeat>> {
        self.inner.replicas().await
    }

    async fn forget_replica(&self, replica: &str, counter: u64) -> StoreResult<bool> {
        self.inner.forget_replica(replica, counter).await
    }

    async fn leases(&self, table: Option<&str>) -> StoreResult<Vec<crate::store::Lease>> {
        self.inner.leases(table).await
    }

    async fn take_lease(&self, seen: &crate::store::Lease, me: &str) -> StoreResult<Option<u64>> {
        self.inner.take_lease(seen, me).await
    }

    async fn release_lease(&self, fence: &crate::store::Fence) -> StoreResult<bool> {
        self.inner.release_lease(fence).await
    }

    async fn save_fenced_shard(
        &self,
        checkpoint: &ShardCheckpoint,
        fence: &crate::store::Fence,
    ) -> StoreResult<()> {
        self.fault(StoreOp::SaveShard, checkpoint.sequence_no.as_deref())
            .await?;
        self.inner.save_fenced_shard(checkpoint, fence).await
    }

    async fn put_fenced_gap(
        &self,
        gap: &Gap,
        link: &crate::proof::Link,
        fence: &crate::store::Fence,
    ) -> StoreResult<PutOutcome> {
        self.fault(StoreOp::PutGap, None).await?;
        self.inner.put_fenced_gap(gap, link, fence).await
    }

    async fn check_fence(&self, fence: &crate::store::Fence) -> StoreResult<()> {
        self.inner.check_fence(fence).await
    }
}
