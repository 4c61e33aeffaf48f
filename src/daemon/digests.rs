//! The digest writer: every `[proof] digest_interval_secs`, per stream, a
//! digest of every shard's chain as its checkpoint row says (so a digest
//! never covers an entry that is not durably written), chained to the
//! previous digest; a final one on a graceful stop. It only reads the
//! checkpoints: the shard loops never wait for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::daemon::leases::Replica;
use crate::proof::chain::ChainState;
use crate::proof::digest::{next_digest, DigestInput, ShardHead, SignedDigest};
use crate::proof::sign::DigestSigner;
use crate::retry::{retry, Retried, RetryPolicy};
use crate::store::{CheckpointStore, Fence, ProofStore, PutOutcome, ShardStatus, StoreError};

#[derive(Clone)]
pub struct DigestSettings {
    pub interval: Duration,
    pub retention_days: Option<u64>,
    pub signer: Option<Arc<dyn DigestSigner>>,
    pub retry: RetryPolicy,
}

impl DigestSettings {
    /// `[proof]` and `[retention]`, signed by `signer` (or unsigned).
    pub fn from_config(
        config: &crate::config::Config,
        signer: Option<Arc<dyn DigestSigner>>,
    ) -> Self {
        DigestSettings {
            interval: Duration::from_secs(config.proof.digest_interval_secs),
            retention_days: config.retention.days,
            signer,
            retry: crate::daemon::engine::Settings::from_config(config).retry_policy(),
        }
    }
}

/// The newest digest this process knows of, per stream.
struct Last {
    number: u64,
    signed: SignedDigest,
    heads: HashMap<String, ShardHead>,
    is_final: bool,
}

pub struct DigestWriter<C, P> {
    checkpoints: C,
    proofs: P,
    tables: crate::daemon::engine::TableSet,
    settings: DigestSettings,
    last: Mutex<HashMap<String, Last>>,
    /// With several replicas: only the streams this one holds are
    /// digested, under their fence.
    replica: Option<Arc<Replica>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Proof(#[from] crate::proof::ProofError),
}

impl<C: CheckpointStore, P: ProofStore> DigestWriter<C, P> {
    pub fn new(checkpoints: C, proofs: P, tables: Vec<String>, settings: DigestSettings) -> Self {
        Self::over(
            checkpoints,
            proofs,
            crate::daemon::engine::TableSet::new(tables),
            settings,
        )
    }

    /// Over a set the supervisor adds to as it finds tables.
    pub fn over(
        checkpoints: C,
        proofs: P,
        tables: crate::daemon::engine::TableSet,
        settings: DigestSettings,
    ) -> Self {
        DigestWriter {
            checkpoints,
            proofs,
            tables,
            settings,
            last: Mutex::new(HashMap::new()),
            replica: None,
        }
    }

    /// Digests only the streams `replica` holds, each under its fence.
    pub fn for_replica(mut self, replica: Arc<Replica>) -> Self {
        self.replica = Some(replica);
        self
    }

