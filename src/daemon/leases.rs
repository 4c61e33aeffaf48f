//! Several replicas on one config: who reads which stream.
//!
//! The unit of work is one table's stream (its lineage stays in one
//! process, and its digest chain has one writer). Each stream row is also
//! the stream's lease: an owner and an epoch, the fencing token, which every
//! change of owner increments. Each replica beats on a row of its own every
//! [`LeaseSettings::heartbeat`]; renewal costs a write per replica, not per
//! stream.
//!
//! A peer is dead when its heartbeat counter has not changed for
//! [`LeaseSettings::expiry`] of *our own* monotonic clock: wall clocks are
//! never compared, so skew between machines cannot expire a live lease.
//! Its streams are then taken with one conditional write on the epoch seen.
//! The owner's supervisor carries the epoch ([`Fence`]), and checkpoints,
//! gaps and digests are written under it, so a replica that was frozen past
//! its lease finds its next such write refused, stops reading the stream,
//! and lets go; entries stay plain write-once puts (writing one twice has
//! no effect).
//!
//! Balance without stealing: a replica takes free or dead streams up to its
//! fair share (`ceil(streams / live replicas)`), and one above it hands the
//! surplus over gracefully: its supervisor stops at a page boundary, after
//! the page's checkpoint, and only then is the lease released. A graceful
//! stop releases every lease after the final checkpoints and digests, so a
//! peer takes over at its next scan. A lone replica takes every free lease
//! at its first scan.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::daemon::engine::Shutdown;
use crate::daemon::engine::TableSet;
use crate::observe::{self, Event as _};
use crate::store::{CheckpointStore, Fence, Lease, ReplicaBeat};

/// How often a replica beats, scans, and when it declares a peer dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Between two heartbeat writes.
    pub heartbeat: Duration,
    /// Between two reads of the heartbeat and lease rows.
    pub scan: Duration,
    /// A peer whose counter has not changed for this long (our clock) is
    /// dead. Several heartbeats, so one slow write does not expire a lease.
    pub expiry: Duration,
    /// A dead replica owning nothing is forgotten (its row deleted) after
    /// this long, so rows of crashed processes do not accumulate.
    pub forget_after: Duration,
}

impl Default for LeaseSettings {
    /// Takeover within ≈ expiry + scan + one GetShardIterator: ~12 s.
    fn default() -> Self {
        LeaseSettings {
            heartbeat: Duration::from_secs(3),
            scan: Duration::from_secs(2),
            expiry: Duration::from_secs(9),
            forget_after: Duration::from_secs(120),
        }
    }
}

/// A stream this replica holds.
#[derive(Clone, Debug)]
struct Held {
    fence: Fence,
    /// Stops the stream's supervisor: cancelled to hand the stream over (a
    /// graceful stop) or when the lease is lost.
    shutdown: Shutdown,
    /// Handing over: release the lease once the supervisor has stopped.
    handing_over: bool,
    /// Its supervisor is running.
    running: bool,
}

#[derive(Default)]
struct Book {
    held: BTreeMap<String, Held>,
    /// Heartbeats written so far (the counter peers watch).
    counter: u64,
    /// Writes refused by a fence, and leases found lost, since start.
    lost: u64,
    /// The last scan's view, for `status` and `/readyz`.
    live_replicas: usize,
    unowned: usize,
    /// Tasks that run on one replica at a time.
    tasks: Vec<Task>,
    /// Tables whose first discovery has finished: until every one has, a
    /// stream taken here could not start reading yet, so none is taken.
    discovered: std::collections::BTreeSet<String>,
}

/// A task that runs on one replica at a time (the CloudTrail reader): its
/// lease's name, whether it runs here, and the fence while it does.
struct Task {
    name: String,
    turn: Arc<watch::Sender<bool>>,
    held: Option<Fence>,
}

