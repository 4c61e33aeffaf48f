//! The CloudTrail reader's counts on `/metrics`. The reader keeps them in its
//! own [`Stats`] (they also feed its logs); this collector reads them at each
//! scrape, so there is one set of numbers, and nothing is exported until a
//! reader runs (no trail configured: no attribution series at all).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use serde::Serialize;

use super::TableLabel;

/// Counters of one table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableCounts {
    /// Entries given a principal.
    pub attributed: u64,
    /// Entries marked ambiguous.
    pub ambiguous: u64,
    /// Entries written by this process whose event did not come within the
    /// delivery window.
    pub unmatched_entries: u64,
    /// Writes in the trail whose entry was not found within the window.
    pub unmatched_events: u64,
    /// Writes that name no key we can use (PartiQL INSERT, an untyped key).
    pub unkeyed: u64,
}

/// What the reader has done, for metrics (`observe`) and logs.
#[derive(Debug)]
pub struct Stats {
    tables: Mutex<BTreeMap<String, TableCounts>>,
    files_read: std::sync::atomic::AtomicU64,
    bad_files: std::sync::atomic::AtomicU64,
    /// When the reader last found nothing left to read.
    caught_up_at: Mutex<Option<DateTime<Utc>>>,
    /// Until the first catch-up the lag counts from here, so a reader that
    /// never gets a listing through shows a growing lag, not none.
    started_at: DateTime<Utc>,
}

impl Stats {
    pub fn new(tables: &[String]) -> Self {
        Stats::starting_at(tables, Utc::now())
    }

    pub fn starting_at(tables: &[String], started_at: DateTime<Utc>) -> Self {
        Stats {
            tables: Mutex::new(
                tables
                    .iter()
                    .map(|t| (t.clone(), TableCounts::default()))
                    .collect(),
            ),
            files_read: Default::default(),
            bad_files: Default::default(),
            caught_up_at: Mutex::new(None),
            started_at,
        }
    }

    pub fn count(&self, table: &str, f: impl FnOnce(&mut TableCounts)) {
        if let Ok(mut t) = self.tables.lock() {
            f(t.entry(table.to_string()).or_default());
        }
    }

    /// Counters per table (every configured table, from the start).
    pub fn tables(&self) -> BTreeMap<String, TableCounts> {
        self.tables.lock().map(|t| t.clone()).unwrap_or_default()
    }