    /// Writes a digest round every interval until `stop`.
    pub async fn heartbeats(&self, stop: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.settings.interval) => {}
            }
            // Retries of a heartbeat end with the stop; the final digest is
            // written after it, under the shutdown's own abort.
            let _ = self.round(false, &stop, &stop).await;
        }
    }

    /// One digest per stream of every configured table. A failure on one
    /// stream is logged and the others still get theirs. Returns how many
    /// digests were written.
    pub async fn round(
        &self,
        is_final: bool,
        stop: &CancellationToken,
        abort: &CancellationToken,
    ) -> usize {
        let mut written = 0;
        for table in &self.tables.names() {
            let rows = match retry(self.settings.retry, abort, "Query(streams)", || {
                self.checkpoints.load_streams(Some(table))
            })
            .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    warn!(table = %table, error = %retried(&e), "cannot list streams for a digest");
                    continue;
                }
            };
            for row in rows {
                if stop.is_cancelled() && !is_final {
                    return written;
                }
                let fence = match &self.replica {
                    None => None,
                    Some(replica) => match replica.fence(&row.stream_arn) {
                        Some(fence) => Some(fence),
                        // Another replica's: its owner digests it.
                        None => continue,
                    },
                };
                match self
                    .digest_stream(
                        table,
                        &row.stream_arn,
                        row.drained,
                        is_final,
                        abort,
                        fence.as_ref(),
                    )
                    .await
                {
                    Ok(true) => written += 1,
                    Ok(false) => {}
                    Err(DigestError::Store(e)) if e.is_fenced() => {
                        if let (Some(replica), Some(fence)) = (&self.replica, &fence) {
                            replica.fenced(fence);
                        }
                    }
                    Err(e) => warn!(
                        table = %table, stream = %row.stream_arn, error = %e,
                        "digest not written this round"
                    ),
                }
            }
        }
        written
    }

    async fn digest_stream(
        &self,
        table: &str,
        stream_arn: &str,
        stream_drained: bool,
        is_final: bool,
        abort: &CancellationToken,
        fence: Option<&Fence>,
    ) -> Result<bool, DigestError> {
        let policy = self.settings.retry;
        let shards = retry(policy, abort, "Query(shards)", || {
            self.checkpoints.load_shards(stream_arn)
        })
        .await
        .map_err(into_store)?;
        // A few times: each conflict means another digest was written, which
        // the next attempt builds on.
        for _ in 0..3 {
            let mut last = self.last.lock().await;
            if !last.contains_key(stream_arn) {
                let found = retry(policy, abort, "Query(digest)", || {
                    self.proofs.newest_digest(stream_arn)
                })
                .await
                .map_err(into_store)?;
                if let Some((number, signed)) = found {
                    let doc = signed.parse()?;
                    last.insert(
                        stream_arn.to_string(),
                        Last {
                            number,
                            heads: doc
                                .shards
                                .into_iter()
                                .map(|h| (h.shard_id.clone(), h))
                                .collect(),
                            is_final: doc.is_final,
                            signed,
                        },
                    );
                }
            }
            let prev = last.get(stream_arn);
            // Open and closed shards always; a drained one while its head still
            // changes (then once more): a digest stays small however many shards
            // a stream has drained over the years.
            let heads: Vec<ShardHead> = shards
                .iter()
                .map(|cp| cp.digest_head(&cp.chain.clone().unwrap_or_else(ChainState::default)))
                .filter(|head| {
                    head.status != ShardStatus::Drained.as_str()
                        || prev.is_none_or(|p| p.heads.get(&head.shard_id) != Some(head))
                })
                .collect();
            if stream_drained && heads.is_empty() && prev.is_some_and(|p| p.is_final) {
                // A drained stream's trail ended, signed: nothing more to say.
                return Ok(false);
            }
            let previous = prev.map(|p| (p.number, p.signed.clone()));
            let written = write_digest(
                &self.proofs,
                &self.settings,
                NextDigest {
                    table,
                    stream_arn,
                    previous,
                    heads,
                    is_final,
                    fence,
                },
                abort,
            )
            .await?;
            let Some((doc, sealed)) = written else {
                // Another writer took this number (one of ours cut short by
                // the shutdown, or another process): go on from its digest,
                // now rather than next round, which a final digest never has.
                last.remove(stream_arn);
                continue;
            };
            let mut heads: HashMap<String, ShardHead> =
                prev.map(|p| p.heads.clone()).unwrap_or_default();
            for h in &doc.shards {
                heads.insert(h.shard_id.clone(), h.clone());
            }
            last.insert(
                stream_arn.to_string(),
                Last {
                    number: doc.number,
                    signed: sealed,
                    heads,
                    is_final,
                },
            );
            return Ok(true);
        }
        Ok(false)
    }
}

/// What the next digest of one (stream or snapshot run) chain says.
pub struct NextDigest<'a> {
    pub table: &'a str,
    pub stream_arn: &'a str,
    /// The newest digest before it: (number, digest as stored).
    pub previous: Option<(u64, SignedDigest)>,
    pub heads: Vec<ShardHead>,
    pub is_final: bool,
    /// The stream's lease, when replicas share the work: the digest is
    /// written only while it holds.
    pub fence: Option<&'a Fence>,
}

