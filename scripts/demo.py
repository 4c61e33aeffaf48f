#!/usr/bin/env python3
"""ddb-audit demo: a local emulator, two sample tables, the daemon, and what
an engineer or an auditor does with the trail it keeps.

Run through `make demo` (which installs moto into ./.venv and builds the
binary first). The story:
  1. start moto's server (DynamoDB + Streams) on a free port;
  2. create `accounts` and `feature_flags`, each with a NEW_AND_OLD_IMAGES
     stream, write a config (with a digest signing key, so `verify` can prove
     the trail) and `ddb-audit init` the daemon's own tables;
  3. start `ddb-audit run` in the background;
  4. everyday changes: accounts opened, a balance update (1000 -> 900, by
     alice), a nested profile edit, a feature-flag rule change, a closed
     account deleted;
  5. an incident: a risk batch job (`risk-batch`) wrongly freezes two
     accounts;
  6. each item's history, then what the trail answers: `query` across items
     (everything risk-batch did; every status transition), `show --at` (an
     account as it was before the batch), `diff` (what the batch changed),
     `revert --actor demo-user` (the plan, applied here with boto3, then its
     own audit entry, naming demo-user), `verify` (intact, exit 0);
  7. `ddb-audit serve`: the web page's address and a token to sign in with.
Each step checks its own result (an entry names demo-user, verify exits 0,
the web API answers the token, ...), so a broken demo fails loudly.

Without --keep everything started is stopped at the end, on error or on
Ctrl-C (the daemon and serve with SIGTERM, each checked to exit 0). With
--keep (`make demo KEEP=1`) the emulator, the daemon and serve stay up; the
demo prints the environment to explore them with and writes it, with their
PIDs, to .demo/; `--stop` (`make demo-stop`) stops them.
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


REGION = "us-east-1"
ACTOR = "demo-user"
STATE_FILE = "state.json"


def log(msg):
    print(f"\n\033[1m==> {msg}\033[0m", flush=True)


def note(msg):
    print(f"    {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def utc(t):
    """Whole seconds, RFC 3339: the form the trail's times take."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def next_second():
    """Sleep into the next wall-clock second (plus a margin): stream times
    have whole seconds, so writes on either side of it are told apart."""
    time.sleep(1.15 - (time.time() % 1.0))


class DemoFailed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise DemoFailed(what)


