//! `verify`, `export`, `verify-bundle`, `public-key`: the proof side.

use super::*;

/// The key that checks digests: `--public-key`, else the config's
/// (`[proof] public_key_file`, else the signing key's public half, from the
/// PEM file or from KMS GetPublicKey), else none.
pub(crate) async fn public_key(
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
        let sdk = sdk().await?;
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

pub(crate) async fn verify(
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
    let store = store(&config).await?;
    // Nothing to check is not "intact": a typo'd table, or a trail not
    // written yet, is exit 2 with what there is to check.
    let with_a_trail = tables_with_a_trail(&config, &store).await.map_err(|e| {
        eprintln!("error: the trail could not be checked: {e:#}");
        ExitWith(2)
    })?;
    let nothing = match &table {
        Some(t) => !with_a_trail.contains(t),
        None => with_a_trail.is_empty(),
    };
    if nothing {
        let what = match &table {
            Some(t) => format!("no audit trail for table `{t}`"),
            None => "no audit trail yet (has `run` audited anything?)".to_string(),
        };
        eprintln!(
            "error: nothing to check: {what} ({})",
            table_choices(&config, &with_a_trail)
        );
        return Err(ExitWith(2).into());
    }
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
    let outcome = match verify_trail(&store, &request, progress).await {
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
            outln!("{}", serde_json::to_string(f)?)?;
        } else {
            outln!("{}", finding_line(f))?;
        }
    }
    let s = &outcome.summary;
    if json {
        outln!("{}", serde_json::to_string(s)?)?;
    } else {
        outln!(
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
        )?;
    }
    match s.exit_status {
        0 => Ok(()),
        code => Err(ExitWith(code as u8).into()),
    }
}

pub(crate) async fn export(item: ItemArgs, proof: PathBuf) -> Result<()> {
    let (config, table, key, store) = item_args(&item).await?;
    let fingerprint = public_key(None, Some(&config))
        .await?
        .map(|k| k.fingerprint());
    let bundle = ddb_audit::read::verify::export_bundle(&store, &table, &key, fingerprint).await?;
    let text = serde_json::to_string_pretty(&bundle)?;
    std::fs::write(&proof, text + "\n").with_context(|| format!("--proof {}", proof.display()))?;
    outln!(
        "wrote {} entries and {} digests to {}",
        bundle.entries.len(),
        bundle.digests.len(),
        proof.display()
    )?;
    Ok(())
}

pub(crate) fn verify_bundle(
    file: PathBuf,
    public_key_file: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    use ddb_audit::proof::bundle::{check_bundle, Bundle};
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
    let verdict = check_bundle(&bundle, key.as_ref());
    let findings = &verdict.findings;
    for f in findings {
        if json {
            outln!("{}", serde_json::to_string(f)?)?;
        } else {
            outln!("{}", finding_line(f))?;
        }
    }
    let code = exit_status(findings);
    let status = match code {
        0 => "intact",
        1 => "tampered",
        _ => "unverifiable",
    };
    // What is proven is said only of a bundle that is not tampered with.
    let span = verdict.span.as_ref().filter(|_| code != 1);
    let gaps: &[_] = if code == 1 { &[] } else { &verdict.gaps };
    if json {
        outln!(
            "{}",
            serde_json::json!({"summary": true, "status": status, "exit_status": code,
                "entries": bundle.entries.len(), "digests": bundle.digests.len(),
                "span": span, "proves": span.map(|s| s.statement()), "gaps": gaps})
        )?;
    } else {
        if let Some(span) = span {
            outln!("proves: {}", span.statement())?;
        }
        for gap in gaps {
            outln!("known loss: {}", gap.statement())?;
        }
        outln!(
            "{status}: {} entries of {} {} proven against {} digests",
            bundle.entries.len(),
            bundle.table,
            bundle.key,
            bundle.digests.len()
        )?;
    }
    match code {
        0 => Ok(()),
        code => Err(ExitWith(code as u8).into()),
    }
}
