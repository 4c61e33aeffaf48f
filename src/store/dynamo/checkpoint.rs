//! [`CheckpointStore`]: the shards table's checkpoints (forward only), the
//! streams table's stream rows and table health.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue as DAttr;
use chrono::{DateTime, Utc};

use super::{get_s, parse_time, s, sdk_store_error, store_error, DynamoStore};
use crate::aws::written;
use crate::entry::format_ts;
use crate::store::layout::{
    sequence_key, DRAINED_SHARD_ROW_TTL, FRESH_ITEMS, HEALTH_SORT_KEY, ROW_EPOCH,
    SHARD_TTL_ATTRIBUTE,
};
use crate::store::{
    CheckpointStore, Fence, ShardCheckpoint, ShardStatus, StoreError, StoreResult, StreamRow,
    TableHealthRow,
};
use crate::stream::stream_label;

impl CheckpointStore for DynamoStore {
    async fn check_tables(&self) -> StoreResult<()> {
        DynamoStore::check_tables(self).await
    }

    async fn load_shards(&self, stream_arn: &str) -> StoreResult<Vec<ShardCheckpoint>> {
        let now = Utc::now().timestamp();
        self.query_all(&self.names.shards, "stream_arn", stream_arn)
            .await?
            .iter()
            .filter(|item| !row_expired(item, now))
            .map(shard_from_item)
            .collect()
    }

    async fn load_shard(
        &self,
        stream_arn: &str,
        shard_id: &str,
    ) -> StoreResult<Option<ShardCheckpoint>> {
        let table = &self.names.shards;
        let key = [("stream_arn", stream_arn), ("shard_id", shard_id)];
        self.get_item(table, key, None, &[])
            .await?
            .filter(|item| !row_expired(item, Utc::now().timestamp()))
            .as_ref()
            .map(shard_from_item)
            .transpose()
    }

