use super::*;

fn err(text: &str) -> String {
    match Config::parse(text, "t.toml") {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// Each config is refused with a message holding every one of its words.
fn refused(cases: &[(&str, &[&str])]) {
    for (text, words) in cases {
        let e = err(text);
        for word in *words {
            assert!(e.contains(word), "{e}");
        }
    }
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = Config::parse("tables = [\"orders\"]", "t.toml").unwrap();
    assert_eq!(c.tables, vec!["orders"]);
    assert_eq!(c.attribution.actor_attribute, None);
    assert_eq!(c.polling.get_records_per_shard_per_sec, 4);
    assert_eq!(c.polling.describe_stream_per_sec, 5);
    assert_eq!(c.polling.full_listing_interval_secs, 60);
    assert_eq!(c.table_names(), TableNames::default());
}

#[test]
fn contract_keys_mean_what_the_brief_says() {
    let c = Config::parse(
        "tables = [\"orders\", \"flags\"]\n[attribution]\nactor_attribute = \"updated_by\"\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(c.tables, vec!["orders", "flags"]);
    assert_eq!(c.attribution.actor_attribute.as_deref(), Some("updated_by"));
    let c = Config::parse(
        "tables = [\"orders\"]\n[attribution]\ncorrelation_attribute = \"request_id\"\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        c.attribution.correlation_attribute.as_deref(),
        Some("request_id")
    );
    let e = err("tables = [\"orders\"]\n[attribution]\ncorrelation_attribute = \"\"\n");
    assert!(e.contains("attribution.correlation_attribute"), "{e}");
}

#[test]
fn cloudtrail_attribution_has_defaults_and_checked_values() {
    let c = Config::parse(
        "tables = [\"orders\"]\n[attribution.cloudtrail]\nbucket = \"my-trail\"\n",
        "t.toml",
    )
    .unwrap();
    let ct = c.attribution.cloudtrail.unwrap();
    assert_eq!((ct.bucket.as_str(), ct.prefix.as_str()), ("my-trail", ""));
    assert_eq!(
        (
            ct.poll_interval_secs,
            ct.delivery_window_secs,
            ct.match_tolerance_secs
        ),
        (60, 1200, 2)
    );
    let ct = "tables = [\"orders\"]\n[attribution.cloudtrail]\n";
    refused(&[
        (
            &format!("{ct}prefix = \"x\"\n"),
            &["attribution.cloudtrail.bucket"],
        ),
        (
            &format!("{ct}bucket = \"b-1\"\nprefix = \"p/AWSLogs/\"\n"),
            &["attribution.cloudtrail.prefix"],
        ),
        (
            &format!("{ct}bucket = \"b-1\"\ndelivery_window_secs = 0\n"),
            &["delivery_window_secs", "1..=86400"],
        ),
        (&format!("{ct}bucket = \"b-1\"\nbogus = 1\n"), &["bogus"]),
    ]);
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    assert!(err("tables = [\"orders\"]\nbogus = 1").contains("bogus"));
    assert!(err("tables = [\"orders\"]\n[polling]\nbogus = 1").contains("bogus"));
    assert!(err("tables = [\"orders\"]\n[attribution]\nactor = \"x\"").contains("actor"));
}

#[test]
fn serve_section_defaults_to_loopback_and_checks_digests() {
    let c = Config::parse("tables = [\"orders\"]", "t.toml").unwrap();
    assert_eq!(c.serve.listen, "127.0.0.1:8080");
    assert!(c.serve.token_sha256.is_empty() && c.serve.cors_origins.is_empty());
    refused(&[
        (
            "tables = [\"orders\"]\n[serve]\ntoken_sha256 = [\"secret\"]",
            &["serve.token_sha256", "sha256sum"],
        ),
        (
            "tables = [\"orders\"]\n[serve]\nlisten = \"localhost\"",
            &["serve.listen", "IP:PORT"],
        ),
        (
            "tables = [\"orders\"]\n[serve]\ncors_origins = [\"*\"]",
            &["serve.cors_origins"],
        ),
    ]);
    let d = "ab".repeat(32);
    let c = Config::parse(
        &format!("tables = [\"orders\"]\n[[serve.tokens]]\nname = \"support\"\nsha256 = \"{d}\"\ntables = [\"orders\"]\n"),
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        c.serve.tokens[0].tables.as_deref(),
        Some(&["orders".to_string()][..])
    );
}

#[test]
fn bad_values_name_the_key_and_the_fix() {
    refused(&[
        ("tables = []", &["`tables`", "at least one"]),
        (
            "tables = [\"orders\"]\n[polling]\nget_records_per_shard_per_sec = 9",
            &["polling.get_records_per_shard_per_sec", "1..=5"],
        ),
        (
            "tables = [\"orders\"]\n[polling]\nidle_poll_min_ms = 500\nidle_poll_max_ms = 100",
            &["polling.idle_poll_max_ms"],
        ),
        ("tables = [\"orders\", \"orders\"]", &["twice"]),
        ("tables = [\"ddb-audit-entries\"]", &["storage.audit_table"]),
        ("tables = [\"a b\"]", &["not a DynamoDB table name"]),
        ("tables = \"orders\"", &["tables"]),
        ("tables = [\"orders\"", &["t.toml"]),
        (
            "tables = [\"orders\"]\n[observability]\nlisten = \"9090\"",
            &["observability.listen"],
        ),
        (
            "tables = [\"orders\"]\n[observability]\nemf_interval_secs = 0",
            &["observability.emf_interval_secs"],
        ),
        (
            "tables = [\"orders\"]\n[proof]\nsigning_key_file = \"k.pem\"\nkms_key_id = \"alias/d\"",
            &["proof.kms_key_id", "proof.signing_key_file"],
        ),
        (
            "tables = [\"orders\"]\n[proof]\nkms_key_id = \" \"",
            &["proof.kms_key_id", "empty"],
        ),
    ]);
}

#[test]
fn tables_take_patterns_excludes_and_tags() {
    let c = Config::parse(
        "tables = [\"orders\", \"billing-*\"]\nexclude_tables = [\"*-tmp\"]\n\
         [discovery]\ntags = { audit = \"on\" }\ninterval_secs = 30\nhome_region = \"eu-west-1\"\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(c.exact_tables(), ["orders"]);
    assert_eq!(c.discovery.interval_secs, 30);
    let s = c.selection().unwrap();
    assert!(s.needs_listing() && s.needs_tags());
    assert!(s.name_matches("billing-eu") && !s.name_matches("billing-eu-tmp"));
    // Exact names keep their meaning, and need no listing.
    let c = Config::parse("tables = [\"orders\"]", "t.toml").unwrap();
    assert!(!c.selection().unwrap().needs_listing());
    assert_eq!(c.discovery, Discovery::default());
    refused(&[
        ("tables = [\"billing-[\"]", &["`tables`", "billing-["]),
        (
            "tables = [\"*\"]\nexclude_tables = [\"[x\"]",
            &["`exclude_tables`", "[x"],
        ),
        (
            "tables = [\"orders-tmp\"]\nexclude_tables = [\"*-tmp\"]",
            &["`exclude_tables`", "orders-tmp"],
        ),
        (
            "tables = [\"orders\"]\n[discovery]\ntags = { audit = \"on\" }",
            &["`discovery.tags`", "no pattern"],
        ),
        (
            "tables = [\"*\"]\n[discovery]\ninterval_secs = 0",
            &["discovery.interval_secs"],
        ),
        (
            "tables = [\"*\"]\n[discovery]\nhome_region = \"EU West\"",
            &["discovery.home_region"],
        ),
        ("tables = [\"*\"]\n[discovery]\nbogus = 1", &["bogus"]),
    ]);
}

#[test]
fn the_config_may_come_from_the_environment_but_not_twice() {
    let c = Config::load_from(
        None,
        Some("tables = [\"orders\"]\n[observability]\nlisten = \"127.0.0.1:9090\"\n"),
    )
    .unwrap();
    assert_eq!(
        c.observability.listen_addr(),
        Some("127.0.0.1:9090".parse().unwrap())
    );
    assert!(!c.observability.emf);
    let e = Config::load_from(None, Some("tables = 3"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("DDB_AUDIT_CONFIG_TOML"), "{e}");
    let e = Config::load_from(Some(Path::new("x.toml")), Some("tables = []"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("both set"), "{e}");
    let e = Config::load_from(None, None).unwrap_err().to_string();
    assert!(
        e.contains("--config") && e.contains("DDB_AUDIT_CONFIG_TOML"),
        "{e}"
    );
}

#[test]
fn the_example_config_at_the_repository_root_is_accepted_as_it_is() {
    let c = Config::parse(
        include_str!("../../ddb-audit.example.toml"),
        "ddb-audit.example.toml",
    )
    .unwrap_or_else(|e| panic!("ddb-audit.example.toml must stay valid: {e}"));
    assert_eq!(c.tables, vec!["orders"]);
    assert_eq!(c.attribution.actor_attribute.as_deref(), Some("updated_by"));
    assert_eq!(c.table_names(), TableNames::default());
    // The health check needs a listener; the documented defaults hold.
    assert_eq!(
        c.observability.listen_addr(),
        Some("127.0.0.1:9090".parse().unwrap())
    );
    assert_eq!(c.shutdown, Shutdown::default());
    assert_eq!(c.proof, Proof::default());
    assert_eq!(c.polling, Polling::default());
    assert_eq!(c.serve, Serve::default());
    assert_eq!(c.retention.days, None);
    assert!(c.redaction.paths.is_empty());
}
