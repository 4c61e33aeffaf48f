//! `snapshot`: the baseline of items that existed before auditing began, like
//! Debezium's initial snapshot. A parallel, strongly consistent Scan writes one
//! SNAPSHOT entry per item, paced against the source table's read capacity,
//! and records after each page how far each segment has come, so that a run
//! stopped (SIGTERM, a crash) resumes where it was. Entries are named by run
//! and item and written once, so a page read again after a crash adds nothing.
//!
//! The run is proven like a stream (`docs/proof-format.md`, "Snapshot
//! runs"): each segment is a hash chain of its entries, in the order they
//! were written, saved with the segment's progress; the run's stand-in
//! stream ARN names a digest chain covering every segment, written every
//! `[proof] digest_interval_secs`, when it is interrupted, and a final one
//! when it is done, so `verify` checks SNAPSHOT entries as it checks the rest.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::daemon::digests::{write_digest, DigestSettings, NextDigest};
use crate::diff::diff_images;
use crate::entry::AuditEntry;
use crate::pace::Budget;
use crate::proof::chain::hash_entry;
use crate::proof::digest::{ShardHead, SignedDigest};
use crate::proof::{ChainState, Link};
use crate::read::ReadError;
use crate::retry::{retry, Retried, RetryPolicy};
use crate::store::{
    segment_chain_id, snapshot_stream_arn, ProofStore, PutOutcome, ScanRequest, SegmentProgress,
    SnapshotRun, SnapshotStore, StoreError,
};
use crate::value::Item;

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotOptions {
    /// Parallel Scan segments.
    pub segments: u32,
    /// Read capacity units per second to spend on the source table, all
    /// segments together.
    pub read_units_per_sec: f64,
    /// Items per Scan page.
    pub page_size: usize,
    /// Start a new run even if the last one did not finish.
    pub restart: bool,
    /// `[attribution] correlation_attribute`, for the entries' `correlation`.
    pub correlation_attribute: Option<String>,
    /// The table's `[redaction]`, applied to each SNAPSHOT entry before it
    /// is written (a baseline holds every value of the item).
    pub redactor: Option<crate::redact::Redactor>,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            segments: 4,
            read_units_per_sec: 100.0,
            page_size: 100,
            restart: false,
            correlation_attribute: None,
            redactor: None,
        }
    }
}

/// Where a run is, for a progress line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    pub items: u64,
    pub total: Option<u64>,
    pub items_per_sec: f64,
    pub eta_secs: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotReport {
    pub run_id: String,
    pub resumed: bool,
    /// Items read in this invocation (and by earlier ones of a resumed run).
    pub items: u64,
    pub written: u64,
    /// Entries a resumed run found already written.
    pub already_present: u64,
    /// Stopped by the caller's token before the end: run again to resume.
    pub interrupted: bool,
}

