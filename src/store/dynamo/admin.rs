//! Creating and checking the daemon's own tables: `init` (tables, indexes,
//! TTL), `check_tables` for a `run` without `init`, retention and the
//! protection `init` turns on.

use std::time::Duration;

use aws_sdk_dynamodb::error::{BuildError, SdkError};
use aws_sdk_dynamodb::operation::describe_table::{DescribeTableError, DescribeTableOutput};
use aws_sdk_dynamodb::types::TableDescription;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, GlobalSecondaryIndexUpdate,
    IndexStatus, KeySchemaElement, KeyType, PointInTimeRecoverySpecification, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use tokio_util::sync::CancellationToken;

use super::{build_error, sdk_store_error, store_error, DynamoStore};
use crate::aws::{classify, ErrorKind};
use crate::store::layout::{
    audit_key_attributes, index_key, AUDIT_KEY, EXPIRES_AT, INDEX_PROJECTION, SHARDS_KEY,
    SHARD_TTL_ATTRIBUTE, STREAMS_KEY,
};
use crate::store::{Index, StoreError, StoreResult};

/// How long `init` waits for new indexes to be backfilled.
const INDEX_ACTIVE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How long `init` waits for a new table to become ACTIVE.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// What [`DynamoStore::init`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitReport {
    pub created: Vec<String>,
    pub existed: Vec<String>,
    /// Indexes added to an existing audit table.
    pub indexes_added: Vec<String>,
}

impl DynamoStore {
    /// DescribeTable, its error left to each caller to map.
    pub(super) async fn describe_table(
        &self,
        table: &str,
    ) -> Result<DescribeTableOutput, SdkError<DescribeTableError>> {
        self.client.describe_table().table_name(table).send().await
    }

