//! `redaction`: keys and commitments of `[redaction]`.

use super::*;

pub(crate) fn redaction(command: RedactionCommand) -> Result<()> {
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
            outln!("{}", redaction_key.commit(&value))?;
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
                outln!("equal")?;
                Ok(())
            } else {
                outln!("not equal")?;
                Err(ExitWith(1).into())
            }
        }
    }
}