/// This replica: its id, the streams it holds, and the signal that tells
/// the table supervisors to start or stop streams.
pub struct Replica {
    pub id: String,
    settings: LeaseSettings,
    root: Shutdown,
    book: Mutex<Book>,
    changed: watch::Sender<u64>,
    /// Asks the coordinator to scan now (a stream found by discovery).
    poked: tokio::sync::Notify,
}

/// `<hostname>-<pid>-<random>`: unique across restarts and across the
/// replicas of one process (tests), without a random-number crate.
pub fn replica_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string());
    // The std hasher is seeded randomly per process.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        hasher.finish() as u32
    )
}

impl Replica {
    /// `root`: the daemon's shutdown; every stream's own stop is its child.
    pub fn new(id: String, settings: LeaseSettings, root: &Shutdown) -> Arc<Replica> {
        Arc::new(Replica {
            id,
            settings,
            root: root.clone(),
            book: Mutex::new(Book::default()),
            changed: watch::channel(0).0,
            poked: tokio::sync::Notify::new(),
        })
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Runs the task `name` on one replica at a time: `turn` is set true
    /// while this one holds its lease.
    pub fn run_one(&self, name: &str, turn: Arc<watch::Sender<bool>>) {
        self.book().tasks.push(Task {
            name: name.to_string(),
            turn,
            held: None,
        });
    }

    /// The tasks that run here now.
    pub fn tasks_here(&self) -> Vec<String> {
        self.book()
            .tasks
            .iter()
            .filter(|t| t.held.is_some())
            .map(|t| t.name.clone())
            .collect()
    }

    /// `table`'s first discovery is done: its supervisor starts the streams
    /// held at once from now on.
    pub fn discovered(&self, table: &str) {
        self.book().discovered.insert(table.to_string());
    }

    /// Scan the leases now rather than at the next tick.
    pub fn poke(&self) {
        self.poked.notify_one();
    }

    /// Wakes when the streams held change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Streams of `table` held and not running: their supervisors are to
    /// start now, with the returned fence and shutdown. Marked running.
    pub fn to_start(&self, table: &str) -> Vec<(Fence, Shutdown)> {
        let mut book = self.book();
        book.held
            .values_mut()
            .filter(|h| h.fence.table == table && !h.running && !h.handing_over)
            .map(|h| {
                h.running = true;
                (h.fence.clone(), h.shutdown.clone())
            })
            .collect()
    }

    /// A stream's supervisor ended. Returns the fence to release when the
    /// stream was being handed over (or was finished); a stream still held
    /// is started again at the next change.
    pub fn ended(&self, stream_arn: &str, finished: bool) -> Option<Fence> {
        let mut book = self.book();
        let held = book.held.get_mut(stream_arn)?;
        held.running = false;
        if held.handing_over || finished {
            return book.held.remove(stream_arn).map(|h| h.fence);
        }
        None
    }

    /// A write under `fence` was refused: the lease moved. Stops the
    /// stream's supervisor at once (in-flight writes too) and forgets it.
    pub fn fenced(&self, fence: &Fence) {
        let mut book = self.book();
        book.lost += 1;
        if book
            .held
            .get(&fence.stream_arn)
            .is_some_and(|h| h.fence.epoch == fence.epoch)
        {
            if let Some(h) = book.held.remove(&fence.stream_arn) {
                observe::LeaseLost {
                    table: &fence.table,
                    stream: &fence.stream_arn,
                    epoch: fence.epoch,
                }
                .emit();
                h.shutdown.stop.cancel();
                h.shutdown.abort.cancel();
            }
        }
        drop(book);
        self.bump();
    }

    /// The fence of a stream held now.
    pub fn fence(&self, stream_arn: &str) -> Option<Fence> {
        self.book()
            .held
            .get(stream_arn)
            .filter(|h| !h.handing_over)
            .map(|h| h.fence.clone())
    }

    /// Every stream held now (also those being handed over).
    pub fn held(&self) -> Vec<Fence> {
        self.book().held.values().map(|h| h.fence.clone()).collect()
    }

    /// Writes refused by a fence and leases found lost since start.
    pub fn lost(&self) -> u64 {
        self.book().lost
    }

    /// (live replicas, streams nobody live owns) at the last scan.
    pub fn cluster(&self) -> (usize, usize) {
        let book = self.book();
        (book.live_replicas, book.unowned)
    }

    /// Stops reading `table`'s streams here (a Global Table audited in
    /// another region): each running one is handed over at a page boundary,
    /// as a surplus stream is, and released once its supervisor has stopped.
    pub fn stop_table(&self, table: &str) {
        let mut book = self.book();
        for h in book.held.values_mut() {
            if h.fence.table == table && h.running {
                h.handing_over = true;
                h.shutdown.stop.cancel();
            }
        }
    }

    /// Marks `surplus` streams to hand over and stops their supervisors at
    /// a page boundary; returns those not running, to release now (the
    /// others are released when their supervisor has stopped).
    fn hand_over(&self, surplus: usize, fair: usize) -> Vec<Fence> {
        let mut book = self.book();
        for h in book.held.values_mut().rev().take(surplus) {
            if !h.handing_over {
                info!(table = %h.fence.table, stream = %h.fence.stream_arn, fair,
                    "more than a fair share of streams: handing this one over");
                h.handing_over = true;
                h.shutdown.stop.cancel();
            }
        }
        let idle: Vec<Fence> = book
            .held
            .values()
            .filter(|h| h.handing_over && !h.running)
            .map(|h| h.fence.clone())
            .collect();
        for f in &idle {
            book.held.remove(&f.stream_arn);
        }
        idle
    }

    fn take(&self, fence: Fence) {
        let shutdown = Shutdown {
            stop: self.root.stop.child_token(),
            abort: self.root.abort.child_token(),
        };
        info!(table = %fence.table, stream = %fence.stream_arn, epoch = fence.epoch,
            replica = %self.id, "lease taken: reading this stream");
        self.book().held.insert(
            fence.stream_arn.clone(),
            Held {
                fence,
                shutdown,
                handing_over: false,
                running: false,
            },
        );
        self.bump();
    }
}

/// What this replica has seen of each peer's heartbeat: the counter, when
/// (our clock) it last changed, and whether it was ever seen to change.
#[derive(Default)]
struct Peers {
    seen: HashMap<String, (u64, Instant, bool)>,
}

/// One scan's view of the replicas (see [`Peers::observe`]).
struct Observed {
    live: Vec<String>,
    beating: usize,
    dead: Vec<(String, u64, Duration)>,
}

impl Peers {
    /// After this scan's heartbeat rows: the replicas not (yet) dead,
    /// ourselves included, whose leases are not to be taken; how many of
    /// them were seen beating (ourselves included), which is what the fair
    /// share counts; and the dead ones with their counter. A row seen for
    /// the first time may be a live peer or one dead for an hour: its
    /// leases wait for the expiry, but it does not shrink our share (a
    /// replica starting beside the rows of crashed ones would otherwise
    /// take too little for the expiry's length).
    fn observe(
        &mut self,
        me: &str,
        rows: &[ReplicaBeat],
        now: Instant,
        expiry: Duration,
    ) -> Observed {
        let mut seen = Observed {
            live: vec![me.to_string()],
            beating: 1,
            dead: Vec::new(),
        };
        for row in rows.iter().filter(|r| r.replica != me) {
            let entry = self
                .seen
                .entry(row.replica.clone())
                .or_insert((row.counter, now, false));
            if entry.0 != row.counter {
                *entry = (row.counter, now, true);
            }
            let quiet = now.saturating_duration_since(entry.1);
            if quiet < expiry {
                seen.live.push(row.replica.clone());
                seen.beating += usize::from(entry.2);
            } else {
                seen.dead.push((row.replica.clone(), row.counter, quiet));
            }
        }
        self.seen
            .retain(|id, _| rows.iter().any(|r| &r.replica == id));
        seen.live.sort();
        seen
    }
}

/// Beats, watches peers and leases, takes and hands over streams, until
/// `stop`. The table supervisors follow [`Replica::subscribe`].
pub async fn coordinate<C: CheckpointStore>(
    replica: Arc<Replica>,
    store: &C,
    tables: &TableSet,
    stop: CancellationToken,
) {
    let settings = replica.settings;
    let mut peers = Peers::default();
    let mut next_beat = Instant::now();
    let mut next_scan = Instant::now();
    let started = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_beat {
            beat(&replica, store).await;
            next_beat = now + settings.heartbeat;
        }
        if now >= next_scan {
            // The tables audited so far: a pattern may add more as it runs.
            let names = tables.names();
            if let Err(e) = scan(&replica, store, &names, &mut peers, started).await {
                // The leases held stay held: their fences guard every write.
                warn!(replica = %replica.id, error = %e, "cannot read the lease rows; trying again");
            }
            next_scan = Instant::now() + settings.scan;
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next_beat.min(next_scan)) => {}
            _ = replica.poked.notified() => next_scan = Instant::now(),
        }
    }
}

