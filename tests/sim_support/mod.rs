//! Shared pieces of the simulator-driven tests: running the daemon on the
//! simulator and checking the audit trail against the simulator's write log.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ddb_audit::config::Polling;
use ddb_audit::daemon::engine::{Engine, Settings, Shutdown};
use ddb_audit::diff::apply_changes;
use ddb_audit::entry::AuditEntry;
use ddb_audit::store::memory::MemoryStore;
use ddb_audit::store::{AuditStore, CheckpointStore};
use ddb_audit::stream::sim::SimStream;
use ddb_audit::stream::{cmp_sequence, StreamApi};
use ddb_audit::value::{same_value, AttrValue, Item};
use tokio::task::JoinHandle;

pub const TABLE: &str = "orders";

pub fn settings() -> Settings {
    Settings {
        actor_attribute: Some("updated_by".into()),
        correlation_attribute: None,
        polling: Polling::default(),
        jitter_seed: Some(1),
        ..Settings::default()
    }
}

pub fn key(id: u32) -> Item {
    [("pk".to_string(), AttrValue::S(format!("item-{id}")))].into()
}

/// An item with nested values that change from version to version.
pub fn item(id: u32, version: u32, actor: &str) -> Item {
    let mut item = key(id);
    item.insert(
        "balance".into(),
        AttrValue::N(format!("{}", 1000 - version)),
    );
    item.insert("updated_by".into(), AttrValue::S(actor.into()));
    item.insert(
        "profile".into(),
        AttrValue::M(
            [
                (
                    "name".to_string(),
                    AttrValue::S(format!("name-{}", version % 3)),
                ),
                (
                    "tags".to_string(),
                    AttrValue::L(
                        (0..(version % 4))
                            .map(|i| AttrValue::N(i.to_string()))
                            .collect(),
                    ),
                ),
            ]
            .into(),
        ),
    );
    if version % 2 == 0 {
        item.insert(
            "flags".into(),
            AttrValue::Ss(vec![format!("f{version}"), "beta".into()]),
        );
    }
    item
}

/// A running daemon over the simulator and a memory store.
pub struct Daemon {
    pub shutdown: Shutdown,
    pub handle: JoinHandle<()>,
}

pub fn start<S: StreamApi, T>(stream: S, store: &T, settings: Settings, tables: &[&str]) -> Daemon
where
    T: CheckpointStore + AuditStore + Clone,
{
    let engine = Arc::new(Engine::new(stream, store.clone(), store.clone(), settings));
    let shutdown = Shutdown::new();
    let tables = tables.iter().map(|t| t.to_string()).collect();
    let s = shutdown.clone();
    let handle = tokio::spawn(async move {
        if let Err(e) = ddb_audit::daemon::supervisor::run(engine, tables, s).await {
            panic!("daemon failed: {e}");
        }
    });
    Daemon { shutdown, handle }
}

impl Daemon {
    /// Graceful stop; returns once every task has finished.
    pub async fn stop(self) {
        self.shutdown.begin(Duration::from_secs(4));
        self.handle.await.expect("daemon task");
    }