class Demo:
    def __init__(self, binary, state_dir, keep):
        self.bin = os.path.abspath(binary)
        self.dir = os.path.abspath(state_dir)
        self.keep = keep
        self.moto = None
        self.daemon = None
        self.serve = None
        self.endpoint = None
        self.env = None

    # -- processes ---------------------------------------------------------

    def spawn(self, name, cmd, env=None):
        """A child in its own session (a Ctrl-C at the terminal reaches this
        script, which stops it; with --keep it outlives the script)."""
        logf = open(os.path.join(self.dir, f"{name}.log"), "w")
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        proc.log_path = logf.name
        return proc

    def start_moto(self):
        venv_bin = os.path.dirname(sys.executable)
        moto = os.path.join(venv_bin, "moto_server")
        if not os.path.exists(moto):
            sys.exit(f"{moto} not found: run `make venv` first")
        port = free_port()
        self.moto = self.spawn("moto", [moto, "-H", "127.0.0.1", "-p", str(port)])
        self.endpoint = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            if self.moto.poll() is not None:
                raise DemoFailed(f"moto_server exited ({self.moto.returncode}); see {self.moto.log_path}")
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise DemoFailed("moto_server did not answer within 60 s")
                time.sleep(0.1)
        log(f"moto (DynamoDB + Streams emulator) on {self.endpoint}")
        # What every ddb-audit command of the demo (and of whoever explores a
        # kept demo) needs: the emulator, a region, static credentials, and no
        # AWS profile or instance metadata of this machine.
        self.aws_env = dict(
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_REGION=REGION,
            AWS_DEFAULT_REGION=REGION,  # boto3's name for it
            AWS_ACCESS_KEY_ID="demo",
            AWS_SECRET_ACCESS_KEY="demo",
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=os.path.join(self.dir, "no-aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=os.path.join(self.dir, "no-aws-credentials"),
        )
        for name in ("no-aws-config", "no-aws-credentials"):  # empty: no profile of this machine
            open(os.path.join(self.dir, name), "w").close()
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AWS_") and not k.startswith("DDB_AUDIT_")
        }
        self.env.update(self.aws_env)
        self.env.setdefault("RUST_LOG", "info")
        import boto3  # here: `--stop` needs only the standard library

        self.ddb = boto3.client(
            "dynamodb",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="demo",
            aws_secret_access_key="demo",
        )

    def cli(self, *args, check=True, quiet=False, show=False, env=None):
        """Run ddb-audit; print the command (and with show=True its output)."""
        if not quiet:
            print("$ ddb-audit " + " ".join(a if " " not in a else repr(a) for a in args), flush=True)
        out = subprocess.run(
            [self.bin, *args], env=env or self.env, capture_output=True, text=True, timeout=120
        )
        if check and out.returncode != 0:
            raise DemoFailed(
                f"`ddb-audit {' '.join(args)}` exited {out.returncode}:\n{out.stdout}{out.stderr}"
            )
        if show:
            print(out.stdout.rstrip("\n"), flush=True)
        return out

    def start_daemon(self):
        self.daemon = self.spawn("daemon", [self.bin, "run", "--config", self.config], self.env)
        log(f"ddb-audit run: the daemon, in the background (pid {self.daemon.pid}, log {self.daemon.log_path})")

    def sigterm(self, name, proc):
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise DemoFailed(f"{name} did not exit within 10 s of SIGTERM")
        if code != 0:
            raise DemoFailed(f"{name} exited {code} after SIGTERM (expected 0); see {proc.log_path}")
        note(f"{name} exited 0, {time.time() - t0:.2f} s after SIGTERM")

    def stop_all(self):
        log("stopping: SIGTERM to serve and to the daemon (each finishes what is in flight, exits 0)")
        if self.serve is not None:
            self.sigterm("ddb-audit serve", self.serve)
            self.serve = None
        if self.daemon is not None:
            self.sigterm("ddb-audit run", self.daemon)
            self.daemon = None

    def cleanup(self):
        """After an error or Ctrl-C (or at the end without --keep): kill what
        is still running, stop the emulator."""
        for proc in (self.serve, self.daemon):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if self.moto is not None and self.moto.poll() is None:
            self.moto.terminate()
            try:
                self.moto.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.moto.kill()
                self.moto.wait()
            note("moto stopped")

    # -- setup ---------------------------------------------------------------

    def create_table(self, name, key):
        self.ddb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        note(f"table {name} (key {key}), stream NEW_AND_OLD_IMAGES")

    def setup(self):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        log("sample tables, a config and the daemon's own tables (ddb-audit init)")
        self.create_table("accounts", "account_id")
        self.create_table("feature_flags", "flag")
        # The key that signs the digests, as `openssl genpkey -algorithm
        # ed25519` writes it: what lets `verify` prove the trail intact.
        key_file = os.path.join(self.dir, "digest-key.pem")
        with open(key_file, "wb") as f:
            f.write(
                Ed25519PrivateKey.generate().private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        self.metrics_addr = f"127.0.0.1:{free_port()}"
        self.serve_addr = f"127.0.0.1:{free_port()}"
        self.config = os.path.join(self.dir, "ddb-audit.toml")
        with open(self.config, "w") as f:
            f.write(
                'tables = ["accounts", "feature_flags"]\n\n'
                "[attribution]\n"
                'actor_attribute = "updated_by"\n\n'
                "[observability]\n"
                f'listen = "{self.metrics_addr}"   # /metrics, /healthz, /readyz\n\n'
                "[serve]\n"
                f'listen = "{self.serve_addr}"     # the web page and API\n\n'
                "[proof]\n"
                f'signing_key_file = "{key_file}"\n'
                "digest_interval_secs = 2   # default 60; short so verify covers the demo's last change\n"
            )
        note(f"config {self.config}:")
        for line in open(self.config).read().splitlines():
            print(f"      {line}")
        self.cli("init", "--config", self.config, show=True)

    # -- the story -----------------------------------------------------------

    def write(self, what, fn, **kw):
        note(what)
        fn(**kw)

    def account(self, acct, name, balance, currency, by, email):
        return dict(
            TableName="accounts",
            Item={
                "account_id": {"S": acct},
                "status": {"S": "active"},
                "balance": {"N": str(balance)},
                "currency": {"S": currency},
                "profile": {"M": {"name": {"S": name}, "email": {"S": email}}},
                "updated_by": {"S": by},
            },
        )

    def everyday(self):
        d = self.ddb
        log("everyday changes, written straight to the tables (no ddb-audit in the path)")
        self.write("accounts/acct-1001 opened: Ann Lee, balance 1000 EUR (by onboarding-service)",
                   d.put_item, **self.account("acct-1001", "Ann Lee", 1000, "EUR", "onboarding-service", "ann@example.com"))
        self.write("accounts/acct-1003 opened: Raj Patel, balance 250 GBP (by onboarding-service)",
                   d.put_item, **self.account("acct-1003", "Raj Patel", 250, "GBP", "onboarding-service", "raj@example.com"))
        self.write("accounts/acct-1001 balance 1000 -> 900 (by alice)",
                   d.update_item, TableName="accounts", Key={"account_id": {"S": "acct-1001"}},
                   UpdateExpression="SET #b = :b, updated_by = :u",
                   ExpressionAttributeNames={"#b": "balance"},
                   ExpressionAttributeValues={":b": {"N": "900"}, ":u": {"S": "alice"}})
        self.write("accounts/acct-1001 profile.name Ann Lee -> Ann Smith (by bob)",
                   d.update_item, TableName="accounts", Key={"account_id": {"S": "acct-1001"}},
                   UpdateExpression="SET #p.#n = :n, updated_by = :u",
                   ExpressionAttributeNames={"#p": "profile", "#n": "name"},
                   ExpressionAttributeValues={":n": {"S": "Ann Smith"}, ":u": {"S": "bob"}})
        self.write("accounts/acct-1002 opened, then closed: deleted (a delete names no one; the trail "
                   "shows its last writer)",
                   d.put_item, **self.account("acct-1002", "Li Wei", 0, "USD", "onboarding-service", "li@example.com"))
        d.delete_item(TableName="accounts", Key={"account_id": {"S": "acct-1002"}})
        self.write("accounts/acct-1004 opened: Sofia Rossi (by onboarding-service), then frozen on the "
                   "customer's request (by fraud-team)",
                   d.put_item, **self.account("acct-1004", "Sofia Rossi", 40, "EUR", "onboarding-service", "sofia@example.com"))
        d.update_item(TableName="accounts", Key={"account_id": {"S": "acct-1004"}},
                      UpdateExpression="SET #s = :s, frozen_reason = :r, updated_by = :u",
                      ExpressionAttributeNames={"#s": "status"},
                      ExpressionAttributeValues={":s": {"S": "frozen"}, ":r": {"S": "card reported stolen"},
                                                 ":u": {"S": "fraud-team"}})
        rule = lambda plan, pct: {  # noqa: E731
            "M": {
                "conditions": {"L": [{"M": {"attribute": {"S": "plan"}, "op": {"S": "eq"}, "value": {"S": plan}}}]},
                "rollout_percent": {"N": str(pct)},
            }
        }
        self.write("feature_flags/new-checkout created (by carol)",
                   d.put_item, TableName="feature_flags",
                   Item={
                       "flag": {"S": "new-checkout"},
                       "enabled": {"BOOL": True},
                       "rules": {"L": [rule("internal", 100), rule("enterprise", 25)]},
                       "environments": {"SS": ["staging", "production"]},
                       "updated_by": {"S": "carol"},
                   })
        self.write("feature_flags/new-checkout rules[1].conditions[0].value enterprise -> pro (by dave)",
                   d.update_item, TableName="feature_flags", Key={"flag": {"S": "new-checkout"}},
                   UpdateExpression="SET #r[1].#c[0].#v = :v, updated_by = :u",
                   ExpressionAttributeNames={"#r": "rules", "#c": "conditions", "#v": "value"},
                   ExpressionAttributeValues={":v": {"S": "pro"}, ":u": {"S": "dave"}})

    def incident(self):
        log("an incident: the risk batch job wrongly freezes two accounts")
        for acct in ("acct-1001", "acct-1003"):
            self.write(
                f"accounts/{acct} status active -> frozen, + frozen_reason (by risk-batch)",
                self.ddb.update_item, TableName="accounts", Key={"account_id": {"S": acct}},
                UpdateExpression="SET #s = :s, frozen_reason = :r, updated_by = :u",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":s": {"S": "frozen"},
                    ":r": {"S": "chargeback score 0.93 > 0.90"},
                    ":u": {"S": "risk-batch"},
                },
            )

    # Entries per item once the everyday changes are audited, then the incident.
    EVERYDAY = {
        ("accounts", "account_id=S:acct-1001"): 3,
        ("accounts", "account_id=S:acct-1002"): 2,
        ("accounts", "account_id=S:acct-1003"): 1,
        ("accounts", "account_id=S:acct-1004"): 2,
        ("feature_flags", "flag=S:new-checkout"): 2,
    }
    EXPECTED = {
        ("accounts", "account_id=S:acct-1001"): 4,
        ("accounts", "account_id=S:acct-1002"): 2,
        ("accounts", "account_id=S:acct-1003"): 2,
        ("accounts", "account_id=S:acct-1004"): 2,
        ("feature_flags", "flag=S:new-checkout"): 2,
    }
    # The histories printed in full (the queries show the other accounts).
    HISTORIES = [
        ("accounts", "account_id=S:acct-1001"),
        ("accounts", "account_id=S:acct-1002"),
        ("feature_flags", "flag=S:new-checkout"),
    ]

    def history_json(self, table, key, *extra):
        out = self.cli(
            "history", "--config", self.config, "--table", table, "--key", key, "--json", *extra,
            check=False, quiet=True,
        )
        if out.returncode != 0:
            return None
        return [json.loads(l) for l in out.stdout.splitlines() if l.strip()]

    def wait_audited(self, expected, what):
        deadline = time.time() + 60
        pending = dict(expected)
        while pending:
            if self.daemon.poll() is not None:
                raise DemoFailed(f"the daemon exited ({self.daemon.returncode}); see {self.daemon.log_path}")
            for (table, key), n in list(pending.items()):
                entries = self.history_json(table, key)
                if entries is not None and len(entries) >= n:
                    del pending[(table, key)]
            if pending and time.time() > deadline:
                raise DemoFailed(f"not audited within 60 s: {pending}")
            time.sleep(0.3)
        note(f"{what}: all audited")

    def histories(self):
        for table, key in self.HISTORIES:
            log(f"history: every change to {table} {key}, oldest first")
            self.cli("history", "--config", self.config, "--table", table, "--key", key, show=True)
        key = "account_id=S:acct-1001"
        log(f"history --json: the stable entry format (accounts {key}, the newest entry)")
        self.cli("history", "--config", self.config, "--table", "accounts", "--key", key,
                 "--last", "1", "--json", show=True)

    def queries(self):
        c = self.config
        log("query across items: everything one actor (risk-batch) changed, in any table")
        out = self.cli("query", "--config", c, "--actor", "risk-batch", show=True)
        entries = [json.loads(l) for l in
                   self.cli("query", "--config", c, "--actor", "risk-batch", "--json", quiet=True).stdout.splitlines()]
        keys = sorted(e["key"]["account_id"]["S"] for e in entries)
        expect(keys == ["acct-1001", "acct-1003"],
               f"query --actor risk-batch should find acct-1001 and acct-1003, found {keys}\n{out.stdout}")

        log("query a field's transitions: every account that went status active -> frozen, by whoever")
        args = ("query", "--config", c, "--table", "accounts", "--field", "status", "--from", "S:active", "--to", "S:frozen")
        out = self.cli(*args, show=True)
        entries = [json.loads(l) for l in self.cli(*args, "--json", quiet=True).stdout.splitlines()]
        found = sorted((e["key"]["account_id"]["S"], e["actor"]) for e in entries)
        expect(found == [("acct-1001", "risk-batch"), ("acct-1003", "risk-batch"), ("acct-1004", "fraud-team")],
               f"query --field status --from S:active --to S:frozen found {found}\n{out.stdout}")

    def show_diff(self):
        c, key = self.config, "account_id=S:acct-1001"
        log(f"show --at: accounts {key} as it was at {self.before}, before the batch ran")
        out = self.cli("show", "--config", c, "--table", "accounts", "--key", key, "--at", self.before, show=True)
        shown = json.loads(self.cli("show", "--config", c, "--table", "accounts", "--key", key,
                                    "--at", self.before, "--json", quiet=True).stdout)
        expect(shown["exists"] and shown["item"]["status"] == {"S": "active"},
               f"show --at {self.before} should give status active:\n{out.stdout}")

        log(f"diff: what changed in accounts {key} from {self.before} to now")
        now = utc(time.time() + 1)
        self.cli("diff", "--config", c, "--table", "accounts", "--key", key,
                 "--from", self.before, "--to", now, show=True)
        d = json.loads(self.cli("diff", "--config", c, "--table", "accounts", "--key", key,
                                "--from", self.before, "--to", now, "--json", quiet=True).stdout)
        paths = sorted(ch["path"] for ch in d["changes"])
        expect("status" in paths and "frozen_reason" in paths, f"diff should name status and frozen_reason: {paths}")

    def revert(self):
        c, key = self.config, "account_id=S:acct-1001"
        log(f"revert --actor {ACTOR}: the one DynamoDB call that puts accounts {key} back as it was "
            f"at {self.before} (it writes nothing itself)")
        out = self.cli("revert", "--config", c, "--table", "accounts", "--key", key,
                       "--to-time", self.before, "--actor", ACTOR, show=True)
        plan = json.loads(out.stdout)
        op = plan["operation"]
        method = {"UpdateItem": "update_item", "PutItem": "put_item", "DeleteItem": "delete_item"}.get(op)
        expect(method is not None, f"unexpected plan operation {op!r}")

        log(f"the plan applied to the table: boto3 {method}(**plan['input']), as "
            f"`aws dynamodb {method.replace('_', '-')} --cli-input-json` would")
        getattr(self.ddb, method)(**plan["input"])
        item = self.ddb.get_item(TableName="accounts", Key={"account_id": {"S": "acct-1001"}},
                                 ConsistentRead=True)["Item"]
        expect(item["status"] == {"S": "active"} and "frozen_reason" not in item
               and item["updated_by"] == {"S": ACTOR},
               f"after the revert the item should be active, unfrozen, updated_by {ACTOR}: {item}")
        note(f"acct-1001 is active again; updated_by = {ACTOR}")

        log(f"the revert is audited like any change: its entry names {ACTOR}")
        self.wait_audited({("accounts", key): 5}, "the revert")
        self.cli("history", "--config", c, "--table", "accounts", "--key", key, "--last", "1", show=True)
        last = self.history_json("accounts", key, "--last", "1")[-1]
        expect(last["actor"] == ACTOR, f"the revert's entry should name {ACTOR}, names {last['actor']!r}")
        paths = sorted(ch["path"] for ch in last["changes"])
        expect("status" in paths and "frozen_reason" in paths, f"the revert's entry should change status and frozen_reason: {paths}")

    def verify(self):
        log("verify: every entry's hash and link, every digest's signature: the trail is intact")
        # Digests come every 2 s here: wait for one that covers the revert.
        time.sleep(4.5)
        out = self.cli("verify", "--config", self.config, check=False)
        print((out.stdout + out.stderr).rstrip("\n"), flush=True)
        expect(out.returncode == 0, f"verify exited {out.returncode}, expected 0 (intact)")
        note("exit status 0: intact")

    def start_serve(self):
        self.token = secrets.token_hex(16)
        env = dict(self.env, DDB_AUDIT_API_TOKENS=self.token)
        self.serve = self.spawn("serve", [self.bin, "serve", "--config", self.config], env)
        base = f"http://{self.serve_addr}"
        req = urllib.request.Request(
            base + "/api/history?" + urllib.parse.urlencode({"table": "accounts", "key": "account_id=S:acct-1001"}),
            headers={"Authorization": f"Bearer {self.token}"},
        )
        deadline = time.time() + 30
        while True:
            if self.serve.poll() is not None:
                raise DemoFailed(f"ddb-audit serve exited ({self.serve.returncode}); see {self.serve.log_path}")
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    expect(r.status == 200, f"/api/history answered {r.status}")
                    break
            except urllib.error.HTTPError as e:
                raise DemoFailed(f"/api/history answered {e.code}: {e.read()[:300]!r}")
            except OSError:
                if time.time() > deadline:
                    raise DemoFailed("ddb-audit serve did not answer within 30 s")
                time.sleep(0.2)
        self.page = base + "/?" + urllib.parse.urlencode({"table": "accounts", "key": "account_id=S:acct-1001"})
        log(f"ddb-audit serve: the web page and API (pid {self.serve.pid}; the API answered the token)")
        note(f"open   {self.page}")
        note(f"token  {self.token}   (type it into the page's Token field)")

    # -- keep ----------------------------------------------------------------

    def write_state(self):
        env_sh = os.path.join(self.dir, "env.sh")
        with open(env_sh, "w") as f:
            f.write("# ddb-audit demo: source this to use the kept emulator and trail\n")
            for k, v in self.aws_env.items():
                f.write(f"export {k}={v}\n")
            f.write(f"export DDB_AUDIT_CONFIG={self.config}\n")
            f.write(f"export DDB_AUDIT_API_TOKEN={self.token}\n")
        with open(os.path.join(self.dir, STATE_FILE), "w") as f:
            json.dump({
                "moto": self.moto.pid, "daemon": self.daemon.pid, "serve": self.serve.pid,
                "endpoint": self.endpoint, "page": self.page,
            }, f, indent=2)
        return env_sh

    def check_kept(self):
        """What the printed environment promises works: a command with only
        env.sh's variables reads the trail, and all three processes run."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and not k.startswith("DDB_AUDIT_")}
        env.update(self.aws_env, DDB_AUDIT_CONFIG=self.config)
        self.cli("status", quiet=True, env=env)
        for name, proc in (("moto", self.moto), ("ddb-audit run", self.daemon), ("ddb-audit serve", self.serve)):
            expect(proc.poll() is None, f"{name} exited ({proc.returncode}); see {proc.log_path}")

    def print_keep(self, env_sh):
        rel = os.path.relpath(env_sh)
        bin_rel = os.path.relpath(self.bin)
        log("left running (KEEP=1): the emulator, the daemon and serve")
        note(f"moto             pid {self.moto.pid:<8} {self.endpoint}   log {os.path.relpath(self.moto.log_path)}")
        note(f"ddb-audit run    pid {self.daemon.pid:<8} metrics http://{self.metrics_addr}/metrics   log {os.path.relpath(self.daemon.log_path)}")
        note(f"ddb-audit serve  pid {self.serve.pid:<8} {self.page}   log {os.path.relpath(self.serve.log_path)}")
        note(f"web page token   {self.token}")
        print(f"""
    Explore (the environment is in {rel}; DDB_AUDIT_CONFIG stands in for --config):
      source {rel}
      {bin_rel} history --table accounts --key account_id=S:acct-1001
      {bin_rel} query --actor alice
      {bin_rel} query --table accounts --event REMOVE --json
      {bin_rel} show --table accounts --key account_id=S:acct-1001 --at {self.before}
      {bin_rel} revert --table accounts --key account_id=S:acct-1003 --to-time {self.before} --actor "$(id -un)"
      {bin_rel} verify
      curl -s -H "Authorization: Bearer $DDB_AUDIT_API_TOKEN" 'http://{self.serve_addr}/api/query?actor=risk-batch'
    Change an item and watch it audited (the daemon is running):
      .venv/bin/python -c "import boto3; boto3.client('dynamodb').update_item(TableName='accounts', \\
        Key={{'account_id': {{'S': 'acct-1003'}}}}, UpdateExpression='SET balance = :b, updated_by = :u', \\
        ExpressionAttributeValues={{':b': {{'N': '300'}}, ':u': {{'S': 'me'}}}})"

    Stop everything:  make demo-stop   (or: kill {self.serve.pid} {self.daemon.pid}; then kill {self.moto.pid})""",
              flush=True)

    # -- the whole demo ------------------------------------------------------

    def run(self):
        self.start_moto()
        self.setup()
        self.start_daemon()
        self.everyday()
        self.wait_audited(self.EVERYDAY, "everyday changes")
        # Stream times have whole seconds: a time between the everyday
        # changes and the incident, with a second on either side.
        next_second()
        self.before = utc(time.time())
        next_second()
        self.incident()
        self.wait_audited(self.EXPECTED, "the incident")
        self.histories()
        self.queries()
        self.show_diff()
        self.revert()
        self.verify()
        self.start_serve()
        log("TTL expiry: not shown")
        note("moto never deletes expired items, so this demo cannot show a TTL expiry")
        note("(actor dynamodb.amazonaws.com, \"ttl_expiry\": true) and does not fake one;")
        note("the stream-simulator tests of `make test` cover it.")
        if self.keep:
            env_sh = self.write_state()
            self.check_kept()
            self.print_keep(env_sh)
        else:
            self.stop_all()


# -- make demo-stop ------------------------------------------------------------


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def proc_running(pid):
    """Alive and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_kept(state_dir):
    path = os.path.join(state_dir, STATE_FILE)
    if not os.path.exists(path):
        print(f"no kept demo ({path} not found): nothing to stop")
        return 0
    state = json.load(open(path))
    failed = False
    # serve and the daemon first (SIGTERM: each finishes what is in flight),
    # then the emulator they write to. A PID is signalled only while its
    # command line is still the one the demo started.
    for name, marker in (("serve", "ddb-audit serve"), ("daemon", "ddb-audit run"), ("moto", "moto_server")):
        pid = state.get(name)
        cmd = proc_cmdline(pid) if pid else None
        if cmd is None or not proc_running(pid):
            print(f"{name} (pid {pid}): not running")
            continue
        if marker.split()[-1] not in cmd or marker.split()[0] not in cmd:
            print(f"{name} (pid {pid}): now another process ({cmd.strip()[:80]}); left alone")
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 15
        while proc_running(pid) and time.time() < deadline:
            time.sleep(0.1)
        if proc_running(pid):
            print(f"{name} (pid {pid}): still running 15 s after SIGTERM; killing it")
            os.kill(pid, signal.SIGKILL)
            failed = True
        else:
            print(f"{name} (pid {pid}): stopped")
    shutil.rmtree(state_dir, ignore_errors=True)
    print(f"removed {state_dir}")
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/debug/ddb-audit", help="the ddb-audit binary")
    ap.add_argument("--state-dir", default=".demo", help="config, key, logs and (with --keep) PIDs")
    ap.add_argument("--keep", action="store_true", help="leave the emulator, daemon and serve running")
    ap.add_argument("--stop", action="store_true", help="stop what a --keep demo left running")
    args = ap.parse_args()
    state_dir = os.path.abspath(args.state_dir)
    if args.stop:
        return stop_kept(state_dir)
    if not os.path.exists(args.bin):
        sys.exit(f"{args.bin} not found: run `make build` first")
    if os.path.exists(os.path.join(state_dir, STATE_FILE)):
        sys.exit(f"a kept demo is still running ({os.path.relpath(state_dir)}/{STATE_FILE}): "
                 "stop it first with `make demo-stop`")
    shutil.rmtree(state_dir, ignore_errors=True)
    os.makedirs(state_dir)

    # SIGTERM (e.g. from CI) unwinds like Ctrl-C, so the finally below runs.
    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    demo = Demo(args.bin, state_dir, args.keep)
    ok = False
    try:
        demo.run()
        ok = True
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # report, then clean up
        print(f"\ndemo failed: {e}", file=sys.stderr)
        print(f"(config and logs left in {args.state_dir}/)", file=sys.stderr)
        for name in ("daemon", "serve"):
            log_path = os.path.join(state_dir, f"{name}.log")
            if os.path.exists(log_path):
                print(f"--- {name} log (tail) ---", file=sys.stderr)
                print("".join(open(log_path).readlines()[-30:]), file=sys.stderr)
        return 1
    finally:
        if not (ok and args.keep):
            demo.cleanup()
            if ok:
                shutil.rmtree(state_dir, ignore_errors=True)
            elif os.path.exists(os.path.join(state_dir, STATE_FILE)):
                os.remove(os.path.join(state_dir, STATE_FILE))  # nothing is left running
    log("demo done" + (": still running, see above" if args.keep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
