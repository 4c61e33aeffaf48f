//! The command line: every command, its flags and their help.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Turns DynamoDB Streams into a permanent, write-once, field-level audit
/// trail: who changed which field, from what, to what, and when.
///
/// The endpoint, region and credentials come from the standard AWS
/// environment (AWS_ENDPOINT_URL, AWS_REGION, the default credential chain).
#[derive(Parser, Debug)]
#[command(name = "ddb-audit", version, about, long_about, after_help = USAGE_NOTES)]
pub(crate) struct Cli {
    /// Log format on stderr. RUST_LOG filters (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "DDB_AUDIT_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Shown after the top-level help: what every command needs.
pub(crate) const USAGE_NOTES: &str = "\
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
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Create the daemon's own tables (streams, shards, audit entries); safe to repeat.
    ///
    /// Creates the three tables named in [storage] (on-demand capacity, with
    /// the audit table's read-side indexes) and waits until they are ACTIVE;
    /// tables that exist are checked and missing indexes added. Then it turns
    /// on, for each of them, deletion protection (`aws dynamodb delete-table`
    /// fails until it is turned off) and point-in-time recovery (35 days of
    /// restorable history, billed per GB-month), because they hold the audit
    /// trail; and, with [retention] days set, TTL on `expires_at`. For a
    /// scratch account, --no-protection skips deletion protection and
    /// point-in-time recovery.
    #[command(after_help = "\
Examples:
  ddb-audit init --config ddb-audit.toml
  ddb-audit init --config ddb-audit.toml --no-protection   # a scratch account: tables you can delete

Exit status: 0 the tables are ready, 1 they could not be created or checked (the error names the table and the fix).")]
    Init {
        #[command(flatten)]
        config: ConfigArg,
        /// Do not turn on deletion protection and point-in-time recovery (a
        /// scratch account whose tables you will delete); `init` without it
        /// turns them on later.
        #[arg(long)]
        no_protection: bool,
    },
    /// Run the daemon: audit every configured table until SIGTERM or SIGINT.
    #[command(after_help = "\
Examples:
  ddb-audit run --config ddb-audit.toml
  DDB_AUDIT_CONFIG_TOML=\"$(cat ddb-audit.toml)\" ddb-audit run --log-format json

SIGTERM or SIGINT stop it gracefully: in-flight pages are written and checkpointed, and a final
digest says where the trail ends. Exit status: 0 stopped gracefully, 1 it could not start or stop
cleanly (the error names the table or setting and the fix).")]
    Run(ConfigArg),
    /// Print one item's audit history, oldest first.
    #[command(after_help = "\
Examples:
  ddb-audit history --config ddb-audit.toml --table orders --key pk=S:o-1001
  ddb-audit history --config ddb-audit.toml --table orders --key pk=S:o-1001 --key sk=N:7 --last 5
  ddb-audit history --config ddb-audit.toml --table orders --key pk=S:o-1001 --since 2h --json

Exit status: 0 printed (possibly nothing), 1 a bad argument or the trail could not be read.")]
    History {
        #[command(flatten)]
        item: ItemArgs,
        /// Only the newest N entries (still printed oldest first); reads
        /// about N entries, not the whole history. At least 1.
        #[arg(long, value_name = "N", value_parser = at_least_one)]
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
    #[command(after_help = "\
Examples:
  ddb-audit query --config ddb-audit.toml --actor alice --since 7d
  ddb-audit query --config ddb-audit.toml --table orders --field status --from S:PENDING --to S:PAID
  ddb-audit query --config ddb-audit.toml --correlation req-42 --json
  ddb-audit query --config ddb-audit.toml --table orders --event REMOVE --order desc --limit 20

Exit status: 0 printed (possibly nothing), 1 a bad argument or the trail could not be read.")]
    Query(QueryArgs),
    /// Print an item as it was at a time, in DynamoDB JSON (as get-item prints it).
    #[command(after_help = "\
Examples:
  ddb-audit show --config ddb-audit.toml --table orders --key pk=S:o-1001 --at 2026-11-23T14:02:00Z
  ddb-audit show --config ddb-audit.toml --table orders --key pk=S:o-1001 --at 2h --json

Exit status: 0 printed, 1 a bad argument or the trail could not be read.")]
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
    #[command(after_help = "\
Examples:
  ddb-audit diff --config ddb-audit.toml --table orders --key pk=S:o-1001 --from 2h --to 1h
  ddb-audit diff --config ddb-audit.toml --table orders --key pk=S:o-1001 --from 2026-11-23T14:00:00Z --to 2026-11-23T15:00:00Z --json

Exit status: 0 printed, 1 a bad argument or the trail could not be read.")]
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
    #[command(after_help = "\
Examples:
  ddb-audit revert --config ddb-audit.toml --table orders --key pk=S:o-1001 --to-time 2h --actor alice > plan.json
  aws dynamodb \"$(jq -r '.operation | sub(\"Item\";\"-item\") | ascii_downcase' plan.json)\" --cli-input-json \"$(jq .input plan.json)\"
  ddb-audit revert --config ddb-audit.toml --table orders --key pk=S:o-1001 --to-time 2h --field status

Exit status: 0 a plan was printed, 1 a bad argument, nothing to revert to, or the trail could not be read.")]
    Revert {
        #[command(flatten)]
        item: ItemArgs,
        /// RFC 3339 or an age before now.
        #[arg(long, value_name = "TIME")]
        to_time: String,
        /// Revert only this document path (a.b[2].c); repeat for more. A
        /// field the item has neither at --to-time nor now is an error.
        #[arg(long = "field", value_name = "PATH")]
        fields: Vec<String>,
        /// Who applies the revert: written into `[attribution]
        /// actor_attribute`, so the audit entry the revert causes names them.
        /// The plan never sets that attribute back to an old writer; without
        /// --actor it leaves it as it is (the entry then says
        /// `item-unchanged`).
        #[arg(long, value_name = "NAME")]
        actor: Option<String>,
    },
    /// Write a SNAPSHOT entry for every item the table holds: the baseline
    /// of items that existed before auditing began. Paced against the
    /// table's read capacity; SIGTERM/SIGINT stop it, and the same command
    /// resumes the run (each item is written once per run).
    #[command(after_help = "\
Examples:
  ddb-audit snapshot --config ddb-audit.toml --table orders
  ddb-audit snapshot --config ddb-audit.toml --table orders --read-units-per-sec 20 --segments 2

Exit status: 0 the run finished (or stopped by a signal: run the same command to resume),
1 it could not read the table or write the trail.")]
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
    #[command(after_help = "\
Examples:
  ddb-audit gaps --config ddb-audit.toml
  ddb-audit gaps --config ddb-audit.toml --json | jq .after_time

Exit status: 0 listed (possibly none), 1 the trail could not be read.")]
    Gaps {
        #[command(flatten)]
        config: ConfigArg,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show each table's shards: status, checkpoint, lag, parent.
    #[command(after_help = "\
Examples:
  ddb-audit status --config ddb-audit.toml
  ddb-audit status --config ddb-audit.toml --json | jq 'select(.kind == \"table\")'

Exit status: 0 printed, 1 the daemon's tables could not be read.")]
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
    #[command(after_help = "\
Examples:
  DDB_AUDIT_API_TOKENS=$(openssl rand -hex 16) ddb-audit serve --config ddb-audit.toml
  curl -H \"Authorization: Bearer $TOKEN\" 'http://127.0.0.1:8080/api/history?table=orders&key=pk=S:o-1001'

Exit status: 0 stopped by SIGTERM/SIGINT, 1 it could not start (the error names the setting).")]
    Serve(ConfigArg),
    /// Ask a running daemon whether it is ready (GET /readyz on the config's
    /// [observability] listen): exit 0 when ready, 1 when not or unreachable.
    /// For container health checks in images without curl.
    ///
    /// It finds the config as `run` does: --config FILE, DDB_AUDIT_CONFIG (a
    /// file's path) or the whole TOML in DDB_AUDIT_CONFIG_TOML; given none,
    /// the --config of the container's main process (`ddb-audit run --config
    /// FILE` as PID 1), so the image's argument-less HEALTHCHECK works
    /// however the container is given its config. The config must set
    /// [observability] listen; in a container "0.0.0.0:9090", which the
    /// health check asks on loopback.
    #[command(after_help = "\
Examples:
  ddb-audit healthcheck --config ddb-audit.toml
  ddb-audit healthcheck --config ddb-audit.toml --path /healthz
  DDB_AUDIT_CONFIG_TOML=\"$(cat ddb-audit.toml)\" ddb-audit healthcheck   # as the image's HEALTHCHECK runs it

Exit status: 0 ready (alive for /healthz), 1 not ready or unreachable (the body says why), or no
config or no [observability] listen (the error says what to set).")]
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
    #[command(after_help = "\
Examples:
  ddb-audit verify --config ddb-audit.toml
  ddb-audit verify --config ddb-audit.toml --table orders --public-key pub.pem --state verify.state
  ddb-audit verify --config ddb-audit.toml --json | jq 'select(.severity == \"tamper\")'

Exit status: 0 the trail is intact and complete, 1 something was altered, removed, inserted or is
missing (each finding names the entry), 2 it could not be checked (no access, no key, nothing to check).")]
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
    #[command(after_help = "\
Examples:
  ddb-audit export --config ddb-audit.toml --table orders --key pk=S:o-1001 --proof o-1001.proof.json
  ddb-audit verify-bundle o-1001.proof.json --public-key pub.pem

Exit status: 0 the bundle was written, 1 a bad argument or the trail could not be read.")]
    Export {
        #[command(flatten)]
        item: ItemArgs,
        /// The bundle file to write.
        #[arg(long)]
        proof: PathBuf,
    },
    /// Answer questions about `[redaction]` commitments with the key: is a
    /// redacted value equal to X? Needs no AWS access.
    #[command(
        subcommand,
        after_help = "\
Examples:
  ddb-audit redaction commit --config ddb-audit.toml --value S:123-45-6789
  ddb-audit redaction check --config ddb-audit.toml --value S:123-45-6789 --commitment hmac-sha256:<hex>

Exit status (check): 0 equal, 1 not equal, 2 cannot tell (no key, a malformed value or commitment)."
    )]
    Redaction(RedactionCommand),
    /// Print the public key (PEM, as `openssl pkey -pubout` writes it) that
    /// checks the digests: what `verify-bundle --public-key` takes offline.
    #[command(after_help = "\
Examples:
  ddb-audit public-key --config ddb-audit.toml > pub.pem

Exit status: 0 printed, 1 no signing key configured or it could not be read.")]
    PublicKey {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Check a bundle written by `export --proof`, with no AWS access at all.
    #[command(after_help = "\
Examples:
  ddb-audit verify-bundle o-1001.proof.json --public-key pub.pem
  ddb-audit verify-bundle o-1001.proof.json --public-key pub.pem --json

Exit status: 0 intact, 1 something in it was altered, removed or inserted, 2 it could not be checked
(no public key, an unreadable file).")]
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
pub(crate) enum RedactionCommand {
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
pub(crate) struct RedactionKeyArgs {
    /// The `[redaction] key_file` to use; default: the config's.
    #[arg(long, value_name = "FILE")]
    pub(crate) key_file: Option<PathBuf>,
    /// The TOML config whose `[redaction] key_file` holds the key.
    #[arg(long, short = 'c', env = "DDB_AUDIT_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub(crate) struct RedactionValueArgs {
    /// The value as TYPE:VALUE (S:x, N:1.5, B:aGk=, BOOL:true, NULL:true).
    #[arg(long, value_name = "TYPE:VALUE")]
    pub(crate) value: Option<String>,
    /// The value as DynamoDB JSON, for maps, lists and sets:
    /// '{"M":{"n":{"S":"x"}}}'.
    #[arg(long, value_name = "JSON")]
    pub(crate) value_json: Option<String>,
}

/// One item of one audited table.
#[derive(clap::Args, Debug)]
pub(crate) struct ItemArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArg,
    /// The audited table.
    #[arg(long)]
    pub(crate) table: String,
    /// A key attribute as NAME=TYPE:VALUE, TYPE one of S, N, B (base64);
    /// repeat for a sort key, e.g. --key pk=S:u1 --key sk=N:7.
    #[arg(long = "key", required = true)]
    pub(crate) keys: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct QueryArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArg,
    /// Only this audited table (default: every table in the config).
    #[arg(long)]
    pub(crate) table: Option<String>,
    /// Only this item (needs --table): NAME=TYPE:VALUE, repeat for a sort key.
    #[arg(long = "key")]
    pub(crate) keys: Vec<String>,
    /// Only changes by this actor.
    #[arg(long)]
    pub(crate) actor: Option<String>,
    /// At or after TIME: RFC 3339 or an age before now (90s, 15m, 2h, 7d).
    #[arg(long, value_name = "TIME")]
    pub(crate) since: Option<String>,
    /// At or before TIME.
    #[arg(long, value_name = "TIME")]
    pub(crate) until: Option<String>,
    /// Only entries with a change at this document path or below it.
    #[arg(long, value_name = "PATH")]
    pub(crate) field: Option<String>,
    /// ...whose old value is TYPE:VALUE (S:x, N:1, B:aGk=, BOOL:true, NULL:true).
    #[arg(long, value_name = "TYPE:VALUE")]
    pub(crate) from: Option<String>,
    /// ...whose new value is TYPE:VALUE.
    #[arg(long, value_name = "TYPE:VALUE")]
    pub(crate) to: Option<String>,
    /// INSERT, MODIFY, REMOVE or SNAPSHOT.
    #[arg(long)]
    pub(crate) event: Option<String>,
    /// Only changes made under this correlation id ([attribution]
    /// correlation_attribute), across every table.
    #[arg(long, value_name = "ID")]
    pub(crate) correlation: Option<String>,
    /// Only changes CloudTrail attributes to this IAM principal
    /// (`principal.arn`, e.g. arn:aws:sts::123456789012:assumed-role/NAME/SESSION),
    /// across every table; needs [attribution.cloudtrail] in the daemon.
    #[arg(long, value_name = "ARN")]
    pub(crate) principal: Option<String>,
    /// At most N entries in all, at least 1 (as the HTTP API's `limit`).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub(crate) limit: Option<usize>,
    /// Time order: asc (oldest first, the default) or desc.
    #[arg(long, value_name = "asc|desc")]
    pub(crate) order: Option<String>,
    /// One JSON object per line, exactly as `history --json`.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ConfigArg {
    /// The TOML config file. Without it, the whole TOML may be given in the
    /// environment variable DDB_AUDIT_CONFIG_TOML instead.
    #[arg(long, short = 'c', env = "DDB_AUDIT_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

/// A count that must be at least 1, as the HTTP API's `limit` is.
fn at_least_one(text: &str) -> Result<usize, String> {
    ddb_audit::read::parse_count(text, usize::MAX)
}
