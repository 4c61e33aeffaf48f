//! Which tables of the region the daemon audits, when `tables` holds a
//! pattern: one ListTables listing per `[discovery] interval_secs`, and,
//! with `[discovery] tags`, the tags of the tables whose name matches.
//!
//! Bounded cost: ListTables pages (100 names each) once per interval; tags
//! read at once for a table not seen before, and read again for the others
//! as [`refresh_budget`] allows (every listing for up to 120 tables at the
//! default interval; else each within [`TAG_REFRESH_INTERVALS`] listings),
//! at most [`TAG_READS_PER_SEC`] a second. A config of exact names lists
//! nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::pace::Pacer;
use crate::retry::{retry, Retried, RetryPolicy};
use crate::selection::TableSelection;
use crate::stream::{StreamApi, StreamError, Tags};

/// A table's tags are read again within this many listings at most, however
/// many tables there are (see [`refresh_budget`]); a table created with its
/// tags counts at the next listing.
pub const TAG_REFRESH_INTERVALS: u32 = 10;

/// ListTagsOfResource calls a second, at most: the control-plane calls
/// share a small per-account rate, which this leaves room in.
pub const TAG_READS_PER_SEC: u32 = 8;

/// How many cached tag copies one listing reads again, out of `matching`
/// name-matching tables: all of them while that costs at most a quarter of
/// the interval at [`TAG_READS_PER_SEC`], else a share that still reads
/// each within [`TAG_REFRESH_INTERVALS`] listings.
pub fn refresh_budget(matching: usize, interval: Duration) -> usize {
    let cap = (u64::from(TAG_READS_PER_SEC) * interval.as_secs() / 4) as usize;
    matching
        .div_ceil(TAG_REFRESH_INTERVALS as usize)
        .max(matching.min(cap))
}

/// What one listing found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Listed {
    /// Tables a pattern selects (names and tags), never our own.
    pub selected: BTreeSet<String>,
    /// Tables whose name matches but whose tags could not be read, with
    /// the reason and its fix: shown as failing, not audited.
    pub unreadable: BTreeMap<String, String>,
    /// Every table the region has (for telling a deleted table from one
    /// that stopped matching).
    pub existing: BTreeSet<String>,
}

struct CachedTags {
    tags: Tags,
    read_at: Instant,
}

/// The listing loop's memory: the ARN prefix of the region's tables and
/// the tags read so far.
pub struct Discoverer {
    selection: TableSelection,
    interval: Duration,
    retry: RetryPolicy,
    /// `arn:aws:dynamodb:REGION:ACCOUNT:table/`, learnt from the first
    /// DescribeTable, so tags need no DescribeTable per table.
    arn_prefix: Option<String>,
    tags: HashMap<String, CachedTags>,
    tag_pacer: Pacer,
}

impl Discoverer {
    pub fn new(selection: TableSelection, interval: Duration, retry: RetryPolicy) -> Self {
        Discoverer {
            selection,
            interval,
            retry,
            arn_prefix: None,
            tags: HashMap::new(),
            tag_pacer: Pacer::per_second(TAG_READS_PER_SEC),
        }
    }

    /// Exact table names only (no listing), as `supervisor::run` takes them.
    pub fn of_names(
        tables: &[String],
        interval: Duration,
        retry: RetryPolicy,
    ) -> Result<Self, crate::selection::PatternError> {
        let selection = TableSelection::new(tables, &[], Default::default(), Vec::new())?;
        Ok(Discoverer::new(selection, interval, retry))
    }

