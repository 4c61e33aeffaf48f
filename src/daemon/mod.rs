//! The daemon (`ddb-audit run`): the tasks that turn streams into the trail.
//!
//! - `engine`     — what the tasks share: seams, settings, pacer, shutdown tokens.
//! - `discovery`  — which tables of the region the patterns and tags select.
//! - `supervisor` — per table: selection, its streams, one stream supervisor each.
//! - `stream`     — per stream: lineage, children, listings, shard tasks, trimmed shards.
//! - `shards`     — what a stream's supervisor knows of each shard: row, cooldown, task, tail.
//! - `itemchain`  — the item chain: each entry's link to its item's previous entry, and its cache.
//! - `shard`      — one shard's loop: pace → GetRecords → entries → write → checkpoint.
//! - `digests`    — the digest task: a signed digest per stream per interval, a final one on stop.
//! - `leases`     — several replicas on one config: heartbeats, a lease per stream, fencing.

pub mod digests;
pub mod discovery;
pub mod engine;
pub mod itemchain;
pub mod leases;
pub mod shard;
mod shards;
pub mod stream;
pub mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::attribution::CloudTrailTask;
use crate::config::Config;
use crate::observe::{self, Event as _};
use crate::proof::sign::DigestSigner;
use crate::redact::{RedactError, Redactions};
use crate::retry::{retry, Retried};
use crate::store::{AuditStore, CheckpointStore, ProofStore, StoreError};
use crate::stream::StreamApi;
use digests::{DigestSettings, DigestWriter};
use engine::{Engine, EngineError, Settings, Shutdown};
use leases::{replica_id, LeaseSettings, Replica};