/// Builds the SNAPSHOT entry of one item read at `read_at`.
pub fn snapshot_entry(
    table: &str,
    run_id: &str,
    key_names: &[String],
    item: &Item,
    read_at: &str,
    correlation_attribute: Option<&str>,
) -> AuditEntry {
    let key: Item = item
        .iter()
        .filter(|(k, _)| key_names.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    AuditEntry {
        table: table.to_string(),
        key,
        event: "SNAPSHOT".into(),
        sequence_number: String::new(),
        shard_id: String::new(),
        event_time: Some(read_at.to_string()),
        // A baseline is nobody's change.
        actor: None,
        actor_source: None,
        last_writer: None,
        principal: None,
        item_actor: None,
        changes: diff_images(None, Some(item)),
        ttl_expiry: false,
        error: None,
        raw: None,
        correlation: None.or_else(|| {
            let attr = correlation_attribute?;
            item.get(attr).map(|v| match v {
                crate::value::AttrValue::S(s) | crate::value::AttrValue::N(s) => s.clone(),
                other => serde_json::to_string(other).unwrap_or_default(),
            })
        }),
        snapshot_time: Some(read_at.to_string()),
        // Outside the item chain (proof format §2a): a baseline sorts
        // before the stream entries it may be written after.
        item_prev: None,
        stream_arn: snapshot_stream_arn(table, run_id),
    }
}

/// Runs (or resumes) the snapshot of `table` until it is done or `stop`
/// fires; `progress` is told after every page. Digests are signed and
/// written as `digests` says; the one written after `stop` (the run is
/// interrupted) retries until `abort`.
pub async fn snapshot<S: SnapshotStore + ProofStore>(
    store: &S,
    table: &str,
    options: &SnapshotOptions,
    digests: &DigestSettings,
    stop: &CancellationToken,
    abort: &CancellationToken,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<SnapshotReport, ReadError> {
    let retry_policy = digests.retry;
    if options.segments == 0 || options.segments > 1_000_000 {
        return Err(ReadError::BadArg {
            flag: "--segments".into(),
            message: format!("{} is out of range 1..=1000000", options.segments),
        });
    }
    if options.read_units_per_sec.is_nan() || options.read_units_per_sec <= 0.0 {
        return Err(ReadError::BadArg {
            flag: "--read-units-per-sec".into(),
            message: "must be above 0".into(),
        });
    }
    let source = store.describe_source(table).await?;
    if source.key_names.is_empty() {
        return Err(ReadError::Refused(format!(
            "table {table} has no key schema"
        )));
    }
    if let Some(redactor) = &options.redactor {
        redactor
            .check_keys(table, &source.key_names)
            .map_err(|e| ReadError::Refused(e.to_string()))?;
    }
    let (run, mut segments, resumed) = match store.load_snapshot(table).await? {
        Some((run, segs)) if !run.done && !options.restart => (run, segs, true),
        _ => {
            let run = SnapshotRun {
                table: table.to_string(),
                run_id: Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string(),
                segments: options.segments,
                done: false,
            };
            store.save_snapshot_run(&run).await?;
            (run, Vec::new(), false)
        }
    };
    if resumed {
        tracing::info!(table = %table, run = %run.run_id, "resuming an unfinished snapshot run");
    }
    // Segments never saved have not started.
    for segment in 0..run.segments {
        if !segments.iter().any(|s| s.segment == segment) {
            segments.push(SegmentProgress {
                segment,
                ..SegmentProgress::default()
            });
        }
    }
    segments.sort_by_key(|s| s.segment);
    let run_digests = RunDigests {
        table,
        stream_arn: snapshot_stream_arn(table, &run.run_id),
        heads: Mutex::new(
            segments
                .iter()
                .map(|s| (s.segment, (s.chain.clone(), s.done)))
                .collect(),
        ),
        last: tokio::sync::Mutex::new(None),
        settings: digests,
    };
    run_digests.load_newest(store, stop).await?;

    // Shared by every segment: the rate is the table's, not a segment's.
    let pace = Budget::per_second(options.read_units_per_sec);
    let before: u64 = segments.iter().map(|s| s.items).sum();
    let counters = Counters::default();
    counters.items.store(before, Ordering::Relaxed);
    let started = Instant::now();
    let report_progress = || {
        let items = counters.items.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let rate = (items - before) as f64 / secs;
        let eta = source
            .item_count
            .filter(|_| rate > 0.0)
            .map(|t| t.saturating_sub(items) as f64 / rate);
        progress(Progress {
            items,
            total: source.item_count,
            items_per_sec: rate,
            eta_secs: eta,
        });
    };
    let workers = segments.into_iter().map(|seg| {
        let (run, pace, counters, report_progress) = (&run, &pace, &counters, &report_progress);
        let key_names = &source.key_names;
        let run_digests = &run_digests;
        let policy = retry_policy;
        async move {
            segment_loop(
                store,
                run,
                seg,
                key_names,
                options,
                policy,
                pace,
                counters,
                stop,
                report_progress,
                run_digests,
            )
            .await
        }
    });
    let all = futures_util::future::join_all(workers);
    tokio::pin!(all);
    // A long run is signed as it goes, like a stream's heartbeats: a run
    // that dies leaves at most an interval unsigned.
    let results = loop {
        tokio::select! {
            results = &mut all => break results,
            _ = tokio::time::sleep(digests.interval) => {
                if let Err(e) = run_digests.write(store, false, stop).await {
                    tracing::warn!(table = %table, run = %run.run_id, error = %e,
                        "snapshot digest not written this interval");
                }
            }
        }
    };
    let mut interrupted = false;
    for r in results {
        match r {
            Ok(done) => interrupted |= !done,
            Err(e) => return Err(e),
        }
    }
    if !interrupted {
        let done = SnapshotRun {
            done: true,
            ..run.clone()
        };
        store.save_snapshot_run(&done).await?;
    }
    // Done: "the run ends here", signed. Interrupted: what was written so
    // far, signed, so that the resumed run's chain continues under it.
    run_digests.write(store, !interrupted, abort).await?;
    Ok(SnapshotReport {
        run_id: run.run_id.clone(),
        resumed,
        items: counters.items.load(Ordering::Relaxed),
        written: counters.written.load(Ordering::Relaxed),
        already_present: counters.present.load(Ordering::Relaxed),
        interrupted,
    })
}

/// The digest chain of one run: every segment's chain as its saved
/// progress says (so a digest never covers an entry whose page is not
/// durably recorded).
struct RunDigests<'a> {
    table: &'a str,
    stream_arn: String,
    /// Segment → (chain as saved, done).
    heads: Mutex<BTreeMap<u32, (ChainState, bool)>>,
    last: tokio::sync::Mutex<Option<(u64, SignedDigest)>>,
    settings: &'a DigestSettings,
}

impl RunDigests<'_> {
    async fn load_newest<S: ProofStore>(
        &self,
        store: &S,
        cancel: &CancellationToken,
    ) -> Result<(), ReadError> {
        let found = retry(self.settings.retry, cancel, "Query(digest)", || {
            store.newest_digest(&self.stream_arn)
        })
        .await;
        match found {
            Ok(found) => {
                *self.last.lock().await = found;
                Ok(())
            }
            Err(Retried::Failed(e)) => Err(e.into()),
            Err(Retried::Cancelled) => Ok(()),
        }
    }

    fn saved(&self, segment: u32, chain: &ChainState, done: bool) {
        self.heads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(segment, (chain.clone(), done));
    }

    async fn write<S: ProofStore>(
        &self,
        store: &S,
        is_final: bool,
        cancel: &CancellationToken,
    ) -> Result<(), ReadError> {
        let heads: Vec<ShardHead> = self
            .heads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(segment, (chain, done))| ShardHead {
                shard_id: segment_chain_id(*segment),
                parent_shard_id: None,
                status: if *done { "closed" } else { "open" }.into(),
                size: chain.tree.size,
                root: hex::encode(chain.tree.root()),
                last_hash: chain.last_hash.map(hex::encode),
                last_sequence_number: (chain.tree.size > 0).then(|| chain.tree.size.to_string()),
            })
            .collect();
        let mut last = self.last.lock().await;
        let written = write_digest(
            store,
            self.settings,
            NextDigest {
                table: self.table,
                stream_arn: &self.stream_arn,
                previous: last.clone(),
                heads,
                is_final,
                fence: None,
            },
            cancel,
        )
        .await
        .map_err(|e| ReadError::Refused(format!("writing the run's digest: {e}")))?;
        match written {
            Some((doc, sealed)) => *last = Some((doc.number, sealed)),
            // Another snapshot process of the same run took the number.
            None => {
                drop(last);
                self.load_newest(store, cancel).await?;
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct Counters {
    items: AtomicU64,
    written: AtomicU64,
    present: AtomicU64,
}

fn retried(e: Retried<StoreError>) -> Option<ReadError> {
    match e {
        Retried::Failed(e) => Some(e.into()),
        Retried::Cancelled => None,
    }
}

/// One segment to its end; `Ok(false)` when stopped first.
#[allow(clippy::too_many_arguments)]
async fn segment_loop<S: SnapshotStore>(
    store: &S,
    run: &SnapshotRun,
    mut seg: SegmentProgress,
    key_names: &[String],
    options: &SnapshotOptions,
    policy: RetryPolicy,
    pace: &Budget,
    counters: &Counters,
    stop: &CancellationToken,
    report_progress: &(dyn Fn() + Sync),
    run_digests: &RunDigests<'_>,
) -> Result<bool, ReadError> {
    let table = run.table.as_str();
    while !seg.done {
        if stop.is_cancelled() {
            return Ok(false);
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(false),
            _ = pace.ready() => {}
        }
        // Taken before the read: every change made before it is in the
        // (strongly consistent) page, so the read side can place the entry.
        let read_at = crate::entry::format_ts(Utc::now());
        let start = seg.last_key.clone();
        let page = match retry(policy, stop, "snapshot scan", || {
            store.scan_page(ScanRequest {
                table,
                segment: seg.segment,
                segments: run.segments,
                start: start.as_ref(),
                limit: options.page_size,
            })
        })
        .await
        {
            Ok(p) => p,
            Err(e) => return retried(e).map_or(Ok(false), Err),
        };
        pace.spend(page.read_units);
        let mut chain = seg.chain.clone();
        let mut page = page;
        for item in &mut page.items {
            if let Some(redactor) = &options.redactor {
                redactor.redact_item(item);
            }
            let item = &*item;
            let entry = snapshot_entry(
                table,
                &run.run_id,
                key_names,
                item,
                &read_at,
                options.correlation_attribute.as_deref(),
            );
            let prev_hash = chain.last_hash;
            let hash = hash_entry(&entry, prev_hash.as_ref()).map_err(|e| {
                ReadError::Refused(format!("hashing a SNAPSHOT entry of {table}: {e}"))
            })?;
            let link = Link { prev_hash, hash };
            let position = chain.tree.size + 1;
            // Stopping mid-page is safe: the progress is not saved yet, so
            // a resumed run reads the page again, and writes only what is missing.
            match retry(policy, stop, "snapshot entry write", || {
                store.put_snapshot_entry(&entry, &link, seg.segment, position)
            })
            .await
            {
                Ok(PutOutcome::Written) => {
                    chain.append(hash);
                    counters.written.fetch_add(1, Ordering::Relaxed)
                }
                Ok(PutOutcome::AlreadyPresent) => {
                    // Written before an interruption, when the page was read
                    // at another time: the chain goes on from the stored link.
                    let stored = match retry(policy, stop, "snapshot entry link", || {
                        store.snapshot_entry_link(&entry)
                    })
                    .await
                    {
                        Ok(stored) => stored,
                        Err(e) => return retried(e).map_or(Ok(false), Err),
                    };
                    match stored {
                        Some(stored) if stored.prev_hash == prev_hash => chain.append(stored.hash),
                        _ => tracing::warn!(
                            table = %table, run = %run.run_id, segment = seg.segment,
                            "a SNAPSHOT entry written by the interrupted run does not follow the \
                             segment's chain (the source changed in between): verify will list \
                             it; `snapshot --restart` makes a clean run"
                        ),
                    }
                    counters.present.fetch_add(1, Ordering::Relaxed)
                }
                Err(e) => return retried(e).map_or(Ok(false), Err),
            };
        }
        seg.items += page.items.len() as u64;
        counters
            .items
            .fetch_add(page.items.len() as u64, Ordering::Relaxed);
        seg.done = page.next.is_none();
        seg.last_key = page.next;
        seg.chain = chain;
        if let Err(e) = retry(policy, stop, "snapshot progress", || {
            store.save_segment(run, &seg)
        })
        .await
        {
            return retried(e).map_or(Ok(false), Err);
        }
        run_digests.saved(seg.segment, &seg.chain, seg.done);
        report_progress();
    }
    Ok(true)
}
