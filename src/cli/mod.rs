//! The commands: each parses its flags, calls the library and prints.
//! One file per group: `daemon` (init, run, serve, healthcheck), `trail`
//! (history, query, gaps, status), , `proof` (verify, export, verify-bundle,
//! public-key), `admin` (redaction).

/// `print!` that ends quietly on a closed pipe (`| head`), as `history`
/// does, instead of panicking; other write errors are errors.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::emit(&format!($($arg)*))
    };
}

/// `println!` through [`out!`].
macro_rules! outln {
    () => {
        $crate::cli::emit("\n")
    };
    ($($arg:tt)*) => {
        $crate::cli::emit(&format!("{}\n", format_args!($($arg)*)))
    };
}

mod admin;
pub(crate) mod args;
mod daemon;
mod proof;
mod trail;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

use ddb_audit::config::Config;
use ddb_audit::daemon::engine::{Settings, Shutdown};
use ddb_audit::store::dynamo::DynamoStore;
use ddb_audit::store::{AuditStore, CheckpointStore};
use ddb_audit::value::Item;
use ddb_audit::{observe, read, report};

use admin::redaction;
use args::{
    Command, ConfigArg, ItemArgs, QueryArgs, RedactionCommand, RedactionKeyArgs, RedactionValueArgs,
};
use daemon::{digest_settings, healthcheck, init, run, serve};
use proof::{export, public_key, verify, verify_bundle};
use trail::{gaps, history, query, snapshot, status};

