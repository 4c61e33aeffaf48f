//! The binary's output on a closed pipe (`ddb-audit … | head`): the
//! command ends quietly with its own status, never a panic.

use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ddb-audit");

/// Runs `args` with stdout a pipe whose reader goes away at once (the
/// process has not read its config yet by then).
fn run_into_closed_pipe(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("start ddb-audit");
    drop(child.stdout.take());
    child.wait_with_output().expect("wait for ddb-audit")
}

#[test]
fn public_key_into_a_closed_pipe_ends_quietly() {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/proof/testdata/ed25519-private.pem"
    );
    let toml = format!("tables = [\"orders\"]\n[proof]\nsigning_key_file = \"{key}\"\n");
    let out = run_into_closed_pipe(&["public-key"], &[("DDB_AUDIT_CONFIG_TOML", &toml)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "public-key panicked on a closed pipe:\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
}

#[test]
fn redaction_commit_into_a_closed_pipe_ends_quietly() {
    let dir = std::env::temp_dir().join(format!("ddb-audit-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("redaction.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let toml = format!(
        "tables = [\"orders\"]\n[redaction]\nkey_file = \"{}\"\npaths = [\"ssn\"]\n",
        key.display()
    );
    let out = run_into_closed_pipe(
        &["redaction", "commit", "--value", "S:123-45-6789"],
        &[("DDB_AUDIT_CONFIG_TOML", &toml)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "panicked:\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
}

/// Every command's `--help` shows how to use it and what its exit status
/// means: a new user's first stop.
#[test]
fn every_subcommand_help_has_examples_and_exit_statuses() {
    let commands = [
        "init",
        "run",
        "history",
        "query",
        "show",
        "diff",
        "revert",
        "snapshot",
        "gaps",
        "status",
        "serve",
        "healthcheck",
        "verify",
        "export",
        "redaction",
        "public-key",
        "verify-bundle",
    ];
    for command in commands {
        let out = Command::new(BIN)
            .args([command, "--help"])
            .output()
            .expect("run ddb-audit --help");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command} --help failed");
        assert!(
            help.contains("Examples:\n  ddb-audit ") || help.contains("Examples:\n  DDB_AUDIT"),
            "`{command} --help` shows no example:\n{help}"
        );
        assert!(
            help.contains("Exit status"),
            "`{command} --help` does not say its exit statuses:\n{help}"
        );
    }
}

/// The README is a front door, not the reference (which is in docs/).
#[test]
fn the_readme_is_a_front_door() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= 200,
        "README.md has {lines} lines; the reference belongs in docs/"
    );
    for needle in [
        "make demo",
        "make test",
        "cargo install",
        "docs/configuration.md",
    ] {
        assert!(
            readme.contains(needle),
            "README.md does not mention {needle}"
        );
    }
}
