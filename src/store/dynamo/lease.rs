//! Replicas and leases in the streams table (layout: `store::layout`): each
//! stream row carries its lease (`lease_owner`, `lease_epoch`), each replica
//! beats on a row of its own under [`REPLICAS_PARTITION`]. Fenced writes are
//! conditional on the lease: a shard row refuses an epoch below its own, and
//! gaps and digests are written in a transaction with a ConditionCheck on
//! the stream row.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue as DAttr, ConditionCheck, Put, TransactWriteItem};
use chrono::{DateTime, Utc};

use super::{get_s, parse_time, s, sdk_store_error, store_error, DynamoStore};
use crate::aws::written;
use crate::entry::format_ts;
use crate::store::layout::{
    replica_sort_key, task_lease_key, LEASE_EPOCH, LEASE_OWNER, REPLICAS_PARTITION, ROW_EPOCH,
};
use crate::store::{Fence, Lease, PutOutcome, ReplicaBeat, StoreError, StoreResult};

fn get_u64(item: &HashMap<String, DAttr>, name: &str) -> u64 {
    match item.get(name) {
        Some(DAttr::N(n)) => n.parse().unwrap_or(0),
        _ => 0,
    }
}

fn n(v: u64) -> DAttr {
    DAttr::N(v.to_string())
}

