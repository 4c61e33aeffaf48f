//! CloudWatch Embedded Metric Format: with `[observability] emf = true` the
//! daemon prints, every `emf_interval_secs`, one JSON line per table on
//! stdout (logs go to stderr). The awslogs driver ships it to CloudWatch
//! Logs, which turns it into metrics with no agent. Metric names are the
//! Prometheus ones; counters are the increase over the interval. Each is
//! published per `table` and also without dimensions, so that one alarm
//! (Maximum of the lag, Sum of the gaps, Minimum of readiness) covers every
//! table without knowing their names.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{Observer, TableSnapshot};

/// The counters, as (metric name, value) — sent as deltas.
fn counters(s: &TableSnapshot) -> [(&'static str, u64); 4] {
    [
        ("ddb_audit_records_read_total", s.records_read),
        ("ddb_audit_entries_written_total", s.entries_written),
        ("ddb_audit_duplicates_total", s.duplicates),
        ("ddb_audit_gaps_total", s.gaps),
    ]
}

/// One EMF document per table; `previous` holds the last totals sent.
pub(crate) fn documents(
    namespace: &str,
    snapshots: &[TableSnapshot],
    previous: &mut HashMap<String, [u64; 4]>,
    timestamp_ms: i64,
) -> Vec<Value> {
    snapshots
        .iter()
        .map(|s| {
            let totals = counters(s);
            let before = previous.get(&s.table).copied().unwrap_or([0; 4]);
            let mut doc = serde_json::Map::new();
            let mut defs = Vec::new();
            for (i, (name, total)) in totals.iter().enumerate() {
                doc.insert((*name).into(), json!(total.saturating_sub(before[i])));
                defs.push(json!({"Name": name, "Unit": "Count"}));
            }
            previous.insert(s.table.clone(), totals.map(|(_, v)| v));
            doc.insert("ddb_audit_lag_seconds".into(), json!(s.lag_seconds));
            defs.push(json!({"Name": "ddb_audit_lag_seconds", "Unit": "Seconds"}));
            doc.insert("ddb_audit_failing_shards".into(), json!(s.failing_shards));
            defs.push(json!({"Name": "ddb_audit_failing_shards", "Unit": "Count"}));
            doc.insert("ddb_audit_table_ready".into(), json!(i64::from(s.ready)));
            defs.push(json!({"Name": "ddb_audit_table_ready", "Unit": "None"}));
            doc.insert("ddb_audit_streams_unowned".into(), json!(s.streams_unowned));
            defs.push(json!({"Name": "ddb_audit_streams_unowned", "Unit": "Count"}));
            doc.insert("table".into(), json!(s.table));
            doc.insert(
                "_aws".into(),
                json!({
                    "Timestamp": timestamp_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": namespace,
                        // Per table, and (the empty set) across tables:
                        // one alarm then covers every table.
                        "Dimensions": [["table"], []],
                        "Metrics": defs,
                    }],
                }),
            );
            Value::Object(doc)
        })
        .collect()
}

/// Prints EMF lines every `interval` until `stop`, and once more at stop so
/// the last interval's counts are not lost.
pub fn spawn(
    observer: &'static Observer,
    namespace: String,
    interval: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut previous = HashMap::new();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                _ = ticker.tick() => false,
            };
            let docs = documents(
                &namespace,
                &observer.snapshot(),
                &mut previous,
                chrono::Utc::now().timestamp_millis(),
            );
            let mut out = std::io::stdout().lock();
            for doc in docs {
                if let Err(e) = writeln!(out, "{doc}") {
                    tracing::warn!(error = %e, "cannot write EMF metrics to stdout");
                    break;
                }
            }
            let _ = out.flush();
            if stopping {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(read: u64, lag: f64) -> TableSnapshot {
        TableSnapshot {
            table: "orders".into(),
            records_read: read,
            entries_written: read,
            duplicates: 0,
            gaps: 0,
            lag_seconds: lag,
            failing_shards: 0,
            ready: true,
            streams_unowned: 0,
        }
    }

    #[test]
    fn counters_are_sent_as_increases_with_the_table_dimension() {
        let mut prev = HashMap::new();
        let d1 = documents("ddb-audit", &[snap(5, 2.5)], &mut prev, 1000);
        let d2 = documents("ddb-audit", &[snap(8, 0.0)], &mut prev, 2000);
        assert_eq!(d1[0]["ddb_audit_records_read_total"], 5);
        assert_eq!(d2[0]["ddb_audit_records_read_total"], 3);
        assert_eq!(d1[0]["ddb_audit_lag_seconds"], 2.5);
        assert_eq!(d2[0]["table"], "orders");
        let m = &d2[0]["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "ddb-audit");
        assert_eq!(m["Dimensions"], json!([["table"], []]));
        assert_eq!(d2[0]["_aws"]["Timestamp"], 2000);
        // Every metric declared is present in the document.
        for def in m["Metrics"].as_array().unwrap() {
            let name = def["Name"].as_str().unwrap();
            assert!(d2[0].get(name).is_some(), "{name}");
        }
    }
}
