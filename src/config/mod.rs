//! The TOML configuration: every field documented with its default, unknown
//! keys rejected by name, values checked against the service's limits.
//!
//! ```toml
//! tables = ["orders", "billing-*"]    # names or glob patterns; "*" = every table in the region
//! exclude_tables = ["*-tmp"]          # patterns never audited (optional)
//!
//! [discovery]                         # only used when `tables` has a pattern
//! tags = { audit = "on" }             # tables found by a pattern must carry all of these
//! interval_secs = 60                  # how often the account is listed again
//! # home_region = "eu-west-1"         # where a Global Table is audited (default: smallest replica region)
//!
//! [attribution]
//! actor_attribute = "updated_by"      # item attribute naming who changed it (optional)
//! correlation_attribute = "request_id" # item attribute carrying a request id (optional)
//!
//! [attribution.cloudtrail]            # optional: join CloudTrail data events
//! bucket = "my-trail-bucket"          # where the trail delivers (required)
//! prefix = ""                         # the trail's prefix before AWSLogs/
//! # region = "eu-west-1"              # log files of this region; default AWS_REGION
//! poll_interval_secs = 60             # how often new log files are looked for
//! delivery_window_secs = 1200         # an entry with no event by then: unmatched
//! match_tolerance_secs = 2            # event time vs entry time
//!
//! [storage]                           # the daemon's own tables (`ddb-audit init`)
//! streams_table = "ddb-audit-streams"
//! shards_table  = "ddb-audit-shards"
//! audit_table   = "ddb-audit-entries"
//!
//! [polling]
//! get_records_per_shard_per_sec = 4   # AWS allows 5
//! describe_stream_per_sec = 5         # whole process; AWS allows 10
//! get_records_limit = 1000            # records per GetRecords call (1..=1000)
//! idle_poll_min_ms = 250              # first wait after an empty page
//! idle_poll_max_ms = 5000             # an idle shard settles at 1 call / 5 s
//! full_listing_interval_secs = 60     # full DescribeStream listing per stream
//! max_concurrent_shards = 64          # closed shards drained at once per stream (open ones: all)
//! retry_min_ms = 100                  # backoff on throttling / 5xx, with jitter
//! retry_max_ms = 5000
//!
//! [shutdown]
//! grace_ms = 4000                     # finish in-flight writes, then exit
//!
//! [serve]                             # `ddb-audit serve`: the read-only HTTP API + web page
//! listen = "127.0.0.1:8080"           # plain HTTP: TLS is the load balancer's job
//! token_sha256 = []                   # hex SHA-256 digests of accepted bearer tokens
//! cors_origins = []                   # CORS off unless origins are listed
//! page_size = 100                     # entries per API page unless a request's `page_size` says otherwise
//! max_page_size = 1000
//! request_timeout_ms = 30000
//! # [[serve.tokens]]                  # a named token, optionally scoped to tables
//! # name = "support"
//! # sha256 = "<hex digest>"
//! # tables = ["orders"]
//! [observability]
//! listen = "0.0.0.0:9090"             # /metrics /healthz /readyz (unset: no listener)
//! emf = false                         # CloudWatch EMF lines on stdout
//! emf_namespace = "ddb-audit"
//! emf_interval_secs = 60
//! [proof]
//! signing_key_file = "digest-key.pem" # Ed25519 PKCS#8 PEM; unset: digests unsigned
//! # public_key_file = "digest-key.pub.pem" # checks digests without the private key (serve, verify)
//! # kms_key_id = "alias/ddb-audit-digests" # or a KMS ECC_NIST_P256 key signs (not both)
//! digest_interval_secs = 60           # a digest per stream this often, also when idle
//! item_cache_entries = 100000         # items whose newest entry the item chain keeps in memory
//!
//! [retention]
//! days = 2555                         # entries expire (DynamoDB TTL) after this; unset: never
//!
//! [redaction]                         # values never stored, only a keyed commitment (`crate::redact`)
//! paths = ["ssn", "card.number", "contacts[*].phone"]  # every table; `*` is any one segment
//! key_file = "redaction.key"          # HMAC-SHA256 key, >= 32 bytes (`openssl rand -hex 32`)
//! [redaction.tables]                  # more paths for one table each
//! orders = ["payment.iban"]
//! ```
//!
//! The whole file may instead be given in the environment variable
//! `DDB_AUDIT_CONFIG_TOML` (for containers without a volume).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use std::sync::Arc;