async fn beat<C: CheckpointStore>(replica: &Replica, store: &C) {
    let (counter, owned) = {
        let mut book = replica.book();
        book.counter += 1;
        (book.counter, book.held.len() as u64)
    };
    let row = ReplicaBeat {
        replica: replica.id.clone(),
        counter,
        owned,
        updated_at: Utc::now(),
    };
    if let Err(e) = store.beat(&row).await {
        // Peers declare us dead only after several missed beats.
        warn!(replica = %replica.id, error = %e, "heartbeat not written");
    }
}

/// The longest a starting replica waits for its tables' first discovery
/// before it takes leases anyway.
const DISCOVERY_WAIT: Duration = Duration::from_secs(30);

/// One scan: peers, then leases: what we lost, what we take, what we hand over.
async fn scan<C: CheckpointStore>(
    replica: &Replica,
    store: &C,
    tables: &[String],
    peers: &mut Peers,
    started: Instant,
) -> Result<(), crate::store::StoreError> {
    let settings = replica.settings;
    let rows = store.replicas().await?;
    let Observed {
        live,
        beating,
        dead,
    } = peers.observe(&replica.id, &rows, Instant::now(), settings.expiry);
    let leases: Vec<Lease> = store
        .leases(None)
        .await?
        .into_iter()
        .filter(|l| !l.drained && tables.contains(&l.table))
        .collect();
    // Lost: held here, but the row says otherwise (taken while we were
    // frozen, or released by an operator).
    for fence in replica.held() {
        let still = leases.iter().any(|l| {
            l.stream_arn == fence.stream_arn
                && l.owner.as_deref() == Some(replica.id.as_str())
                && l.epoch == fence.epoch
        });
        let gone = !leases.iter().any(|l| l.stream_arn == fence.stream_arn);
        if !still && !gone {
            replica.fenced(&fence);
        }
    }
    let is_live = |owner: &Option<String>| owner.as_ref().is_some_and(|o| live.contains(o));
    let unowned = leases.iter().filter(|l| !is_live(&l.owner)).count();
    let fair = leases.len().div_ceil(beating.max(1));
    {
        let mut book = replica.book();
        book.live_replicas = live.len();
        book.unowned = unowned;
    }
    let owned: Vec<String> = replica.held().into_iter().map(|f| f.stream_arn).collect();
    observe::LeaseScan {
        replica: &replica.id,
        owned: &owned,
        live_replicas: live.len(),
        streams: leases.len(),
        unowned,
        tasks: &replica.tasks_here(),
    }
    .emit();
    // Stopping: only beat (the leases held are released after the final
    // digests); take nothing new. Starting: not before every table's first
    // discovery, so a stream taken is read at once (a peer already running
    // takes it meanwhile).
    // A discovery that keeps retrying (throttled, say) must not keep the
    // other tables' streams from being taken for ever.
    let ready = started.elapsed() >= DISCOVERY_WAIT
        || tables.iter().all(|t| replica.book().discovered.contains(t));
    if replica.root.stop.is_cancelled() || !ready {
        return Ok(());
    }
    // Ours at an epoch we do not hold (a release that failed, say): it is
    // ours; held again at that epoch.
    let mut held = owned.len();
    for lease in &leases {
        if lease.owner.as_deref() == Some(replica.id.as_str()) && !owned.contains(&lease.stream_arn)
        {
            replica.take(Fence {
                table: lease.table.clone(),
                stream_arn: lease.stream_arn.clone(),
                owner: replica.id.clone(),
                epoch: lease.epoch,
            });
            held += 1;
        }
    }
    // Take free leases first, then dead peers' (sorted for a stable order
    // across peers, so two replicas rarely race for the same one).
    let mut candidates: Vec<&Lease> = leases.iter().filter(|l| !is_live(&l.owner)).collect();
    candidates.sort_by_key(|l| (l.owner.is_some(), l.stream_arn.clone()));
    for lease in candidates {
        if held >= fair {
            break;
        }
        match store.take_lease(lease, &replica.id).await {
            Ok(Some(epoch)) => {
                if let Some(dead) = &lease.owner {
                    info!(table = %lease.table, stream = %lease.stream_arn, from = %dead,
                        "taking over a stream from a replica whose heartbeat stopped");
                }
                replica.take(Fence {
                    table: lease.table.clone(),
                    stream_arn: lease.stream_arn.clone(),
                    owner: replica.id.clone(),
                    epoch,
                });
                held += 1;
            }
            Ok(None) => debug!(stream = %lease.stream_arn, "another replica took this lease first"),
            Err(e) => warn!(stream = %lease.stream_arn, error = %e, "cannot take a lease"),
        }
    }
    // Above the fair share: hand the surplus over at a page boundary.
    if held > fair {
        for f in replica.hand_over(held - fair, fair) {
            release(store, &f).await;
        }
    }
    tasks(replica, store, &live).await;
    // Rows of replicas long dead and owning nothing.
    for (id, counter, quiet) in dead {
        let owns = leases
            .iter()
            .any(|l| l.owner.as_deref() == Some(id.as_str()));
        if !owns && quiet >= settings.forget_after {
            if let Err(e) = store.forget_replica(&id, counter).await {
                debug!(replica = %id, error = %e, "cannot forget a dead replica's row");
            }
        }
    }
    Ok(())
}

