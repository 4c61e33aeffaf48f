//! The `ddb-audit` binary: parses the command line, sets up logging, builds
//! the AWS clients and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use ddb_audit::config::Config;
use ddb_audit::daemon::engine::{Engine, Settings, Shutdown};
use ddb_audit::observe;
use ddb_audit::read;
use ddb_audit::report;
use ddb_audit::store::dynamo::DynamoStore;
use ddb_audit::store::{AuditStore, CheckpointStore};
use ddb_audit::stream::aws::AwsStream;
use ddb_audit::value::Item;

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
Every command reads the TOML config file given by --config FILE (or DDB_AUDIT_CONFIG),
or the whole TOML from the environment variable DDB_AUDIT_CONFIG_TOML.
A --key is NAME=TYPE:VALUE, TYPE one of S, N, B (base64); repeat it for a sort key.
TIME is RFC 3339 (2026-11-23T19:05:00Z) or an age before now (90s, 15m, 2h, 7d).

Examples:
  ddb-audit init    --config ddb-audit.toml
  ddb-audit run     --config ddb-audit.toml
  ddb-audit history --config ddb-audit.toml --table orders --key pk=S:123 --key sk=N:7 [--json]
  ddb-audit history --config ddb-audit.toml --table orders --key pk=S:123 --last 1
  ddb-audit query   --config ddb-audit.toml --actor alice --since 7d
  ddb-audit query   --config ddb-audit.toml --principal arn:aws:sts::123456789012:assumed-role/cleanup/run-42
  ddb-audit query   --config ddb-audit.toml --table orders --field status --from S:PENDING --to S:PAID
  ddb-audit show    --config ddb-audit.toml --table orders --key pk=S:123 --at 2026-11-23T14:02:00Z
  ddb-audit diff    --config ddb-audit.toml --table orders --key pk=S:123 --from 2h --to 1h
  ddb-audit revert  --config ddb-audit.toml --table orders --key pk=S:123 --to-time 2h
  ddb-audit gaps    --config ddb-audit.toml [--json]
  ddb-audit status  --config ddb-audit.toml [--json]
  DDB_AUDIT_API_TOKENS=$TOKEN ddb-audit serve --config ddb-audit.toml
  ddb-audit healthcheck --config ddb-audit.toml   # exit 0 when /readyz answers 200
  ddb-audit verify  --config ddb-audit.toml [--table orders] [--public-key pub.pem] [--state verify.state]
  ddb-audit export  --config ddb-audit.toml --table orders --key pk=S:123 --proof u123.proof.json
  ddb-audit verify-bundle u123.proof.json --public-key pub.pem
  ddb-audit redaction check --config ddb-audit.toml --value S:123-45-6789 --commitment hmac-sha256:<hex>
  ddb-audit query   --config ddb-audit.toml --table orders --field ssn --to redacted:$(ddb-audit redaction commit -c ddb-audit.toml --value S:123-45-6789)