    /// The three tables: name, partition and sort key attributes, and the
    /// setting that names the table.
    fn table_specs(&self) -> [(&String, &'static str, &'static str, &'static str); 3] {
        [
            (
                &self.names.streams,
                STREAMS_KEY.0,
                STREAMS_KEY.1,
                "storage.streams_table",
            ),
            (
                &self.names.shards,
                SHARDS_KEY.0,
                SHARDS_KEY.1,
                "storage.shards_table",
            ),
            (
                &self.names.audit,
                AUDIT_KEY.0,
                AUDIT_KEY.1,
                "storage.audit_table",
            ),
        ]
    }

    /// Create the three tables unless they exist, and wait until all are
    /// ACTIVE. Safe to run any number of times, also concurrently. An existing
    /// table with a different key schema is an error (it is someone else's).
    /// Returns `Ok(None)` when `cancel` fired before every table was ACTIVE.
    pub async fn init(&self, cancel: &CancellationToken) -> StoreResult<Option<InitReport>> {
        let specs = self.table_specs();
        let mut report = InitReport::default();
        for (table, hash, range, _) in specs {
            if self.ensure_table(table, hash, range).await? {
                tracing::info!(table = %table, "created table");
                report.created.push(table.clone());
            } else {
                tracing::info!(table = %table, "table already exists");
                report.existed.push(table.clone());
            }
        }
        for (table, _, _, _) in specs {
            if !self.wait_active(table, cancel).await? {
                return Ok(None);
            }
        }
        match self.ensure_indexes(cancel).await? {
            Some(added) => report.indexes_added = added,
            None => return Ok(None),
        }
        self.ensure_ttl(&self.names.shards, SHARD_TTL_ATTRIBUTE)
            .await?;
        Ok(Some(report))
    }

    /// Turns on DynamoDB's TTL on `attribute` unless it is on already.
    async fn ensure_ttl(&self, table: &str, attribute: &str) -> StoreResult<()> {
        let current = self
            .client
            .describe_time_to_live()
            .table_name(table)
            .send()
            .await
            .map_err(|e| sdk_store_error(&e, table))?;
        let on = current.time_to_live_description().is_some_and(|d| {
            d.attribute_name() == Some(attribute)
                && matches!(
                    d.time_to_live_status(),
                    Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                )
        });
        if on {
            return Ok(());
        }
        let spec = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(attribute)
            .build()
            .map_err(|e| {
                StoreError::Other(format!("building UpdateTimeToLive for {table}: {e}"))
            })?;
        self.client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(spec)
            .send()
            .await
            .map_err(|e| sdk_store_error(&e, table))?;
        tracing::info!(table = %table, attribute, "enabled TTL");
        Ok(())
    }

    /// Adds the read side's indexes to an audit table that lacks them (one
    /// UpdateTable per index: DynamoDB builds one at a time per table), and
    /// waits for each to be ACTIVE. Entries written before an index existed
    /// lack its attributes and stay out of it; `history`, `show`, `diff` and
    /// `revert` read the item partition and see them all.
    /// `None` when `cancel` fired first.
    async fn ensure_indexes(&self, cancel: &CancellationToken) -> StoreResult<Option<Vec<String>>> {
        let table = &self.names.audit;
        let mut added = Vec::new();
        for index in Index::ALL {
            let existing = self.index_statuses().await?;
            if existing.iter().any(|(name, _)| name == index.name()) {
                continue;
            }
            let mut keyed: Vec<Index> = Index::ALL
                .into_iter()
                .filter(|i| existing.iter().any(|(name, _)| name == i.name()))
                .collect();
            keyed.push(index);
            let result = self
                .client
                .update_table()
                .table_name(table)
                .set_attribute_definitions(Some(audit_attribute_definitions(&keyed)?))
                .global_secondary_index_updates(
                    GlobalSecondaryIndexUpdate::builder()
                        .create(
                            aws_sdk_dynamodb::types::CreateGlobalSecondaryIndexAction::builder()
                                .index_name(index.name())
                                .set_key_schema(Some(index_key_schema(index)?))
                                .projection(index_projection())
                                .build()
                                .map_err(|e| build_error(table, e))?,
                        )
                        .build(),
                )
                .send()
                .await;
            match result {
                Ok(_) => {
                    tracing::info!(table = %table, index = index.name(), "adding index");
                    added.push(index.name().to_string());
                }
                Err(e) => {
                    let c = classify(&e);
                    // Another `init` is adding it (or another index) right now.
                    if c.kind != ErrorKind::ResourceInUse {
                        return Err(store_error(c, table));
                    }
                }
            }
            if !self.wait_indexes_active(cancel).await? {
                return Ok(None);
            }
        }
        if !self.wait_indexes_active(cancel).await? {
            return Ok(None);
        }
        Ok(Some(added))
    }

    async fn index_statuses(&self) -> StoreResult<Vec<(String, Option<IndexStatus>)>> {
        let table = &self.names.audit;
        let out = self
            .describe_table(table)
            .await
            .map_err(|e| sdk_store_error(&e, table))?;
        Ok(out
            .table()
            .map(|t| {
                t.global_secondary_indexes()
                    .iter()
                    .map(|g| {
                        (
                            g.index_name().unwrap_or_default().to_string(),
                            g.index_status().cloned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Backfilling an index of a big table can take long: wait as long as
    /// it takes (a day at most), saying so now and then. False when
    /// cancelled first.
    async fn wait_indexes_active(&self, cancel: &CancellationToken) -> StoreResult<bool> {
        let table = &self.names.audit;
        let what = format!("waiting for the indexes of {table} to become ACTIVE");
        let ready = crate::store::wait_until_ready(&what, INDEX_ACTIVE_TIMEOUT, cancel, || async {
            let pending: Vec<String> = self
                .index_statuses()
                .await?
                .into_iter()
                .filter(|(_, st)| st.as_ref().is_some_and(|s| *s != IndexStatus::Active))
                .map(|(name, _)| name)
                .collect();
            if !pending.is_empty() {
                tracing::debug!(table = %table, indexes = ?pending, "indexes not yet ACTIVE");
            }
            Ok(pending.is_empty())
        })
        .await?;
        Ok(ready && self.wait_active(table, cancel).await?)
    }

    /// For `run` without `init` (tables made by CloudFormation or by hand):
    /// checks that the three tables exist, are ACTIVE, and have the keys
    /// ddb-audit writes. Every problem is reported at once, each naming the
    /// table, what is wrong and the fix.
    pub async fn check_tables(&self) -> StoreResult<()> {
        let mut problems = Vec::new();
        for (table, hash, range, key) in self.table_specs() {
            match self.describe_table(table).await {
                Ok(out) => {
                    let Some(t) = out.table() else {
                        problems.push(format!(
                            "table {table}: DescribeTable returned no description"
                        ));
                        continue;
                    };
                    let keys = key_schema_of(t);
                    let types: Vec<(String, String)> = t
                        .attribute_definitions()
                        .iter()
                        .map(|d| named_as(d.attribute_name(), d.attribute_type().as_str()))
                        .collect();
                    let status = t.table_status().map(|s| s.as_str().to_string());
                    if table == &self.names.audit {
                        // Auditing works without them; `query` does not.
                        let missing: Vec<&str> = Index::ALL
                            .iter()
                            .map(|i| i.name())
                            .filter(|n| {
                                !t.global_secondary_indexes()
                                    .iter()
                                    .any(|g| g.index_name() == Some(*n))
                            })
                            .collect();
                        if !missing.is_empty() {
                            tracing::warn!(table = %table, missing = ?missing,
                                "the audit table lacks the read side's indexes: `query` cannot use them \
                                 until `ddb-audit init` (with UpdateTable rights) or a stack update adds them");
                        }
                    }
                    problems.extend(schema_problems(
                        table,
                        key,
                        hash,
                        range,
                        &keys,
                        &types,
                        status.as_deref(),
                    ));
                }
                Err(e) => {
                    let c = classify(&e);
                    match c.kind {
                        ErrorKind::NotFound => problems.push(format!(
                            "table {table} (`{key}`) does not exist: run `ddb-audit init`, deploy \
                             infra/cloudformation/ddb-audit.yaml, or set `{key}` to the table's name"
                        )),
                        _ => return Err(store_error(c, table)),
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Other(format!(
                "ddb-audit's own tables are not usable:\n  {}",
                problems.join("\n  ")
            )))
        }
    }

    /// True when this call created the table.
    async fn ensure_table(&self, table: &str, hash: &str, range: &str) -> StoreResult<bool> {
        match self.describe_table(table).await {
            Ok(out) => {
                let schema = out.table().map(key_schema_of).unwrap_or_default();
                let named = |kind: &str| {
                    schema
                        .iter()
                        .find(|(_, k)| k == kind)
                        .map(|(name, _)| name.as_str())
                };
                let matches = schema.len() == 2
                    && named("HASH") == Some(hash)
                    && named("RANGE") == Some(range);
                if !matches {
                    return Err(StoreError::Other(format!(
                        "table {table} exists with key schema {schema:?}, but ddb-audit needs \
                         {hash} (HASH) + {range} (RANGE); configure another table name"
                    )));
                }
                return Ok(false);
            }
            Err(e) => {
                let c = classify(&e);
                if c.kind != ErrorKind::NotFound {
                    return Err(store_error(c, table));
                }
            }
        }
        let built = (|| {
            Ok::<_, aws_sdk_dynamodb::error::BuildError>((
                string_attribute(hash)?,
                string_attribute(range)?,
                key_element(hash, KeyType::Hash)?,
                key_element(range, KeyType::Range)?,
            ))
        })()
        .map_err(|e| StoreError::Other(format!("building CreateTable for {table}: {e}")))?;
        let (def_hash, def_range, key_hash, key_range) = built;
        let mut call = self
            .client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key_hash)
            .key_schema(key_range);
        if table == self.names.audit {
            call = call.set_attribute_definitions(Some(audit_attribute_definitions(&Index::ALL)?));
            for index in Index::ALL {
                call = call.global_secondary_indexes(
                    GlobalSecondaryIndex::builder()
                        .index_name(index.name())
                        .set_key_schema(Some(index_key_schema(index)?))
                        .projection(index_projection())
                        .build()
                        .map_err(|e| build_error(table, e))?,
                );
            }
        } else {
            call = call
                .attribute_definitions(def_hash)
                .attribute_definitions(def_range);
        }
        let created = call.send().await;
        match created {
            Ok(_) => Ok(true),
            Err(e) => {
                let c = classify(&e);
                // Another `init` won the race: the table exists, which is all we want.
                if c.kind == ErrorKind::ResourceInUse {
                    Ok(false)
                } else {
                    Err(store_error(c, table))
                }
            }
        }
    }

    /// False when cancelled first.
    async fn wait_active(&self, table: &str, cancel: &CancellationToken) -> StoreResult<bool> {
        let what = format!("waiting for table {table} to become ACTIVE");
        crate::store::wait_until_ready(&what, ACTIVE_TIMEOUT, cancel, || async {
            let out = self
                .describe_table(table)
                .await
                .map_err(|e| sdk_store_error(&e, table))?;
            let status = out.table().and_then(|t| t.table_status());
            tracing::debug!(table = %table, status = ?status.map(|s| s.as_str()), "table status");
            Ok(matches!(status, Some(TableStatus::Active)))
        })
        .await
    }

    /// Turns on TTL on `expires_at` for the audit table (idempotent).
    pub async fn enable_retention(&self) -> StoreResult<String> {
        let table = &self.names.audit;
        let spec = aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
            .attribute_name(EXPIRES_AT)
            .enabled(true)
            .build()
            .map_err(|e| StoreError::Other(e.to_string()))?;
        match self
            .client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(spec)
            .send()
            .await
        {
            Ok(_) => Ok(format!("TTL on `{EXPIRES_AT}` enabled for {table}")),
            Err(e) => {
                let c = classify(&e);
                if c.message.to_ascii_lowercase().contains("already enabled") {
                    Ok(format!("TTL on `{EXPIRES_AT}` already enabled for {table}"))
                } else {
                    Err(store_error(c, table))
                }
            }
        }
    }

    /// Deletion protection and point-in-time recovery on the daemon's own
    /// tables: a table cannot be dropped by mistake, and a rollback can be
    /// undone (and is then shown by `verify`).
    pub async fn protect_tables(&self) -> StoreResult<Vec<String>> {
        let mut notes = Vec::new();
        for table in [&self.names.streams, &self.names.shards, &self.names.audit] {
            match self
                .client
                .update_table()
                .table_name(table)
                .deletion_protection_enabled(true)
                .send()
                .await
            {
                Ok(_) => notes.push(format!("deletion protection on for {table}")),
                Err(e) => {
                    let c = classify(&e);
                    // Already on, or a table still being created: not fatal.
                    tracing::warn!(table = %table, error = %c.message, "cannot turn on deletion protection");
                    notes.push(format!(
                        "deletion protection NOT confirmed for {table}: {}",
                        c.message
                    ));
                }
            }
            let spec = PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .build();
            let result = match spec {
                Ok(spec) => self
                    .client
                    .update_continuous_backups()
                    .table_name(table)
                    .point_in_time_recovery_specification(spec)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify(&e).message),
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(()) => notes.push(format!("point-in-time recovery on for {table}")),
                Err(m) => {
                    tracing::warn!(table = %table, error = %m, "cannot turn on point-in-time recovery");
                    notes.push(format!(
                        "point-in-time recovery NOT confirmed for {table}: {m}"
                    ));
                }
            }
        }
        Ok(notes)
    }
}

/// A string attribute's definition (every key attribute ddb-audit defines is one).
fn string_attribute(name: &str) -> Result<AttributeDefinition, BuildError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
}

fn key_element(name: &str, kind: KeyType) -> Result<KeySchemaElement, BuildError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
}

/// A table's key schema as (attribute, `HASH` or `RANGE`) pairs.
fn key_schema_of(t: &TableDescription) -> Vec<(String, String)> {
    t.key_schema()
        .iter()
        .map(|k| named_as(k.attribute_name(), k.key_type().as_str()))
        .collect()
}

fn named_as(name: &str, what: &str) -> (String, String) {
    (name.to_string(), what.to_string())
}

/// The attribute definitions of the audit table's keys and of `indexes`'
/// (see [`audit_key_attributes`]).
fn audit_attribute_definitions(indexes: &[Index]) -> StoreResult<Vec<AttributeDefinition>> {
    audit_key_attributes(indexes)
        .map(|name| string_attribute(name).map_err(|e| build_error("the audit table", e)))
        .collect()
}

fn index_key_schema(index: Index) -> StoreResult<Vec<KeySchemaElement>> {
    let (hash, range) = index_key(index);
    [(hash, KeyType::Hash), (range, KeyType::Range)]
        .into_iter()
        .map(|(name, kind)| key_element(name, kind).map_err(|e| build_error(index.name(), e)))
        .collect()
}

/// The index rows' projection: [`INDEX_PROJECTION`].
fn index_projection() -> Projection {
    Projection::builder()
        .projection_type(ProjectionType::Include)
        .set_non_key_attributes(Some(
            INDEX_PROJECTION.iter().map(|a| a.to_string()).collect(),
        ))
        .build()
}

/// What is wrong with one of our tables as described, if anything: the
/// keys must be `hash` (HASH) + `range` (RANGE), both strings, and the table
/// ACTIVE (or UPDATING, which still serves reads and writes).
fn schema_problems(
    table: &str,
    config_key: &str,
    hash: &str,
    range: &str,
    keys: &[(String, String)],
    types: &[(String, String)],
    status: Option<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let named = |kind: &str| {
        keys.iter()
            .find(|(_, k)| k == kind)
            .map(|(n, _)| n.as_str())
    };
    if keys.len() != 2 || named("HASH") != Some(hash) || named("RANGE") != Some(range) {
        let found: Vec<String> = keys.iter().map(|(n, k)| format!("{n} ({k})")).collect();
        problems.push(format!(
            "table {table} (`{config_key}`) has key schema [{}], but ddb-audit needs \
             {hash} (HASH) + {range} (RANGE): point `{config_key}` at a table made by \
             `ddb-audit init` or the CloudFormation stack",
            found.join(", ")
        ));
    }
    for attr in [hash, range] {
        match types.iter().find(|(n, _)| n == attr) {
            Some((_, t)) if t == "S" => {}
            Some((_, t)) => problems.push(format!(
                "table {table} (`{config_key}`): key attribute {attr} has type {t}, but ddb-audit needs S (string)"
            )),
            None if keys.iter().any(|(n, _)| n == attr) => problems.push(format!(
                "table {table} (`{config_key}`): key attribute {attr} has no type definition"
            )),
            None => {}
        }
    }
    match status {
        Some("ACTIVE") | Some("UPDATING") => {}
        other => problems.push(format!(
            "table {table} (`{config_key}`) is {}, not ACTIVE: wait for it, or check the stack",
            other.unwrap_or("of unknown status")
        )),
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_problems_name_the_table_the_key_and_the_fix() {
        let keys = |h: &str, r: &str| {
            vec![
                (h.to_string(), "HASH".to_string()),
                (r.to_string(), "RANGE".to_string()),
            ]
        };
        let s = |n: &str| (n.to_string(), "S".to_string());
        // The audit table (`pk`, `sk`) as DescribeTable shows it.
        let problems = |keys: &[(String, String)], types: &[(String, String)], status| {
            schema_problems(
                "t",
                "storage.audit_table",
                "pk",
                "sk",
                keys,
                types,
                Some(status),
            )
        };
        let ok = problems(&keys("pk", "sk"), &[s("pk"), s("sk")], "ACTIVE");
        assert!(ok.is_empty(), "{ok:?}");
        let bad = problems(&keys("id", "sk"), &[s("id"), s("sk")], "ACTIVE");
        assert_eq!(bad.len(), 1);
        assert!(
            bad[0].contains("table t")
                && bad[0].contains("id (HASH)")
                && bad[0].contains("pk (HASH)"),
            "{bad:?}"
        );
        let bad = problems(
            &keys("pk", "sk"),
            &[s("pk"), ("sk".into(), "N".into())],
            "CREATING",
        );
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].contains("sk has type N"), "{bad:?}");
        assert!(bad[1].contains("CREATING"), "{bad:?}");
    }
}
