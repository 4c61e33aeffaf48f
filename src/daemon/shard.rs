//! One shard's loop: pace → GetRecords → entries → write → checkpoint.
//!
//! The checkpoint never moves past an entry that is not durably written; an
//! entry written but not checkpointed (crash) is read again next time and the
//! write-once store recognises it. Trimmed records become a gap, never a
//! silent skip.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use futures_util::{StreamExt, TryStreamExt};
use tracing::{debug, error, info, warn, Instrument};

use crate::daemon::engine::{Engine, Shutdown};
use crate::daemon::itemchain::ItemRun;
use crate::entry::{build_entry, correlation_of, record_time_text, AuditEntry, Gap};
use crate::observe::{self, Event};
use crate::pace::Pacer;
use crate::retry::{retry, Retried};
use crate::store::{
    AuditStore, CheckpointStore, Fence, PutOutcome, ShardCheckpoint, ShardStatus, StoreError,
};
use crate::stream::{
    is_sequence_number, IteratorPosition, RecordsPage, Shard, ShardIteratorRequest, StreamApi,
    StreamError,
};

/// Entries of one page written at once; the store orders them by sequence
/// number, so write order does not matter.
const WRITE_CONCURRENCY: usize = 16;

/// How a shard's loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ShardOutcome {
    /// Closed and read to its end: its children may start.
    Drained,
    /// Shutdown: resume from the checkpoint next time.
    Stopped,
    /// A non-retryable error; the supervisor restarts the shard later.
    Failed(ShardFailure),
    /// The service says the shard does not exist (ResourceNotFound). Not yet
    /// a gap: the supervisor confirms with a listing first.
    Vanished(String),
}

/// Why a shard's task failed, typed so that the supervisor can tell a
/// missing permission from a redaction key that does not match.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardFailure {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Redaction(#[from] crate::redact::RedactError),
    /// An entry that cannot be put in canonical form to be hashed.
    #[error(transparent)]
    Canonical(#[from] crate::proof::canonical::CanonicalError),
    /// The task panicked or was cancelled by the runtime.
    #[error("{0}")]
    Task(String),
}

impl<E: Into<ShardFailure>> From<Retried<E>> for ShardOutcome {
    fn from(e: Retried<E>) -> Self {
        match e {
            Retried::Cancelled => ShardOutcome::Stopped,
            Retried::Failed(e) => ShardOutcome::Failed(e.into()),
        }
    }
}

pub use crate::store::LineageTail;

/// How a shard (re)starts.
#[derive(Clone, Debug, Default)]
pub struct ShardStart {
    /// Its last durably saved checkpoint, if it has one.
    pub checkpoint: Option<ShardCheckpoint>,
    /// We read this shard's lineage before it: records missing from its start
    /// are a gap, so the first read starts AT its first sequence number
    /// (which fails as trimmed if it was) rather than at TRIM_HORIZON (which
    /// would silently skip what was trimmed).
    pub continues_lineage: bool,
    /// Where a gap at this shard's start begins.
    pub lineage_tail: Option<LineageTail>,
    /// A loss found before reading (an ancestor that vanished unseen),
    /// recorded before anything else.
    pub gap: Option<Gap>,
    /// The stream's lease, when replicas share the work: checkpoints and
    /// gaps are written under it, and refused once another replica took
    /// the stream over.
    pub fence: Option<Fence>,
}

/// The last checkpoint a shard durably saved, shared with its supervisor, so
/// that a restart starts from it whatever ended the previous run (a failure,
/// a panic, a vanished shard).
pub type SavedCheckpoint = Arc<Mutex<Option<ShardCheckpoint>>>;

pub fn saved_checkpoint(checkpoint: Option<ShardCheckpoint>) -> SavedCheckpoint {
    Arc::new(Mutex::new(checkpoint))
}