/// Each one-at-a-time task: kept while our lease holds, taken when free or
/// its holder is dead.
async fn tasks<C: CheckpointStore>(replica: &Replica, store: &C, live: &[String]) {
    let names: Vec<(String, Option<Fence>)> = replica
        .book()
        .tasks
        .iter()
        .map(|t| (t.name.clone(), t.held.clone()))
        .collect();
    for (name, held) in names {
        let lease = match store.task_lease(&name).await {
            Ok(lease) => lease,
            Err(e) => {
                warn!(task = %name, error = %e, "cannot read a task's lease");
                continue;
            }
        };
        let ours = lease.owner.as_deref() == Some(replica.id.as_str());
        let now = match held {
            Some(fence) if ours && lease.epoch == fence.epoch => Some(fence),
            Some(_) => {
                warn!(task = %name, "another replica runs this task now; stopping it here");
                None
            }
            None if lease.owner.as_ref().is_some_and(|o| live.contains(o)) && !ours => None,
            None => match store.take_lease(&lease, &replica.id).await {
                Ok(Some(epoch)) => {
                    info!(task = %name, epoch, "this replica runs the task now");
                    Some(Fence {
                        table: lease.table.clone(),
                        stream_arn: lease.stream_arn.clone(),
                        owner: replica.id.clone(),
                        epoch,
                    })
                }
                Ok(None) => None,
                Err(e) => {
                    warn!(task = %name, error = %e, "cannot take a task's lease");
                    None
                }
            },
        };
        let mut book = replica.book();
        if let Some(task) = book.tasks.iter_mut().find(|t| t.name == name) {
            task.turn.send_replace(now.is_some());
            task.held = now;
        }
    }
}

