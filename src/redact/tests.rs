use super::*;
use crate::entry::build_entry;
use serde_json::{json, Value};

fn key() -> Arc<RedactionKey> {
    Arc::new(RedactionKey::from_bytes(vec![b'k'; 32]).unwrap())
}

fn redactor(paths: &[&str]) -> Redactor {
    Redactor::new(
        key(),
        paths
            .iter()
            .map(|p| Pattern::parse(p, "redaction.paths").unwrap())
            .collect(),
    )
}

fn item(v: Value) -> Item {
    serde_json::from_value(v).unwrap()
}

fn value(v: Value) -> AttrValue {
    serde_json::from_value(v).unwrap()
}

fn commit(v: Value) -> Value {
    json!({ "redacted": key().commit(&value(v)) })
}

fn record(event: &str, old: Option<Value>, new: Option<Value>) -> StreamRecord {
    StreamRecord {
        event_id: "e1".into(),
        event_name: event.into(),
        keys: item(json!({"pk": {"S": "u1"}})),
        new_image: new.map(item),
        old_image: old.map(item),
        sequence_number: "100".into(),
        size_bytes: None,
        approximate_creation: None,
        user_identity: None,
        problem: None,
        raw: None,
    }
}

fn changes(r: &Redactor, rec: &StreamRecord) -> Value {
    let mut rec = rec.clone();
    r.redact_record(&mut rec);
    let e = build_entry("orders", "arn", "s", &rec, None);
    serde_json::to_value(&e.changes).unwrap()
}