pub fn last_saved(saved: &SavedCheckpoint) -> Option<ShardCheckpoint> {
    saved.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Doubles the wait after each empty page, from `min` up to `max`: an idle
/// shard costs at most one GetRecords per `max`, a busy one none of it.
#[derive(Debug)]
struct IdleBackoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl IdleBackoff {
    fn new(min: Duration, max: Duration) -> Self {
        IdleBackoff {
            min,
            max,
            next: min,
        }
    }
    fn idle(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
    fn busy(&mut self) {
        self.next = self.min;
    }
}

/// Reads a shard from its checkpoint until it is drained or shutdown begins.
pub async fn run_shard<S, C, A>(
    engine: Arc<Engine<S, C, A>>,
    table: String,
    stream_arn: String,
    shard: Shard,
    start: ShardStart,
    saved: SavedCheckpoint,
    shutdown: Shutdown,
) -> ShardOutcome
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    let span =
        tracing::info_span!("shard", table = %table, stream = %stream_arn, shard = %shard.shard_id);
    let fresh = start.checkpoint.is_none();
    let mut reader = ShardReader::new(
        engine,
        table,
        stream_arn,
        shard,
        start.checkpoint,
        saved,
        shutdown,
    );
    reader.continues_lineage = start.continues_lineage;
    // What the supervisor knows, else what the row kept (its ancestors'
    // rows may have expired since).
    reader.lineage_tail = start
        .lineage_tail
        .or_else(|| reader.checkpoint.lineage_tail.clone());
    if reader.checkpoint.sequence_no.is_none() {
        reader.checkpoint.lineage_tail = reader.lineage_tail.clone();
    }
    reader.pending_gap = start.gap;
    reader.fence = start.fence;
    reader.run(fresh).instrument(span).await
}

struct ShardReader<S, C, A> {
    engine: Arc<Engine<S, C, A>>,
    table: String,
    stream_arn: String,
    shard: Shard,
    checkpoint: ShardCheckpoint,
    shutdown: Shutdown,
    pacer: Pacer,
    /// A trim detected and not yet recorded (it is recorded once we know
    /// where reading resumed).
    pending_gap: Option<Gap>,
    /// The parent was read by us: records missing from this shard's start
    /// would be a gap, so the first read starts AT its first sequence number
    /// (which fails as trimmed if it was) rather than at TRIM_HORIZON (which
    /// would silently skip what was trimmed).
    continues_lineage: bool,
    lineage_tail: Option<LineageTail>,
    saved: SavedCheckpoint,
    /// What this run knows of its items' chains.
    item_run: ItemRun,
    fence: Option<Fence>,
}

impl<S, C, A> ShardReader<S, C, A>
where
    S: StreamApi,
    C: CheckpointStore,
    A: AuditStore,
{
    fn new(
        engine: Arc<Engine<S, C, A>>,
        table: String,
        stream_arn: String,
        shard: Shard,
        checkpoint: Option<ShardCheckpoint>,
        saved: SavedCheckpoint,
        shutdown: Shutdown,
    ) -> Self {
        let pacer = Pacer::per_second(engine.settings.polling.get_records_per_shard_per_sec);
        let item_run = ItemRun {
            id: engine.items.next_run(),
            // Known once the run starts (`load_fresh_items`).
            fresh: false,
        };
        let checkpoint = checkpoint.unwrap_or_else(|| {
            ShardCheckpoint::fresh(
                &table,
                &stream_arn,
                &shard.shard_id,
                shard.parent_shard_id.as_deref(),
            )
        });
        ShardReader {
            engine,
            table,
            stream_arn,
            shard,
            checkpoint,
            shutdown,
            pacer,
            pending_gap: None,
            continues_lineage: false,
            lineage_tail: None,
            saved,
            item_run,
            fence: None,
        }
    }

    /// Where to (re)start: AFTER the last durably handled record — AT would
    /// deliver it again — or the oldest record for a shard never read.
    fn position(&self) -> IteratorPosition {
        match (
            &self.checkpoint.sequence_no,
            &self.shard.starting_sequence_number,
        ) {
            (Some(seq), _) => IteratorPosition::AfterSequence(seq.clone()),
            (None, Some(start)) if self.continues_lineage || self.checkpoint.from_start => {
                IteratorPosition::AtSequence(start.clone())
            }
            (None, _) => IteratorPosition::TrimHorizon,
        }
    }

    /// For a shard started for the first time: whether its first sequence
    /// number is still readable (then `from_start`, and the iterator there).
    /// A lineage child always starts there; for any other shard, one
    /// GetShardIterator tells. If the start is already trimmed, auditing of
    /// this shard begins after it: TRIM_HORIZON, and no gap.
    async fn readable_from_start(&mut self) -> Result<Option<String>, ShardOutcome> {
        if self.continues_lineage {
            self.checkpoint.from_start = true;
            return Ok(None);
        }
        let Some(start) = self.shard.starting_sequence_number.clone() else {
            return Ok(None);
        };
        match self
            .get_iterator(&IteratorPosition::AtSequence(start))
            .await
        {
            Ok(iterator) => {
                self.checkpoint.from_start = true;
                Ok(Some(iterator))
            }
            Err(Retried::Cancelled) => Err(ShardOutcome::Stopped),
            Err(Retried::Failed(e)) => {
                debug!(error = %e, "the shard's first record is not readable; starting at TRIM_HORIZON");
                Ok(None)
            }
        }
    }

    /// A shard never read before continues its parent's chain, so the
    /// chain follows the lineage.
    async fn start_chain(&mut self) -> Result<(), ShardOutcome> {
        if self.checkpoint.chain.is_some() {
            return Ok(());
        }
        let mut start = None;
        if let (None, Some(parent)) = (&self.checkpoint.sequence_no, &self.shard.parent_shard_id) {
            let engine = &self.engine;
            let row = retry(
                engine.settings.retry_policy(),
                &self.shutdown.stop,
                "GetItem(shards)",
                || engine.checkpoints.load_shard(&self.stream_arn, parent),
            )
            .await;
            match row {
                Ok(row) => {
                    start = row
                        .as_ref()
                        .and_then(|r| r.chain.as_ref())
                        .and_then(|c| c.last_hash);
                    // Its parent's gaps still open are this shard's to
                    // close: the first record after them may be here.
                    if let Some(row) = row {
                        for gap in row.open_gaps {
                            self.checkpoint.note_open_gap(gap);
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.checkpoint.chain = Some(crate::proof::ChainState::continuing(start));
        Ok(())
    }

    async fn run(mut self, fresh: bool) -> ShardOutcome {
        self.load_fresh_items().await;
        if let Err(outcome) = self.start_chain().await {
            return outcome;
        }
        if let Some(gap) = self.pending_gap.take() {
            // Found before reading: an ancestor that vanished unseen. Before
            // the shard's first row, so that a shard with a row has had this
            // settled (a restart then never records it again).
            if let Err(outcome) = self.write_gap(gap).await {
                return outcome;
            }
        }
        let mut first_iterator = None;
        if fresh {
            match self.readable_from_start().await {
                Ok(iterator) => first_iterator = iterator,
                Err(outcome) => return outcome,
            }
            // Recorded before the first read ("open, nothing read yet"): a
            // shard that vanishes before it is read to its end is then always
            // found, and becomes a gap, at the next start.
            if self.shard.is_closed() {
                self.checkpoint.status = ShardStatus::Closed;
            }
            if let Err(outcome) = self.save_checkpoint().await {
                return outcome;
            }
        }
        let polling = self.engine.settings.polling.clone();
        let mut idle = IdleBackoff::new(polling.idle_min(), polling.idle_max());
        let mut iterator: Option<String> = first_iterator;
        let mut position = self.position();
        debug!(?position, closed = self.shard.is_closed(), "shard started");
        loop {
            if self.shutdown.stop.is_cancelled() {
                return ShardOutcome::Stopped;
            }
            let current = match iterator.take() {
                Some(it) => it,
                None => match self.get_iterator(&position).await {
                    Ok(it) => it,
                    Err(Retried::Failed(e))
                        if self.continues_lineage
                            && matches!(position, IteratorPosition::AtSequence(_))
                            && !matches!(e, StreamError::Trimmed(_) | StreamError::NotFound(_)) =>
                    {
                        // A service that does not accept a shard's starting
                        // sequence number as a position: fall back.
                        warn!(error = %e, "cannot start at the shard's first sequence number; using TRIM_HORIZON");
                        self.continues_lineage = false;
                        position = IteratorPosition::TrimHorizon;
                        continue;
                    }
                    Err(e) => match self.recover(e).await {
                        Ok(next) => {
                            position = next;
                            continue;
                        }
                        Err(outcome) => return outcome,
                    },
                },
            };
            tokio::select! {
                biased;
                _ = self.shutdown.stop.cancelled() => return ShardOutcome::Stopped,
                _ = self.pacer.ready() => {}
            }
            let page = match self.get_records(&current).await {
                Ok(page) => page,
                Err(e) => match self.recover(e).await {
                    Ok(next) => {
                        position = next;
                        continue;
                    }
                    Err(outcome) => return outcome,
                },
            };
            let count = page.records.len();
            let newest_record = page
                .records
                .iter()
                .rev()
                .find_map(|r| r.approximate_creation);
            match self.handle_page(page.records).await {
                Ok(()) => {}
                Err(outcome) => return outcome,
            }
            if count == 0 && !self.checkpoint.caught_up && page.next_iterator.is_some() {
                // Caught up: lag is 0 from now until records come again. One
                // write per busy → idle change, not per empty page.
                self.checkpoint.caught_up = true;
                if let Err(outcome) = self.save_checkpoint().await {
                    return outcome;
                }
            }
            observe::PageHandled {
                at: self.shard_at(),
                records: count,
                newest_record,
            }
            .emit();
            position = self.position();
            let Some(next) = page.next_iterator else {
                return self.drained().await;
            };
            iterator = Some(next);
            // A page with records is followed at once (the pacer spaces the
            // calls): a shard with data is drained as fast as allowed.
            let wait = if count > 0 {
                idle.busy();
                None
            } else if self.shard.is_closed() {
                // A closed shard ends: read on without idling, so thousands of
                // empty closed shards drain at the pace limit, not the idle one.
                None
            } else {
                Some(idle.idle())
            };
            if let Some(wait) = wait {
                tokio::select! {
                    biased;
                    _ = self.shutdown.stop.cancelled() => return ShardOutcome::Stopped,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// What a failed stream call means for this shard: where to read from
    /// next, or how the shard's loop ends.
    async fn recover(
        &mut self,
        error: Retried<StreamError>,
    ) -> Result<IteratorPosition, ShardOutcome> {
        match error {
            Retried::Cancelled => Err(ShardOutcome::Stopped),
            // Iterators live 15 minutes; resume right after the last written
            // record: no gap, no duplicate.
            Retried::Failed(StreamError::ExpiredIterator(_)) => {
                debug!("iterator expired; renewing");
                Ok(self.position())
            }
            Retried::Failed(StreamError::Trimmed(message)) => {
                self.trimmed(&message);
                Ok(IteratorPosition::TrimHorizon)
            }
            Retried::Failed(StreamError::NotFound(message)) => {
                warn!(
                    message,
                    "the service says the shard does not exist; confirming with a listing"
                );
                Err(ShardOutcome::Vanished(message))
            }
            e => Err(e.into()),
        }
    }

    async fn get_iterator(
        &self,
        position: &IteratorPosition,
    ) -> Result<String, Retried<StreamError>> {
        let engine = &self.engine;
        let request = ShardIteratorRequest {
            stream_arn: &self.stream_arn,
            shard_id: &self.shard.shard_id,
            position,
        };
        retry(
            engine.settings.retry_policy(),
            &self.shutdown.stop,
            "GetShardIterator",
            || engine.stream.get_shard_iterator(&request),
        )
        .await
    }

    async fn get_records(&self, iterator: &str) -> Result<RecordsPage, Retried<StreamError>> {
        let engine = &self.engine;
        let limit = Some(engine.settings.polling.get_records_limit as i32);
        // Throttling here waits on the retry layer; the pacer keeps it rare.
        retry(
            engine.settings.retry_policy(),
            &self.shutdown.stop,
            "GetRecords",
            || engine.stream.get_records(iterator, limit),
        )
        .await
    }

    fn trimmed(&mut self, message: &str) {
        let gap = lost_after(
            &self.table,
            &self.stream_arn,
            &self.shard.shard_id,
            &self.checkpoint,
            self.lineage_tail.as_ref(),
        );
        error!(
            after_sequence_number = gap.after_sequence_number.as_deref().unwrap_or("none"),
            message, "records were trimmed before they could be read: recording a gap"
        );
        self.pending_gap.get_or_insert(gap);
    }

    async fn handle_page(
        &mut self,
        mut records: Vec<crate::stream::StreamRecord>,
    ) -> Result<(), ShardOutcome> {
        let Some(first) = records.first() else {
            // Nothing readable after the trim yet: record the gap now, its
            // right bracket open, rather than hold it in memory until a
            // record comes (a crash, or a shard quiet for hours, would lose
            // it). The row remembers it as open, so whoever reads the first
            // record after it, here or in a later shard of the lineage,
            // closes it, after a restart too. Re-detection writes it once.
            if let Some(gap) = self.pending_gap.take() {
                self.write_gap(gap).await?;
                self.save_checkpoint().await?;
            }
            return Ok(());
        };
        let resumed_at = first.sequence_number.clone();
        let resumed_time = first.approximate_creation.map(record_time_text);
        let own = self.pending_gap.take();
        // The first record after open gaps is their right bracket: one gap,
        // this shard's, closes them all, before the record in the chain.
        // The open list is cleared by the checkpoint after this page, so a
        // crash before it writes the same closing gap again (found present).
        let open = std::mem::take(&mut self.checkpoint.open_gaps);
        let new_loss = own.is_some();
        let closing = match own {
            Some(mut gap) => {
                gap.resumed_at_sequence_number = Some(resumed_at.clone());
                gap.resumed_at_time = resumed_time.clone();
                gap.closes = open.iter().map(Gap::reference).collect();
                Some(gap)
            }
            None => Gap::closing(&open, &self.shard.shard_id, &resumed_at, resumed_time),
        };
        if let Some(gap) = closing {
            let written = if new_loss {
                self.write_gap(gap).await
            } else {
                self.write_closing_gap(gap).await
            };
            if let Err(outcome) = written {
                self.checkpoint.open_gaps = open;
                return Err(outcome);
            }
        }
        let actor = self.engine.settings.actor_attribute.as_deref();
        let correlation = self.engine.settings.correlation_attribute.as_deref();
        let redactor = self.engine.settings.redactions.for_table(&self.table);
        if let Some(redactor) = redactor {
            // `run` checks the key schema at start; a table it could not
            // describe then is checked here, before anything is written.
            let names: Vec<String> = records
                .first()
                .map(|r| r.keys.keys().cloned().collect())
                .unwrap_or_default();
            redactor
                .check_keys(&self.table, &names)
                .map_err(|e| ShardOutcome::Failed(e.into()))?;
            // Before the diff, so no covered value reaches the entry, and
            // before the chain link: the entry is hashed as stored.
            for r in &mut records {
                redactor.redact_record(r);
            }
        }
        let mut entries: Vec<AuditEntry> = records
            .iter()
            .map(|r| {
                let mut entry = build_entry(
                    &self.table,
                    &self.stream_arn,
                    &self.shard.shard_id,
                    r,
                    actor,
                );
                entry.correlation = correlation_of(r, correlation);
                if let Some(redactor) = redactor {
                    redactor.redact_raw(&mut entry);
                }
                entry
            })
            .collect();
        for entry in entries.iter().filter(|e| e.error.is_some()) {
            error!(
                sequence_number = %entry.sequence_number,
                error = entry.error.as_deref().unwrap_or(""),
                "record could not be interpreted; stored raw with an error marker"
            );
        }
        let created: Vec<_> = records.iter().map(|r| r.approximate_creation).collect();
        let engine = &self.engine;
        let mut items = crate::daemon::itemchain::resolve_page(
            &engine.items,
            &engine.audit,
            engine.settings.retry_policy(),
            &self.shutdown.abort,
            self.item_run,
            &self.stream_arn,
            &entries,
        )
        .await
        .map_err(|e| match e {
            Retried::Cancelled => ShardOutcome::Stopped,
            Retried::Failed(e) => {
                error!(error = %e, "reading an item's previous entry failed; checkpoint not moved");
                ShardOutcome::Failed(e.into())
            }
        })?;
        if items.reads > 0 {
            debug!(reads = items.reads, "item chain: previous entries read");
        }
        self.before_removals(&entries).await?;
        let mut chain = self.checkpoint.chain.clone().unwrap_or_default();
        // In page order: an item's entry links to its previous one in the
        // page, whose hash is known only once it is hashed.
        let mut links = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter_mut().enumerate() {
            items.link(i, entry);
            let link = chain
                .link_entry(entry)
                .map_err(|e| ShardOutcome::Failed(e.into()))?;
            items.linked(i, link.hash);
            links.push(link);
        }
        self.write_entries(&entries, &created, &links).await?;
        items.commit(&self.engine.items);
        // Saved with the checkpoint below, in the same write.
        self.checkpoint.chain = Some(chain);
        // A record whose sequence number is not one (a malformed record) is
        // stored as an error entry but never becomes the checkpoint: no
        // store can resume after it.
        if let Some(last) = records
            .iter()
            .rev()
            .find(|r| is_sequence_number(&r.sequence_number))
        {
            self.checkpoint.sequence_no = Some(last.sequence_number.clone());
        }
        if let Some(t) = records.iter().rev().find_map(|r| r.approximate_creation) {
            self.checkpoint.last_record_time = Some(t);
        }
        self.checkpoint.caught_up = false;
        if self.shard.is_closed() {
            self.checkpoint.status = ShardStatus::Closed;
        }
        self.save_checkpoint().await
    }

    async fn write_entries(
        &self,
        entries: &[AuditEntry],
        created: &[Option<chrono::DateTime<Utc>>],
        links: &[crate::proof::Link],
    ) -> Result<(), ShardOutcome> {
        let started = std::time::Instant::now();
        let engine = &self.engine;
        let policy = engine.settings.retry_policy();
        let abort = &self.shutdown.abort;
        // Built eagerly: a lazy `.map` closure over `&AuditEntry` trips the
        // compiler's higher-ranked Send check for spawned tasks.
        let puts: Vec<_> = entries
            .iter()
            .zip(links)
            .map(|(entry, link)| async move {
                let put = retry(policy, abort, "PutItem(audit entry)", || {
                    engine.audit.put_linked_entry(entry, link)
                })
                .await;
                match put {
                    Err(Retried::Failed(StoreError::Rejected(why))) => {
                        // Retrying a write the store refuses would stall the
                        // shard for ever: a small entry says what was lost.
                        let marker = rejected_marker(entry, &why);
                        error!(sequence_number = %entry.sequence_number, error = %why,
                            "the audit store rejected an entry; storing an error entry in its place");
                        // It keeps the original's place in the chain (later
                        // entries link to it); verify reports its content as
                        // unprovable, not as tampered.
                        retry(policy, abort, "PutItem(error entry)", || {
                            engine.audit.put_linked_entry(&marker, link)
                        })
                        .await
                    }
                    other => other,
                }
            })
            .collect();
        let results: Result<Vec<PutOutcome>, Retried<StoreError>> =
            futures_util::stream::iter(puts)
                .buffer_unordered(WRITE_CONCURRENCY)
                .try_collect()
                .await;
        match results {
            Ok(outcomes) => {
                let duplicates = outcomes
                    .iter()
                    .filter(|o| **o == PutOutcome::AlreadyPresent)
                    .count();
                observe::EntriesWritten {
                    table: &self.table,
                    written: entries.len() - duplicates,
                    duplicates,
                    elapsed: started.elapsed(),
                    created,
                }
                .emit();
                Ok(())
            }
            Err(Retried::Cancelled) => Err(ShardOutcome::Stopped),
            Err(Retried::Failed(e)) => {
                error!(error = %e, "audit write failed; checkpoint not moved");
                Err(ShardOutcome::Failed(e.into()))
            }
        }
    }

    /// Whether the table's trail is still fresh (see [`ItemRun::fresh`]):
    /// read after this run's checkpoint was loaded, so that whatever moved
    /// the checkpoint past a removal had cleared it by then. Not knowing
    /// is "no": it costs a read per item's first change, nothing else.
    async fn load_fresh_items(&mut self) {
        let engine = &self.engine;
        let read = retry(
            engine.settings.retry_policy(),
            &self.shutdown.stop,
            "GetItem(stream: fresh_items)",
            || {
                engine
                    .checkpoints
                    .fresh_items(&self.table, &self.stream_arn)
            },
        )
        .await;
        self.item_run.fresh = match read {
            Ok(fresh) => fresh,
            Err(Retried::Cancelled) => false,
            Err(Retried::Failed(e)) => {
                warn!(error = %e, "cannot read whether the table's trail is fresh; reading each item's previous entry instead");
                false
            }
        };
    }

    /// Before a page that removes an item (or holds a record that may):
    /// from now on an INSERT may follow an earlier life of its item. Cleared
    /// for good in the store first, so a run that starts after this page's
    /// checkpoint (here, a child, another replica) knows it.
    async fn before_removals(&mut self, entries: &[AuditEntry]) -> Result<(), ShardOutcome> {
        let removes = entries
            .iter()
            .any(|e| !matches!(e.event.as_str(), "INSERT" | "MODIFY"));
        if !self.item_run.fresh || !removes {
            return Ok(());
        }
        end_fresh_items(
            &self.engine,
            &self.shutdown.abort,
            &self.table,
            &self.stream_arn,
        )
        .await?;
        self.item_run.fresh = false;
        Ok(())
    }

    async fn write_gap(&mut self, gap: Gap) -> Result<(), ShardOutcome> {
        // A loss: what it hid may have removed an item.
        self.item_run.fresh = false;
        self.chain_gap(&gap).await?;
        if gap.resumed_at_sequence_number.is_none() {
            warn!(after_sequence_number = gap.after_sequence_number.as_deref().unwrap_or("none"),
                "nothing readable after the gap yet: its right bracket stays open until a record of the lineage is read");
            self.checkpoint.note_open_gap(gap.clone());
        }
        observe::GapRecorded {
            table: &self.table,
            shard: &self.shard.shard_id,
            after_sequence_number: gap.after_sequence_number.as_deref(),
            resumed_at_sequence_number: gap.resumed_at_sequence_number.as_deref(),
        }
        .emit();
        Ok(())
    }

    /// Writes `gap` as the next link of this shard's chain, and keeps the
    /// chain's new state for the checkpoint.
    async fn chain_gap(&mut self, gap: &Gap) -> Result<(), ShardOutcome> {
        let before = self.checkpoint.chain.clone().unwrap_or_default();
        let chain = put_gap_in_chain(
            &self.engine,
            &self.shutdown.abort,
            gap,
            before,
            self.fence.as_ref(),
        )
        .await?;
        self.checkpoint.chain = Some(chain);
        Ok(())
    }

    /// This reader's shard, as the shard events name it.
    fn shard_at(&self) -> observe::ShardAt<'_> {
        observe::ShardAt {
            table: &self.table,
            stream: &self.stream_arn,
            shard: &self.shard.shard_id,
        }
    }

    /// A gap that only closes open ones: the loss was counted when they
    /// were recorded; this says where it ends.
    async fn write_closing_gap(&mut self, gap: Gap) -> Result<(), ShardOutcome> {
        self.chain_gap(&gap).await?;
        observe::GapClosed {
            at: self.shard_at(),
            closes: gap.closes.len(),
            resumed_at_sequence_number: gap.resumed_at_sequence_number.as_deref(),
        }
        .emit();
        Ok(())
    }

    async fn save_checkpoint(&mut self) -> Result<(), ShardOutcome> {
        self.checkpoint.updated_at = Utc::now();
        let engine = &self.engine;
        let checkpoint = &self.checkpoint;
        let fence = self.fence.as_ref();
        let result = retry(
            engine.settings.retry_policy(),
            &self.shutdown.abort,
            "PutItem(checkpoint)",
            || async move {
                match fence {
                    Some(fence) => {
                        engine
                            .checkpoints
                            .save_fenced_shard(checkpoint, fence)
                            .await
                    }
                    None => engine.checkpoints.save_shard(checkpoint).await,
                }
            },
        )
        .await;
        match result {
            Ok(()) => {
                *self.saved.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(self.checkpoint.clone());
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn drained(&mut self) -> ShardOutcome {
        if let Some(gap) = self.pending_gap.take() {
            if let Err(outcome) = self.write_gap(gap).await {
                return outcome;
            }
        }
        self.checkpoint.status = ShardStatus::Drained;
        match self.save_checkpoint().await {
            Ok(()) => {
                info!("shard drained");
                ShardOutcome::Drained
            }
            Err(outcome) => outcome,
        }
    }
}

/// Writes a gap as the next link of the chain `before` (a gap is a link of
/// the chain too: a signed statement, not a hole) and returns the chain
/// after it. A gap already stored, seen before a crash, is not written
/// twice: the chain goes on from the stored one.
/// The table's trail is not fresh any more (see [`ItemRun::fresh`]), for
/// good: in the store before whatever makes it so is written.
async fn end_fresh_items<S, C, A>(
    engine: &Engine<S, C, A>,
    abort: &tokio_util::sync::CancellationToken,
    table: &str,
    stream_arn: &str,
) -> Result<(), Retried<StoreError>>
where
    C: CheckpointStore,
{
    let policy = engine.settings.retry_policy();
    retry(policy, abort, "UpdateItem(stream: fresh_items)", || {
        engine.checkpoints.set_fresh_items(table, stream_arn, false)
    })
    .await
}

pub(crate) async fn put_gap_in_chain<S, C, A>(
    engine: &Engine<S, C, A>,
    abort: &tokio_util::sync::CancellationToken,
    gap: &Gap,
    before: crate::proof::ChainState,
    fence: Option<&Fence>,
) -> Result<crate::proof::ChainState, Retried<StoreError>>
where
    C: CheckpointStore,
    A: AuditStore,
{
    // A loss may hide an item's removal: not fresh any more, before the gap
    // says so.
    end_fresh_items(engine, abort, &gap.table, &gap.stream_arn).await?;
    let mut chain = before.clone();
    let link = chain
        .link_gap(gap)
        .map_err(|e| Retried::Failed(StoreError::Other(format!("cannot hash the gap: {e}"))))?;
    let policy = engine.settings.retry_policy();
    let link = &link;
    let outcome = retry(policy, abort, "PutItem(gap)", || async move {
        match fence {
            Some(fence) => engine.checkpoints.put_fenced_gap(gap, link, fence).await,
            None => engine.audit.put_linked_gap(gap, link).await,
        }
    })
    .await?;
    if outcome != PutOutcome::AlreadyPresent {
        return Ok(chain);
    }
    let stored = retry(policy, abort, "GetItem(gap)", || engine.audit.gap_link(gap)).await?;
    Ok(match stored {
        // Linked, and the checkpoint got past it.
        Some(stored) if before.last_hash == Some(stored.hash) => before,
        // Written just before a crash, the checkpoint not yet past it.
        Some(stored) if stored.prev_hash == before.last_hash => {
            let mut chain = before;
            chain.append(stored.hash);
            chain
        }
        // Recorded earlier in the chain than where it stands now (the same
        // loss detected again): linking it again would fork the chain.
        Some(_) => {
            warn!("this gap is already recorded earlier in the chain; not linked again");
            before
        }
        None => chain,
    })
}

/// What stands in for an entry the store refused: the record's identity,
/// no values, and why.
fn rejected_marker(entry: &AuditEntry, why: &str) -> AuditEntry {
    AuditEntry {
        changes: Vec::new(),
        error: Some(format!(
            "the audit store rejected this entry ({why}); its changes are not stored"
        )),
        raw: None,
        ..entry.clone()
    }
}

/// A gap starting after the last record handled in the shard — or, when
/// nothing of it was read, after the last one handled in its lineage.
pub fn lost_after(
    table: &str,
    stream_arn: &str,
    shard_id: &str,
    checkpoint: &ShardCheckpoint,
    lineage_tail: Option<&LineageTail>,
) -> Gap {
    let (after_shard, after, after_time) = match (&checkpoint.sequence_no, lineage_tail) {
        (Some(seq), _) => (
            None,
            Some(seq.clone()),
            checkpoint.last_record_time.map(record_time_text),
        ),
        (None, Some(tail)) => (
            Some(tail.shard_id.clone()),
            Some(tail.sequence_no.clone()),
            tail.record_time.map(record_time_text),
        ),
        (None, None) => (None, None, None),
    };
    Gap {
        after_sequence_number: after,
        after_shard_id: after_shard,
        after_time,
        ..Gap::detected(table, stream_arn, shard_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_backoff_doubles_to_its_cap_and_resets_on_data() {
        let mut b = IdleBackoff::new(Duration::from_millis(250), Duration::from_secs(5));
        let waits: Vec<_> = (0..7).map(|_| b.idle().as_millis()).collect();
        assert_eq!(waits, vec![250, 500, 1000, 2000, 4000, 5000, 5000]);
        b.busy();
        assert_eq!(b.idle().as_millis(), 250);
    }
}
