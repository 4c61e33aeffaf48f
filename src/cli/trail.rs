//! `history`, `query`, `gaps`, `status`: questions to the trail.

use ddb_audit::store::{ProofStore, SnapshotStore};

use super::*;

pub(crate) async fn history(
    item: ItemArgs,
    last: Option<usize>,
    since: Option<String>,
    until: Option<String>,
    json: bool,
) -> Result<()> {
    let since = opt_time("--since", since.as_ref())?;
    let until = opt_time("--until", until.as_ref())?;
    let (_, table, key, store) = item_args(&item).await?;
    read::cli::history(
        &store,
        &table,
        &key,
        last,
        since,
        until,
        json,
        &mut std::io::stdout(),
    )
    .await?;
    Ok(())
}

pub(crate) async fn query(args: QueryArgs) -> Result<()> {
    let config = load(&args.config)?;
    let given = read::QueryText {
        table: args.table.as_deref(),
        keys: args.keys.iter().map(String::as_str).collect(),
        actor: args.actor.as_deref(),
        since: args.since.as_deref(),
        until: args.until.as_deref(),
        field: args.field.as_deref(),
        from: args.from.as_deref(),
        to: args.to.as_deref(),
        event: args.event.as_deref(),
        correlation: args.correlation.as_deref(),
        principal: args.principal.as_deref(),
        order: args.order.as_deref(),
    };
    let parsed = given.parse(read::ArgNames::Flags, chrono::Utc::now())?;
    let store = store(&config).await?;
    let filter = read::QueryFilter {
        // Patterns are not tables: the tables they found.
        tables: report::known_tables(&config, &store).await?,
        ..parsed
    };
    read::cli::query_command(
        &store,
        &filter,
        args.limit,
        args.json,
        &mut std::io::stdout(),
    )
    .await?;
    Ok(())
}

pub(crate) async fn gaps(config: Config, json: bool) -> Result<()> {
    let gaps = ddb_audit::read::gaps_bracketed(store(&config).await?.gaps().await?);
    if json {
        out!("{}", report::json_lines(&gaps)?)?;
    } else {
        out!("{}", report::gaps_table(&gaps))?;
    }
    Ok(())
}

pub(crate) async fn status(config: Config, json: bool) -> Result<()> {
    let store = store(&config).await?;
    let now = chrono::Utc::now();
    let mut tables = Vec::new();
    for table in &report::known_tables(&config, &store).await? {
        // The same lines `/api/status` answers with.
        tables.push(report::table_status(&store, table, now).await?);
    }
    // Which `run` processes share the work (each table line says which
    // one reads it).
    let replicas = report::replica_lines(&store.replicas().await?);
    if json {
        let mut out = String::new();
        for (summary, shards) in &tables {
            out.push_str(&report::json_lines(std::slice::from_ref(summary))?);
            out.push_str(&report::json_lines(shards)?);
        }
        out.push_str(&report::json_lines(&replicas)?);
        out!("{out}")?;
    } else {
        out!("{}", report::status_table(&tables))?;
        out!("{}", report::replicas_table(&replicas))?;
    }
    Ok(())
}

/// `snapshot`: a baseline of every item (SNAPSHOT entries), resumable after
/// a signal, with a digest over what it wrote.
pub(crate) async fn snapshot(
    config: Config,
    table: String,
    segments: u32,
    read_units_per_sec: f64,
    page_size: usize,
    restart: bool,
) -> Result<()> {
    // A snapshot writes: only into the trail of a table the daemon audits,
    // or its baseline would sit beside no changes.
    if !config.selection().is_ok_and(|s| s.name_matches(&table)) {
        anyhow::bail!(
            "snapshot --table {table}: the config does not select this table (tables = {:?}); \
             add it to `tables` so its changes are audited too, then snapshot it",
            config.tables
        );
    }
    let options = ddb_audit::snapshot::SnapshotOptions {
        segments,
        read_units_per_sec,
        page_size,
        restart,
        correlation_attribute: config.attribution.correlation_attribute.clone(),
        redactor: ddb_audit::redact::Redactions::from_config(&config)?
            .for_table(&table)
            .cloned(),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    // Ends the retries of the digest an interrupted run writes last:
    // a second signal, or the shutdown grace after the first.
    let abort = tokio_util::sync::CancellationToken::new();
    let (on_signal, on_abort) = (stop.clone(), abort.clone());
    let grace = std::time::Duration::from_millis(config.shutdown.grace_ms);
    tokio::spawn(async move {
        match wait_for_signal().await {
            Ok(name) => {
                tracing::info!(
                    signal = name,
                    "stopping the snapshot: run the same command again to resume"
                );
                on_signal.cancel();
                tokio::select! {
                    _ = wait_for_signal() => {}
                    _ = tokio::time::sleep(grace) => {}
                }
                on_abort.cancel();
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for signals"),
        }
    });
    let sdk = sdk().await?;
    let store = DynamoStore::new(ddb_audit::aws::dynamodb_client(&sdk), config.table_names())
        .with_retention(config.retention.days);
    let digests = digest_settings(&config, &sdk, &abort).await?;
    print_snapshot(&store, &table, &options, &digests, &stop, &abort).await
}

/// Runs or resumes the table's snapshot; progress (items, rate,
/// ETA) on stderr when it is a terminal, a summary on stdout.
pub(crate) async fn print_snapshot<S: SnapshotStore + ProofStore>(
    store: &S,
    table: &str,
    options: &ddb_audit::snapshot::SnapshotOptions,
    digests: &ddb_audit::daemon::digests::DigestSettings,
    stop: &tokio_util::sync::CancellationToken,
    abort: &tokio_util::sync::CancellationToken,
) -> Result<()> {
    use std::io::IsTerminal as _;
    let terminal = std::io::stderr().is_terminal();
    let progress = move |p: ddb_audit::snapshot::Progress| {
        let eta = p
            .eta_secs
            .map_or_else(|| "-".to_string(), |s| format!("{s:.0}s"));
        let total = p.total.map_or_else(|| "?".to_string(), |t| format!("~{t}"));
        if terminal {
            eprint!(
                "\r{} of {total} items, {:.0} items/s, ETA {eta}   ",
                p.items, p.items_per_sec
            );
        } else {
            tracing::debug!(
                items = p.items,
                items_per_sec = p.items_per_sec,
                "snapshot progress"
            );
        }
    };
    let report =
        ddb_audit::snapshot::snapshot(store, table, options, digests, stop, abort, &progress)
            .await?;
    if terminal {
        eprintln!();
    }
    let text = format!(
        "snapshot {} of {table}: {} items{}; {} entries written, {} already there{}\n",
        report.run_id,
        report.items,
        if report.resumed { " (resumed)" } else { "" },
        report.written,
        report.already_present,
        if report.interrupted {
            "; interrupted: run the same command again to resume"
        } else {
            "; done"
        }
    );
    out!("{text}")
}