    async fn release_shard(
        &self,
        stream_arn: &str,
        shard_id: &str,
        after: Duration,
    ) -> StoreResult<()> {
        let table = &self.names.shards;
        let expires = Utc::now() + chrono::Duration::from_std(after).unwrap_or_default();
        let result = self
            .client
            .update_item()
            .table_name(table)
            .key("stream_arn", s(stream_arn))
            .key("shard_id", s(shard_id))
            .update_expression("SET #expires_at = :expires_at")
            .condition_expression(
                "#status = :drained AND (attribute_not_exists(#expires_at) OR #expires_at > :expires_at)",
            )
            .expression_attribute_names("#expires_at", SHARD_TTL_ATTRIBUTE)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":drained", s(ShardStatus::Drained.as_str()))
            .expression_attribute_values(":expires_at", DAttr::N(expires.timestamp().to_string()))
            .send()
            .await;
        // Not drained, gone already, or expiring sooner: nothing to do.
        written(result).map_err(|c| store_error(c, table))?;
        Ok(())
    }

    async fn save_shard(&self, cp: &ShardCheckpoint) -> StoreResult<()> {
        self.save_row(cp, None).await
    }

    async fn beat(&self, beat: &crate::store::ReplicaBeat) -> StoreResult<()> {
        self.lease_beat(beat).await
    }

    async fn task_lease(&self, name: &str) -> StoreResult<crate::store::Lease> {
        self.lease_task(name).await
    }

    async fn replicas(&self) -> StoreResult<Vec<crate::store::ReplicaBeat>> {
        self.lease_replicas().await
    }

    async fn forget_replica(&self, replica: &str, counter: u64) -> StoreResult<bool> {
        self.lease_forget_replica(replica, counter).await
    }

    async fn leases(&self, table: Option<&str>) -> StoreResult<Vec<crate::store::Lease>> {
        self.lease_rows(table).await
    }

    async fn take_lease(&self, seen: &crate::store::Lease, me: &str) -> StoreResult<Option<u64>> {
        self.lease_take(seen, me).await
    }

    async fn release_lease(&self, fence: &Fence) -> StoreResult<bool> {
        self.lease_release(fence).await
    }

    async fn save_fenced_shard(&self, cp: &ShardCheckpoint, fence: &Fence) -> StoreResult<()> {
        self.save_row(cp, Some(fence)).await
    }

    async fn put_fenced_gap(
        &self,
        gap: &crate::entry::Gap,
        link: &crate::proof::Link,
        fence: &Fence,
    ) -> StoreResult<crate::store::PutOutcome> {
        let item = super::audit::gap_item(gap, Some(link))?;
        self.put_audit_item_fenced(item, fence).await
    }

    async fn check_fence(&self, fence: &Fence) -> StoreResult<()> {
        self.lease_check(fence).await
    }
    async fn save_stream(&self, row: &StreamRow) -> StoreResult<()> {
        let table = &self.names.streams;
        let mut call = self
            .update_stream_row(&row.table_name, &row.stream_arn)
            .update_expression("SET #en = :en, #dr = :dr, #up = :up")
            .expression_attribute_names("#en", "is_enabled")
            .expression_attribute_names("#dr", "drained")
            .expression_attribute_names("#up", "updated_at")
            .expression_attribute_values(":en", DAttr::Bool(row.is_enabled))
            .expression_attribute_values(":dr", DAttr::Bool(row.drained))
            .expression_attribute_values(":up", s(format_ts(row.updated_at)));
        if !row.drained {
            // A drained stream stays drained.
            call = call.condition_expression("attribute_not_exists(#dr) OR #dr = :dr")
        }
        if !written(call.send().await).map_err(|c| store_error(c, table))? {
            tracing::warn!(
                table = %row.table_name, stream = %row.stream_arn,
                "stream is already recorded as drained; kept it"
            );
        }
        Ok(())
    }

    async fn save_table_health(&self, row: &TableHealthRow) -> StoreResult<()> {
        let table = &self.names.streams;
        let mut item = HashMap::from([
            ("table_name".to_string(), s(&row.table_name)),
            ("stream_arn".to_string(), s(HEALTH_SORT_KEY)),
            ("state".to_string(), s(&row.state)),
            ("updated_at".to_string(), s(format_ts(row.updated_at))),
        ]);
        if let Some(reason) = &row.reason {
            item.insert("reason".into(), s(reason));
        }
        self.client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_store_error(&e, table))
    }

    async fn load_table_health(&self, table_name: &str) -> StoreResult<Option<TableHealthRow>> {
        let table = &self.names.streams;
        let key = [("table_name", table_name), ("stream_arn", HEALTH_SORT_KEY)];
        let item = self.get_item(table, key, None, &[]).await?;
        Ok(item.as_ref().map(|item| health_from_item(table_name, item)))
    }

    async fn load_all_table_health(&self) -> StoreResult<Vec<TableHealthRow>> {
        let items = self.scan_all(&self.names.streams).await?;
        Ok(items
            .iter()
            .filter(|item| get_s(item, "stream_arn") == Some(HEALTH_SORT_KEY))
            .filter_map(|item| Some(health_from_item(get_s(item, "table_name")?, item)))
            .collect())
    }

    async fn load_streams(&self, table_name: Option<&str>) -> StoreResult<Vec<StreamRow>> {
        let table = &self.names.streams;
        let items = match table_name {
            Some(name) => self.query_all(table, "table_name", name).await?,
            None => self.scan_all(table).await?,
        };
        let mut rows = items
            .iter()
            .filter(|item| get_s(item, "stream_arn").is_none_or(|arn| !arn.starts_with('#')))
            .map(stream_from_item)
            .collect::<StoreResult<Vec<_>>>()?;
        rows.sort_by(|a, b| {
            (&a.table_name, stream_label(&a.stream_arn))
                .cmp(&(&b.table_name, stream_label(&b.stream_arn)))
        });
        Ok(rows)
    }

    async fn fresh_items(&self, table_name: &str, stream_arn: &str) -> StoreResult<bool> {
        let key = [("table_name", table_name), ("stream_arn", stream_arn)];
        let table = &self.names.streams;
        let row = self.get_item(table, key, Some(FRESH_ITEMS), &[]).await?;
        Ok(matches!(
            row.as_ref().and_then(|r| r.get(FRESH_ITEMS)),
            Some(DAttr::Bool(true))
        ))
    }

    async fn set_fresh_items(&self, table: &str, stream_arn: &str, fresh: bool) -> StoreResult<()> {
        // Never on a row that is not there (no stray rows), and `true` only
        // where it was never set: a stream found fresh by one replica stays
        // cleared once another has cleared it.
        let condition = if fresh {
            "attribute_exists(table_name) AND attribute_not_exists(#f)"
        } else {
            "attribute_exists(table_name)"
        };
        let call = self
            .update_stream_row(table, stream_arn)
            .update_expression("SET #f = :f")
            .condition_expression(condition)
            .expression_attribute_names("#f", FRESH_ITEMS)
            .expression_attribute_values(":f", DAttr::Bool(fresh));
        written(call.send().await).map_err(|c| store_error(c, &self.names.streams))?;
        Ok(())
    }
}

