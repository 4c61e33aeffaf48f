//! `init`, `run`, `serve`, `healthcheck`: the daemon's own commands.

use ddb_audit::stream::aws::AwsStream;

use super::*;

/// `protect`: turn on deletion protection and point-in-time recovery.
pub(crate) async fn init(config: Config, protect: bool) -> Result<()> {
    // Cancelled from outside (dispatch_until_signal) on a signal.
    let never = tokio_util::sync::CancellationToken::new();
    let store = store(&config).await?;
    let report = store
        .init(&never)
        .await
        .context("creating ddb-audit's tables")?
        .context("stopped before the tables were ACTIVE")?;
    for table in &report.created {
        outln!("created table {table}")?;
    }
    for table in &report.existed {
        outln!("table {table} already exists")?;
    }
    for index in &report.indexes_added {
        outln!("added index {index}")?;
    }
    if protect {
        for note in store.protect_tables().await? {
            outln!("{note}")?;
        }
    } else {
        outln!(
            "deletion protection and point-in-time recovery left as they are (--no-protection)"
        )?;
    }
    if config.retention.days.is_some() {
        let note = store
            .enable_retention()
            .await
            .context("enabling TTL for `retention.days`")?;
        outln!("{note}")?;
    }
    Ok(())
}

pub(crate) async fn run(config: Config) -> Result<()> {
    let sdk = sdk().await?;
    let stream = ddb_audit::stream::observed::Observed::new(AwsStream::new(
        ddb_audit::aws::dynamodb_client(&sdk),
        ddb_audit::aws::streams_client(&sdk),
    ));
    let store = DynamoStore::new(ddb_audit::aws::dynamodb_client(&sdk), config.table_names())
        .with_retention(config.retention.days);
    check_redacted_keys(
        &store,
        &ddb_audit::redact::Redactions::from_config(&config)?,
    )
    .await?;
    let shutdown = Shutdown::new();
    let signer = signer(&config, &sdk, &shutdown.abort).await?;
    let retry = Settings::from_config(&config).retry_policy();
    let (audit, cloudtrail) = ddb_audit::attribution::start(&config, &sdk, &store, retry);
    let grace = std::time::Duration::from_millis(config.shutdown.grace_ms);
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        match wait_for_signal().await {
            Ok(name) => tracing::info!(signal = name, "shutting down: finishing in-flight writes"),
            Err(e) => tracing::error!(error = %e, "cannot listen for signals; shutting down"),
        }
        on_signal.begin(grace);
    });
    let seams = ddb_audit::daemon::Seams {
        stream,
        store,
        audit,
        signer,
        cloudtrail,
    };
    ddb_audit::daemon::run(&config, seams, shutdown).await?;
    Ok(())
}

/// Keys cannot be redacted: refuse to start when a path names a key
/// attribute. A table that cannot be described now is left to the
/// supervisor, which reports it (it is not audited until it can be).
pub(crate) async fn check_redacted_keys(
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

pub(crate) async fn serve(config: Config) -> Result<()> {
    let store = store(&config).await?;
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

/// The config comes as `run` takes it (`load`: --config FILE,
/// DDB_AUDIT_CONFIG, or the whole TOML in DDB_AUDIT_CONFIG_TOML), so a
/// container's HEALTHCHECK, which runs with the container's environment and
/// no arguments, sees the config `run` got from that environment.
/// The config the health check reads: as given (--config, DDB_AUDIT_CONFIG,
/// DDB_AUDIT_CONFIG_TOML), else the file the container's main process was
/// started with (`run --config FILE` as PID 1, which the image's
/// argument-less HEALTHCHECK cannot otherwise see).
pub(crate) fn healthcheck_config(given: ConfigArg) -> ConfigArg {
    let given_any =
        given.config.is_some() || std::env::var_os(ddb_audit::config::CONFIG_TOML_ENV).is_some();
    if given_any {
        return given;
    }
    let from_pid1 = std::fs::read("/proc/1/cmdline")
        .ok()
        .and_then(|cmdline| run_config_of(&cmdline));
    ConfigArg {
        config: from_pid1.or(given.config),
    }
}

/// The `--config FILE` (or `-c FILE`, `--config=FILE`) of a `ddb-audit run`
/// command line as /proc gives it (arguments separated by NULs).
fn run_config_of(cmdline: &[u8]) -> Option<PathBuf> {
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let program = args.first()?;
    let is_us = std::path::Path::new(program)
        .file_name()
        .is_some_and(|n| n == "ddb-audit");
    if !is_us || !args.iter().any(|a| a == "run") {
        return None;
    }
    args.iter().enumerate().find_map(|(i, a)| {
        if let Some(file) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(file));
        }
        (a == "--config" || a == "-c")
            .then(|| args.get(i + 1).map(PathBuf::from))
            .flatten()
    })
}

pub(crate) async fn healthcheck(config: Config, path: String) -> Result<()> {
    let Some(listen) = config.observability.listen_addr() else {
        anyhow::bail!(
            "the config sets no `[observability] listen`, so `run` serves no {path} to ask: add \
             `listen = \"0.0.0.0:9090\"` under `[observability]` (in a container; \
             \"127.0.0.1:9090\" on a host) to the config `run` is given, and give the health check \
             the same one (--config FILE, DDB_AUDIT_CONFIG or DDB_AUDIT_CONFIG_TOML)"
        );
    };
    let (code, body) =
        observe::http::get_status(listen, &path, std::time::Duration::from_secs(5)).await?;
    out!("{body}")?;
    if !body.ends_with('\n') {
        outln!()?;
    }
    if code == 200 {
        Ok(())
    } else {
        anyhow::bail!("{path} answered {code}: {}", body.trim())
    }
}

/// How digests are signed: with the configured Ed25519 key, the KMS key
/// (its signing retries end with `abort`), or not at all.
async fn signer(
    config: &Config,
    sdk: &aws_config::SdkConfig,
    abort: &tokio_util::sync::CancellationToken,
) -> Result<Option<Arc<dyn ddb_audit::proof::sign::DigestSigner>>> {
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
    Ok(signer)
}

/// How digests are signed and written (see [`signer`]).
pub(crate) async fn digest_settings(
    config: &Config,
    sdk: &aws_config::SdkConfig,
    abort: &tokio_util::sync::CancellationToken,
) -> Result<ddb_audit::daemon::digests::DigestSettings> {
    let signer = signer(config, sdk, abort).await?;
    Ok(ddb_audit::daemon::digests::DigestSettings::from_config(
        config, signer,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_check_finds_run_s_config_on_its_command_line() {
        let line = |args: &[&str]| args.join("\0").into_bytes();
        for (args, want) in [
            (
                &["/ddb-audit", "run", "--config", "/etc/a.toml"][..],
                Some("/etc/a.toml"),
            ),
            (
                &["ddb-audit", "--log-format", "json", "run", "-c", "b.toml"][..],
                Some("b.toml"),
            ),
            (
                &["/usr/local/bin/ddb-audit", "run", "--config=/c.toml"][..],
                Some("/c.toml"),
            ),
            (&["/ddb-audit", "run"][..], None),
            (
                &["/ddb-audit", "serve", "--config", "/etc/a.toml"][..],
                None,
            ),
            (&["/bin/sh", "-c", "run --config x"][..], None),
        ] {
            assert_eq!(
                run_config_of(&line(args)),
                want.map(PathBuf::from),
                "{args:?}"
            );
        }
    }
}
