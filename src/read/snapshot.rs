//! `snapshot`: the baseline of items that existed before auditing began, like
//! Debezium's initial snapshot. A parallel, strongly consistent Scan writes one
//! SNAPSHOT entry per item, paced against the source table's read capacity,
//! and records after each page how far each segment has come, so that a run
//! stopped (SIGTERM, a crash) resumes where it was. Entries are named by run
//! and item and written once, so a page read again after a crash adds nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;

use crate::diff::diff_images;
use crate::entry::AuditEntry;
use crate::read::ReadError;
use crate::retry::{retry, Retried, RetryPolicy};
use crate::store::{
    snapshot_stream_arn, PutOutcome, SegmentProgress, SnapshotRun, SnapshotStore, StoreError,
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

/// Spends at most `rate` units a second, over all segments.
struct Pace {
    started: Instant,
    spent: Mutex<f64>,
    rate: f64,
}

impl Pace {
    async fn wait(&self) {
        let due = {
            let spent = *self.spent.lock().unwrap_or_else(|e| e.into_inner());
            Duration::from_secs_f64(spent / self.rate)
        };
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }

    fn spend(&self, units: f64) {
        *self.spent.lock().unwrap_or_else(|e| e.into_inner()) += units;
    }
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
        stream_arn: snapshot_stream_arn(table, run_id),
    }
}

/// Runs (or resumes) the snapshot of `table` until it is done or `stop`
/// fires; `progress` is told after every page.
pub async fn snapshot<S: SnapshotStore>(
    store: &S,
    table: &str,
    options: &SnapshotOptions,
    retry_policy: RetryPolicy,
    stop: &CancellationToken,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<SnapshotReport, ReadError> {
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

    let pace = Pace {
        started: Instant::now(),
        spent: Mutex::new(0.0),
        rate: options.read_units_per_sec,
    };
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
            )
            .await
        }
    });
    let results = futures_util::future::join_all(workers).await;
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
    Ok(SnapshotReport {
        run_id: run.run_id,
        resumed,
        items: counters.items.load(Ordering::Relaxed),
        written: counters.written.load(Ordering::Relaxed),
        already_present: counters.present.load(Ordering::Relaxed),
        interrupted,
    })
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
    pace: &Pace,
    counters: &Counters,
    stop: &CancellationToken,
    report_progress: &(dyn Fn() + Sync),
) -> Result<bool, ReadError> {
    let table = run.table.as_str();
    while !seg.done {
        if stop.is_cancelled() {
            return Ok(false);
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(false),
            _ = pace.wait() => {}
        }
        // Taken before the read: every change made before it is in the
        // (strongly consistent) page, so the read side can place the entry.
        let read_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let start = seg.last_key.clone();
        let page = match retry(policy, stop, "snapshot scan", || {
            store.scan_page(
                table,
                seg.segment,
                run.segments,
                start.as_ref(),
                options.page_size,
            )
        })
        .await
        {
            Ok(p) => p,
            Err(e) => return retried(e).map_or(Ok(false), Err),
        };
        pace.spend(page.read_units);
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
            // Stopping mid-page is safe: the progress is not saved yet, so
            // a resumed run reads the page again, and writes only what is missing.
            match retry(policy, stop, "snapshot entry write", || {
                store.put_entry(&entry)
            })
            .await
            {
                Ok(PutOutcome::Written) => counters.written.fetch_add(1, Ordering::Relaxed),
                Ok(PutOutcome::AlreadyPresent) => counters.present.fetch_add(1, Ordering::Relaxed),
                Err(e) => return retried(e).map_or(Ok(false), Err),
            };
        }
        seg.items += page.items.len() as u64;
        counters
            .items
            .fetch_add(page.items.len() as u64, Ordering::Relaxed);
        seg.done = page.next.is_none();
        seg.last_key = page.next;
        if let Err(e) = retry(policy, stop, "snapshot progress", || {
            store.save_segment(run, &seg)
        })
        .await
        {
            return retried(e).map_or(Ok(false), Err);
        }
        report_progress();
    }
    Ok(true)
}