verify and verify-bundle exit 0 when the trail is intact, 1 when something was altered, removed,
inserted or is missing, 2 when it could not be checked (no access, no key).
Values at [redaction] paths are stored as keyed commitments and shown as ‹redacted›.";

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
        /// Only the newest N entries (still printed oldest first); reads
        /// about N entries, not the whole history.
        #[arg(long, value_name = "N")]
        last: Option<usize>,
        /// Only entries at or after TIME: RFC 3339 (2026-11-23T19:05:00Z) or
        /// an age before now (90s, 15m, 2h, 7d).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only entries at or before TIME (RFC 3339 or an age).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// One JSON object per line (the stable format) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Search the audit trail: filters combine with AND; the index that fits
    /// is chosen (correlation, actor, table, or one item's partition).
    Query(QueryArgs),
    /// Print an item as it was at a time, in DynamoDB JSON (as get-item prints it).
    Show {
        #[command(flatten)]
        item: ItemArgs,
        /// RFC 3339 or an age before now (90s, 15m, 2h, 7d).
        #[arg(long, value_name = "TIME")]
        at: String,
        /// One JSON object: table, key, at, exists, item, complete.
        #[arg(long)]
        json: bool,
    },
    /// Print the net changes to an item between two times (applied to the
    /// item at --from they give the item at --to).
    Diff {
        #[command(flatten)]
        item: ItemArgs,
        /// RFC 3339 or an age before now.
        #[arg(long, value_name = "TIME")]
        from: String,
        /// RFC 3339 or an age before now.
        #[arg(long, value_name = "TIME")]
        to: String,
        /// One JSON object: table, key, from, to, changes.
        #[arg(long)]
        json: bool,
    },
    /// Print the one DynamoDB call that returns an item (or only --field
    /// paths) to its state at a time, conditioned on the item still holding
    /// what the trail says it holds now. Writes nothing: apply it with
    /// `aws dynamodb <update-item|put-item|delete-item> --cli-input-json`.
    Revert {
        #[command(flatten)]
        item: ItemArgs,
        /// RFC 3339 or an age before now.
        #[arg(long, value_name = "TIME")]
        to_time: String,
        /// Revert only this document path (a.b[2].c); repeat for more.
        #[arg(long = "field", value_name = "PATH")]
        fields: Vec<String>,
    },
    /// Write a SNAPSHOT entry for every item the table holds: the baseline
    /// of items that existed before auditing began. Paced against the
    /// table's read capacity; SIGTERM/SIGINT stop it, and the same command
    /// resumes the run (each item is written once per run).
    Snapshot {
        #[command(flatten)]
        config: ConfigArg,
        /// The audited table.
        #[arg(long)]
        table: String,
        /// Parallel Scan segments.
        #[arg(long, default_value_t = 4)]
        segments: u32,
        /// Read capacity units per second to spend on the table (strongly
        /// consistent reads: 1 unit per 4 KB).
        #[arg(long, default_value_t = 100.0)]
        read_units_per_sec: f64,
        /// Items per Scan page.
        #[arg(long, default_value_t = 100)]
        page_size: usize,
        /// Start a new run even if the last one did not finish.
        #[arg(long)]
        restart: bool,
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
    /// Serve the read-only HTTP API and the web page on [serve] listen
    /// (default 127.0.0.1:8080, plain HTTP: put TLS in front). Every /api/
    /// request needs `Authorization: Bearer <token>`, a token whose SHA-256
    /// hex digest is in [serve] token_sha256 or [[serve.tokens]], or one of
    /// the comma-separated tokens in DDB_AUDIT_API_TOKENS. Needs only read
    /// access to ddb-audit's tables. SIGTERM/SIGINT stop it gracefully.
    Serve(ConfigArg),
    /// Ask a running daemon whether it is ready (GET /readyz on the config's
    /// [observability] listen): exit 0 when ready, 1 when not or unreachable.
    /// For container health checks in images without curl.
    Healthcheck {
        #[command(flatten)]
        config: ConfigArg,
        /// The path to ask: /readyz (every table audited) or /healthz (alive).
        #[arg(long, default_value = "/readyz", value_parser = ["/readyz", "/healthz"])]
        path: String,
    },
    /// Prove the trail intact: every entry's hash and link, every digest's
    /// signature, chain and coverage, the checkpoints against the digests.
    /// Exit 0 intact, 1 altered/removed/inserted/missing, 2 not checkable.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this audited table.
        #[arg(long)]
        table: Option<String>,
        /// Report digest signature findings only from this time on (RFC 3339
        /// or an age: 90s, 15m, 2h, 7d); entries are always all checked.
        #[arg(long)]
        since: Option<String>,
        /// Public key PEM (`openssl pkey -pubout`); default: `[proof]
        /// public_key_file`, else derived from `[proof] signing_key_file`, or
        /// read from KMS for `kms_key_id`.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Remember the newest digest proven intact in FILE; the next run
        /// proves the trail only grew from there.
        #[arg(long)]
        state: Option<PathBuf>,
        /// One JSON object per finding, then a summary object.
        #[arg(long)]
        json: bool,
    },
    /// Write a self-contained, offline-checkable proof of one item's entries.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        /// The audited table.
        #[arg(long)]
        table: String,
        /// A key attribute as NAME=TYPE:VALUE; repeat for a sort key.
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
        /// The bundle file to write.
        #[arg(long)]
        proof: PathBuf,
    },
    /// Answer questions about `[redaction]` commitments with the key: is a
    /// redacted value equal to X? Needs no AWS access.
    #[command(subcommand)]
    Redaction(RedactionCommand),
    /// Print the public key (PEM, as `openssl pkey -pubout` writes it) that
    /// checks the digests: what `verify-bundle --public-key` takes offline.
    PublicKey {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Check a bundle written by `export --proof`, with no AWS access at all.
    VerifyBundle {
        /// The bundle file.
        file: PathBuf,
        /// Public key PEM (`openssl pkey -pubout`, or `ddb-audit public-key`
        /// for a KMS key) of the digests' signer; without it the digests'
        /// signatures are not checked and the bundle is unverifiable.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// One JSON object per finding, then a summary object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RedactionCommand {
    /// Is the value behind a commitment equal to --value? Prints `equal` and
    /// exits 0, or `not equal` and exits 1; exits 2 when it cannot tell
    /// (no key, a malformed value or commitment).
    Check {
        #[command(flatten)]
        key: RedactionKeyArgs,
        #[command(flatten)]
        value: RedactionValueArgs,
        /// The commitment as an entry shows it: `hmac-sha256:<hex>` or the
        /// whole `{"redacted":"hmac-sha256:<hex>"}`.
        #[arg(long)]
        commitment: String,
    },
    /// Print the commitment a value gets (`hmac-sha256:<hex>`), to search
    /// `query --json` output for it.
    Commit {
        #[command(flatten)]
        key: RedactionKeyArgs,
        #[command(flatten)]
        value: RedactionValueArgs,
    },
}

#[derive(clap::Args, Debug)]
struct RedactionKeyArgs {
    /// The `[redaction] key_file` to use; default: the config's.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// The TOML config whose `[redaction] key_file` holds the key.
    #[arg(long, short = 'c', env = "DDB_AUDIT_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
struct RedactionValueArgs {
    /// The value as TYPE:VALUE (S:x, N:1.5, B:aGk=, BOOL:true, NULL:true).
    #[arg(long, value_name = "TYPE:VALUE")]
    value: Option<String>,
    /// The value as DynamoDB JSON, for maps, lists and sets:
    /// '{"M":{"n":{"S":"x"}}}'.
    #[arg(long, value_name = "JSON")]
    value_json: Option<String>,
}

/// One item of one audited table.
#[derive(clap::Args, Debug)]
struct ItemArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The audited table.
    #[arg(long)]
    table: String,
    /// A key attribute as NAME=TYPE:VALUE, TYPE one of S, N, B (base64);
    /// repeat for a sort key.
    #[arg(long = "key", required = true)]
    keys: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct QueryArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Only this audited table (default: every table in the config).
    #[arg(long)]
    table: Option<String>,
    /// Only this item (needs --table): NAME=TYPE:VALUE, repeat for a sort key.
    #[arg(long = "key")]
    keys: Vec<String>,
    /// Only changes by this actor.
    #[arg(long)]
    actor: Option<String>,
    /// At or after TIME: RFC 3339 or an age before now (90s, 15m, 2h, 7d).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// At or before TIME.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only entries with a change at this document path or below it.
    #[arg(long, value_name = "PATH")]
    field: Option<String>,
    /// ...whose old value is TYPE:VALUE (S:x, N:1, B:aGk=, BOOL:true, NULL:true).
    #[arg(long, value_name = "TYPE:VALUE")]
    from: Option<String>,
    /// ...whose new value is TYPE:VALUE.
    #[arg(long, value_name = "TYPE:VALUE")]
    to: Option<String>,
    /// INSERT, MODIFY, REMOVE or SNAPSHOT.
    #[arg(long)]
    event: Option<String>,
    /// Only changes made under this correlation id ([attribution]
    /// correlation_attribute), across every table.
    #[arg(long, value_name = "ID")]
    correlation: Option<String>,
    /// Only changes CloudTrail attributes to this IAM principal
    /// (`principal.arn`, e.g. arn:aws:sts::123456789012:assumed-role/NAME/SESSION),
    /// across every table; needs [attribution.cloudtrail] in the daemon.
    #[arg(long, value_name = "ARN")]
    principal: Option<String>,
    /// At most N entries.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Time order: asc (oldest first, the default) or desc.
    #[arg(long, value_name = "asc|desc")]
    order: Option<String>,
    /// One JSON object per line, exactly as `history --json`.
    #[arg(long)]
    json: bool,
}

/// An exit status other than 0/1 (already reported), carried through `anyhow`.
#[derive(Debug)]
struct ExitWith(u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

#[derive(clap::Args, Debug)]
struct ConfigArg {
    /// The TOML config file. Without it, the whole TOML may be given in the
    /// environment variable DDB_AUDIT_CONFIG_TOML instead.
    #[arg(long, short = 'c', env = "DDB_AUDIT_CONFIG")]
    config: Option<PathBuf>,
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
        // Already reported by the command itself.
        Err(e) if e.downcast_ref::<ExitWith>().is_some() => {
            ExitCode::from(e.downcast_ref::<ExitWith>().map(|x| x.0).unwrap_or(1))
        }
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

/// `run` handles SIGTERM/SIGINT itself (a graceful drain), and so does
/// `serve` (in-flight requests, exit 0); nearly every other
/// command is a one-shot whose every wait and retry ends at once on a signal,
/// since nothing it does needs finishing: `init` is idempotent, and the rest
/// only read.
async fn dispatch_until_signal(command: Command) -> Result<()> {
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
            last,
            since,
            until,
            json,
        } => history(load(&config)?, table, keys, last, since, until, json).await,
        Command::Query(args) => query(args).await,
        Command::Snapshot {
            config,
            table,
            segments,
            read_units_per_sec,
            page_size,
            restart,
        } => {
            let config = load(&config)?;
            warn_unconfigured(&config, &table);
            let options = read::snapshot::SnapshotOptions {
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
            let sdk = ddb_audit::aws::load_sdk_config().await;
            let store =
                DynamoStore::new(ddb_audit::aws::dynamodb_client(&sdk), config.table_names())
                    .with_retention(config.retention.days);
            let digests = digest_settings(&config, &sdk, &abort).await?;
            read::cli::snapshot(
                &store,
                &table,
                &options,
                &digests,
                &stop,
                &abort,
                &mut std::io::stdout(),
            )
            .await?;
            Ok(())
        }
        Command::Show { item, at, json } => {
            let (config, table, key) = item_args(&item)?;
            let at = time_arg("--at", &at)?;
            let store = store(&config).await;
            read::cli::show(&store, &table, &key, at, json, &mut std::io::stdout()).await?;
            Ok(())
        }
        Command::Diff {
            item,
            from,
            to,
            json,
        } => {
            let (config, table, key) = item_args(&item)?;
            let (from, to) = (time_arg("--from", &from)?, time_arg("--to", &to)?);
            let store = store(&config).await;
            read::cli::diff(&store, &table, &key, from, to, json, &mut std::io::stdout()).await?;
            Ok(())
        }
        Command::Revert {
            item,
            to_time,
            fields,
        } => {
            let (config, table, key) = item_args(&item)?;
            let to_time = time_arg("--to-time", &to_time)?;
            let store = store(&config).await;
            read::cli::revert(
                &store,
                &table,
                &key,
                to_time,
                &fields,
                &mut std::io::stdout(),
            )
            .await?;
            Ok(())
        }
        Command::Gaps { config, json } => gaps(load(&config)?, json).await,
        Command::Status { config, json } => status(load(&config)?, json).await,
        Command::Serve(c) => serve(load(&c)?).await,
        Command::Healthcheck { config, path } => healthcheck(load(&config)?, path).await,
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
        Command::Export {
            config,
            table,
            keys,
            proof,
        } => export(load(&config)?, table, keys, proof).await,
        Command::Redaction(command) => redaction(command),
        Command::VerifyBundle {
            file,
            public_key,
            json,
        } => verify_bundle(file, public_key, json),
        Command::PublicKey { config } => match public_key(None, Some(&load(&config)?)).await? {
            Some(key) => {
                print!("{}", key.to_pem());
                Ok(())
            }
            None => anyhow::bail!(
                "no signing key configured: set `[proof] signing_key_file` or `kms_key_id`"
            ),
        },
    }
}

fn load(arg: &ConfigArg) -> Result<Config> {
    let env_toml = std::env::var(ddb_audit::config::CONFIG_TOML_ENV).ok();
    Ok(Config::load_from(
        arg.config.as_deref(),
        env_toml.as_deref(),
    )?)
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
    for index in &report.indexes_added {
        println!("added index {index}");
    }
    for note in store(&config).await.protect_tables().await? {
        println!("{note}");
    }
    if config.retention.days.is_some() {
        let note = store(&config)
            .await
            .enable_retention()
            .await
            .context("enabling TTL for `retention.days`")?;
        println!("{note}");
    }
    Ok(())
}

async fn run(config: Config) -> Result<()> {
    let observer = observe::global();
    observer.register_tables(&config.tables, observe_stale_after(&config));
    observer.set_alive(true);
    let stop_observing = tokio_util::sync::CancellationToken::new();
    let mut observing = Vec::new();
    if let Some(addr) = config.observability.listen_addr() {
        let listener = observe::http::bind(addr).await?;
        observing.push(observe::http::spawn(
            listener,
            observer,
            stop_observing.clone(),
        ));
    }
    if config.observability.emf {
        observing.push(observe::emf::spawn(
            observer,
            config.observability.emf_namespace.clone(),
            std::time::Duration::from_secs(config.observability.emf_interval_secs),
            stop_observing.clone(),
        ));
    }
    let result = run_daemon(config).await;
    observer.set_alive(false);
    stop_observing.cancel();
    for task in observing {
        let _ = task.await;
    }
    result
}

/// A shard with no page for this long counts as stalled in the lag: well
/// beyond an idle shard's poll interval and a retry's longest wait.
fn observe_stale_after(config: &Config) -> std::time::Duration {
    let p = &config.polling;
    2 * (p.idle_max() + p.retry_max()) + std::time::Duration::from_secs(10)
}

async fn run_daemon(config: Config) -> Result<()> {
    let sdk = ddb_audit::aws::load_sdk_config().await;
    let stream = observe::stream::Observed::new(AwsStream::new(
        ddb_audit::aws::dynamodb_client(&sdk),
        ddb_audit::aws::streams_client(&sdk),
    ));
    let store = DynamoStore::new(ddb_audit::aws::dynamodb_client(&sdk), config.table_names())
        .with_retention(config.retention.days);
    let mut settings = Settings::from_config(&config);
    settings.redactions = ddb_audit::redact::Redactions::from_config(&config)?;
    check_redacted_keys(&store, &settings.redactions).await?;
    let shutdown = Shutdown::new();
    // The final digest is signed after the stop, under the shutdown's abort.
    let digests = Arc::new(ddb_audit::daemon::digests::DigestWriter::new(
        store.clone(),
        store.clone(),
        config.tables.clone(),
        digest_settings(&config, &sdk, &shutdown.abort).await?,
    ));
    let (audit, cloudtrail) =
        ddb_audit::attribution::start(&config, &sdk, &store, &settings, &shutdown);
    if let Some(reader) = &cloudtrail {
        observe::global().watch_attribution(reader.stats.clone());
    }
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
    // Without `init` (tables from the CloudFormation stack): say exactly
    // what is wrong with ours before reading anything.
    let checked = ddb_audit::retry::retry(
        engine.settings.retry_policy(),
        &shutdown.stop,
        "DescribeTable(own tables)",
        || engine.checkpoints.check_tables(),
    )
    .await;
    match checked {
        Ok(()) => {}
        Err(ddb_audit::retry::Retried::Cancelled) => return Ok(()),
        Err(ddb_audit::retry::Retried::Failed(e)) => return Err(e.into()),
    }
    let heartbeat_stop = tokio_util::sync::CancellationToken::new();
    let heartbeats = {
        let (digests, stop) = (digests.clone(), heartbeat_stop.clone());
        tokio::spawn(async move { digests.heartbeats(stop).await })
    };
    let result =
        ddb_audit::daemon::supervisor::run(engine, config.tables.clone(), shutdown.clone()).await;
    heartbeat_stop.cancel();
    let _ = heartbeats.await;
    if let Some(reader) = cloudtrail {
        // It stops at the same signal; it has nothing that cannot be redone.
        let _ = tokio::time::timeout(grace, reader.handle).await;
    }
    result?;
    // Stopped gracefully: every checkpoint is final, so "the trail ends
    // here" can be signed.
    let written = digests.round(true, &heartbeat_stop, &shutdown.abort).await;
    tracing::info!(digests = written, "final digests written");
    Ok(())
}

/// Keys cannot be redacted: refuse to start when a path names a key
/// attribute. A table that cannot be described now is left to the
/// supervisor, which reports it (it is not audited until it can be).
async fn check_redacted_keys(
    store: &DynamoStore,
    redactions: &ddb_audit::redact::Redactions,
) -> Result<()> {
    use ddb_audit::attribution::reader::AttributionStore as _;
    for (table, redactor) in redactions.tables() {
        match store.key_schema(table).await {
            Ok(schema) => {
                let names: Vec<String> = schema.into_iter().map(|(n, _)| n).collect();
                redactor.check_keys(table, &names)?;
            }
            Err(e) => tracing::warn!(
                table = %table,
                error = %e,
                "cannot read the key schema to check `[redaction]` paths against it"
            ),
        }
    }
    Ok(())
}

async fn serve(config: Config) -> Result<()> {
    let store = store(&config).await;
    let env_tokens = std::env::var(ddb_audit::serve::TOKENS_ENV).ok();
    let stop = async {
        match wait_for_signal().await {
            Ok(name) => tracing::info!(signal = name, "shutting down: finishing requests"),
            Err(e) => tracing::error!(error = %e, "cannot listen for signals; shutting down"),
        }
    };
    // As `verify` finds it, so `/api/verify` and the CLI agree, KMS included.
    let key = public_key(None, Some(&config)).await?;
    ddb_audit::serve::serve(&config, store, key, env_tokens.as_deref(), stop).await?;
    Ok(())
}

async fn healthcheck(config: Config, path: String) -> Result<()> {
    let Some(listen) = config.observability.listen_addr() else {
        anyhow::bail!(
            "healthcheck needs `observability.listen` in the config (the address `run` listens on)"
        );
    };
    let (code, body) =
        observe::http::get_status(listen, &path, std::time::Duration::from_secs(5)).await?;
    print!("{body}");
    if !body.ends_with('\n') {
        println!();
    }
    if code == 200 {
        Ok(())
    } else {
        anyhow::bail!("{path} answered {code}: {}", body.trim())
    }
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

fn time_arg(flag: &str, text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    Ok(read::parse_time(flag, text, chrono::Utc::now())?)
}

fn opt_time(flag: &str, text: Option<&String>) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    text.map(|t| time_arg(flag, t)).transpose()
}

fn item_args(item: &ItemArgs) -> Result<(Config, String, Item)> {
    let config = load(&item.config)?;
    warn_unconfigured(&config, &item.table);
    let key = read::parse_key(&item.keys)?;
    Ok((config, item.table.clone(), key))
}

fn warn_unconfigured(config: &Config, table: &str) {
    if !config.tables.iter().any(|t| t == table) {
        tracing::warn!(table = %table, "table is not in the config's `tables`: showing what is stored anyway");
    }
}

async fn history(
    config: Config,
    table: String,
    keys: Vec<String>,
    last: Option<usize>,
    since: Option<String>,
    until: Option<String>,
    json: bool,
) -> Result<()> {
    warn_unconfigured(&config, &table);
    let key = read::parse_key(&keys)?;
    let since = opt_time("--since", since.as_ref())?;
    let until = opt_time("--until", until.as_ref())?;
    let store = store(&config).await;
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

async fn query(args: QueryArgs) -> Result<()> {
    let config = load(&args.config)?;
    let typed = |flag: &str, v: &Option<String>| {
        v.as_deref().map(|t| read::parse_value(flag, t)).transpose()
    };
    let filter = read::QueryFilter {
        table: args.table.clone(),
        key: (!args.keys.is_empty())
            .then(|| read::parse_key(&args.keys))
            .transpose()?,
        actor: args.actor.clone(),
        since: opt_time("--since", args.since.as_ref())?,
        until: opt_time("--until", args.until.as_ref())?,
        field: args.field.clone(),
        from: typed("--from", &args.from)?,
        to: typed("--to", &args.to)?,
        event: args.event.clone(),
        correlation: args.correlation.clone(),
        principal: args.principal.clone(),
        order: read::cli::order_arg(args.order.as_deref())?,
        tables: config.tables.clone(),
    };
    let store = store(&config).await;
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

/// How digests are signed and written: with the configured Ed25519 key,
/// the KMS key (its signing retries end with `abort`), or unsigned.
async fn digest_settings(
    config: &Config,
    sdk: &aws_config::SdkConfig,
    abort: &tokio_util::sync::CancellationToken,
) -> Result<ddb_audit::daemon::digests::DigestSettings> {
    use ddb_audit::kms::{AwsKms, KmsSigner};
    use ddb_audit::proof::sign::{DigestSigner, Ed25519Signer};
    let settings = Settings::from_config(config);
    let signer: Option<Arc<dyn DigestSigner>> =
        match (&config.proof.signing_key_file, &config.proof.kms_key_id) {
            (Some(path), _) => Some(Arc::new(
                Ed25519Signer::from_file(path).context("`proof.signing_key_file`")?,
            )),
            (None, Some(key_id)) => {
                let signer = KmsSigner::connect(
                    AwsKms::new(sdk),
                    key_id,
                    settings.retry_policy(),
                    abort.clone(),
                )
                .await?;
                tracing::info!(key = %key_id, fingerprint = %signer.fingerprint(),
                "digests are signed with KMS");
                Some(Arc::new(signer))
            }
            (None, None) => {
                tracing::warn!(
                    "no [proof] signing_key_file or kms_key_id: digests are written unsigned"
                );
                None
            }
        };
    Ok(ddb_audit::daemon::digests::DigestSettings {
        interval: std::time::Duration::from_secs(config.proof.digest_interval_secs),
        retention_days: config.retention.days,
        signer,
        retry: settings.retry_policy(),
    })
}

/// The key that checks digests: `--public-key`, else the config's
/// (`[proof] public_key_file`, else the signing key's public half, from the
/// PEM file or from KMS GetPublicKey), else none.
async fn public_key(
    given: Option<&std::path::Path>,
    config: Option<&Config>,
) -> Result<Option<ddb_audit::proof::sign::PublicKey>> {
    use ddb_audit::proof::sign::PublicKey;
    if let Some(path) = given {
        return Ok(Some(PublicKey::from_file(path).context("--public-key")?));
    }
    let Some(config) = config else {
        return Ok(None);
    };
    if let Some(key) = PublicKey::from_config(&config.proof)? {
        return Ok(Some(key));
    }
    if let Some(key_id) = &config.proof.kms_key_id {
        let sdk = ddb_audit::aws::load_sdk_config().await;
        // Cancelled from outside (dispatch_until_signal) on a signal.
        let never = tokio_util::sync::CancellationToken::new();
        let key = ddb_audit::kms::public_key(
            &ddb_audit::kms::AwsKms::new(&sdk),
            key_id,
            Settings::from_config(config).retry_policy(),
            &never,
        )
        .await?;
        return Ok(Some(key));
    }
    Ok(None)
}

async fn verify(
    config: Config,
    table: Option<String>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    public_key_file: Option<PathBuf>,
    state: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    use ddb_audit::read::verify::{finding_line, verify_trail, VerifyRequest};
    let key = public_key(public_key_file.as_deref(), Some(&config))
        .await
        .map_err(|e| {
            eprintln!("error: {e:#}");
            ExitWith(2)
        })?;
    let request = VerifyRequest {
        tables: table.map(|t| vec![t]),
        since,
        public_key: key,
        state_file: state,
        interval_secs: config.proof.digest_interval_secs,
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = |n: u64| {
        if tty {
            eprint!("\rverify: {n} items read");
        }
    };
    let outcome = match verify_trail(&store(&config).await, &request, progress).await {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("error: the trail could not be checked: {e}");
            return Err(ExitWith(2).into());
        }
    };
    if tty {
        eprintln!();
    }
    for f in &outcome.findings {
        if json {
            println!("{}", serde_json::to_string(f)?);
        } else {
            println!("{}", finding_line(f));
        }
    }
    let s = &outcome.summary;
    if json {
        println!("{}", serde_json::to_string(s)?);
    } else {
        println!(
            "{}: {} entries, {} digests in {} streams checked in {:.1} s ({:.0} entries/s){}",
            s.status,
            s.entries,
            s.digests,
            s.streams,
            s.seconds,
            s.entries_per_second,
            s.key_fingerprint
                .as_deref()
                .map(|k| format!(", signatures checked with {k}"))
                .unwrap_or_else(|| ", no public key".into())
        );
    }
    match s.exit_status {
        0 => Ok(()),
        code => Err(ExitWith(code as u8).into()),
    }
}

async fn export(config: Config, table: String, keys: Vec<String>, proof: PathBuf) -> Result<()> {
    let key = read::parse_key(&keys)?;
    let fingerprint = public_key(None, Some(&config))
        .await?
        .map(|k| k.fingerprint());
    let bundle =
        ddb_audit::read::verify::export_bundle(&store(&config).await, &table, &key, fingerprint)
            .await?;
    let text = serde_json::to_string_pretty(&bundle)?;
    std::fs::write(&proof, text + "\n").with_context(|| format!("--proof {}", proof.display()))?;
    println!(
        "wrote {} entries and {} digests to {}",
        bundle.entries.len(),
        bundle.digests.len(),
        proof.display()
    );
    Ok(())
}

fn redaction(command: RedactionCommand) -> Result<()> {
    // Exit 1 is the answer "not equal": failing to answer is 2.
    let fail = |message: String| {
        eprintln!("error: {message}");
        anyhow::Error::from(ExitWith(2))
    };
    let key_and_value = |key: &RedactionKeyArgs, value: &RedactionValueArgs| {
        let env_toml = std::env::var(ddb_audit::config::CONFIG_TOML_ENV).ok();
        let config_key_file =
            if key.key_file.is_some() || (key.config.is_none() && env_toml.is_none()) {
                None
            } else {
                Config::load_from(key.config.as_deref(), env_toml.as_deref())
                    .map_err(|e| fail(e.to_string()))?
                    .redaction
                    .key_file
            };
        let redaction_key =
            ddb_audit::redact::key_for_check(key.key_file.as_deref(), config_key_file.as_ref())
                .map_err(|e| match e {
                    ddb_audit::redact::RedactError::KeyMissing => fail(
                        "no key: give --key-file FILE, or --config with `[redaction] key_file`"
                            .into(),
                    ),
                    e => fail(e.to_string()),
                })?;
        let parsed = match (&value.value, &value.value_json) {
            (Some(text), _) => {
                read::parse_value("--value", text).map_err(|e| fail(e.to_string()))?
            }
            (None, Some(json)) => serde_json::from_str::<ddb_audit::value::AttrValue>(json)
                .map_err(|e| fail(format!("--value-json is not DynamoDB JSON: {e}")))?,
            (None, None) => return Err(fail("give --value or --value-json".into())),
        };
        if matches!(parsed, ddb_audit::value::AttrValue::Redacted(_)) {
            return Err(fail(
                "the value is itself a commitment: give the plain value to compare".into(),
            ));
        }
        Ok((redaction_key, parsed))
    };
    match command {
        RedactionCommand::Commit { key, value } => {
            let (redaction_key, value) = key_and_value(&key, &value)?;
            println!("{}", redaction_key.commit(&value));
            Ok(())
        }
        RedactionCommand::Check {
            key,
            value,
            commitment,
        } => {
            let (redaction_key, value) = key_and_value(&key, &value)?;
            let commitment = ddb_audit::redact::parse_commitment(&commitment).ok_or_else(|| {
                fail(format!(
                    "--commitment {commitment:?} is not a commitment: give hmac-sha256:<64 hex digits> or {{\"redacted\":\"hmac-sha256:…\"}}, as the entry shows it"
                ))
            })?;
            if redaction_key.matches(&value, &commitment) {
                println!("equal");
                Ok(())
            } else {
                println!("not equal");
                Err(ExitWith(1).into())
            }
        }
    }
}

fn verify_bundle(file: PathBuf, public_key_file: Option<PathBuf>, json: bool) -> Result<()> {
    use ddb_audit::proof::bundle::{verify_bundle, Bundle};
    use ddb_audit::proof::verify::exit_status;
    use ddb_audit::read::verify::finding_line;
    let fail = |message: String| {
        eprintln!("error: {message}");
        anyhow::Error::from(ExitWith(2))
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| fail(format!("cannot read {}: {e}", file.display())))?;
    let bundle: Bundle = serde_json::from_str(&text)
        .map_err(|e| fail(format!("{} is not a proof bundle: {e}", file.display())))?;
    // Offline: only a key file, never KMS.
    let key = public_key_file
        .as_deref()
        .map(ddb_audit::proof::sign::PublicKey::from_file)
        .transpose()
        .map_err(|e| fail(format!("--public-key: {e}")))?;
    let findings = verify_bundle(&bundle, key.as_ref());
    for f in &findings {
        if json {
            println!("{}", serde_json::to_string(f)?);
        } else {
            println!("{}", finding_line(f));
        }
    }
    let code = exit_status(&findings);
    let status = match code {
        0 => "intact",
        1 => "tampered",
        _ => "unverifiable",
    };
    if json {
        println!(
            "{}",
            serde_json::json!({"summary": true, "status": status, "exit_status": code,
                "entries": bundle.entries.len(), "digests": bundle.digests.len()})
        );
    } else {
        println!(
            "{status}: {} entries of {} {} proven against {} digests",
            bundle.entries.len(),
            bundle.table,
            bundle.key,
            bundle.digests.len()
        );
    }
    match code {
        0 => Ok(()),
        code => Err(ExitWith(code as u8).into()),
    }
}