    pub fn selection(&self) -> &TableSelection {
        &self.selection
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Lists the region's tables and selects. `Err` when ListTables itself
    /// fails (the previous answer should stand); `Cancelled` on stop.
    pub async fn list<S: StreamApi>(
        &mut self,
        stream: &S,
        stop: &CancellationToken,
    ) -> Result<Listed, Retried<StreamError>> {
        let started = Instant::now();
        let mut existing = BTreeSet::new();
        let mut start: Option<String> = None;
        let mut pages = 0u32;
        loop {
            let page = retry(self.retry, stop, "ListTables", || {
                stream.list_tables(start.as_deref())
            })
            .await?;
            pages += 1;
            existing.extend(page.names);
            match page.last_evaluated {
                Some(last) if Some(&last) != start.as_ref() => start = Some(last),
                _ => break,
            }
        }
        let matching: Vec<&String> = existing
            .iter()
            .filter(|t| self.selection.name_matches(t))
            .collect();
        let mut listed = Listed::default();
        let mut tag_reads = 0u32;
        if !self.selection.needs_tags() {
            listed.selected = matching.into_iter().cloned().collect();
        } else {
            // Refreshes spread evenly, the oldest copies first: every table
            // when tag reads fit in a quarter of the interval at their pace
            // (a tag added to a table counts at the next listing), else
            // enough that each is read again within TAG_REFRESH_INTERVALS.
            let budget = refresh_budget(matching.len(), self.interval);
            let mut known: Vec<(&String, Instant)> = matching
                .iter()
                .filter_map(|t| Some((*t, self.tags.get(*t)?.read_at)))
                .collect();
            known.sort_by_key(|(_, at)| *at);
            let refresh: BTreeSet<String> = known
                .into_iter()
                .take(budget)
                .map(|(t, _)| t.clone())
                .collect();
            for table in matching {
                if self.selection.is_exact(table) {
                    // An exact name is audited whatever its tags.
                    listed.selected.insert(table.clone());
                    continue;
                }
                let known = self.tags.contains_key(table);
                if !known || refresh.contains(table) {
                    tag_reads += 1;
                    match self.read_tags(stream, table, stop).await {
                        Ok(tags) => {
                            self.tags.insert(
                                table.clone(),
                                CachedTags {
                                    tags,
                                    read_at: Instant::now(),
                                },
                            );
                        }
                        Err(Retried::Cancelled) => return Err(Retried::Cancelled),
                        Err(Retried::Failed(e)) => {
                            listed
                                .unreadable
                                .insert(table.clone(), tags_problem(table, &e));
                            continue;
                        }
                    }
                }
                if self
                    .tags
                    .get(table)
                    .is_some_and(|c| self.selection.tags_match(&c.tags))
                {
                    listed.selected.insert(table.clone());
                }
            }
            // Tables gone from the region leave the cache: bounded by what
            // the region holds.
            self.tags.retain(|t, _| existing.contains(t));
        }
        debug!(
            tables = existing.len(),
            selected = listed.selected.len(),
            list_tables_pages = pages,
            tag_reads,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "tables listed"
        );
        listed.existing = existing;
        Ok(listed)
    }

    async fn read_tags<S: StreamApi>(
        &mut self,
        stream: &S,
        table: &str,
        stop: &CancellationToken,
    ) -> Result<Tags, Retried<StreamError>> {
        let arn = match &self.arn_prefix {
            Some(prefix) => format!("{prefix}{table}"),
            None => {
                let described = retry(self.retry, stop, "DescribeTable", || {
                    stream.describe_table(table)
                })
                .await?;
                let Some(arn) = described.table_arn else {
                    return Err(Retried::Failed(StreamError::Other(format!(
                        "DescribeTable gave no ARN for table {table}"
                    ))));
                };
                if let Some((prefix, _)) = arn.rsplit_once(":table/") {
                    self.arn_prefix = Some(format!("{prefix}:table/"));
                }
                arn
            }
        };
        let pacer = &self.tag_pacer;
        retry(self.retry, stop, "ListTagsOfResource", || async {
            pacer.ready().await;
            stream.list_tags(&arn).await
        })
        .await
    }
}

/// Why a table's tags could not be read, and what fixes it.
fn tags_problem(table: &str, e: &StreamError) -> String {
    format!(
        "table `{table}`: cannot read its tags to decide whether `[discovery] tags` select it: {e}; \
         the daemon's role needs dynamodb:ListTagsOfResource on it (see infra/cloudformation), e.g. \
         aws dynamodb list-tags-of-resource --resource-arn $(aws dynamodb describe-table \
         --table-name {table} --query Table.TableArn --output text) to check"
    )
}

/// Why the region's tables could not be listed, and what fixes it.
pub fn listing_problem(e: &StreamError) -> String {
    format!(
        "cannot list the region's tables for the patterns in `tables`: {e}; the daemon's role needs \
         dynamodb:ListTables (see infra/cloudformation); check with `aws dynamodb list-tables`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::sim::{SimConfig, SimStream, ViewType};

    use crate::selection::test_selection as selection;

    #[tokio::test(start_paused = true)]
    async fn tags_are_read_at_once_for_new_tables_then_refreshed_within_budget() {
        let sim = SimStream::new(SimConfig::default());
        for i in 0..250 {
            sim.create_table(
                &format!("t{i:03}"),
                &["pk"],
                Some(ViewType::NewAndOldImages),
            )
            .unwrap();
        }
        sim.create_table("ddb-audit-entries", &["pk"], None)
            .unwrap();
        sim.tag_table("t007", "audit", "on").unwrap();
        let interval = Duration::from_secs(60);
        let mut d = Discoverer::new(
            selection(&["t*"], &["t00[0-5]"], &[("audit", "on")]),
            interval,
            RetryPolicy::new(Duration::from_millis(10), Duration::from_millis(100)),
        );
        let stop = CancellationToken::new();
        let first = d.list(&sim, &stop).await.unwrap();
        assert_eq!(first.selected, BTreeSet::from(["t007".to_string()]));
        let c = sim.calls();
        // 251 names: three pages; tags of the 244 matching names, one
        // DescribeTable for the ARN.
        assert_eq!((c.list_tables, c.list_tags, c.describe_table), (3, 244, 1));
        sim.reset_calls();
        tokio::time::advance(interval).await;
        sim.tag_table("t100", "audit", "on").unwrap();
        sim.create_table("t999", &["pk"], None).unwrap();
        sim.tag_table("t999", "audit", "on").unwrap();
        let second = d.list(&sim, &stop).await.unwrap();
        // The new table counts at once.
        assert!(second.selected.contains("t999"));
        // 120 copies a listing at most (a quarter of 60 s at 8/s), the
        // oldest first, plus the new table's.
        let budget = refresh_budget(245, interval);
        assert_eq!(budget, 120);
        assert_eq!(sim.calls().list_tags, 121);
        let mut listings = 1;
        let mut found = second.selected.contains("t100");
        while !found {
            tokio::time::advance(interval).await;
            sim.reset_calls();
            found = d.list(&sim, &stop).await.unwrap().selected.contains("t100");
            assert!(sim.calls().list_tags as usize <= budget);
            listings += 1;
            assert!(listings <= 3, "t100 never found");
        }
        // Small regions are read every listing; large ones each table within
        // TAG_REFRESH_INTERVALS listings.
        assert_eq!(refresh_budget(50, interval), 50);
        assert_eq!(refresh_budget(5000, interval), 500);
    }

    #[tokio::test(start_paused = true)]
    async fn names_only_read_no_tags() {
        let sim = SimStream::new(SimConfig::default());
        for t in ["billing-a", "billing-b-tmp", "orders"] {
            sim.create_table(t, &["pk"], None).unwrap();
        }
        let mut d = Discoverer::new(
            selection(&["billing-*"], &["*-tmp"], &[]),
            Duration::from_secs(60),
            RetryPolicy::new(Duration::from_millis(10), Duration::from_millis(100)),
        );
        let listed = d.list(&sim, &CancellationToken::new()).await.unwrap();
        assert_eq!(listed.selected, BTreeSet::from(["billing-a".to_string()]));
        assert_eq!((sim.calls().list_tables, sim.calls().list_tags), (1, 0));
    }
}