impl DynamoStore {
    pub(super) async fn lease_beat(&self, beat: &ReplicaBeat) -> StoreResult<()> {
        let table = &self.names.streams;
        self.client
            .put_item()
            .table_name(table)
            .item("table_name", s(REPLICAS_PARTITION))
            .item("stream_arn", s(replica_sort_key(&beat.replica)))
            .item("replica", s(&beat.replica))
            .item("counter", n(beat.counter))
            .item("owned", n(beat.owned))
            .item("updated_at", s(format_ts(beat.updated_at)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_store_error(&e, table))
    }

    pub(super) async fn lease_replicas(&self) -> StoreResult<Vec<ReplicaBeat>> {
        let table = &self.names.streams;
        let items = self
            .query_all(table, "table_name", REPLICAS_PARTITION)
            .await?;
        Ok(items
            .iter()
            .filter_map(|item| {
                Some(ReplicaBeat {
                    replica: get_s(item, "replica")?.to_string(),
                    counter: get_u64(item, "counter"),
                    owned: get_u64(item, "owned"),
                    updated_at: get_s(item, "updated_at")
                        .and_then(parse_time)
                        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
                })
            })
            .collect())
    }

    pub(super) async fn lease_forget_replica(
        &self,
        replica: &str,
        counter: u64,
    ) -> StoreResult<bool> {
        let table = &self.names.streams;
        let result = self
            .client
            .delete_item()
            .table_name(table)
            .key("table_name", s(REPLICAS_PARTITION))
            .key("stream_arn", s(replica_sort_key(replica)))
            .condition_expression("#c = :c")
            .expression_attribute_names("#c", "counter")
            .expression_attribute_values(":c", n(counter))
            .send()
            .await;
        written(result).map_err(|c| store_error(c, table))
    }

    pub(super) async fn lease_rows(&self, table_name: Option<&str>) -> StoreResult<Vec<Lease>> {
        let table = &self.names.streams;
        let items = match table_name {
            Some(name) => self.query_all(table, "table_name", name).await?,
            None => self.scan_all(table).await?,
        };
        Ok(items
            .iter()
            .filter_map(|item| {
                let stream_arn = get_s(item, "stream_arn")?;
                let table_name = get_s(item, "table_name")?;
                // Reserved rows (health, pointers, heartbeats) are no stream.
                if stream_arn.starts_with('#') || table_name.starts_with('#') {
                    return None;
                }
                Some(Lease {
                    table: table_name.to_string(),
                    stream_arn: stream_arn.to_string(),
                    owner: get_s(item, LEASE_OWNER).map(str::to_string),
                    epoch: get_u64(item, LEASE_EPOCH),
                    drained: matches!(item.get("drained"), Some(DAttr::Bool(true))),
                })
            })
            .collect())
    }

    pub(super) async fn lease_task(&self, name: &str) -> StoreResult<Lease> {
        let table = &self.names.streams;
        let stream_arn = task_lease_key(name);
        let key = [
            ("table_name", REPLICAS_PARTITION),
            ("stream_arn", stream_arn.as_str()),
        ];
        let item = self.get_item(table, key, None, &[]).await?;
        Ok(Lease {
            table: REPLICAS_PARTITION.to_string(),
            owner: item
                .as_ref()
                .and_then(|i| get_s(i, LEASE_OWNER))
                .map(str::to_string),
            epoch: item.as_ref().map_or(0, |i| get_u64(i, LEASE_EPOCH)),
            stream_arn,
            drained: false,
        })
    }

    pub(super) async fn lease_take(&self, seen: &Lease, me: &str) -> StoreResult<Option<u64>> {
        let table = &self.names.streams;
        let next = seen.epoch + 1;
        // Whoever owns it: the epoch alone says nothing moved since it was
        // seen, since every change of owner increments it.
        // A stream's lease is on its row, which must exist; a task's lease
        // row is made by its first take.
        let task = seen.table == REPLICAS_PARTITION;
        let condition = match (seen.epoch, task) {
            (0, false) => "attribute_exists(#arn) AND attribute_not_exists(#e)",
            (0, true) => "attribute_not_exists(#e)",
            (_, false) => "attribute_exists(#arn) AND #e = :seen",
            (_, true) => "#e = :seen",
        };
        let mut call = self
            .update_stream_row(&seen.table, &seen.stream_arn)
            .update_expression("SET #o = :me, #e = :next")
            .condition_expression(condition)
            .expression_attribute_names("#o", LEASE_OWNER)
            .expression_attribute_names("#e", LEASE_EPOCH)
            .expression_attribute_values(":me", s(me))
            .expression_attribute_values(":next", n(next));
        if seen.epoch != 0 {
            call = call.expression_attribute_values(":seen", n(seen.epoch));
        }
        if !task {
            call = call.expression_attribute_names("#arn", "stream_arn");
        }
        let taken = written(call.send().await).map_err(|c| store_error(c, table))?;
        Ok(taken.then_some(next))
    }

    pub(super) async fn lease_release(&self, fence: &Fence) -> StoreResult<bool> {
        let table = &self.names.streams;
        let result = self
            .update_stream_row(&fence.table, &fence.stream_arn)
            .update_expression("SET #e = :next REMOVE #o")
            .condition_expression("#o = :me AND #e = :e")
            .expression_attribute_names("#o", LEASE_OWNER)
            .expression_attribute_names("#e", LEASE_EPOCH)
            .expression_attribute_values(":me", s(&fence.owner))
            .expression_attribute_values(":e", n(fence.epoch))
            .expression_attribute_values(":next", n(fence.epoch + 1))
            .send()
            .await;
        written(result).map_err(|c| store_error(c, table))
    }

    pub(super) async fn lease_check(&self, fence: &Fence) -> StoreResult<()> {
        let table = &self.names.streams;
        let key = [
            ("table_name", fence.table.as_str()),
            ("stream_arn", fence.stream_arn.as_str()),
        ];
        let item = self.get_item(table, key, None, &[]).await?;
        let holds = item.is_some_and(|item| {
            get_s(&item, LEASE_OWNER) == Some(fence.owner.as_str())
                && get_u64(&item, LEASE_EPOCH) == fence.epoch
        });
        if holds {
            Ok(())
        } else {
            Err(fenced(fence))
        }
    }

    /// The epoch a shard row was last written under (0: never fenced).
    pub(super) async fn row_epoch(&self, stream_arn: &str, shard_id: &str) -> StoreResult<u64> {
        let table = &self.names.shards;
        let key = [("stream_arn", stream_arn), ("shard_id", shard_id)];
        let item = self
            .get_item(table, key, Some("#e"), &[("#e", ROW_EPOCH)])
            .await?;
        Ok(item.map_or(0, |item| get_u64(&item, ROW_EPOCH)))
    }

    /// A write-once put on the audit table, in one transaction with a check
    /// that `fence` still holds its stream's lease.
    pub(super) async fn put_audit_item_fenced(
        &self,
        item: HashMap<String, DAttr>,
        fence: &Fence,
    ) -> StoreResult<PutOutcome> {
        let audit = &self.names.audit;
        let streams = &self.names.streams;
        let check = ConditionCheck::builder()
            .table_name(streams)
            .key("table_name", s(&fence.table))
            .key("stream_arn", s(&fence.stream_arn))
            .condition_expression("#o = :me AND #e = :e")
            .expression_attribute_names("#o", LEASE_OWNER)
            .expression_attribute_names("#e", LEASE_EPOCH)
            .expression_attribute_values(":me", s(&fence.owner))
            .expression_attribute_values(":e", n(fence.epoch))
            .build()
            .map_err(|e| StoreError::Other(format!("building a lease check: {e}")))?;
        let put = Put::builder()
            .table_name(audit)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| StoreError::Other(format!("building a fenced put: {e}")))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(check).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(PutOutcome::Written),
            Err(err) => err,
        };
        if let Some(
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c),
        ) = err.as_service_error()
        {
            let failed = |i: usize| {
                c.cancellation_reasons()
                    .get(i)
                    .and_then(|r| r.code())
                    .is_some_and(|code| code == "ConditionalCheckFailed")
            };
            if failed(0) {
                return Err(fenced(fence));
            }
            if failed(1) {
                return Ok(PutOutcome::AlreadyPresent);
            }
            // Cancelled by a conflicting transaction or a throttle: retry.
            return Err(StoreError::Transient(format!(
                "{audit}: transaction cancelled: {:?}",
                c.cancellation_reasons()
                    .iter()
                    .filter_map(|r| r.code())
                    .collect::<Vec<_>>()
            )));
        }
        Err(sdk_store_error(&err, audit))
    }
}

pub(super) fn fenced(fence: &Fence) -> StoreError {
    StoreError::Fenced {
        stream_arn: fence.stream_arn.clone(),
        epoch: fence.epoch,
    }
}
