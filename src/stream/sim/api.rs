//! The `StreamApi` the consumer under test sees: DescribeTable, ListStreams,
//! DescribeStream, GetShardIterator and GetRecords, with their limits and
//! errors, over the simulator's state.

use super::errors::{invalid, not_found};
use super::keys::order_key;
use super::limits::{admit, MAX_RECORDS_PER_CALL, MAX_SHARDS_PER_PAGE};
use super::state::State;
use super::SimStream;
use crate::stream::{
    DescribeStreamRequest, IteratorPosition, RecordsPage, Shard, ShardIteratorRequest, StreamApi,
    StreamDescription, StreamError, StreamResult, StreamStatus, StreamSummary, TableStream,
    TablesPage, Tags,
};

// Iterators are opaque to consumers; the simulator encodes where to read.
const ITERATOR_PREFIX: &str = "simitr-";

fn encode_iterator(stream: usize, shard: usize, pos: u64, issued_nanos: u64) -> String {
    format!("{ITERATOR_PREFIX}{stream}-{shard}-{pos}-{issued_nanos}")
}

fn decode_iterator(s: &str) -> Option<(usize, usize, u64, u64)> {
    let mut parts = s.strip_prefix(ITERATOR_PREFIX)?.split('-');
    let stream = parts.next()?.parse().ok()?;
    let shard = parts.next()?.parse().ok()?;
    let pos = parts.next()?.parse().ok()?;
    let issued = parts.next()?.parse().ok()?;
    parts
        .next()
        .is_none()
        .then_some((stream, shard, pos, issued))
}

impl State {
    fn api_describe_table(&mut self, table: &str) -> StreamResult<TableStream> {
        self.tick();
        self.counts.describe_table += 1;
        let t = self.table(table)?;
        let stream = t.current_stream.map(|s| &self.streams[s]);
        let enabled = stream.is_some_and(|s| s.enabled);
        Ok(TableStream {
            table: table.to_string(),
            // Like the service, a disabled stream stays the table's latest.
            latest_stream_arn: stream.map(|s| s.arn.clone()),
            stream_enabled: enabled,
            view_type: stream
                .filter(|s| s.enabled)
                .map(|s| s.view.as_str().to_string()),
            table_arn: Some(self.table_arn(table)),
            replicas: t.replicas.clone(),
        })
    }

    pub(super) fn table_arn(&self, table: &str) -> String {
        format!(
            "arn:aws:dynamodb:{}:{}:table/{table}",
            self.cfg.region, self.cfg.account
        )
    }

    /// ListTables: names in order, 100 a page (the service's largest page).
    fn api_list_tables(&mut self, exclusive_start: Option<&str>) -> StreamResult<TablesPage> {
        self.tick();
        self.counts.list_tables += 1;
        let mut names: Vec<&String> = self
            .tables
            .keys()
            .filter(|n| exclusive_start.is_none_or(|s| n.as_str() > s))
            .collect();
        names.sort();
        let more = names.len() > 100;
        names.truncate(100);
        Ok(TablesPage {
            last_evaluated: more.then(|| names.last().map(|n| n.to_string())).flatten(),
            names: names.into_iter().cloned().collect(),
        })
    }

    fn api_list_tags(&mut self, table_arn: &str) -> StreamResult<Tags> {
        self.tick();
        self.counts.list_tags += 1;
        let name = table_arn
            .rsplit_once(":table/")
            .map(|(_, n)| n)
            .filter(|n| self.table_arn(n) == table_arn)
            .ok_or_else(|| not_found(format!("resource {table_arn}")))?;
        Ok(self.table(name)?.tags.clone())
    }

    fn api_list_streams(&mut self, table: &str) -> StreamResult<Vec<StreamSummary>> {
        let now = self.tick();
        self.counts.list_streams += 1;
        let retention = self.cfg.retention;
        let streams: Vec<StreamSummary> = self
            .streams_by_table
            .get(table)
            .into_iter()
            .flatten()
            .map(|&s| &self.streams[s])
            .filter(|s| s.retained(now, retention))
            .map(|s| StreamSummary {
                stream_arn: s.arn.clone(),
                table: s.table.clone(),
                stream_label: s.label.clone(),
            })
            .collect();
        if streams.is_empty() && !self.tables.contains_key(table) {
            return Err(not_found(format!("table {table}")));
        }
        Ok(streams)
    }