/// An exit status other than 0/1 (already reported), carried through `anyhow`.
#[derive(Debug)]
pub(crate) struct ExitWith(pub(crate) u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

/// A one-shot command stopped by a signal before it finished.
#[derive(Debug)]
pub(crate) struct Interrupted(pub(crate) &'static str);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// `run` handles SIGTERM/SIGINT itself (a graceful drain), and so does
/// `serve` (in-flight requests, exit 0); nearly every other
/// command is a one-shot whose every wait and retry ends at once on a signal,
/// since nothing it does needs finishing: `init` is idempotent, and the rest
/// only read.
pub(crate) async fn dispatch_until_signal(command: Command) -> Result<()> {
    // `snapshot` too stops itself on a signal, at a point it can resume from.
    if matches!(
        command,
        Command::Run(_) | Command::Serve(_) | Command::Snapshot { .. }
    ) {
        return dispatch(command).await;
    }
    let signal = async {
        match wait_for_signal().await {
            Ok(name) => name,
            // Cannot listen for signals: the default handlers still apply.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        result = dispatch(command) => result,
        name = signal => Err(Interrupted(name).into()),
    }
}

pub(crate) async fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Init {
            config,
            no_protection,
        } => init(load(&config)?, !no_protection).await,
        Command::Run(c) => run(load(&c)?).await,
        Command::History {
            item,
            last,
            since,
            until,
            json,
        } => history(item, last, since, until, json).await,
        Command::Query(args) => query(args).await,
        Command::Snapshot {
            config,
            table,
            segments,
            read_units_per_sec,
            page_size,
            restart,
        } => {
            snapshot(
                load(&config)?,
                table,
                segments,
                read_units_per_sec,
                page_size,
                restart,
            )
            .await
        }
        Command::Show { item, at, json } => {
            let at = time_arg("--at", &at)?;
            let (_, table, key, store) = item_args(&item).await?;
            let shown = read::asof::show(&store, &table, &key, at).await?;
            answer(&store, "show", &shown, json, read::cli::show_text)
        }
        Command::Diff {
            item,
            from,
            to,
            json,
        } => {
            let (from, to) = (time_arg("--from", &from)?, time_arg("--to", &to)?);
            let (_, table, key, store) = item_args(&item).await?;
            let diffed = read::asof::diff(&store, &table, &key, from, to).await?;
            answer(&store, "diff", &diffed, json, read::cli::diff_text)
        }
        Command::Revert {
            item,
            to_time,
            fields,
            actor,
        } => {
            let to_time = time_arg("--to-time", &to_time)?;
            let (config, table, key, store) = item_args(&item).await?;
            let actor = read::asof::RevertActor {
                attribute: config.attribution.actor_attribute.as_deref(),
                name: actor.as_deref(),
            };
            let plan = read::asof::revert(&store, &table, &key, to_time, &fields, actor).await?;
            read::cli::print_revert(&store, &plan, to_time, &mut std::io::stdout())?;
            Ok(())
        }
        Command::Gaps { config, json } => gaps(load(&config)?, json).await,
        Command::Status { config, json } => status(load(&config)?, json).await,
        Command::Serve(c) => serve(load(&c)?).await,
        Command::Healthcheck { config, path } => {
            healthcheck(load(&daemon::healthcheck_config(config))?, path).await
        }
        Command::Verify {
            config,
            table,
            since,
            public_key,
            state,
            json,
        } => {
            let config = load(&config).map_err(|e| {
                eprintln!("error: {e:#}");
                ExitWith(2)
            })?;
            let since = since
                .as_deref()
                .map(|t| time_arg("--since", t))
                .transpose()
                .map_err(|e| {
                    eprintln!("error: --since: {e}");
                    ExitWith(2)
                })?;
            verify(config, table, since, public_key, state, json).await
        }
        Command::Export { item, proof } => export(item, proof).await,
        Command::Redaction(command) => redaction(command),
        Command::VerifyBundle {
            file,
            public_key,
            json,
        } => verify_bundle(file, public_key, json),
        Command::PublicKey { config } => match public_key(None, Some(&load(&config)?)).await? {
            Some(key) => {
                out!("{}", key.to_pem())?;
                Ok(())
            }
            None => anyhow::bail!(
                "no signing key configured: set `[proof] signing_key_file` or `kms_key_id`"
            ),
        },
    }
}

pub(crate) fn load(arg: &ConfigArg) -> Result<Config> {
    let env_toml = std::env::var(ddb_audit::config::CONFIG_TOML_ENV).ok();
    Ok(Config::load_from(
        arg.config.as_deref(),
        env_toml.as_deref(),
    )?)
}

pub(crate) async fn store(config: &Config) -> Result<DynamoStore> {
    let sdk = sdk().await?;
    Ok(DynamoStore::new(
        ddb_audit::aws::dynamodb_client(&sdk),
        config.table_names(),
    ))
}

/// The AWS configuration from the standard environment, refused at once
/// when it names no region: every call would fail with the SDK's "missing
/// signing region" after retries that cannot help.
pub(crate) async fn sdk() -> Result<aws_config::SdkConfig> {
    let missing = ddb_audit::aws::region_missing_off_instance().await;
    let sdk = if missing {
        None
    } else {
        Some(ddb_audit::aws::load_sdk_config().await)
    };
    let Some(sdk) = sdk.filter(|sdk| sdk.region().is_some()) else {
        anyhow::bail!(
            "no AWS region: set AWS_REGION (for example `export AWS_REGION=eu-west-1`), or `region` \
             in the profile AWS_PROFILE names; with a local emulator (AWS_ENDPOINT_URL) any region works"
        );
    };
    Ok(sdk)
}

pub(crate) async fn wait_for_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Prints one answer of the read side to stdout, as text or a JSON line.
fn answer<T: serde::Serialize>(
    store: &DynamoStore,
    command: &str,
    answer: &T,
    json: bool,
    text: fn(&T) -> String,
) -> Result<()> {
    let out = &mut std::io::stdout();
    Ok(read::cli::print_answer(
        store, command, answer, json, text, out,
    )?)
}

pub(crate) fn time_arg(flag: &str, text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    Ok(read::parse_time(flag, text, chrono::Utc::now())?)
}

pub(crate) fn opt_time(
    flag: &str,
    text: Option<&String>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    text.map(|t| time_arg(flag, t)).transpose()
}

/// One item of one table: the config, the table (one the config selects or
/// the trail holds), its key, and the store to ask.
pub(crate) async fn item_args(item: &ItemArgs) -> Result<(Config, String, Item, DynamoStore)> {
    let config = load(&item.config)?;
    let key = read::parse_key(&item.keys)?;
    let store = store(&config).await?;
    known_table(&config, &store, &item.table).await?;
    Ok((config, item.table.clone(), key, store))
}

/// Every table the trail holds something of: a stream row (audited at
/// some time), or, for the tables the config selects, a snapshot run.
pub(crate) async fn tables_with_a_trail(
    config: &Config,
    store: &DynamoStore,
) -> Result<Vec<String>> {
    use ddb_audit::store::SnapshotStore as _;
    let mut tables: Vec<String> = store
        .load_streams(None)
        .await?
        .into_iter()
        .map(|row| row.table_name)
        .collect();
    for table in &config.tables {
        if !tables.contains(table) && store.load_snapshot(table).await?.is_some() {
            tables.push(table.clone());
        }
    }
    tables.sort();
    tables.dedup();
    Ok(tables)
}

/// What a user needs to fix a table name: which tables the config selects
/// and which have a trail.
pub(crate) fn table_choices(config: &Config, with_a_trail: &[String]) -> String {
    let list = |names: &[String]| {
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    format!(
        "the config selects: {}; tables with a trail: {}",
        list(&config.tables),
        list(with_a_trail)
    )
}

/// A table to read must be one the config selects or one with a trail (a
/// table audited before and since removed from the config): a typo is an
/// error naming the choices, never an empty answer that looks like "no
/// changes".
pub(crate) async fn known_table(config: &Config, store: &DynamoStore, table: &str) -> Result<()> {
    // A pattern's match counts as selected (its tags are the daemon's to read).
    if config.selection().is_ok_and(|s| s.name_matches(table)) {
        return Ok(());
    }
    let with_a_trail = tables_with_a_trail(config, store).await?;
    if with_a_trail.iter().any(|t| t == table) {
        tracing::warn!(table = %table, "table is not in the config's `tables`: showing what is stored anyway");
        return Ok(());
    }
    anyhow::bail!(
        "--table {table}: no such table in the config and no audit trail for it ({}); check the name (it is case-sensitive)",
        table_choices(config, &with_a_trail)
    )
}

/// Writes `text` to stdout. A reader that went away (`| head -1`) is not an
/// error: what it wanted has been written, and the rest has no reader.
pub(crate) fn emit(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(anyhow::anyhow!("writing the output: {e}")),
    }
}