/// Gives a lease up (best effort: a lease not released expires with our
/// heartbeat).
pub async fn release<C: CheckpointStore>(store: &C, fence: &Fence) {
    match store.release_lease(fence).await {
        Ok(true) => info!(table = %fence.table, stream = %fence.stream_arn, epoch = fence.epoch,
            "lease released"),
        Ok(false) => {
            debug!(stream = %fence.stream_arn, "lease had moved already; nothing to release")
        }
        Err(e) => warn!(table = %fence.table, stream = %fence.stream_arn, error = %e,
            "cannot release a lease; a peer takes it once our heartbeat stops"),
    }
}

/// After a graceful stop: every lease released, and our heartbeat row
/// deleted, so peers take over at their next scan rather than after expiry.
pub async fn let_go<C: CheckpointStore>(replica: &Replica, store: &C) {
    let held: Vec<Fence> = {
        let mut book = replica.book();
        let mut held: Vec<Fence> = std::mem::take(&mut book.held)
            .into_values()
            .map(|h| h.fence)
            .collect();
        for task in &mut book.tasks {
            task.turn.send_replace(false);
            held.extend(task.held.take());
        }
        held
    };
    for fence in &held {
        release(store, fence).await;
    }
    let counter = replica.book().counter;
    if let Err(e) = store.forget_replica(&replica.id, counter).await {
        debug!(replica = %replica.id, error = %e, "cannot delete our heartbeat row");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(replica: &str, counter: u64) -> ReplicaBeat {
        ReplicaBeat {
            replica: replica.into(),
            counter,
            owned: 0,
            // Far in the future: wall clocks are never compared.
            updated_at: chrono::DateTime::<Utc>::MAX_UTC,
        }
    }

    #[test]
    fn a_peer_is_dead_only_after_its_counter_stood_still_for_the_expiry_on_our_clock() {
        let expiry = Duration::from_secs(9);
        let mut peers = Peers::default();
        let t0 = Instant::now();
        // First seen: alive until it has had the expiry to move, but not
        // counted in the fair share before it is seen beating.
        let seen = peers.observe("me", &[beat("me", 1), beat("b", 5)], t0, expiry);
        assert_eq!(seen.live, ["b", "me"]);
        assert!(seen.dead.is_empty());
        assert_eq!(seen.beating, 1);
        // Moving: alive, whatever its row's wall-clock time says.
        let t1 = t0 + Duration::from_secs(8);
        let seen = peers.observe("me", &[beat("b", 6)], t1, expiry);
        assert!(seen.live.contains(&"b".to_string()));
        assert_eq!(seen.beating, 2);
        // Standing still for 9 s of our clock: dead, with the counter seen.
        let t2 = t1 + Duration::from_secs(9);
        let seen = peers.observe("me", &[beat("b", 6)], t2, expiry);
        assert_eq!(seen.live, ["me"]);
        assert_eq!(seen.dead, [("b".to_string(), 6, Duration::from_secs(9))]);
        // Beating again (a thawed process): alive at once.
        let seen = peers.observe("me", &[beat("b", 7)], t2, expiry);
        assert_eq!((seen.live.len(), seen.dead.len()), (2, 0));
        // A row gone (a graceful stop): forgotten.
        let seen = peers.observe("me", &[], t2, expiry);
        assert_eq!(seen.live, ["me"]);
        assert!(peers.seen.is_empty());
    }

    #[test]
    fn replica_ids_differ_within_one_process() {
        assert_ne!(replica_id(), replica_id());
    }
}