    pub fn files_read(&self) -> u64 {
        self.files_read.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn file_read(&self) {
        self.files_read
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn bad_file(&self) {
        self.bad_files
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn bad_files(&self) -> u64 {
        self.bad_files.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The reader's lag: seconds since it last listed the bucket to its
    /// end (before that: since it started). Up to `poll_interval_secs` when
    /// all is well; it grows while listing or reading fails, or while the
    /// reader works through a backlog.
    pub fn lag_seconds(&self, now: DateTime<Utc>) -> i64 {
        let since = self
            .caught_up_at
            .lock()
            .ok()
            .and_then(|t| *t)
            .unwrap_or(self.started_at);
        (now - since).num_seconds().max(0)
    }

    pub fn caught_up(&self, at: DateTime<Utc>) {
        if let Ok(mut t) = self.caught_up_at.lock() {
            *t = Some(at);
        }
    }
}

/// The outcomes an entry's attribution ends in (`outcome` label).
pub const OUTCOMES: [&str; 3] = ["attributed", "ambiguous", "unmatched"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    table: String,
    outcome: String,
}

/// Set once, when `run` starts the reader.
#[derive(Debug, Default, Clone)]
pub(super) struct AttributionCollector(pub(super) Arc<OnceLock<Arc<Stats>>>);

impl Collector for AttributionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = self.0.get() else {
            return Ok(());
        };
        let tables = stats.tables();
        let outcome = |t: &str, o: &str| OutcomeLabel {
            table: t.to_string(),
            outcome: o.to_string(),
        };
        let table = |t: &str| TableLabel {
            table: t.to_string(),
        };
        {
            let mut m = encoder.encode_descriptor(
                "attribution_entries",
                "Audit entries by how their CloudTrail attribution ended: attributed (a principal \
                 named), ambiguous (several principals in one second: none named), unmatched (no \
                 event within delivery_window_secs; only entries this process wrote)",
                None,
                MetricType::Counter,
            )?;
            for (t, c) in &tables {
                for (o, v) in OUTCOMES
                    .iter()
                    .zip([c.attributed, c.ambiguous, c.unmatched_entries])
                {
                    ConstCounter::new(v).encode(m.encode_family(&outcome(t, o))?)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "attribution_share",
                "Share (0..1) of the entries whose attribution ended, since the process started, \
                 by outcome (see attribution_entries); 0 while none has",
                None,
                MetricType::Gauge,
            )?;
            for (t, c) in &tables {
                let all = c.attributed + c.ambiguous + c.unmatched_entries;
                for (o, v) in OUTCOMES
                    .iter()
                    .zip([c.attributed, c.ambiguous, c.unmatched_entries])
                {
                    let share = if all == 0 { 0.0 } else { v as f64 / all as f64 };
                    ConstGauge::new(share).encode(m.encode_family(&outcome(t, o))?)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "attribution_unmatched_events",
                "CloudTrail writes whose audit entry did not appear within delivery_window_secs",
                None,
                MetricType::Counter,
            )?;
            for (t, c) in &tables {
                ConstCounter::new(c.unmatched_events).encode(m.encode_family(&table(t))?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "attribution_unkeyed_events",
                "CloudTrail writes naming no usable key (a PartiQL INSERT, a key not fitting the \
                 table's schema): they cannot be matched",
                None,
                MetricType::Counter,
            )?;
            for (t, c) in &tables {
                ConstCounter::new(c.unkeyed).encode(m.encode_family(&table(t))?)?;
            }
        }
        ConstCounter::new(stats.files_read()).encode(encoder.encode_descriptor(
            "cloudtrail_files_read",
            "CloudTrail log files read",
            None,
            MetricType::Counter,
        )?)?;
        ConstCounter::new(stats.bad_files()).encode(encoder.encode_descriptor(
            "cloudtrail_bad_files",
            "CloudTrail log files that could not be parsed (skipped, logged)",
            None,
            MetricType::Counter,
        )?)?;
        ConstGauge::new(stats.lag_seconds(Utc::now())).encode(encoder.encode_descriptor(
            "cloudtrail_lag_seconds",
            "Seconds since the CloudTrail reader last listed the trail's bucket to its end (since \
             it started, before that): up to poll_interval_secs when healthy; grows while it \
             fails or works through a backlog",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Observer;
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn the_readers_counts_and_lag_are_on_metrics_once_it_runs() {
        let o = Observer::new();
        o.register_tables(&["orders".into()], std::time::Duration::from_secs(30));
        assert!(
            !o.render().contains("attribution"),
            "no reader, no attribution series"
        );
        let started = Utc::now() - chrono::Duration::seconds(90);
        let stats = Arc::new(Stats::starting_at(
            &["orders".into(), "flags".into()],
            started,
        ));
        o.watch_attribution(stats.clone());
        let text = o.render();
        for outcome in OUTCOMES {
            for t in ["orders", "flags"] {
                let series = format!(
                    "ddb_audit_attribution_entries_total{{table=\"{t}\",outcome=\"{outcome}\"}}"
                );
                assert_eq!(sample(&text, &series), Some(0.0), "{series} in\n{text}");
            }
        }
        let lag = sample(&text, "ddb_audit_cloudtrail_lag_seconds").unwrap();
        assert!(
            (90.0..100.0).contains(&lag),
            "never caught up: since start, {lag}"
        );

        for _ in 0..3 {
            stats.count("orders", |c| c.attributed += 1);
        }
        stats.count("orders", |c| c.ambiguous += 1);
        stats.count("orders", |c| {
            c.unmatched_entries += 1;
            c.unmatched_events += 2;
            c.unkeyed += 1;
        });
        stats.caught_up(Utc::now() - chrono::Duration::seconds(5));
        let text = o.render();
        let at = |name: &str, labels: &str| sample(&text, &format!("{name}{{{labels}}}"));
        let orders = |o: &str| format!("table=\"orders\",outcome=\"{o}\"");
        let entries = "ddb_audit_attribution_entries_total";
        assert_eq!(at(entries, &orders("attributed")), Some(3.0), "{text}");
        assert_eq!(at(entries, &orders("ambiguous")), Some(1.0));
        assert_eq!(at(entries, &orders("unmatched")), Some(1.0));
        let share = "ddb_audit_attribution_share";
        assert_eq!(at(share, &orders("attributed")), Some(0.6));
        assert_eq!(at(share, &orders("ambiguous")), Some(0.2));
        assert_eq!(at(share, &orders("unmatched")), Some(0.2));
        assert_eq!(
            at(share, "table=\"flags\",outcome=\"attributed\""),
            Some(0.0)
        );
        let orders_only = "table=\"orders\"";
        assert_eq!(
            at("ddb_audit_attribution_unmatched_events_total", orders_only),
            Some(2.0)
        );
        assert_eq!(
            at("ddb_audit_attribution_unkeyed_events_total", orders_only),
            Some(1.0)
        );
        let lag = sample(&text, "ddb_audit_cloudtrail_lag_seconds").unwrap();
        assert!((5.0..15.0).contains(&lag), "since the catch-up: {lag}");
        assert_eq!(
            sample(&text, "ddb_audit_cloudtrail_files_read_total"),
            Some(0.0)
        );
    }
}