    /// kill -9: the task tree is dropped at whatever await point it is in.
    pub async fn crash(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

/// Lets the daemon run for `d` of simulated time.
pub async fn run_for(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Checks the audit trail against the simulator: for every item, one entry per
/// record the stream holds (none lost, none doubled), in stream order, whose
/// changes rebuild each new image from the old one, and the last of which
/// leaves the item as the table holds it. Records the simulator has trimmed
/// may be missing only if a gap covers their shard.
pub async fn verify(sim: &SimStream, store: &MemoryStore, table: &str) -> Result<usize, String> {
    check_trail(sim, store, table, |_| false, false).await
}

/// What `verify`'s walk of each stream's chain and digests finds in
/// `evidence` now; `interval_secs`: the digest interval it was written with.
pub fn chain_findings(
    evidence: &[ddb_audit::proof::verify::StreamEvidence],
    interval_secs: u64,
) -> Vec<ddb_audit::proof::verify::Finding> {
    use ddb_audit::proof::verify::{verify_stream, VerifyOptions};
    let options = VerifyOptions {
        public_key: None,
        now: chrono::Utc::now(),
        interval_secs,
        remembered: None,
    };
    evidence
        .iter()
        .flat_map(|ev| verify_stream(ev, &options).findings)
        .collect()
}

/// [`verify`], where the records `malformed` picks (by sequence number)
/// reached the daemon malformed: each must be an error entry that keeps the
/// record raw, in its place in the item's history. A trimmed record may be
/// missing if any gap of its stream may hold it: the caller must then check
/// the gaps exactly with [`check_gaps`] (a loss in a shard the daemon never
/// saw is in a gap of a descendant's lineage, not one naming it).
pub async fn verify_with(
    sim: &SimStream,
    store: &MemoryStore,
    table: &str,
    malformed: impl Fn(&str) -> bool,
) -> Result<usize, String> {
    check_trail(sim, store, table, malformed, true).await
}

async fn check_trail(
    sim: &SimStream,
    store: &MemoryStore,
    table: &str,
    malformed: impl Fn(&str) -> bool,
    gaps_checked_elsewhere: bool,
) -> Result<usize, String> {
    let log = sim.write_log_routed(table);
    let gaps = store.gaps().await.map_err(|e| e.to_string())?;
    let mut by_item: BTreeMap<String, Vec<&ddb_audit::stream::sim::LoggedRecord>> = BTreeMap::new();
    for l in &log {
        by_item
            .entry(format!("{:?}", l.record.keys))
            .or_default()
            .push(l);
    }
    let mut total = 0;
    for records in by_item.values() {
        let keys = &records[0].record.keys;
        let entries = store
            .history(table, keys)
            .await
            .map_err(|e| e.to_string())?;
        let by_seq: HashMap<&str, &AuditEntry> = entries
            .iter()
            .map(|e| (e.sequence_number.as_str(), e))
            .collect();
        if by_seq.len() != entries.len() {
            return Err(format!("{keys:?}: an entry appears twice"));
        }
        for pair in entries.windows(2) {
            if pair[0].stream_arn == pair[1].stream_arn
                && cmp_sequence(&pair[0].sequence_number, &pair[1].sequence_number).is_ge()
            {
                return Err(format!("{keys:?}: history out of stream order"));
            }
        }
        let mut expected = 0;
        for l in records {
            let seq = l.record.sequence_number.as_str();
            match by_seq.get(seq) {
                Some(entry) => {
                    expected += 1;
                    if entry.shard_id != l.shard_id || entry.event != l.record.event_name {
                        return Err(format!(
                            "{keys:?} {seq}: entry says {} {} but the stream {} {}",
                            entry.shard_id, entry.event, l.shard_id, l.record.event_name
                        ));
                    }
                    if malformed(seq) {
                        if entry.error.is_none() || entry.raw.is_none() {
                            return Err(format!(
                                "{keys:?} {seq}: a malformed record must be an error entry with raw, not {entry:?}"
                            ));
                        }
                        continue;
                    }
                    if let Some(error) = &entry.error {
                        return Err(format!(
                            "{keys:?} {seq}: a good record became an error entry: {error}"
                        ));
                    }
                    let rebuilt = apply_changes(l.record.old_image.as_ref(), &entry.changes)
                        .map_err(|e| format!("{keys:?} {seq}: changes do not apply: {e}"))?;
                    let want = l.record.new_image.clone().unwrap_or_default();
                    if !same_item(&rebuilt, &want) {
                        return Err(format!(
                            "{keys:?} {seq}: changes rebuild {rebuilt:?}, not {want:?}"
                        ));
                    }
                }
                None => {
                    let trimmed = sim.is_trimmed(table, seq);
                    let gap = gaps.iter().any(|g| {
                        let named = [
                            Some(&g.shard_id),
                            g.unseen_shard_id.as_ref(),
                            g.after_shard_id.as_ref(),
                        ]
                        .contains(&Some(&l.shard_id));
                        g.stream_arn == l.stream_arn && (gaps_checked_elsewhere || named)
                    });
                    if !(trimmed && gap) {
                        return Err(format!(
                            "{keys:?}: record {seq} in {} is missing (trimmed: {trimmed}, gap recorded: {gap})",
                            l.shard_id
                        ));
                    }
                }
            }
        }
        if expected != entries.len() {
            return Err(format!(
                "{keys:?}: {} entries for {expected} records",
                entries.len()
            ));
        }
        total += entries.len();
    }
    Ok(total)
}

/// The gap oracle: every gap recorded is true and exact, and every loss is
/// inside one.
/// - Nothing trimmed (`anything_trimmed` false): no gap at all.
/// - Each gap's ends are entries the trail holds: `after_*` the last record
///   handled before the loss in the gap's lineage (its shard, or the
///   ancestor `after_shard_id` names), `resumed_at_*` the first read after
///   it; their times are those entries' times.
/// - Tight: no entry of the lineage lies strictly between the two ends.
/// - True: a record was lost between the ends, or a shard of the lineage
///   vanished before it could be read to its end.
/// - Once: no loss is recorded twice (same shard, same start; a gap closing
///   open ones may share its start with one of them).
/// - Bracketed: a gap written open (`resumed_at_*` null) is closed, once a
///   record after it was read in its lineage, by a gap of that record's
///   shard whose `closes` names it; a closing gap names only open gaps of
///   its lineage.
/// - Complete: every lost record lies between the ends of a gap of its
///   lineage.
///
/// Sequence numbers are compared across shards: the simulator's grow over a
/// whole stream, as the service's do in practice.
pub async fn check_gaps(
    sim: &SimStream,
    store: &MemoryStore,
    table: &str,
    anything_trimmed: bool,
) -> Result<usize, String> {
    let gaps: Vec<Gap> = store
        .gaps()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|g| g.table == table)
        .collect();
    if !anything_trimmed && !gaps.is_empty() {
        return Err(format!("false gap: nothing was trimmed, yet {gaps:#?}"));
    }
    let num = |s: &str| {
        s.parse::<u128>()
            .map_err(|e| format!("sequence number {s:?}: {e}"))
    };
    let log = sim.write_log_routed(table);
    // Every entry the trail holds, by stream and sequence number.
    let mut handled: HashMap<(String, u128), (String, Option<String>)> = HashMap::new();
    let mut keys_seen = std::collections::BTreeSet::new();
    for l in &log {
        if !keys_seen.insert(format!("{:?}", l.record.keys)) {
            continue;
        }
        for e in store
            .history(table, &l.record.keys)
            .await
            .map_err(|e| e.to_string())?
        {
            handled.insert(
                (e.stream_arn.clone(), num(&e.sequence_number)?),
                (e.shard_id.clone(), e.event_time.clone()),
            );
        }
    }
    let mut lost: Vec<(&str, &str, u128)> = Vec::new();
    for l in &log {
        let seq = num(&l.record.sequence_number)?;
        if !handled.contains_key(&(l.stream_arn.clone(), seq)) {
            lost.push((&l.stream_arn, &l.shard_id, seq));
        }
    }
    let mut parents: HashMap<String, HashMap<String, Option<String>>> = HashMap::new();
    let mut listed: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    for arn in log
        .iter()
        .map(|l| l.stream_arn.clone())
        .chain(gaps.iter().map(|g| g.stream_arn.clone()))
    {
        if parents.contains_key(&arn) {
            continue;
        }
        let all = sim.all_shards(&arn).map_err(|e| e.to_string())?;
        parents.insert(
            arn.clone(),
            all.into_iter()
                .map(|s| (s.shard_id, s.parent_shard_id))
                .collect(),
        );
        let now = sim.shards(&arn).map_err(|e| e.to_string())?;
        listed.insert(arn, now.into_iter().map(|s| s.shard_id).collect());
    }
    // The shard and its ancestors, nearest first.
    let lineage = |arn: &str, shard: &str| -> Vec<String> {
        let mut chain = vec![shard.to_string()];
        while let Some(Some(parent)) = parents.get(arn).and_then(|p| p.get(chain.last()?)) {
            if chain.contains(parent) {
                break;
            }
            chain.push(parent.clone());
        }
        chain
    };
    // The shard and its descendants.
    let below = |arn: &str, shard: &str| -> Vec<String> {
        let mut out = vec![shard.to_string()];
        let mut i = 0;
        while i < out.len() {
            let children = parents
                .get(arn)
                .into_iter()
                .flatten()
                .filter(|(_, parent)| parent.as_deref() == Some(out[i].as_str()))
                .map(|(child, _)| child.clone());
            let fresh: Vec<String> = children.filter(|c| !out.contains(c)).collect();
            out.extend(fresh);
            i += 1;
        }
        out
    };
    let mut starts = std::collections::HashSet::new();
    for g in &gaps {
        let line = lineage(&g.stream_arn, &g.shard_id);
        let after = g.after_sequence_number.as_deref().map(num).transpose()?;
        let resumed = match g.resumed_at_sequence_number.as_deref() {
            Some(r) => Some(num(r)?),
            // Nothing was readable when the gap was detected: the loss ends
            // where reading later resumed in the lineage, if it did.
            None => resume_point(
                &handled,
                &g.stream_arn,
                &below(&g.stream_arn, &g.shard_id),
                after,
            ),
        };
        let within = |seq: u128| after.is_none_or(|a| a < seq) && resumed.is_none_or(|r| seq < r);
        if let Some(a) = after {
            let want = g.after_shard_id.as_deref().unwrap_or(&g.shard_id);
            match handled.get(&(g.stream_arn.clone(), a)) {
                Some((shard, time)) if shard == want && *time == g.after_time => {}
                other => {
                    return Err(format!(
                        "gap {g:?}: its start is not the entry it names (the trail has {other:?})"
                    ))
                }
            }
            if !line.iter().any(|s| s == want) {
                return Err(format!(
                    "gap {g:?}: after_shard_id {want} is not in its lineage {line:?}"
                ));
            }
        }
        if let Some(r) = g
            .resumed_at_sequence_number
            .as_deref()
            .map(num)
            .transpose()?
        {
            match handled.get(&(g.stream_arn.clone(), r)) {
                Some((shard, time))
                    if *time == g.resumed_at_time
                        && lineage(&g.stream_arn, shard).contains(&g.shard_id) => {}
                other => {
                    return Err(format!(
                        "gap {g:?}: it resumed at an entry the trail does not have in that lineage ({other:?})"
                    ))
                }
            }
        }
        // The daemon knows a lineage only as far up as the shards it saw (a
        // row of ours): past one that came and went while it was away,
        // nothing can bracket the gap's start.
        let rows = store.checkpoints(&g.stream_arn);
        let seen = |id: &String| rows.iter().any(|c| c.shard_id == *id);
        let known = 1 + line.iter().skip(1).take_while(|s| seen(s)).count();
        let bracketing: &[String] = if line.iter().take(1).all(seen) {
            &line[..known]
        } else {
            &line[..1]
        };
        if let Some(((_, seq), (shard, _))) = handled.iter().find(|((arn, seq), (shard, _))| {
            *arn == g.stream_arn && bracketing.contains(shard) && within(*seq)
        }) {
            let rows = shard_rows(store, &g.stream_arn, |id| line.iter().any(|s| s == id));
            return Err(format!(
                "gap {g:?} is not tight: entry {seq} of {shard} lies inside it\n  lineage {line:?} bracketing {bracketing:?}\n  rows {rows:#?}"
            ));
        }
        let lost_inside = lost.iter().any(|(arn, shard, seq)| {
            *arn == g.stream_arn && line.iter().any(|s| s == shard) && within(*seq)
        });
        // The shards the loss can be in: from the gap's own up to the one
        // its start is in (all of the lineage when nothing was handled).
        let upto = match (&g.after_sequence_number, &g.after_shard_id) {
            (Some(_), None) => 1,
            (Some(_), Some(x)) => line
                .iter()
                .position(|s| s == x)
                .map_or(line.len(), |i| i + 1),
            (None, _) => line.len(),
        };
        let vanished = line[..upto]
            .iter()
            .any(|s| !listed.get(&g.stream_arn).is_some_and(|l| l.contains(s)));
        if !lost_inside && !vanished {
            return Err(format!(
                "false gap {g:?}: nothing was lost inside it and no shard of {line:?} vanished"
            ));
        }
        if !starts.insert((
            g.stream_arn.clone(),
            g.shard_id.clone(),
            g.after_sequence_number.clone(),
            g.is_closing(),
        )) {
            return Err(format!("gap {g:?} is recorded twice"));
        }
        // A closing gap names open gaps of its own lineage.
        for named in &g.closes {
            let open = gaps.iter().find(|o| {
                o.stream_arn == g.stream_arn && !o.is_closing() && o.reference() == *named
            });
            match open {
                Some(o) if o.resumed_at_sequence_number.is_none() && line.contains(&o.shard_id) => {
                }
                other => {
                    return Err(format!(
                    "gap {g:?} closes {named:?}, which is no open gap of its lineage ({other:?})"
                ))
                }
            }
        }
    }
    // Both brackets: an open gap followed by a record the daemon read, in a
    // shard it reached through shards it saw, is closed, by a gap of the
    // shard that record is in (whose own checks above make its right
    // bracket that first record).
    for g in gaps
        .iter()
        .filter(|g| g.resumed_at_sequence_number.is_none() && !g.is_closing())
    {
        let after = g.after_sequence_number.as_deref().map(num).transpose()?;
        let next = handled
            .iter()
            .filter(|((arn, seq), (shard, _))| {
                *arn == g.stream_arn
                    && below(arn, &g.shard_id).contains(shard)
                    && after.is_none_or(|a| a < *seq)
            })
            .min_by_key(|((_, seq), _)| *seq);
        let Some(((_, seq), (shard, _))) = next else {
            continue;
        };
        let rows = store.checkpoints(&g.stream_arn);
        let path = lineage(&g.stream_arn, shard);
        let Some(upto) = path.iter().position(|s| *s == g.shard_id) else {
            continue;
        };
        if !path[..=upto]
            .iter()
            .all(|s| rows.iter().any(|c| c.shard_id == *s))
        {
            continue;
        }
        let closed = gaps.iter().any(|c| {
            c.stream_arn == g.stream_arn
                && c.shard_id == *shard
                && c.closes.contains(&g.reference())
        });
        if !closed {
            return Err(format!(
                "gap {g:?} is open, yet record {seq} of {shard} was read after it: \
                 no gap of {shard} closes it\n  gaps: {gaps:#?}"
            ));
        }
    }
    for (arn, shard, seq) in &lost {
        let covered = gaps.iter().any(|g| {
            let line = lineage(arn, &g.shard_id);
            let after = g
                .after_sequence_number
                .as_deref()
                .and_then(|s| s.parse::<u128>().ok());
            let resumed = match g.resumed_at_sequence_number.as_deref() {
                Some(r) => r.parse::<u128>().ok(),
                None => resume_point(&handled, arn, &below(arn, &g.shard_id), after),
            };
            g.stream_arn == *arn
                && line.iter().any(|s| s == shard)
                && after.is_none_or(|a| a < *seq)
                && resumed.is_none_or(|r| *seq < r)
        });
        if !covered {
            let line: Vec<String> = lineage(arn, shard)
                .into_iter()
                .map(|s| {
                    let mut seqs: Vec<u128> = handled
                        .iter()
                        .filter(|((a, _), (sh, _))| a == arn && *sh == s)
                        .map(|((_, q), _)| *q)
                        .collect();
                    seqs.sort();
                    format!("{s} handled {:?}..{:?}", seqs.first(), seqs.last())
                })
                .collect();
            let rows = shard_rows(store, arn, |_| true);
            return Err(format!(
                "record {seq} of {shard} was lost, but no gap's bracket holds it.\n  lineage: {line:#?}\n  gaps: {gaps:#?}\n  rows: {rows:#?}"
            ));
        }
    }
    Ok(gaps.len())
}

/// The daemon's shard rows, for a failure's message.
fn shard_rows(store: &MemoryStore, arn: &str, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    store
        .checkpoints(arn)
        .iter()
        .filter(|c| wanted(&c.shard_id))
        .map(|c| {
            format!(
                "{} {:?} seq={:?} parent={:?}",
                c.shard_id, c.status, c.sequence_no, c.parent_shard_id
            )
        })
        .collect()
}

/// The first entry of `line` after `after`: where reading resumed after a
/// gap detected when nothing was readable yet.
fn resume_point(
    handled: &HashMap<(String, u128), (String, Option<String>)>,
    arn: &str,
    line: &[String],
    after: Option<u128>,
) -> Option<u128> {
    handled
        .iter()
        .filter(|((a, seq), (shard, _))| {
            a == arn && line.contains(shard) && after.is_none_or(|after| after < *seq)
        })
        .map(|((_, seq), _)| *seq)
        .min()
}

pub fn same_item(a: &Item, b: &Item) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| same_value(v, w)))
}