    fn api_describe_stream(
        &mut self,
        req: &DescribeStreamRequest,
    ) -> StreamResult<StreamDescription> {
        let now = self.tick();
        self.counts.describe_stream += 1;
        if req.children_of.is_some() {
            self.counts.describe_stream_children += 1;
        } else {
            self.counts.describe_stream_full_pages += 1;
        }
        let retention = self.cfg.retention;
        let s = *self
            .streams_by_arn
            .get(&req.stream_arn)
            .ok_or_else(|| not_found(format!("stream {}", req.stream_arn)))?;
        if !self.streams[s].retained(now, retention) {
            return Err(not_found(format!("stream {}", req.stream_arn)));
        }
        if self.cfg.throttling
            && !admit(
                &mut self.streams[s].describe_window,
                now,
                self.cfg.describe_stream_per_stream_per_sec,
            )
        {
            self.counts.throttled_describe_stream += 1;
            return Err(StreamError::Throttled(format!(
                "LimitExceededException: DescribeStream on {}",
                req.stream_arn
            )));
        }
        let limit = match req.limit {
            None => MAX_SHARDS_PER_PAGE,
            Some(l) if (1..=100).contains(&l) => usize::try_from(l).unwrap_or(MAX_SHARDS_PER_PAGE),
            Some(l) => return Err(invalid(format!("Limit {l} not in 1..=100"))),
        };
        let stream = &mut self.streams[s];
        stream.describe_calls += 1;
        let call = stream.describe_calls;

        let mut shards = Vec::new();
        let mut last_evaluated = None;
        if let Some(parent_id) = &req.children_of {
            let idx = match self.shard_index.get(parent_id) {
                Some(&(si, idx)) if si == s => idx,
                _ => return Err(not_found(format!("shard {parent_id}"))),
            };
            for &c in &stream.shards[idx].children {
                if !stream.shards[c].expired(now, retention) {
                    shards.push(stream.view_shard(c, call));
                }
            }
        } else {
            if stream.order_dirty {
                stream.order.sort_unstable();
                stream.order_dirty = false;
            }
            // Resume right after the start shard's place in the (stable,
            // shuffled) order, even if that shard has since disappeared.
            let start = match &req.exclusive_start_shard_id {
                None => 0,
                Some(id) => match self.shard_index.get(id) {
                    Some(&(si, idx)) if si == s => {
                        let k = stream.shards[idx].order_key;
                        stream.order.partition_point(|&e| e <= (k, idx))
                    }
                    _ => {
                        let k = order_key(stream.salt, id);
                        stream.order.partition_point(|&(key, _)| key <= k)
                    }
                },
            };
            for &(_, idx) in &stream.order[start..] {
                if stream.shards[idx].expired(now, retention) {
                    continue;
                }
                if shards.len() == limit {
                    last_evaluated = shards.last().map(|sh: &Shard| sh.shard_id.clone());
                    break;
                }
                shards.push(stream.view_shard(idx, call));
            }
        }
        Ok(StreamDescription {
            stream_arn: stream.arn.clone(),
            table: stream.table.clone(),
            status: if stream.enabled {
                StreamStatus::Enabled
            } else {
                StreamStatus::Disabled
            },
            shards,
            last_evaluated_shard_id: last_evaluated,
        })
    }

    fn api_get_shard_iterator(
        &mut self,
        request: &ShardIteratorRequest<'_>,
    ) -> StreamResult<String> {
        let ShardIteratorRequest {
            stream_arn,
            shard_id,
            position,
        } = *request;
        let now = self.tick();
        self.counts.get_shard_iterator += 1;
        let retention = self.cfg.retention;
        let s = *self
            .streams_by_arn
            .get(stream_arn)
            .ok_or_else(|| not_found(format!("stream {stream_arn}")))?;
        let idx = match self.shard_index.get(shard_id) {
            Some(&(si, idx)) if si == s => idx,
            _ => return Err(not_found(format!("shard {shard_id} in {stream_arn}"))),
        };
        let last_seq = self.last_seq;
        let issued = u64::try_from(self.elapsed(now).as_nanos()).unwrap_or(u64::MAX);
        let stream = &mut self.streams[s];
        if !stream.retained(now, retention) {
            return Err(not_found(format!("stream {stream_arn}")));
        }
        let sh = &mut stream.shards[idx];
        if sh.expired(now, retention) {
            return Err(not_found(format!("shard {shard_id} (trimmed)")));
        }
        sh.trim(now, retention);
        let pos = match position {
            IteratorPosition::TrimHorizon => sh.base,
            IteratorPosition::Latest => sh.end(),
            IteratorPosition::AtSequence(seq) | IteratorPosition::AfterSequence(seq) => {
                let after = matches!(position, IteratorPosition::AfterSequence(_));
                let n: u128 = seq
                    .parse()
                    .map_err(|_| invalid(format!("bad sequence number {seq:?}")))?;
                let upper = sh.ending_seq.unwrap_or(last_seq);
                if n < sh.starting_seq || n > upper {
                    return Err(invalid(format!(
                        "sequence number {seq} is not in shard {shard_id}"
                    )));
                }
                match sh.last_trimmed_seq {
                    // AFTER the newest trimmed record loses nothing; anything
                    // older would silently skip trimmed records.
                    Some(t) if after && n == t => sh.base,
                    Some(t) if n <= t => {
                        return Err(StreamError::Trimmed(format!(
                            "TrimmedDataAccessException: {seq} in {shard_id} is beyond retention"
                        )))
                    }
                    _ if n == sh.starting_seq => sh.base,
                    _ if Some(n) == sh.ending_seq => sh.end(),
                    _ => {
                        let i = sh
                            .records
                            .binary_search_by(|r| r.seq.cmp(&n))
                            .map_err(|_| {
                                invalid(format!("sequence number {seq} is not in shard {shard_id}"))
                            })?;
                        sh.base + i as u64 + u64::from(after)
                    }
                }
            }
        };
        Ok(encode_iterator(s, idx, pos, issued))
    }

