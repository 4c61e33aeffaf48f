//! The `ddb-audit` binary: parses the command line, sets up logging, builds
//! the AWS clients and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use ddb_audit::config::Config;
use ddb_audit::engine::{Engine, Settings, Shutdown};
use ddb_audit::report;
use ddb_audit::store::dynamo::DynamoStore;
use ddb_audit::store::{AuditStore, CheckpointStore};
use ddb_audit::stream::aws::AwsStream;
use ddb_audit::value::{parse_key_arg, Item};

/// Turns DynamoDB Streams into a permanent, write-once, field-level audit
/// trail: who changed which field, from what, to what, and when.
///
/// The endpoint, region and credentials come from the standard AWS
/// environment (AWS_ENDPOINT_URL, AWS_REGION, the default credential chain).
#[derive(Parser, Debug)]
#[command(name = "ddb-audit", version, about, long_about, after_help = USAGE_NOTES)]
struct Cli {
    /// Log format on stderr. RUST_LOG filters (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "DDB_AUDIT_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Shown after the top-level help: what every command needs.
const USAGE_NOTES: &str = "\
Every command reads the TOML config file given by --config FILE (or DDB_AUDIT_CONFIG).
A history --key is NAME=TYPE:VALUE, TYPE one of S, N, B (base64); repeat it for a sort key.

Examples:
  ddb-audit init    --config ddb-audit.toml
  ddb-audit run     --config ddb-audit.toml
  ddb-audit history --config ddb-audit.toml --table orders --key pk=S:123 --key sk=N:7 [--json]
  ddb-audit gaps    --config ddb-audit.toml [--json]
  ddb-audit status  --config ddb-audit.toml [--json]";

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the daemon's own tables (streams, shards, audit entries); safe to repeat.
    Init(ConfigArg),
    /// Run the daemon: audit every configured table until SIGTERM or SIGINT.
    Run(ConfigArg),
    /// Print one item's audit history, oldest first.
    History {
        #[command(flatten)]
        config: ConfigArg,
        /// The audited table.
        #[arg(long)]
        table: String,
        /// A key attribute as NAME=TYPE:VALUE, TYPE one of S, N, B (base64);
        /// repeat for a sort key, e.g. --key pk=S:u1 --key sk=N:7.
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
        /// One JSON object per line (the stable format) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the gaps: records trimmed from a stream before they could be read.
    Gaps {
        #[command(flatten)]
        config: ConfigArg,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show each table's shards: status, checkpoint, lag, parent.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// One JSON object per line (kind "table" or "shard").
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
struct ConfigArg {
    /// The TOML config file.
    #[arg(long, short = 'c', env = "DDB_AUDIT_CONFIG")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch_until_signal(cli.command));
    // Dropping the runtime would wait for idle blocking-pool threads (the
    // SDK's DNS lookups) for seconds; everything that matters has finished.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(Interrupted(signal)) = e.downcast_ref::<Interrupted>() {
                eprintln!("interrupted by {signal}");
                // The shell's convention: 128 + the signal's number.
                return ExitCode::from(if *signal == "SIGINT" { 130 } else { 143 });
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A one-shot command stopped by a signal before it finished.
#[derive(Debug)]
struct Interrupted(&'static str);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// `run` handles SIGTERM/SIGINT itself (a graceful drain); every other
/// command is a one-shot whose every wait and retry ends at once on a signal,
/// since nothing it does needs finishing: `init` is idempotent, and the rest
/// only read.
async fn dispatch_until_signal(command: Command) -> Result<()> {
    if matches!(command, Command::Run(_)) {
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

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

async fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Init(c) => init(load(&c)?).await,
        Command::Run(c) => run(load(&c)?).await,
        Command::History {
            config,
            table,
            keys,
            json,
        } => history(load(&config)?, table, keys, json).await,
        Command::Gaps { config, json } => gaps(load(&config)?, json).await,
        Command::Status { config, json } => status(load(&config)?, json).await,
    }
}

fn load(arg: &ConfigArg) -> Result<Config> {
    Ok(Config::load(&arg.config)?)
}

async fn store(config: &Config) -> DynamoStore {
    let sdk = ddb_audit::aws::load_sdk_config().await;
    DynamoStore::new(ddb_audit::aws::dynamodb_client(&sdk), config.table_names())
}

async fn init(config: Config) -> Result<()> {
    // Cancelled from outside (dispatch_until_signal) on a signal.
    let never = tokio_util::sync::CancellationToken::new();
    let report = store(&config)
        .await
        .init(&never)
        .await
        .context("creating ddb-audit's tables")?
        .context("stopped before the tables were ACTIVE")?;
    for table in &report.created {
        println!("created table {table}");
    }
    for table in &report.existed {
        println!("table {table} already exists");
    }
    Ok(())
}

async fn run(config: Config) -> Result<()> {
    let sdk = ddb_audit::aws::load_sdk_config().await;
    let stream = AwsStream::new(
        ddb_audit::aws::dynamodb_client(&sdk),
        ddb_audit::aws::streams_client(&sdk),
    );
    let store = DynamoStore::new(ddb_audit::aws::dynamodb_client(&sdk), config.table_names());
    let settings = Settings::from_config(&config);
    let shutdown = Shutdown::new();
    let (audit, cloudtrail) =
        ddb_audit::attribution::start(&config, &sdk, &store, &settings, &shutdown);
    let engine = Arc::new(Engine::new(stream, store.clone(), audit, settings));
    let grace = std::time::Duration::from_millis(config.shutdown.grace_ms);
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        match wait_for_signal().await {
            Ok(name) => tracing::info!(signal = name, "shutting down: finishing in-flight writes"),
            Err(e) => tracing::error!(error = %e, "cannot listen for signals; shutting down"),
        }
        on_signal.begin(grace);
    });
    let result = ddb_audit::supervisor::run(engine, config.tables.clone(), shutdown).await;
    if let Some(reader) = cloudtrail {
        // It stops at the same signal; it has nothing that cannot be redone.
        let _ = tokio::time::timeout(grace, reader.handle).await;
    }
    result?;
    Ok(())
}

async fn wait_for_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

async fn history(config: Config, table: String, keys: Vec<String>, json: bool) -> Result<()> {
    if !config.tables.contains(&table) {
        tracing::warn!(table = %table, "table is not in the config's `tables`: showing what is stored anyway");
    }
    let mut key = Item::new();
    for arg in &keys {
        let (name, value) = parse_key_arg(arg).with_context(|| format!("--key {arg}"))?;
        key.insert(name, value);
    }
    let entries = store(&config).await.history(&table, &key).await?;
    if json {
        print!("{}", report::history_json(&entries)?);
    } else {
        print!("{}", report::history_table(&entries));
    }
    Ok(())
}

async fn gaps(config: Config, json: bool) -> Result<()> {
    let gaps = store(&config).await.gaps().await?;
    if json {
        print!("{}", report::json_lines(&gaps)?);
    } else {
        print!("{}", report::gaps_table(&gaps));
    }
    Ok(())
}

async fn status(config: Config, json: bool) -> Result<()> {
    let store = store(&config).await;
    let now = chrono::Utc::now();
    let mut tables = Vec::new();
    for table in &config.tables {
        let streams = store.load_streams(Some(table)).await?;
        let mut shards = Vec::new();
        for s in &streams {
            shards.extend(report::shard_lines(
                &store.load_shards(&s.stream_arn).await?,
                now,
            ));
        }
        let health = store.load_table_health(table).await?;
        let summary = report::table_line(table, &streams, &shards, health.as_ref());
        tables.push((summary, shards));
    }
    if json {
        let mut out = String::new();
        for (summary, shards) in &tables {
            out.push_str(&report::json_lines(std::slice::from_ref(summary))?);
            out.push_str(&report::json_lines(shards)?);
        }
        print!("{out}");
    } else {
        print!("{}", report::status_table(&tables));
    }
    Ok(())
}