/// What the daemon reads and writes through, built by the caller: the AWS
/// adapters in the binary, the simulator and the memory store in tests (as
/// mini-redis is handed its listener).
pub struct Seams<S, St, A> {
    /// The tables' streams.
    pub stream: S,
    /// The daemon's own tables: checkpoints, stream rows, digests.
    pub store: St,
    /// Where entries and gaps are written: `store` itself, or a decorator of
    /// it (the one that tells the CloudTrail reader of each entry).
    pub audit: A,
    /// Signs digests; `None` writes them unsigned (a warning at start).
    pub signer: Option<Arc<dyn DigestSigner>>,
    /// The CloudTrail reader, already started; stopped with the daemon.
    pub cloudtrail: Option<CloudTrailTask>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Redaction(#[from] RedactError),
    #[error(transparent)]
    Listen(#[from] observe::http::HttpError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A shard with no page for this long counts as stalled in the lag: well
/// beyond an idle shard's poll interval and a retry's longest wait.
pub fn stale_after(config: &Config) -> Duration {
    let p = &config.polling;
    2 * (p.idle_max() + p.retry_max()) + Duration::from_secs(10)
}

/// `/metrics`, the health endpoints and EMF lines, for as long as `run`
/// runs: started before anything is read, stopped after the final digest.
struct Observing {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Observing {
    async fn start(config: &Config) -> Result<Observing, DaemonError> {
        let observer = observe::global();
        // Patterns are not tables: what they find registers as it is found.
        observer.register_tables(&config.exact_tables(), stale_after(config));
        observer.set_alive(true);
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        if let Some(addr) = config.observability.listen_addr() {
            let listener = observe::http::bind(addr).await?;
            tasks.push(observe::http::spawn(listener, observer, stop.clone()));
        }
        if config.observability.emf {
            tasks.push(observe::emf::spawn(
                observer,
                config.observability.emf_namespace.clone(),
                Duration::from_secs(config.observability.emf_interval_secs),
                stop.clone(),
            ));
        }
        Ok(Observing { stop, tasks })
    }

    async fn stop(self) {
        observe::global().set_alive(false);
        self.stop.cancel();
        for task in self.tasks {
            if let Err(e) = task.await {
                observe::TaskFailed {
                    task: "observability",
                    error: &e,
                }
                .emit();
            }
        }
    }
}

/// `ddb-audit run`: audits the configured tables until `shutdown` stops it
/// (then drains: in-flight pages are written and checkpointed, and a final
/// digest says where the trail ends). Serves `/metrics` and the health
/// endpoints meanwhile, when the config says so.
pub async fn run<S, St, A>(
    config: &Config,
    seams: Seams<S, St, A>,
    shutdown: Shutdown,
) -> Result<(), DaemonError>
where
    S: StreamApi,
    St: CheckpointStore + ProofStore + Clone,
    A: AuditStore,
{
    let observing = match Observing::start(config).await {
        Ok(observing) => observing,
        Err(e) => {
            observe::global().set_alive(false);
            return Err(e);
        }
    };
    let result = audit(config, seams, shutdown).await;
    observing.stop().await;
    result
}

/// The daemon's tasks, from the first check of its tables to the final
/// digest.
async fn audit<S: StreamApi, St: CheckpointStore + ProofStore + Clone, A: AuditStore>(
    config: &Config,
    seams: Seams<S, St, A>,
    shutdown: Shutdown,
) -> Result<(), DaemonError> {
    let Seams {
        stream,
        store,
        audit,
        signer,
        cloudtrail,
    } = seams;
    let mut settings = Settings::from_config(config);
    settings.redactions = Redactions::from_config(config)?;
    // Any number of processes may run this config: each reads the streams
    // whose lease it holds.
    let replica = Replica::new(replica_id(), LeaseSettings::default(), &shutdown);
    tracing::info!(replica = %replica.id, "replica started");
    // The final digest is signed after the stop, under the shutdown's abort.
    let read_tables = engine::TableSet::new(config.exact_tables());
    let digests = Arc::new(
        DigestWriter::over(
            store.clone(),
            store.clone(),
            read_tables.clone(),
            DigestSettings::from_config(config, signer),
        )
        .for_replica(replica.clone()),
    );
    if let Some(reader) = &cloudtrail {
        // One replica reads CloudTrail at a time.
        replica.run_one("cloudtrail", reader.turn.clone());
        observe::global().watch_attribution(reader.stats.clone());
        let stop = reader.stop.clone();
        let stopping = shutdown.stop.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            stop.cancel();
        });
    }
    let mut engine = Engine::new(stream, store, audit, settings);
    engine.read_tables = read_tables;
    let engine = Arc::new(engine);
    // Without `init` (tables from the CloudFormation stack): say exactly
    // what is wrong with ours before reading anything.
    let checked = retry(
        engine.settings.retry_policy(),
        &shutdown.stop,
        "DescribeTable(own tables)",
        || engine.checkpoints.check_tables(),
    )
    .await;
    match checked {
        Ok(()) => {}
        Err(Retried::Cancelled) => return Ok(()),
        Err(Retried::Failed(e)) => return Err(e.into()),
    }
    let heartbeat_stop = CancellationToken::new();
    let heartbeats = {
        let (digests, stop) = (digests.clone(), heartbeat_stop.clone());
        tokio::spawn(async move { digests.heartbeats(stop).await })
    };
    // The leases are kept (heartbeats) until the final digests are written
    // under them, then released, so a peer takes over at its next scan.
    let coordinator_stop = CancellationToken::new();
    let coordinating = leases::coordinate(
        replica.clone(),
        &engine.checkpoints,
        &engine.read_tables,
        coordinator_stop.clone(),
    );
    let working = async {
        let result = work(
            config,
            &engine,
            &replica,
            &digests,
            cloudtrail,
            &shutdown,
            heartbeat_stop,
            heartbeats,
        )
        .await;
        coordinator_stop.cancel();
        result
    };
    let ((), result) = tokio::join!(coordinating, working);
    leases::let_go(&replica, &engine.checkpoints).await;
    result
}

/// Reading, then the final digests: what runs while the replica holds its
/// leases.
#[allow(clippy::too_many_arguments)]
async fn work<S: StreamApi, St: CheckpointStore + ProofStore + Clone, A: AuditStore>(
    config: &Config,
    engine: &Arc<Engine<S, St, A>>,
    replica: &Arc<Replica>,
    digests: &Arc<DigestWriter<St, St>>,
    cloudtrail: Option<CloudTrailTask>,
    shutdown: &Shutdown,
    heartbeat_stop: CancellationToken,
    heartbeats: tokio::task::JoinHandle<()>,
) -> Result<(), DaemonError> {
    let grace = Duration::from_millis(config.shutdown.grace_ms);
    let selection = config.selection().map_err(|e| EngineError::Unauditable {
        table: "tables".into(),
        reason: e.to_string(),
    })?;
    let discoverer = discovery::Discoverer::new(
        selection,
        config.discovery.interval(),
        engine.settings.retry_policy(),
    );
    let result = supervisor::run_selected(
        engine.clone(),
        discoverer,
        shutdown.clone(),
        Some(replica.clone()),
    )
    .await;
    heartbeat_stop.cancel();
    if let Err(e) = heartbeats.await {
        observe::TaskFailed {
            task: "digests",
            error: &e,
        }
        .emit();
    }
    if let Some(reader) = cloudtrail {
        // It stops at the same signal; it has nothing that cannot be redone.
        match tokio::time::timeout(grace, reader.handle).await {
            Ok(Err(e)) => observe::TaskFailed {
                task: "cloudtrail",
                error: &e,
            }
            .emit(),
            Err(_) => tracing::warn!("the CloudTrail reader did not stop within the grace period"),
            Ok(Ok(())) => {}
        }
    }
    result?;
    // Stopped gracefully: every checkpoint is final, so "the trail ends
    // here" can be signed.
    let written = digests.round(true, &heartbeat_stop, &shutdown.abort).await;
    tracing::info!(digests = written, "final digests written");
    Ok(())
}