use crate::proof::sign::PublicKey;
use crate::proof::ProofError;
use crate::redact::{Pattern, RedactError, RedactionKey, Redactions, Redactor};
use crate::selection::{is_pattern, PatternError, TableSelection};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The OS error is the source, printed once by whoever shows the chain.
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error(
        "no config: give --config FILE, or set DDB_AUDIT_CONFIG (a file's path) \
         or DDB_AUDIT_CONFIG_TOML (the TOML itself)"
    )]
    Missing,
    #[error(
        "two configs: --config/DDB_AUDIT_CONFIG ({path}) and DDB_AUDIT_CONFIG_TOML are both set; \
         unset one of them"
    )]
    Ambiguous { path: String },
    #[error("invalid config file {path}: `{key}` {problem}")]
    Invalid {
        path: String,
        key: String,
        problem: String,
    },
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Source tables to audit: exact names, or glob patterns (`*`, `?`,
    /// `[...]`) matched against every table of the region. Each needs a
    /// stream with view type NEW_AND_OLD_IMAGES.
    pub tables: Vec<String>,
    /// Patterns (or names) of tables never audited, even when a pattern of
    /// `tables` matches them.
    #[serde(default)]
    pub exclude_tables: Vec<String>,
    #[serde(default)]
    pub discovery: Discovery,
    #[serde(default)]
    pub attribution: Attribution,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub polling: Polling,
    #[serde(default)]
    pub shutdown: Shutdown,
    #[serde(default)]
    pub serve: Serve,
    #[serde(default)]
    pub observability: Observability,
    #[serde(default)]
    pub proof: Proof,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub redaction: Redaction,
}

/// `[discovery]`: how tables are found when `tables` holds a pattern.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Discovery {
    /// Tables found by a pattern are audited only when they carry every one
    /// of these tags (key = value).
    pub tags: std::collections::BTreeMap<String, String>,
    /// Seconds between two listings of the region's tables.
    pub interval_secs: u64,
    /// The region that audits a Global Table whose replicas include it;
    /// unset (or not a replica): the replica region that sorts first.
    pub home_region: Option<String>,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            tags: std::collections::BTreeMap::new(),
            interval_secs: 60,
            home_region: None,
        }
    }
}

impl Discovery {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }
}

/// Values the trail must never hold (`crate::redact`, docs/redaction.md).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Redaction {
    /// Document paths redacted in every table, in the `changes` path syntax
    /// with `*` for any one map key or list index: `ssn`, `card.number`,
    /// `contacts[*].phone`. A path covers everything below it. Not a key
    /// attribute (refused when the daemon starts).
    pub paths: Vec<String>,
    /// More paths for one configured table each: `orders = ["card.cvv"]`.
    pub tables: std::collections::BTreeMap<String, Vec<String>>,
    /// The HMAC-SHA256 key of the commitments: the file's bytes (one
    /// trailing newline dropped), at least 32. Required when any path is set.
    pub key_file: Option<std::path::PathBuf>,
}

/// How long entries are kept.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Entries expire this many days after they were written, through a
    /// DynamoDB TTL attribute (`expires_at`) that `init` enables. Unset:
    /// kept for ever. Digests state the policy, so `verify` tells entries
    /// expired by it from entries deleted by hand.
    pub days: Option<u64>,
}