impl DynamoStore {
    /// A shard row's write: forward only; under a fence (`fence`), also
    /// refused below the row's own epoch, which it then takes.
    async fn save_row(&self, cp: &ShardCheckpoint, fence: Option<&Fence>) -> StoreResult<()> {
        let table = &self.names.shards;
        // Only the attributes we own are SET (lease attributes, later, stay
        // untouched). The condition makes a checkpoint move forward only:
        // the sequence never goes back and `drained` is final.
        let mut sets = vec![
            "#table_name = :table_name",
            "#status = :status",
            "#updated_at = :updated_at",
            "#caught_up = :caught_up",
            "#from_start = :from_start",
        ];
        let mut values = HashMap::from([
            (":table_name".to_string(), s(&cp.table)),
            (":status".to_string(), s(cp.status.as_str())),
            (":updated_at".to_string(), s(format_ts(cp.updated_at))),
            (":caught_up".to_string(), DAttr::Bool(cp.caught_up)),
            (":from_start".to_string(), DAttr::Bool(cp.from_start)),
        ]);
        let mut names = HashMap::from([
            ("#table_name".to_string(), "table_name".to_string()),
            ("#status".to_string(), "status".to_string()),
            ("#updated_at".to_string(), "updated_at".to_string()),
            ("#caught_up".to_string(), "caught_up".to_string()),
            ("#from_start".to_string(), "from_start".to_string()),
            ("#sequence_key".to_string(), "sequence_key".to_string()),
        ]);
        if cp.status == ShardStatus::Drained {
            // A drained shard's row is needed while the stream still lists
            // the shard or its children (at most ~48 h); DynamoDB's TTL then
            // removes it, so the rows a stream start loads stay bounded.
            sets.push("#expires_at = :expires_at");
            names.insert("#expires_at".into(), SHARD_TTL_ATTRIBUTE.into());
            let expires =
                Utc::now() + chrono::Duration::from_std(DRAINED_SHARD_ROW_TTL).unwrap_or_default();
            values.insert(
                ":expires_at".into(),
                DAttr::N(expires.timestamp().to_string()),
            );
        }
        let mut conditions = Vec::new();
        if let Some(parent) = &cp.parent_shard_id {
            sets.push("#parent = :parent");
            names.insert("#parent".into(), "parent_shard_id".into());
            values.insert(":parent".into(), s(parent));
        }
        match &cp.sequence_no {
            Some(seq) => {
                let key = sequence_key(seq).ok_or_else(|| {
                    StoreError::Other(format!(
                        "shard {} of {}: {seq:?} is not a sequence number; refusing to checkpoint it",
                        cp.shard_id, cp.stream_arn
                    ))
                })?;
                sets.push("#sequence_no = :sequence_no");
                sets.push("#sequence_key = :sequence_key");
                names.insert("#sequence_no".into(), "sequence_no".into());
                values.insert(":sequence_no".into(), s(seq));
                values.insert(":sequence_key".into(), s(&key));
                conditions.push(
                    "(attribute_not_exists(#sequence_key) OR #sequence_key <= :sequence_key)",
                );
            }
            None => conditions.push("attribute_not_exists(#sequence_key)"),
        }
        if let Some(chain) = &cp.chain {
            sets.push("#chain = :chain");
            names.insert("#chain".into(), "chain".into());
            values.insert(":chain".into(), s(chain.encode()));
        }
        if let Some(tail) = &cp.lineage_tail {
            let mut m = HashMap::from([
                ("shard_id".to_string(), s(&tail.shard_id)),
                ("sequence_no".to_string(), s(&tail.sequence_no)),
            ]);
            if let Some(t) = tail.record_time {
                m.insert("record_time".to_string(), s(format_ts(t)));
            }
            sets.push("#lineage_tail = :lineage_tail");
            names.insert("#lineage_tail".into(), "lineage_tail".into());
            values.insert(":lineage_tail".into(), DAttr::M(m));
        }
        // Cleared once closed: a row never hands on a closed gap.
        names.insert("#open_gaps".into(), "open_gaps".into());
        let mut removes = Vec::new();
        if cp.open_gaps.is_empty() {
            removes.push("#open_gaps");
        } else {
            let gaps = cp
                .open_gaps
                .iter()
                .map(|g| {
                    serde_json::to_string(g).map(s).map_err(|e| {
                        StoreError::Other(format!("encoding an open gap of {}: {e}", cp.shard_id))
                    })
                })
                .collect::<StoreResult<Vec<_>>>()?;
            sets.push("#open_gaps = :open_gaps");
            values.insert(":open_gaps".into(), DAttr::L(gaps));
        }
        if let Some(t) = cp.last_record_time {
            sets.push("#last_record_time = :last_record_time");
            names.insert("#last_record_time".into(), "last_record_time".into());
            values.insert(":last_record_time".into(), s(format_ts(t)));
        }
        if cp.status != ShardStatus::Drained {
            conditions.push("(attribute_not_exists(#status) OR #status <> :drained)");
            values.insert(":drained".into(), s(ShardStatus::Drained.as_str()));
        }
        if let Some(fence) = fence {
            sets.push("#row_epoch = :row_epoch");
            names.insert("#row_epoch".into(), ROW_EPOCH.into());
            values.insert(":row_epoch".into(), DAttr::N(fence.epoch.to_string()));
            conditions.push("(attribute_not_exists(#row_epoch) OR #row_epoch <= :row_epoch)");
        }
        let result = self
            .client
            .update_item()
            .table_name(table)
            .key("stream_arn", s(&cp.stream_arn))
            .key("shard_id", s(&cp.shard_id))
            .update_expression(update_expression(&sets, &removes))
            .condition_expression(conditions.join(" AND "))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        if !written(result).map_err(|c| store_error(c, table))? {
            // Refused: a newer owner's epoch, or a row already further.
            if let Some(fence) = fence {
                if self.row_epoch(&cp.stream_arn, &cp.shard_id).await? > fence.epoch {
                    return Err(super::lease::fenced(fence));
                }
            }
            tracing::warn!(
                table = %cp.table, stream = %cp.stream_arn, shard = %cp.shard_id,
                sequence = ?cp.sequence_no, status = cp.status.as_str(),
                "stored checkpoint is already newer; kept it"
            );
        }
        Ok(())
    }
}