#[test]
fn paths_parse_with_wildcards_and_escapes() {
    use Segment::*;
    let cases: &[(&str, Vec<Segment>)] = &[
        ("ssn", vec![Key("ssn".into())]),
        (
            "card.number",
            vec![Key("card".into()), Key("number".into())],
        ),
        (
            "contacts[*].phone",
            vec![Key("contacts".into()), Any, Key("phone".into())],
        ),
        (
            "contacts.*.phone",
            vec![Key("contacts".into()), Any, Key("phone".into())],
        ),
        ("*.secret", vec![Any, Key("secret".into())]),
        ("a[2].b", vec![Key("a".into()), Index(2), Key("b".into())]),
        ("a[*][*]", vec![Key("a".into()), Any, Any]),
        // Not a whole segment: a literal star in a name.
        ("a*.b", vec![Key("a*".into()), Key("b".into())]),
        ("we\\.ird", vec![Key("we.ird".into())]),
    ];
    for (text, want) in cases {
        let p = Pattern::parse(text, "redaction.paths").unwrap();
        assert_eq!(&p.segments, want, "{text}");
    }
    for bad in ["", "*", "a..b", "a.", ".a", "a[*", "a[x]", "a[01]", "a]"] {
        let e = Pattern::parse(bad, "redaction.tables.orders").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("`redaction.tables.orders`: bad path"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn a_wildcard_matches_one_key_or_index_and_a_path_covers_what_is_below() {
    let r = redactor(&["contacts[*].phone", "card", "*.token", "list[1]"]);
    let mut it = item(json!({
        "pk": {"S": "u1"},
        "contacts": {"L": [
            {"M": {"name": {"S": "a"}, "phone": {"S": "111"}}},
            {"M": {"name": {"S": "b"}, "phone": {"S": "222"}}},
            {"S": "not a map"}
        ]},
        "card": {"M": {"number": {"S": "4111"}, "cvv": {"N": "123"}}},
        "svc": {"M": {"token": {"S": "t"}, "deep": {"M": {"token": {"S": "kept: two levels down"}}}}},
        "list": {"L": [{"S": "x"}, {"S": "y"}]},
        "plain": {"S": "visible"}
    }));
    r.redact_item(&mut it);
    let got = serde_json::to_value(&it).unwrap();
    assert_eq!(
        got,
        json!({
            "pk": {"S": "u1"},
            "contacts": {"L": [
                {"M": {"name": {"S": "a"}, "phone": commit(json!({"S": "111"}))}},
                {"M": {"name": {"S": "b"}, "phone": commit(json!({"S": "222"}))}},
                {"S": "not a map"}
            ]},
            "card": commit(json!({"M": {"number": {"S": "4111"}, "cvv": {"N": "123"}}})),
            "svc": {"M": {"token": commit(json!({"S": "t"})), "deep": {"M": {"token": {"S": "kept: two levels down"}}}}},
            "list": {"L": [{"S": "x"}, commit(json!({"S": "y"}))]},
            "plain": {"S": "visible"}
        })
    );
    // Idempotent: a commitment is never committed again.
    let mut again = it.clone();
    r.redact_item(&mut again);
    assert_eq!(again, it);
}

#[test]
fn commitments_are_deterministic_canonical_and_keyed() {
    let k = key();
    // Computed independently (Python hmac over the documented input):
    // HMAC-SHA256(32 × "k", "ddb-audit.redaction.v1\n" ‖ canonical JSON).
    let vectors = [
        (
            json!({"S": "123-45-6789"}),
            "5e38e2f6b060402871047e1afca989e82c188d6ea9c0e3cd10f2bcd9bceca3ab",
        ),
        (
            json!({"N": "1.50"}),
            "cac7a56ee2b0adc9baa87d6264bf58cecb2b7271f5bcac5dc792e5e8e6b95d77",
        ),
        (
            json!({"M": {"n": {"N": "4.2e1"}, "cvv": {"S": "123"}}}),
            "5c0ca2388658ffb2a8b68a777c475195b8b5aa44491adcd52d21421e7c7c32a0",
        ),
        (
            json!({"SS": ["b", "a"]}),
            "f56fe40be4a7cfcaf05413fab5ca4c9ef60a0a49a4c2ae0f69ed822e7c01e3f7",
        ),
    ];
    for (v, hex) in vectors {
        let c = k.commit(&value(v.clone()));
        assert_eq!(c, format!("hmac-sha256:{hex}"), "{v}");
        assert!(is_commitment(&c));
        assert!(k.matches(&value(v.clone()), &c));
    }
    assert_eq!(
        k.commit_raw("raw record"),
        "hmac-sha256:0b77e8392c5a8a68e45acf8b2a9d10bf9142b75296e088d42772a5d3feeafa43"
    );
    // Equal values (numbers as decimals) give equal commitments; others not.
    assert_eq!(
        k.commit(&value(json!({"N": "1.5"}))),
        k.commit(&value(json!({"N": "15e-1"})))
    );
    assert_ne!(
        k.commit(&value(json!({"S": "1.5"}))),
        k.commit(&value(json!({"N": "1.5"})))
    );
    let secret = value(json!({"S": "123-45-6789"}));
    let c = k.commit(&secret);
    assert!(!k.matches(&value(json!({"S": "123-45-6780"})), &c));
    // Another key cannot confirm a guess.
    let other = RedactionKey::from_bytes(vec![b'j'; 32]).unwrap();
    assert!(!other.matches(&secret, &c));
    assert_ne!(other.commit(&secret), c);
    assert!(!k.matches(&secret, "hmac-sha256:zz"));
    assert!(!k.matches(&secret, "sha256:00"));
}

#[test]
fn the_diff_of_redacted_images_says_whether_a_secret_changed_never_what_it_is() {
    let r = redactor(&["ssn", "profile", "tags"]);
    let old = json!({"pk": {"S": "u1"}, "ssn": {"S": "111"}, "n": {"N": "1"},
                     "profile": {"M": {"name": {"S": "Ann"}}}, "tags": {"SS": ["a"]}});
    // The secret changed, and a field inside a map redacted whole, and a set.
    let new = json!({"pk": {"S": "u1"}, "ssn": {"S": "222"}, "n": {"N": "1"},
                     "profile": {"M": {"name": {"S": "Bob"}}}, "tags": {"SS": ["a", "b"]}});
    let got = changes(&r, &record("MODIFY", Some(old.clone()), Some(new)));
    assert_eq!(
        got,
        json!([
            {"path": "profile", "old": commit(json!({"M": {"name": {"S": "Ann"}}})),
                                "new": commit(json!({"M": {"name": {"S": "Bob"}}}))},
            {"path": "ssn", "old": commit(json!({"S": "111"})), "new": commit(json!({"S": "222"}))},
            // No added/removed elements: they would be the set's values.
            {"path": "tags", "old": commit(json!({"SS": ["a"]})), "new": commit(json!({"SS": ["a", "b"]}))}
        ])
    );
    // The secret unchanged (spelled differently): no change at its path.
    let mut same = old.clone();
    same["n"] = json!({"N": "2"});
    let got = changes(&r, &record("MODIFY", Some(old.clone()), Some(same)));
    assert_eq!(
        got,
        json!([{"path": "n", "old": {"N": "1"}, "new": {"N": "2"}}])
    );
    // INSERT and REMOVE carry commitments in place of the values.
    let got = changes(&r, &record("INSERT", None, Some(old.clone())));
    assert_eq!(
        got[3],
        json!({"path": "ssn", "new": commit(json!({"S": "111"}))})
    );
    let got = changes(&r, &record("REMOVE", Some(old), None));
    assert_eq!(
        got[3],
        json!({"path": "ssn", "old": commit(json!({"S": "111"}))})
    );
}

#[test]
fn redacted_changes_apply_to_the_redacted_image_and_diff_on_read() {
    let r = redactor(&["cards[*].number"]);
    let old = json!({"pk": {"S": "u1"}, "cards": {"L": [
        {"M": {"number": {"S": "4111"}, "exp": {"S": "01/30"}}},
        {"M": {"number": {"S": "5500"}, "exp": {"S": "02/30"}}}
    ]}});
    // The first card removed: the list shifts, the commitments move with it.
    let new = json!({"pk": {"S": "u1"}, "cards": {"L": [
        {"M": {"number": {"S": "5500"}, "exp": {"S": "03/31"}}}
    ]}});
    let mut rec = record("MODIFY", Some(old), Some(new));
    r.redact_record(&mut rec);
    let e = build_entry("orders", "arn", "s", &rec, None);
    let (Some(o), Some(n)) = (&rec.old_image, &rec.new_image) else {
        unreachable!()
    };
    let applied = crate::diff::apply_changes(Some(o), &e.changes).unwrap();
    assert!(crate::diff::diff_images(Some(&applied), Some(n)).is_empty());
    // The read side's diff of two redacted states: the list pairs by
    // position, so cards[0].number changed (4111 → 5500), and its new
    // commitment is the one the old cards[1].number had: equal values,
    // equal commitments, wherever they sit.
    let read_diff = crate::diff::diff_images(Some(o), Some(n));
    let text = serde_json::to_string(&read_diff).unwrap();
    assert!(!text.contains("4111") && !text.contains("5500"), "{text}");
    let number = read_diff
        .iter()
        .find(|c| c.path == "cards[0].number")
        .unwrap();
    assert_eq!(
        serde_json::to_value(&number.new).unwrap(),
        commit(json!({"S": "5500"}))
    );
    assert_eq!(
        serde_json::to_value(&number.old).unwrap(),
        commit(json!({"S": "4111"}))
    );
    // Readable output shows the mark, not the commitment.
    assert_eq!(
        crate::report::display_value(&n["cards"]),
        "[{exp: \"03/31\", number: ‹redacted›}]"
    );
}

#[test]
fn stored_form_round_trips_and_a_malformed_commitment_is_refused() {
    let c = commit(json!({"S": "x"}));
    let v: AttrValue = serde_json::from_value(c.clone()).unwrap();
    assert!(matches!(&v, AttrValue::Redacted(s) if is_commitment(s)));
    assert_eq!(serde_json::to_value(&v).unwrap(), c);
    assert!(crate::value::same_value(&v, &v.clone()));
    assert!(!crate::value::same_value(&v, &value(json!({"S": "x"}))));
    for bad in [
        json!({"redacted": "x"}),
        json!({"redacted": "hmac-sha256:ABC"}),
        json!({"redacted": 1}),
    ] {
        assert!(
            serde_json::from_value::<AttrValue>(bad.clone()).is_err(),
            "{bad}"
        );
    }
    assert_eq!(
        parse_commitment(&c.to_string()),
        c["redacted"].as_str().map(String::from)
    );
    assert_eq!(
        parse_commitment(c["redacted"].as_str().unwrap()),
        c["redacted"].as_str().map(String::from)
    );
    assert_eq!(parse_commitment("{\"S\":\"x\"}"), None);
}

#[test]
fn raw_records_are_committed_not_kept() {
    let r = redactor(&["ssn"]);
    let mut rec = record(
        "MODIFY",
        None,
        Some(json!({"pk": {"S": "u1"}, "ssn": {"S": "111"}})),
    );
    rec.raw = Some("{\"ssn\":\"111\"}".into());
    r.redact_record(&mut rec);
    let mut e = build_entry("orders", "arn", "s", &rec, None);
    assert!(e.error.is_some());
    r.redact_raw(&mut e);
    let raw = e.raw.unwrap();
    assert_eq!(
        raw,
        format!("‹redacted› {}", key().commit_raw("{\"ssn\":\"111\"}"))
    );
}

#[test]
fn key_attributes_cannot_be_redacted() {
    let r = redactor(&["card.number", "sk"]);
    let names = ["pk".to_string(), "sk".to_string()];
    let e = r.check_keys("orders", &names).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("table orders")
            && text.contains("`sk`")
            && text.contains("cannot be redacted"),
        "{text}"
    );
    assert!(r.check_keys("orders", &["pk".to_string()]).is_ok());
    // A path below a key attribute reaches nothing (keys are scalars).
    assert!(redactor(&["pk.x", "*.y"])
        .check_keys("orders", &names)
        .is_ok());
}

#[test]
fn key_files_are_checked() {
    let dir = std::env::temp_dir().join(format!("ddb-audit-redact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.key");
    std::fs::write(&good, format!("{}\n", "ab".repeat(32))).unwrap();
    let k = RedactionKey::load(&good).unwrap();
    // The trailing newline is not part of the key.
    assert_eq!(
        k,
        RedactionKey::from_bytes("ab".repeat(32).into_bytes()).unwrap()
    );
    let short = dir.join("short.key");
    std::fs::write(&short, "too short\n").unwrap();
    let e = RedactionKey::load(&short).unwrap_err().to_string();
    assert!(
        e.contains("9 bytes") && e.contains("at least 32") && e.contains("openssl rand"),
        "{e}"
    );
    let e = RedactionKey::load(&dir.join("missing.key"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`redaction.key_file`") && e.contains("cannot read"),
        "{e}"
    );
    assert!(!format!("{k:?}").contains("ab"), "Debug shows no key");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_errors_name_the_key_and_the_fix() {
    let err = |toml: &str| {
        crate::config::Config::parse(toml, "t.toml")
            .unwrap_err()
            .to_string()
    };
    let e = err("tables = [\"orders\"]\n[redaction]\npaths = [\"ssn\"]\n");
    assert!(
        e.contains("`redaction.key_file` is missing") && e.contains("openssl rand"),
        "{e}"
    );
    let e = err("tables = [\"orders\"]\n[redaction]\nkey_file = \"k\"\npaths = [\"a..b\"]\n");
    assert!(
        e.contains("`redaction.paths`") && e.contains("\"a..b\""),
        "{e}"
    );
    let e = err("tables = [\"orders\"]\n[redaction]\nkey_file = \"k\"\n[redaction.tables]\nusers = [\"x\"]\n");
    assert!(
        e.contains("`redaction.tables.users`") && e.contains("not in `tables`"),
        "{e}"
    );
    let e = err("tables = [\"orders\"]\n[attribution]\nactor_attribute = \"by\"\n[redaction]\nkey_file = \"k\"\npaths = [\"by\"]\n");
    assert!(e.contains("attribution.actor_attribute"), "{e}");
    let e =
        err("tables = [\"orders\"]\n[redaction]\nkey_file = \"k\"\npaths = [\"x\"]\nsecret = 1\n");
    assert!(e.contains("secret"), "{e}");
    let ok = crate::config::Config::parse(
        "tables = [\"orders\"]\n[redaction]\nkey_file = \"k\"\npaths = [\"card.number\"]\n[redaction.tables]\norders = [\"contacts[*].phone\"]\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(ok.redaction.tables["orders"], ["contacts[*].phone"]);
    // Loading reads the key: a missing file names the key.
    let e = Redactions::from_config(&ok).unwrap_err().to_string();
    assert!(e.contains("`redaction.key_file` k: cannot read"), "{e}");
}

#[test]
fn revert_refuses_to_write_or_compare_a_redacted_value() {
    use crate::read::asof::{plan_revert, State};
    let r = redactor(&["ssn"]);
    let mut then = item(json!({"pk": {"S": "u1"}, "ssn": {"S": "111"}, "n": {"N": "1"}}));
    let mut now = item(json!({"pk": {"S": "u1"}, "ssn": {"S": "222"}, "n": {"N": "2"}}));
    r.redact_item(&mut then);
    r.redact_item(&mut now);
    let state = |i: &Item| State {
        item: Some(i.clone()),
        complete: true,
        entries: 2,
    };
    let key = item(json!({"pk": {"S": "u1"}}));
    let at = chrono::Utc::now();
    let revert = |fields: &[String]| {
        plan_revert(
            "orders",
            &key,
            &state(&then),
            &state(&now),
            fields,
            at,
            Default::default(),
        )
    };
    let e = revert(&[]).unwrap_err();
    assert!(
        e.to_string().contains("ssn is redacted") && e.to_string().contains("--field"),
        "{e}"
    );
    let e = revert(&["ssn".into()]).unwrap_err();
    assert!(e.to_string().contains("ssn is redacted"), "{e}");
    // The other fields still revert.
    let plan = revert(&["n".into()]).unwrap();
    assert_eq!(plan.operation, "UpdateItem");
}

#[test]
fn the_commitment_input_is_the_documented_canonical_json() {
    let canon = |v: Value| crate::value::canonical_value_json(&value(v));
    for (n, want) in [
        ("1.50", "1.5"),
        ("1e2", "100"),
        ("+3", "3"),
        ("-0.0100", "-0.01"),
        ("1E-5", "0.00001"),
        ("0.000", "0"),
        ("007", "7"),
    ] {
        assert_eq!(
            canon(json!({"N": n})),
            format!("{{\"N\":\"{want}\"}}"),
            "{n}"
        );
    }
    assert_eq!(
        canon(
            json!({"M": {"b": {"SS": ["z", "a"]}, "a": {"L": [{"NULL": true}, {"BOOL": false}]},
                         "c": {"NS": ["10", "9", "1e0"]}, "d": {"BS": ["AP8=", "aGk="]}, "e": {"B": "aGk="}}})
        ),
        r#"{"M":{"a":{"L":[{"NULL":true},{"BOOL":false}]},"b":{"SS":["a","z"]},"c":{"NS":["1","10","9"]},"d":{"BS":["AP8=","aGk="]},"e":{"B":"aGk="}}}"#
    );
    assert_eq!(
        canon(json!({"S": "q\"\\\n\u{1}é"})),
        "{\"S\":\"q\\\"\\\\\\n\\u0001é\"}"
    );
}

#[test]
fn queries_take_a_commitment_as_a_value() {
    let c = key().commit(&value(json!({"S": "x"})));
    let parsed = crate::read::parse_value("--to", &format!("redacted:{c}")).unwrap();
    assert_eq!(parsed, AttrValue::Redacted(c));
    let e = crate::read::parse_value("--to", "redacted:nope")
        .unwrap_err()
        .to_string();
    assert!(e.contains("--to") && e.contains("redaction commit"), "{e}");
}