/// The signed digests over the hash chain (`docs/proof-format.md`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Proof {
    /// An Ed25519 private key, PKCS#8 PEM (`openssl genpkey -algorithm
    /// ed25519`), that signs the digests. Unset: digests are written
    /// unsigned and `verify` says so.
    pub signing_key_file: Option<std::path::PathBuf>,
    /// The public half alone (PEM, `openssl pkey -pubout`), for processes
    /// that check digests but must not hold the signing key: `serve` under
    /// the auditors' role, `verify` on an auditor's machine. Unset: the
    /// public half of `signing_key_file`, if that is set.
    pub public_key_file: Option<std::path::PathBuf>,
    /// An AWS KMS asymmetric key (id, ARN, alias name or alias ARN) of spec
    /// ECC_NIST_P256 and usage SIGN_VERIFY that signs the digests instead;
    /// its private half never leaves KMS. Not together with
    /// `signing_key_file`.
    pub kms_key_id: Option<String>,
    /// Seconds between two digests of a stream, written also while nothing
    /// changes (a heartbeat), plus a final one on a graceful stop.
    pub digest_interval_secs: u64,
    /// Items whose newest entry the daemon keeps in memory for the item
    /// chain (least recently changed first out; about 130 bytes each). An
    /// item not in it costs one strongly consistent read on its next change.
    pub item_cache_entries: usize,
}

/// The default of `[proof] item_cache_entries`: ~13 MB, and a hit on every
/// change of an item changed again within the last 100,000 items changed.
pub const DEFAULT_ITEM_CACHE_ENTRIES: usize = 100_000;

