//! The observability registry driven by the real daemon on the stream
//! simulator (tokio's paused clock): a shard that fails with an error
//! retrying cannot fix shows in `ddb_audit_failing_shards` and in readiness,
//! naming the table, the shard and the error, while the other table is
//! audited and counted; once the error stops, the shard is read again and the
//! table is ready. One test in this binary: the observer is process-wide.

mod sim_support;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ddb_audit::observe;
use ddb_audit::store::memory::MemoryStore;
use ddb_audit::stream::sim::{SimConfig, SimStream, ViewType};
use ddb_audit::stream::{
    DescribeStreamRequest, RecordsPage, ShardIteratorRequest, StreamApi, StreamDescription,
    StreamError, StreamResult, StreamSummary, TableStream,
};
use sim_support::*;

/// The simulator, with GetShardIterator on one table's streams denied while
/// `deny` is set (as an IAM policy missing that table would).
#[derive(Clone)]
struct DenyTable {
    inner: SimStream,
    table: String,
    deny: Arc<AtomicBool>,
}

impl StreamApi for DenyTable {
    fn describe_table(&self, t: &str) -> impl Future<Output = StreamResult<TableStream>> + Send {
        self.inner.describe_table(t)
    }
    fn list_streams(
        &self,
        t: &str,
    ) -> impl Future<Output = StreamResult<Vec<StreamSummary>>> + Send {
        self.inner.list_streams(t)
    }
    fn describe_stream(
        &self,
        r: &DescribeStreamRequest,
    ) -> impl Future<Output = StreamResult<StreamDescription>> + Send {
        self.inner.describe_stream(r)
    }
    fn get_shard_iterator(
        &self,
        request: &ShardIteratorRequest<'_>,
    ) -> impl Future<Output = StreamResult<String>> + Send {
        let denied = self.deny.load(Ordering::SeqCst)
            && request
                .stream_arn
                .contains(&format!(":table/{}/stream/", self.table));
        let call = self.inner.get_shard_iterator(request);
        async move {
            if denied {
                Err(StreamError::Other(
                    "AccessDeniedException: not authorized to perform dynamodb:GetShardIterator"
                        .into(),
                ))
            } else {
                call.await
            }
        }
    }
    fn get_records(
        &self,
        iterator: &str,
        limit: Option<i32>,
    ) -> impl Future<Output = StreamResult<RecordsPage>> + Send {
        self.inner.get_records(iterator, limit)
    }
    fn list_tables(
        &self,
        start: Option<&str>,
    ) -> impl Future<Output = StreamResult<ddb_audit::stream::TablesPage>> + Send {
        self.inner.list_tables(start)
    }
    fn list_tags(
        &self,
        arn: &str,
    ) -> impl Future<Output = StreamResult<ddb_audit::stream::Tags>> + Send {
        self.inner.list_tags(arn)
    }
}

fn sample(text: &str, name: &str, table: &str) -> Option<f64> {
    let prefix = format!("{name}{{table=\"{table}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(start_paused = true)]
async fn a_failing_shard_shows_in_metrics_and_readiness_and_recovers() {
    let sim = SimStream::new(SimConfig::with_seed(11));
    for t in ["good", "denied"] {
        sim.create_table(t, &["pk"], Some(ViewType::NewAndOldImages))
            .unwrap();
    }
    for id in 0..6 {
        sim.put("good", item(id, 0, "alice")).unwrap();
    }
    for id in 0..4 {
        sim.put("denied", item(id, 0, "bob")).unwrap();
    }
    let deny = Arc::new(AtomicBool::new(true));
    let stream = ddb_audit::stream::observed::Observed::new(DenyTable {
        inner: sim.clone(),
        table: "denied".into(),
        deny: deny.clone(),
    });
    let o = observe::global();
    o.register_tables(&["good".into(), "denied".into()], Duration::from_secs(30));
    let store = MemoryStore::new();
    let daemon = start(stream, &store, settings(), &["good", "denied"]);
    run_for(Duration::from_secs(5)).await;

    let text = o.render();
    assert_eq!(
        sample(&text, "ddb_audit_records_read_total", "good"),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "ddb_audit_entries_written_total", "good"),
        Some(6.0)
    );
    assert_eq!(sample(&text, "ddb_audit_failing_shards", "good"), Some(0.0));
    assert_eq!(
        sample(&text, "ddb_audit_failing_shards", "denied"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "ddb_audit_records_read_total", "denied"),
        Some(0.0)
    );
    assert_eq!(sample(&text, "ddb_audit_table_ready", "denied"), Some(0.0));
    assert!(
        text.contains("ddb_audit_stream_calls_total{operation=\"GetRecords\",outcome=\"ok\"}"),
        "{text}"
    );
    let r = o.readiness();
    assert!(!r.ready);
    let denied = r.tables.iter().find(|t| t.table == "denied").unwrap();
    let reason = denied.reason.as_deref().unwrap_or_default();
    assert!(
        denied.state == "failing" && reason.contains("failing: AccessDeniedException"),
        "{denied:?}"
    );
    assert!(r.tables.iter().find(|t| t.table == "good").unwrap().ready);

    // Permission fixed: after the cool-down the shard is read from its
    // checkpoint, its records are audited, and every table is ready.
    deny.store(false, Ordering::SeqCst);
    run_for(Duration::from_secs(40)).await;
    let text = o.render();
    assert_eq!(
        sample(&text, "ddb_audit_failing_shards", "denied"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "ddb_audit_entries_written_total", "denied"),
        Some(4.0)
    );
    assert!(o.readiness().ready, "{:?}", o.readiness());
    daemon.stop().await;
    assert_eq!(store.entry_count(), 10);
}