    fn api_get_records(&mut self, iterator: &str, limit: Option<i32>) -> StreamResult<RecordsPage> {
        let now = self.tick();
        self.counts.get_records += 1;
        let (s, idx, pos, issued) = decode_iterator(iterator)
            .filter(|&(s, idx, _, _)| self.streams.get(s).is_some_and(|st| idx < st.shards.len()))
            .ok_or_else(|| invalid("invalid shard iterator"))?;
        let cfg = &self.cfg;
        let elapsed_nanos =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let stream = &mut self.streams[s];
        let sh = &mut stream.shards[idx];
        sh.get_records_calls += 1;
        if cfg.throttling
            && !admit(
                &mut sh.get_records_window,
                now,
                cfg.get_records_per_shard_per_sec,
            )
        {
            self.counts.throttled_get_records += 1;
            return Err(StreamError::Throttled(format!(
                "LimitExceededException: GetRecords on {}",
                sh.id
            )));
        }
        let limit = match limit {
            None => MAX_RECORDS_PER_CALL,
            Some(l) if (1..=1000).contains(&l) => {
                usize::try_from(l).unwrap_or(MAX_RECORDS_PER_CALL)
            }
            Some(l) => return Err(invalid(format!("Limit {l} not in 1..=1000"))),
        };
        let ttl_nanos = u64::try_from(cfg.iterator_ttl.as_nanos()).unwrap_or(u64::MAX);
        if issued.saturating_add(ttl_nanos) <= elapsed_nanos {
            return Err(StreamError::ExpiredIterator(format!(
                "ExpiredIteratorException: iterator for {} expired",
                sh.id
            )));
        }
        sh.trim(now, cfg.retention);
        if pos < sh.base {
            return Err(StreamError::Trimmed(format!(
                "TrimmedDataAccessException: iterator position in {} is beyond retention",
                sh.id
            )));
        }
        let start = usize::try_from(pos - sh.base).unwrap_or(usize::MAX);
        let mut records = Vec::new();
        let mut bytes = 0i64;
        for r in sh.records.iter().skip(start) {
            // At least one record per page, however large.
            if records.len() == limit
                || (!records.is_empty() && bytes + r.size > cfg.max_bytes_per_call)
            {
                break;
            }
            bytes += r.size;
            records.push(r.record.clone());
        }
        let next = pos.max(sh.base) + records.len() as u64;
        // A closed shard read to its end is the only "done" signal; an open
        // shard always hands out a next iterator, even on an empty page.
        let next_iterator = if sh.ending_seq.is_some() && next >= sh.end() {
            None
        } else {
            Some(encode_iterator(s, idx, next, elapsed_nanos))
        };
        if records.is_empty() {
            self.counts.get_records_empty += 1;
        }
        self.counts.records_returned += records.len() as u64;
        Ok(RecordsPage {
            records,
            next_iterator,
        })
    }
}

impl StreamApi for SimStream {
    async fn describe_table(&self, table: &str) -> StreamResult<TableStream> {
        self.lock().api_describe_table(table)
    }

    async fn list_streams(&self, table: &str) -> StreamResult<Vec<StreamSummary>> {
        self.lock().api_list_streams(table)
    }

    async fn describe_stream(
        &self,
        request: &DescribeStreamRequest,
    ) -> StreamResult<StreamDescription> {
        self.lock().api_describe_stream(request)
    }

    async fn get_shard_iterator(&self, request: &ShardIteratorRequest<'_>) -> StreamResult<String> {
        self.lock().api_get_shard_iterator(request)
    }

    async fn get_records(&self, iterator: &str, limit: Option<i32>) -> StreamResult<RecordsPage> {
        self.lock().api_get_records(iterator, limit)
    }

    async fn list_tables(&self, exclusive_start: Option<&str>) -> StreamResult<TablesPage> {
        self.lock().api_list_tables(exclusive_start)
    }

    async fn list_tags(&self, table_arn: &str) -> StreamResult<Tags> {
        self.lock().api_list_tags(table_arn)
    }
}