fn health_from_item(table_name: &str, item: &HashMap<String, DAttr>) -> TableHealthRow {
    TableHealthRow {
        table_name: table_name.to_string(),
        state: get_s(item, "state").unwrap_or("unknown").to_string(),
        reason: get_s(item, "reason").map(str::to_string),
        updated_at: get_s(item, "updated_at")
            .and_then(parse_time)
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
    }
}

/// `SET …` and, when there is anything to remove, `REMOVE …`.
fn update_expression(sets: &[&str], removes: &[&str]) -> String {
    let mut expression = format!("SET {}", sets.join(", "));
    if !removes.is_empty() {
        expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
    }
    expression
}

/// A row past its TTL: DynamoDB deletes such items only eventually (often
/// days later), and until then they are still read. They are gone for us.
fn row_expired(item: &HashMap<String, DAttr>, now_epoch_secs: i64) -> bool {
    matches!(item.get(SHARD_TTL_ATTRIBUTE), Some(DAttr::N(n))
        if n.parse::<i64>().is_ok_and(|at| at <= now_epoch_secs))
}

fn shard_from_item(item: &HashMap<String, DAttr>) -> StoreResult<ShardCheckpoint> {
    let req = |name: &str| {
        get_s(item, name)
            .map(str::to_string)
            .ok_or_else(|| StoreError::Corrupt(format!("shard row without `{name}`: {item:?}")))
    };
    let status_text = req("status")?;
    let status = ShardStatus::parse(&status_text).ok_or_else(|| {
        StoreError::Corrupt(format!("shard row with unknown status {status_text:?}"))
    })?;
    Ok(ShardCheckpoint {
        stream_arn: req("stream_arn")?,
        shard_id: req("shard_id")?,
        table: req("table_name")?,
        parent_shard_id: get_s(item, "parent_shard_id").map(str::to_string),
        sequence_no: get_s(item, "sequence_no").map(str::to_string),
        status,
        last_record_time: get_s(item, "last_record_time").and_then(parse_time),
        caught_up: matches!(item.get("caught_up"), Some(DAttr::Bool(true))),
        from_start: matches!(item.get("from_start"), Some(DAttr::Bool(true))),
        updated_at: get_s(item, "updated_at")
            .and_then(parse_time)
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
        chain: get_s(item, "chain").and_then(crate::proof::ChainState::decode),
        lineage_tail: match item.get("lineage_tail") {
            Some(DAttr::M(tail)) => match (get_s(tail, "shard_id"), get_s(tail, "sequence_no")) {
                (Some(shard), Some(seq)) => Some(crate::store::LineageTail {
                    shard_id: shard.to_string(),
                    sequence_no: seq.to_string(),
                    record_time: get_s(tail, "record_time").and_then(parse_time),
                }),
                _ => None,
            },
            _ => None,
        },
        open_gaps: match item.get("open_gaps") {
            Some(DAttr::L(gaps)) => gaps
                .iter()
                .map(|g| match g {
                    DAttr::S(json) => serde_json::from_str(json).map_err(|e| {
                        StoreError::Corrupt(format!("shard row with an unreadable open gap: {e}"))
                    }),
                    other => Err(StoreError::Corrupt(format!(
                        "shard row with an open gap that is not text: {other:?}"
                    ))),
                })
                .collect::<StoreResult<Vec<_>>>()?,
            _ => Vec::new(),
        },
    })
}

fn stream_from_item(item: &HashMap<String, DAttr>) -> StoreResult<StreamRow> {
    let req = |name: &str| {
        get_s(item, name)
            .map(str::to_string)
            .ok_or_else(|| StoreError::Corrupt(format!("stream row without `{name}`: {item:?}")))
    };
    let flag = |name: &str| match item.get(name) {
        Some(DAttr::Bool(b)) => *b,
        _ => false,
    };
    Ok(StreamRow {
        table_name: req("table_name")?,
        stream_arn: req("stream_arn")?,
        is_enabled: flag("is_enabled"),
        drained: flag("drained"),
        updated_at: get_s(item, "updated_at")
            .and_then(parse_time)
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
    })
}