/// Seals, signs and writes (write-once) the digest after `next.previous`,
/// then moves the stream's newest-digest pointer, both through the retry
/// layer. `None`: another writer already took that number.
pub async fn write_digest<P: ProofStore>(
    proofs: &P,
    settings: &DigestSettings,
    next: NextDigest<'_>,
    abort: &CancellationToken,
) -> Result<Option<(crate::proof::digest::Digest, SignedDigest)>, DigestError> {
    let (table, stream_arn, fence, is_final) =
        (next.table, next.stream_arn, next.fence, next.is_final);
    let policy = settings.retry;
    let (doc, sealed) = next_digest(DigestInput {
        table,
        stream_arn,
        previous: next.previous.as_ref().map(|(n, d)| (*n, d)),
        shards: next.heads,
        time: chrono::Utc::now(),
        is_final,
        interval_secs: settings.interval.as_secs(),
        retention_days: settings.retention_days,
        signer: settings.signer.as_deref(),
    })
    .await?;
    let sealed_ref = &sealed;
    let number = doc.number;
    let outcome = retry(policy, abort, "PutItem(digest)", || async move {
        match fence {
            Some(fence) => proofs.put_fenced_digest(number, sealed_ref, fence).await,
            None => {
                proofs
                    .put_digest(table, stream_arn, number, sealed_ref)
                    .await
            }
        }
    })
    .await
    .map_err(into_store)?;
    if outcome == PutOutcome::AlreadyPresent {
        warn!(table = %table, stream = %stream_arn, number = doc.number,
            "another writer took this digest number; re-reading next round");
        return Ok(None);
    }
    retry(policy, abort, "UpdateItem(stream digest)", || {
        proofs.record_newest_digest(table, stream_arn, doc.number, &sealed.hash)
    })
    .await
    .map_err(into_store)?;
    if is_final {
        info!(table = %table, stream = %stream_arn, number = doc.number, "final digest written");
    } else {
        debug!(table = %table, stream = %stream_arn, number = doc.number, "digest written");
    }
    Ok(Some((doc, sealed)))
}

fn into_store(e: Retried<StoreError>) -> StoreError {
    match e {
        Retried::Failed(e) => e,
        Retried::Cancelled => StoreError::Other("cancelled by shutdown".into()),
    }
}

fn retried(e: &Retried<StoreError>) -> String {
    match e {
        Retried::Failed(e) => e.to_string(),
        Retried::Cancelled => "cancelled by shutdown".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{CheckpointStore, StreamRow};

    const ARN: &str = "arn:aws:dynamodb:us-east-1:1:table/t/stream/2026-01-01T00:00:00.000";

    fn writer(store: &MemoryStore) -> DigestWriter<MemoryStore, MemoryStore> {
        DigestWriter::new(
            store.clone(),
            store.clone(),
            vec!["t".to_string()],
            DigestSettings {
                interval: Duration::from_secs(60),
                retention_days: None,
                signer: None,
                retry: crate::retry::RetryPolicy::new(
                    Duration::from_millis(1),
                    Duration::from_millis(10),
                ),
            },
        )
    }

    /// The digest number a final round wanted was taken meanwhile (by a
    /// heartbeat of ours cut short by the shutdown after its put, or by
    /// another process): the final digest must still be written, after it.
    #[tokio::test]
    async fn a_final_round_whose_number_was_taken_still_signs_the_end() {
        let store = MemoryStore::new();
        store
            .save_stream(&StreamRow {
                table_name: "t".into(),
                stream_arn: ARN.into(),
                is_enabled: true,
                drained: false,
                updated_at: chrono::Utc::now(),
            })
            .await
            .unwrap();
        let token = CancellationToken::new();
        let (ours, other) = (writer(&store), writer(&store));
        assert_eq!(ours.round(false, &token, &token).await, 1);
        // Number 2 goes to the other writer; ours still thinks 1 is newest.
        assert_eq!(other.round(false, &token, &token).await, 1);
        assert_eq!(ours.round(true, &token, &token).await, 1);
        let (number, signed) = store.newest_digest(ARN).await.unwrap().unwrap();
        assert_eq!(number, 3);
        assert!(signed.parse().unwrap().is_final);
    }
}