/// Wraps a store and delays every call a little (seeded), so that a crash —
/// the daemon's task tree dropped at an arbitrary await — can land between an
/// entry's write and its checkpoint, as a kill -9 can.
#[derive(Clone)]
pub struct LaggyStore {
    pub inner: MemoryStore,
    state: Arc<std::sync::atomic::AtomicU64>,
    max_micros: u64,
    /// While true, every call waits: a process stopped by SIGSTOP.
    frozen: Arc<tokio::sync::watch::Sender<bool>>,
    /// Fenced writes refused through this handle.
    pub refused: Arc<std::sync::atomic::AtomicU64>,
}

impl LaggyStore {
    pub fn new(inner: MemoryStore, seed: u64, max_latency: Duration) -> Self {
        LaggyStore {
            inner,
            state: Arc::new(std::sync::atomic::AtomicU64::new(seed | 1)),
            max_micros: max_latency.as_micros() as u64,
            frozen: Arc::new(tokio::sync::watch::channel(false).0),
            refused: Arc::default(),
        }
    }

    /// Every call through this handle (its clones too) waits until `thaw`.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    async fn gate(&self) {
        let mut rx = self.frozen.subscribe();
        let _ = rx.wait_for(|frozen| !frozen).await;
    }

    fn count<T>(&self, r: StoreResult<T>) -> StoreResult<T> {
        if matches!(r, Err(ddb_audit::store::StoreError::Fenced { .. })) {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    async fn lag(&self) {
        use std::sync::atomic::Ordering;
        // xorshift: cheap, seeded, shared by clones.
        let mut x = self.state.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state.store(x, Ordering::Relaxed);
        if self.max_micros > 0 {
            tokio::time::sleep(Duration::from_micros(x % self.max_micros)).await;
        }
    }
}

use ddb_audit::entry::Gap;
use ddb_audit::store::{PutOutcome, ShardCheckpoint, StoreResult, StreamRow, TableHealthRow};

impl AuditStore for LaggyStore {
    async fn put_entry(&self, entry: &AuditEntry) -> StoreResult<PutOutcome> {
        self.gate().await;
        self.lag().await;
        let r = self.inner.put_entry(entry).await;
        self.lag().await;
        r
    }
    async fn history(&self, table: &str, key: &Item) -> StoreResult<Vec<AuditEntry>> {
        self.gate().await;
        self.inner.history(table, key).await
    }
    async fn put_gap(&self, gap: &Gap) -> StoreResult<PutOutcome> {
        self.gate().await;
        self.lag().await;
        self.inner.put_gap(gap).await
    }
    async fn gaps(&self) -> StoreResult<Vec<Gap>> {
        self.gate().await;
        self.inner.gaps().await
    }
    async fn put_linked_entry(
        &self,
        entry: &AuditEntry,
        link: &ddb_audit::proof::Link,
    ) -> StoreResult<PutOutcome> {
        self.gate().await;
        self.lag().await;
        let r = self.inner.put_linked_entry(entry, link).await;
        self.lag().await;
        r
    }
    async fn item_predecessor(
        &self,
        table: &str,
        key: &Item,
        before_sort_key: &str,
    ) -> StoreResult<Option<ddb_audit::store::ItemPredecessor>> {
        self.inner
            .item_predecessor(table, key, before_sort_key)
            .await
    }

    async fn gap_link(&self, gap: &Gap) -> StoreResult<Option<ddb_audit::proof::Link>> {
        self.gate().await;
        self.inner.gap_link(gap).await
    }
    async fn put_linked_gap(
        &self,
        gap: &Gap,
        link: &ddb_audit::proof::Link,
    ) -> StoreResult<PutOutcome> {
        self.gate().await;
        self.lag().await;
        self.inner.put_linked_gap(gap, link).await
    }
}

impl CheckpointStore for LaggyStore {
    async fn load_shards(&self, stream_arn: &str) -> StoreResult<Vec<ShardCheckpoint>> {
        self.gate().await;
        self.lag().await;
        self.inner.load_shards(stream_arn).await
    }
    async fn load_shard(
        &self,
        stream_arn: &str,
        shard_id: &str,
    ) -> StoreResult<Option<ShardCheckpoint>> {
        self.gate().await;
        self.lag().await;
        self.inner.load_shard(stream_arn, shard_id).await
    }
    async fn release_shard(
        &self,
        stream_arn: &str,
        shard_id: &str,
        after: Duration,
    ) -> StoreResult<()> {
        self.gate().await;
        self.lag().await;
        self.inner.release_shard(stream_arn, shard_id, after).await
    }
    async fn save_shard(&self, checkpoint: &ShardCheckpoint) -> StoreResult<()> {
        self.gate().await;
        self.lag().await;
        let r = self.inner.save_shard(checkpoint).await;
        self.lag().await;
        r
    }
    async fn save_stream(&self, row: &StreamRow) -> StoreResult<()> {
        self.gate().await;
        self.inner.save_stream(row).await
    }
    async fn load_streams(&self, table: Option<&str>) -> StoreResult<Vec<StreamRow>> {
        self.gate().await;
        self.inner.load_streams(table).await
    }
    async fn save_table_health(&self, row: &TableHealthRow) -> StoreResult<()> {
        self.gate().await;
        self.inner.save_table_health(row).await
    }
    async fn load_table_health(&self, table: &str) -> StoreResult<Option<TableHealthRow>> {
        self.gate().await;
        self.inner.load_table_health(table).await
    }
    async fn load_all_table_health(&self) -> StoreResult<Vec<TableHealthRow>> {
        self.inner.load_all_table_health().await
    }
    async fn fresh_items(&self, table: &str, stream_arn: &str) -> StoreResult<bool> {
        self.gate().await;
        self.inner.fresh_items(table, stream_arn).await
    }
    async fn set_fresh_items(&self, table: &str, stream_arn: &str, fresh: bool) -> StoreResult<()> {
        self.gate().await;
        self.inner.set_fresh_items(table, stream_arn, fresh).await
    }
    async fn beat(&self, beat: &ddb_audit::store::ReplicaBeat) -> StoreResult<()> {
        self.gate().await;
        self.inner.beat(beat).await
    }
    async fn task_lease(&self, name: &str) -> StoreResult<ddb_audit::store::Lease> {
        self.gate().await;
        self.inner.task_lease(name).await
    }
    async fn replicas(&self) -> StoreResult<Vec<ddb_audit::store::ReplicaBeat>> {
        self.gate().await;
        self.inner.replicas().await
    }
    async fn forget_replica(&self, replica: &str, counter: u64) -> StoreResult<bool> {
        self.gate().await;
        self.inner.forget_replica(replica, counter).await
    }
    async fn leases(&self, table: Option<&str>) -> StoreResult<Vec<ddb_audit::store::Lease>> {
        self.gate().await;
        self.inner.leases(table).await
    }
    async fn take_lease(
        &self,
        seen: &ddb_audit::store::Lease,
        me: &str,
    ) -> StoreResult<Option<u64>> {
        self.gate().await;
        self.inner.take_lease(seen, me).await
    }
    async fn release_lease(&self, fence: &ddb_audit::store::Fence) -> StoreResult<bool> {
        self.gate().await;
        self.inner.release_lease(fence).await
    }
    async fn save_fenced_shard(
        &self,
        checkpoint: &ShardCheckpoint,
        fence: &ddb_audit::store::Fence,
    ) -> StoreResult<()> {
        self.gate().await;
        self.lag().await;
        let r = self.inner.save_fenced_shard(checkpoint, fence).await;
        self.lag().await;
        self.count(r)
    }
    async fn put_fenced_gap(
        &self,
        gap: &Gap,
        link: &ddb_audit::proof::Link,
        fence: &ddb_audit::store::Fence,
    ) -> StoreResult<PutOutcome> {
        self.gate().await;
        self.lag().await;
        let r = self.inner.put_fenced_gap(gap, link, fence).await;
        self.count(r)
    }
    async fn check_fence(&self, fence: &ddb_audit::store::Fence) -> StoreResult<()> {
        self.gate().await;
        self.inner.check_fence(fence).await
    }
}

impl ddb_audit::store::ProofStore for LaggyStore {
    async fn newest_digest(
        &self,
        stream_arn: &str,
    ) -> StoreResult<Option<(u64, ddb_audit::proof::digest::SignedDigest)>> {
        self.gate().await;
        self.inner.newest_digest(stream_arn).await
    }
    async fn put_digest(
        &self,
        table: &str,
        stream_arn: &str,
        number: u64,
        digest: &ddb_audit::proof::digest::SignedDigest,
    ) -> StoreResult<PutOutcome> {
        self.gate().await;
        self.inner
            .put_digest(table, stream_arn, number, digest)
            .await
    }
    async fn put_fenced_digest(
        &self,
        number: u64,
        digest: &ddb_audit::proof::digest::SignedDigest,
        fence: &ddb_audit::store::Fence,
    ) -> StoreResult<PutOutcome> {
        self.gate().await;
        let r = self.inner.put_fenced_digest(number, digest, fence).await;
        self.count(r)
    }
    async fn record_newest_digest(
        &self,
        table: &str,
        stream_arn: &str,
        number: u64,
        hash: &str,
    ) -> StoreResult<()> {
        self.gate().await;
        self.inner
            .record_newest_digest(table, stream_arn, number, hash)
            .await
    }
}