impl Default for Proof {
    fn default() -> Self {
        Proof {
            signing_key_file: None,
            public_key_file: None,
            kms_key_id: None,
            digest_interval_secs: 60,
            item_cache_entries: DEFAULT_ITEM_CACHE_ENTRIES,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Attribution {
    /// Item attribute naming who made the change, read from the new image,
    /// else the old one. Unset: entries have `actor: null` (but for TTL).
    pub actor_attribute: Option<String>,
    /// Item attribute carrying a request or transaction id, read from the new
    /// image, else the old one, into each entry's `correlation`
    /// (`query --correlation ID`). Unset: `correlation` is null.
    pub correlation_attribute: Option<String>,
    /// Where a trail with DynamoDB data events delivers its log files: the
    /// IAM principal of each write is joined to its entry. Unset: no
    /// CloudTrail attribution.
    pub cloudtrail: Option<CloudTrail>,
}

/// `[attribution.cloudtrail]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CloudTrail {
    /// The trail's S3 bucket (required).
    pub bucket: String,
    /// The trail's key prefix, before `AWSLogs/` ("" when the trail has none).
    pub prefix: String,
    /// Only log files of this region (`AWSLogs/<account>/CloudTrail/<region>/`);
    /// default: the daemon's own region (AWS_REGION).
    pub region: Option<String>,
    /// How often the bucket is listed for new log files.
    pub poll_interval_secs: u64,
    /// How long after a write its data event may still arrive (CloudTrail
    /// delivers within about 15 minutes). An entry with no event by then is
    /// counted as unmatched; an event with no entry by then is dropped.
    pub delivery_window_secs: u64,
    /// How far apart an event's time and its entry's may be (both have whole
    /// seconds at best).
    pub match_tolerance_secs: u64,
}

impl Default for CloudTrail {
    fn default() -> Self {
        CloudTrail {
            bucket: String::new(),
            prefix: String::new(),
            region: None,
            poll_interval_secs: 60,
            delivery_window_secs: 1200,
            match_tolerance_secs: 2,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    pub streams_table: String,
    pub shards_table: String,
    pub audit_table: String,
}

impl Default for Storage {
    fn default() -> Self {
        let names = TableNames::default();
        Storage {
            streams_table: names.streams,
            shards_table: names.shards,
            audit_table: names.audit,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Polling {
    pub get_records_per_shard_per_sec: u32,
    pub describe_stream_per_sec: u32,
    pub get_records_limit: u32,
    pub idle_poll_min_ms: u64,
    pub idle_poll_max_ms: u64,
    pub full_listing_interval_secs: u64,
    pub max_concurrent_shards: usize,
    pub retry_min_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for Polling {
    fn default() -> Self {
        Polling {
            get_records_per_shard_per_sec: 4,
            describe_stream_per_sec: 5,
            get_records_limit: 1000,
            idle_poll_min_ms: 250,
            idle_poll_max_ms: 5000,
            full_listing_interval_secs: 60,
            max_concurrent_shards: 64,
            retry_min_ms: 100,
            retry_max_ms: 5000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Shutdown {
    pub grace_ms: u64,
}

impl Default for Shutdown {
    fn default() -> Self {
        // Under the 5 s that orchestrators and our contract allow, with room
        // to exit after the grace period ends.
        Shutdown { grace_ms: 4000 }
    }
}

/// `ddb-audit serve`: where it listens and whom it answers.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Serve {
    /// Address to bind. Loopback by default: the API speaks plain HTTP and
    /// belongs behind a TLS-terminating load balancer or proxy.
    pub listen: String,
    /// Hex SHA-256 digests of accepted bearer tokens (named `token_sha256[i]` in logs).
    pub token_sha256: Vec<String>,
    /// Named tokens, optionally limited to some tables.
    pub tokens: Vec<ServeToken>,
    /// Origins allowed to call the API from another site's page. Empty: no CORS headers.
    pub cors_origins: Vec<String>,
    pub page_size: usize,
    pub max_page_size: usize,
    pub request_timeout_ms: u64,
}

impl Default for Serve {
    fn default() -> Self {
        Serve {
            listen: "127.0.0.1:8080".into(),
            token_sha256: Vec::new(),
            tokens: Vec::new(),
            cors_origins: Vec::new(),
            page_size: 100,
            max_page_size: 1000,
            request_timeout_ms: 30_000,
        }
    }
}

/// Metrics and health (see `observe`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Observability {
    /// Address of the /metrics, /healthz and /readyz listener, e.g.
    /// "0.0.0.0:9090". Unset: no listener (and `healthcheck` cannot work).
    pub listen: Option<String>,
    /// Print CloudWatch Embedded Metric Format lines on stdout.
    pub emf: bool,
    /// The CloudWatch namespace of the EMF metrics.
    pub emf_namespace: String,
    /// How often EMF lines are printed.
    pub emf_interval_secs: u64,
}

impl Default for Observability {
    fn default() -> Self {
        Observability {
            listen: None,
            emf: false,
            emf_namespace: "ddb-audit".into(),
            emf_interval_secs: 60,
        }
    }
}

/// One `[[serve.tokens]]` entry.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServeToken {
    /// Shown in the request log instead of the token.
    pub name: String,
    /// Hex SHA-256 digest of the token.
    pub sha256: String,
    /// The only tables this token may read; unset: all.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
}

impl Observability {
    /// The parsed `listen` address (validated at load).
    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.listen.as_deref().and_then(|a| a.parse().ok())
    }
}

/// The environment variable that may hold the whole TOML config.
pub const CONFIG_TOML_ENV: &str = "DDB_AUDIT_CONFIG_TOML";

impl Config {
    /// The config from `path` if given, else from the TOML in
    /// `DDB_AUDIT_CONFIG_TOML`; one of the two, not both.
    pub fn load_from(path: Option<&Path>, env_toml: Option<&str>) -> Result<Config, ConfigError> {
        match (path, env_toml) {
            (Some(p), Some(_)) => Err(ConfigError::Ambiguous {
                path: p.display().to_string(),
            }),
            (Some(p), None) => Config::load(p),
            (None, Some(text)) => Config::parse(text, CONFIG_TOML_ENV),
            (None, None) => Err(ConfigError::Missing),
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// `origin` names the file in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// The compiled `tables`, `exclude_tables` and `[discovery] tags`
    /// (checked at load, so an error here is a config built by hand).
    pub fn selection(&self) -> Result<TableSelection, PatternError> {
        let own = self.table_names();
        TableSelection::new(
            &self.tables,
            &self.exclude_tables,
            self.discovery.tags.clone(),
            vec![own.streams, own.shards, own.audit],
        )
    }

    /// The tables named exactly in `tables` (patterns left out).
    pub fn exact_tables(&self) -> Vec<String> {
        self.exact_tables_ref().cloned().collect()
    }

    fn exact_tables_ref(&self) -> impl Iterator<Item = &String> {
        self.tables.iter().filter(|t| !is_pattern(t))
    }

    pub fn table_names(&self) -> TableNames {
        TableNames {
            streams: self.storage.streams_table.clone(),
            shards: self.storage.shards_table.clone(),
            audit: self.storage.audit_table.clone(),
        }
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            path: origin.to_string(),
            key: key.to_string(),
            problem,
        };
        if self.tables.is_empty() {
            return Err(invalid(
                "tables",
                "is empty: list at least one table to audit, e.g. tables = [\"orders\"]".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for table in &self.tables {
            if is_pattern(table) {
                TableSelection::check_pattern(table)
                    .map_err(|e| invalid("tables", format!("contains {e}")))?;
            } else if !valid_table_name(table) {
                return Err(invalid(
                    "tables",
                    format!("contains {table:?}, which is not a DynamoDB table name (3-255 characters of a-z A-Z 0-9 _ - .), nor a glob pattern (with * ? or [...])"),
                ));
            }
            if !seen.insert(table) {
                return Err(invalid("tables", format!("lists {table:?} twice")));
            }
        }
        for pattern in &self.exclude_tables {
            TableSelection::check_pattern(pattern)
                .map_err(|e| invalid("exclude_tables", format!("contains {e}")))?;
        }
        let selection = self
            .selection()
            .map_err(|e| invalid("tables", format!("contains {e}")))?;
        if let Some(both) = selection.exact().iter().find(|t| selection.is_excluded(t)) {
            return Err(invalid(
                "exclude_tables",
                format!("excludes {both:?}, which `tables` names exactly: remove it from one of the two"),
            ));
        }
        let d = &self.discovery;
        if !d.tags.is_empty() && !selection.needs_listing() {
            return Err(invalid(
                "discovery.tags",
                "selects among the tables a pattern of `tables` finds, and `tables` has no pattern: \
                 add one (e.g. \"*\"), or leave the key out"
                    .into(),
            ));
        }
        if d.tags.keys().any(|k| k.is_empty() || k.len() > 128) {
            return Err(invalid(
                "discovery.tags",
                "has a key that is empty or longer than 128 characters (an AWS tag key)".into(),
            ));
        }
        if let Some(region) = &d.home_region {
            if region.is_empty()
                || !region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(invalid(
                    "discovery.home_region",
                    format!("= {region:?} is not an AWS region name, e.g. \"eu-west-1\""),
                ));
            }
        }
        for (key, attr) in [
            (
                "attribution.actor_attribute",
                &self.attribution.actor_attribute,
            ),
            (
                "attribution.correlation_attribute",
                &self.attribution.correlation_attribute,
            ),
        ] {
            if attr.as_deref() == Some("") {
                return Err(invalid(
                    key,
                    "is empty: name an attribute, or leave the key out".into(),
                ));
            }
        }
        if let Some(ct) = &self.attribution.cloudtrail {
            let b = &ct.bucket;
            if !(3..=63).contains(&b.len())
                || !b
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'))
            {
                return Err(invalid(
                    "attribution.cloudtrail.bucket",
                    format!("= {b:?} is not an S3 bucket name (3-63 characters of a-z 0-9 . -): name the trail's bucket"),
                ));
            }
            if ct.prefix.starts_with('/') || ct.prefix.contains("AWSLogs") {
                return Err(invalid(
                    "attribution.cloudtrail.prefix",
                    format!("= {:?}: give the trail's own prefix, without a leading `/` and without `AWSLogs/` (\"\" for none)", ct.prefix),
                ));
            }
            let window = ct.delivery_window_secs;
            for (key, value, lo, hi) in [
                (
                    "attribution.cloudtrail.poll_interval_secs",
                    ct.poll_interval_secs,
                    1,
                    3600,
                ),
                (
                    "attribution.cloudtrail.delivery_window_secs",
                    window,
                    1,
                    86_400,
                ),
                (
                    "attribution.cloudtrail.match_tolerance_secs",
                    ct.match_tolerance_secs,
                    0,
                    60,
                ),
            ] {
                if !(lo..=hi).contains(&value) {
                    return Err(invalid(
                        key,
                        format!("= {value} is out of range {lo}..={hi} (seconds)"),
                    ));
                }
            }
        }
        for (key, name) in [
            ("storage.streams_table", &self.storage.streams_table),
            ("storage.shards_table", &self.storage.shards_table),
            ("storage.audit_table", &self.storage.audit_table),
        ] {
            if !valid_table_name(name) {
                return Err(invalid(
                    key,
                    format!("= {name:?} is not a DynamoDB table name (3-255 characters of a-z A-Z 0-9 _ - .)"),
                ));
            }
            if self.tables.contains(name) {
                return Err(invalid(
                    key,
                    format!("= {name:?} is also listed in `tables`: the audit trail must not audit itself"),
                ));
            }
        }
        let p = &self.polling;
        let in_range = |key: &str, value: u64, lo: u64, hi: u64, why: &str| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(invalid(
                    key,
                    format!("= {value} is out of range {lo}..={hi} ({why})"),
                ))
            }
        };
        in_range(
            "polling.get_records_per_shard_per_sec",
            p.get_records_per_shard_per_sec.into(),
            1,
            5,
            "AWS allows 5 GetRecords calls per shard per second",
        )?;
        in_range(
            "polling.describe_stream_per_sec",
            p.describe_stream_per_sec.into(),
            1,
            10,
            "AWS allows 10 DescribeStream calls per second",
        )?;
        in_range(
            "polling.get_records_limit",
            p.get_records_limit.into(),
            1,
            1000,
            "GetRecords returns at most 1000 records",
        )?;
        in_range(
            "polling.idle_poll_min_ms",
            p.idle_poll_min_ms,
            1,
            60_000,
            "milliseconds",
        )?;
        in_range(
            "polling.idle_poll_max_ms",
            p.idle_poll_max_ms,
            p.idle_poll_min_ms,
            600_000,
            "milliseconds, at least idle_poll_min_ms; iterators expire after 15 minutes",
        )?;
        in_range(
            "polling.full_listing_interval_secs",
            p.full_listing_interval_secs,
            1,
            86_400,
            "seconds",
        )?;
        in_range(
            "polling.max_concurrent_shards",
            p.max_concurrent_shards as u64,
            1,
            100_000,
            "shards",
        )?;
        in_range(
            "polling.retry_min_ms",
            p.retry_min_ms,
            1,
            60_000,
            "milliseconds",
        )?;
        in_range(
            "polling.retry_max_ms",
            p.retry_max_ms,
            p.retry_min_ms,
            600_000,
            "milliseconds, at least retry_min_ms",
        )?;
        in_range(
            "discovery.interval_secs",
            self.discovery.interval_secs,
            1,
            86_400,
            "seconds",
        )?;
        let o = &self.observability;
        if let Some(listen) = &o.listen {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(
                    "observability.listen",
                    format!("= {listen:?} is not an address and port, e.g. \"0.0.0.0:9090\" or \"127.0.0.1:9090\""),
                ));
            }
        }
        if o.emf_namespace.is_empty() || o.emf_namespace.len() > 255 {
            return Err(invalid(
                "observability.emf_namespace",
                "must be 1 to 255 characters (a CloudWatch namespace)".into(),
            ));
        }
        in_range(
            "observability.emf_interval_secs",
            o.emf_interval_secs,
            1,
            3600,
            "seconds",
        )?;
        in_range(
            "proof.digest_interval_secs",
            self.proof.digest_interval_secs,
            1,
            86_400,
            "seconds",
        )?;
        in_range(
            "proof.item_cache_entries",
            self.proof.item_cache_entries as u64,
            1,
            100_000_000,
            "items",
        )?;
        if let Some(days) = self.retention.days {
            in_range("retention.days", days, 1, 36_500, "days")?;
        }
        for (key, path) in [
            ("proof.signing_key_file", &self.proof.signing_key_file),
            ("proof.public_key_file", &self.proof.public_key_file),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(invalid(
                    key,
                    "is empty: name an Ed25519 PEM file, or leave the key out".into(),
                ));
            }
        }
        if let Some(id) = &self.proof.kms_key_id {
            if id.trim().is_empty() {
                return Err(invalid(
                    "proof.kms_key_id",
                    "is empty: name a KMS key (id, ARN or alias/NAME), or leave the key out".into(),
                ));
            }
            if self.proof.signing_key_file.is_some() {
                return Err(invalid(
                    "proof.kms_key_id",
                    "is set together with `proof.signing_key_file`: digests have one signer; \
                     keep one of the two keys"
                        .into(),
                ));
            }
        }
        in_range(
            "shutdown.grace_ms",
            self.shutdown.grace_ms,
            0,
            60_000,
            "milliseconds",
        )?;
        self.serve.validate(&invalid)?;
        self.validate_redaction(&invalid)?;
        Ok(())
    }

    fn validate_redaction(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let r = &self.redaction;
        let mut all = Vec::new();
        for p in &r.paths {
            all.push(("redaction.paths".to_string(), p));
        }
        for (table, paths) in &r.tables {
            let key = format!("redaction.tables.{table}");
            let selected = self.selection().is_ok_and(|s| s.name_matches(table));
            if !selected {
                return Err(invalid(
                    &key,
                    format!("names {table:?}, which is not in `tables`: list it there, or remove these paths"),
                ));
            }
            all.extend(paths.iter().map(|p| (key.clone(), p)));
        }
        for (key, text) in &all {
            let pattern = crate::redact::Pattern::parse(text, key).map_err(|e| match e {
                crate::redact::RedactError::BadPath { reason, .. } => invalid(
                    key,
                    format!("has {text:?}: {reason} (a document path such as card.number or contacts[*].phone)"),
                ),
                other => invalid(key, other.to_string()),
            })?;
            // The actor and the correlation id are copied into every entry
            // as text: a path covering them would leak what it redacts.
            for (attr_key, attr) in [
                (
                    "attribution.actor_attribute",
                    &self.attribution.actor_attribute,
                ),
                (
                    "attribution.correlation_attribute",
                    &self.attribution.correlation_attribute,
                ),
            ] {
                if let Some(attr) = attr.as_deref().filter(|a| pattern.starts_at(a)) {
                    return Err(invalid(
                        key,
                        format!("has {text:?}, which covers `{attr}`, the `{attr_key}` copied into every entry as plain text: remove one of the two"),
                    ));
                }
            }
        }
        match &r.key_file {
            None if !all.is_empty() => Err(invalid(
                "redaction.key_file",
                "is missing, and `redaction.paths` needs it: key_file = \"redaction.key\", made with `openssl rand -hex 32 > redaction.key`".into(),
            )),
            Some(path) if path.as_os_str().is_empty() => Err(invalid(
                "redaction.key_file",
                "is empty: name the key file, or leave the key out".into(),
            )),
            _ => Ok(()),
        }
    }
}

impl Polling {
    pub fn idle_min(&self) -> Duration {
        Duration::from_millis(self.idle_poll_min_ms)
    }
    pub fn idle_max(&self) -> Duration {
        Duration::from_millis(self.idle_poll_max_ms)
    }
    pub fn full_listing_interval(&self) -> Duration {
        Duration::from_secs(self.full_listing_interval_secs)
    }
    pub fn retry_min(&self) -> Duration {
        Duration::from_millis(self.retry_min_ms)
    }
    pub fn retry_max(&self) -> Duration {
        Duration::from_millis(self.retry_max_ms)
    }
}

impl Serve {
    fn validate(&self, invalid: &dyn Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "serve.listen",
                format!(
                    "= {:?} is not an address to bind: write IP:PORT, e.g. \"127.0.0.1:8080\"",
                    self.listen
                ),
            ));
        }
        let digest = |key: &str, d: &str| {
            if d.len() == 64 && d.chars().all(|c| c.is_ascii_hexdigit()) {
                Ok(())
            } else {
                Err(invalid(
                    key,
                    "holds something that is not a hex SHA-256 digest (64 hex digits): \
                     store `printf %s \"$TOKEN\" | sha256sum`, never the token itself"
                        .into(),
                ))
            }
        };
        for d in &self.token_sha256 {
            digest("serve.token_sha256", d)?;
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.tokens {
            digest("serve.tokens.sha256", &t.sha256)?;
            if t.name.is_empty() || !names.insert(t.name.as_str()) {
                return Err(invalid(
                    "serve.tokens.name",
                    format!(
                        "{:?} is empty or used twice: give each token its own name",
                        t.name
                    ),
                ));
            }
            if let Some(tables) = &t.tables {
                if let Some(bad) = tables.iter().find(|n| !valid_table_name(n)) {
                    return Err(invalid(
                        "serve.tokens.tables",
                        format!(
                            "of token {:?} contains {bad:?}, which is not a DynamoDB table name",
                            t.name
                        ),
                    ));
                }
            }
        }
        for origin in &self.cors_origins {
            if !(origin.starts_with("https://") || origin.starts_with("http://"))
                || origin.ends_with('/')
            {
                return Err(invalid(
                    "serve.cors_origins",
                    format!("contains {origin:?}: write an origin as scheme://host[:port], e.g. \"https://audit.example.com\""),
                ));
            }
        }
        if self.max_page_size == 0 || self.max_page_size > 10_000 {
            return Err(invalid(
                "serve.max_page_size",
                format!(
                    "= {} is out of range 1..=10000 (entries)",
                    self.max_page_size
                ),
            ));
        }
        if self.page_size == 0 || self.page_size > self.max_page_size {
            return Err(invalid(
                "serve.page_size",
                format!(
                    "= {} is out of range 1..=max_page_size ({})",
                    self.page_size, self.max_page_size
                ),
            ));
        }
        if !(100..=600_000).contains(&self.request_timeout_ms) {
            return Err(invalid(
                "serve.request_timeout_ms",
                format!(
                    "= {} is out of range 100..=600000 (milliseconds)",
                    self.request_timeout_ms
                ),
            ));
        }
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

fn valid_table_name(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

// Constructors from the config of types that live in lower layers (redaction,
// proof): the config knows them, they do not know the config.

impl Redactions {
    /// From `[redaction]`; reads the key file when any table has paths.
    /// Empty when none does.
    pub fn from_config(config: &Config) -> Result<Redactions, RedactError> {
        let r = &config.redaction;
        let patterns = |table: &str| -> Result<Vec<Pattern>, RedactError> {
            let mut out = Vec::new();
            for p in &r.paths {
                out.push(Pattern::parse(p, "redaction.paths")?);
            }
            for p in r.tables.get(table).into_iter().flatten() {
                out.push(Pattern::parse(p, &format!("redaction.tables.{table}"))?);
            }
            Ok(out)
        };
        let mut per_table = Vec::new();
        let mut named: Vec<&String> = config.exact_tables_ref().collect();
        // A table a pattern finds may have paths of its own too.
        named.extend(r.tables.keys().filter(|t| !config.tables.contains(t)));
        for table in named {
            let p = patterns(table)?;
            if !p.is_empty() {
                per_table.push((table.clone(), p));
            }
        }
        // Tables a pattern finds later get `paths`: a value redacted in
        // one table must never leak from another.
        let discovered = config.tables.iter().any(|t| is_pattern(t)) && !r.paths.is_empty();
        if per_table.is_empty() && !discovered {
            return Ok(Redactions::default());
        }
        let key = Arc::new(RedactionKey::load(
            r.key_file.as_deref().ok_or(RedactError::KeyMissing)?,
        )?);
        let mut redactions = Redactions::new(
            per_table
                .into_iter()
                .map(|(t, p)| (t, Redactor::new(key.clone(), p))),
        );
        if discovered {
            let mut common = Vec::new();
            for p in &r.paths {
                common.push(Pattern::parse(p, "redaction.paths")?);
            }
            redactions = redactions.otherwise(Redactor::new(key, common));
        }
        Ok(redactions)
    }
}

impl PublicKey {
    /// The key the config names for checking: `[proof] public_key_file`,
    /// else the public half of `[proof] signing_key_file`, else none.
    pub fn from_config(proof: &Proof) -> Result<Option<Self>, ProofError> {
        let (key, path) = match (&proof.public_key_file, &proof.signing_key_file) {
            (Some(p), _) => ("public_key_file", p),
            (None, Some(p)) => ("signing_key_file", p),
            (None, None) => return Ok(None),
        };
        Self::from_file(path)
            .map(Some)
            .map_err(|e| ProofError::Key(format!("[proof] {key}: {e}")))
    }
}

/// The names of the daemon's own DynamoDB tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableNames {
    /// One row per (audited table, stream): the seed article's `streams`.
    pub streams: String,
    /// One row per (stream, shard): the seed article's `streams_shards`.
    pub shards: String,
    /// The audit entries and gaps.
    pub audit: String,
}

impl Default for TableNames {
    fn default() -> Self {
        TableNames {
            streams: "ddb-audit-streams".into(),
            shards: "ddb-audit-shards".into(),
            audit: "ddb-audit-entries".into(),
        }
    }
}

#[cfg(test)]
mod tests;
