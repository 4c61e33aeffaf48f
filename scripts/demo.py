#!/usr/bin/env python3
"""ddb-audit demo: a local emulator, two sample tables, the daemon, and the
audit trail of a few realistic changes.

Run through `make demo` (which installs moto into ./.venv and builds the
binary first). Steps:
  1. start moto's server (DynamoDB + Streams) on a free port;
  2. create `accounts` and `feature_flags`, each with a NEW_AND_OLD_IMAGES
     stream, and `ddb-audit init` the daemon's own tables;
  3. start `ddb-audit run` in the background;
  4. make changes: a balance update (1000 -> 900, by alice), a nested profile
     edit (profile.name), a feature-flag rule change
     (rules[1].conditions[0].value enterprise -> pro), a delete;
  5. wait until every change is audited, print each item's history (table
     form, then --json);
  6. SIGTERM the daemon, check it exited 0, stop the emulator.
Everything started is stopped, on success, error or Ctrl-C.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3

REGION = "us-east-1"


def log(msg):
    print(f"\033[1m==> {msg}\033[0m", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Demo:
    def __init__(self, binary, workdir):
        self.bin = os.path.abspath(binary)
        self.dir = workdir
        self.moto = None
        self.daemon = None
        self.endpoint = None
        self.env = None

    # -- processes ---------------------------------------------------------

    def start_moto(self):
        venv_bin = os.path.dirname(sys.executable)
        moto = os.path.join(venv_bin, "moto_server")
        if not os.path.exists(moto):
            sys.exit(f"{moto} not found: run `make venv` first")
        port = free_port()
        self.moto_log = open(os.path.join(self.dir, "moto.log"), "w")
        self.moto = subprocess.Popen(
            [moto, "-H", "127.0.0.1", "-p", str(port)],
            stdout=self.moto_log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.endpoint = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            if self.moto.poll() is not None:
                raise RuntimeError(f"moto_server exited ({self.moto.returncode}); see {self.moto_log.name}")
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("moto_server did not answer within 60 s")
                time.sleep(0.1)
        log(f"moto (DynamoDB + Streams emulator) on {self.endpoint}")
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AWS_")
        }
        self.env.update(
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_REGION=REGION,
            AWS_ACCESS_KEY_ID="demo",
            AWS_SECRET_ACCESS_KEY="demo",
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=os.path.join(self.dir, "no-aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=os.path.join(self.dir, "no-aws-credentials"),
        )
        self.env.setdefault("RUST_LOG", "info")
        self.ddb = boto3.client(
            "dynamodb",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="demo",
            aws_secret_access_key="demo",
        )

    def cli(self, *args, check=True, quiet=False):
        cmd = [self.bin, *args]
        if not quiet:
            print("$ ddb-audit " + " ".join(args), flush=True)
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if check and out.returncode != 0:
            raise RuntimeError(
                f"`ddb-audit {' '.join(args)}` exited {out.returncode}:\n{out.stderr}"
            )
        return out

    def start_daemon(self):
        self.daemon_log = open(os.path.join(self.dir, "daemon.log"), "w")
        self.daemon = subprocess.Popen(
            [self.bin, "run", "--config", self.config],
            env=self.env,
            stdout=self.daemon_log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log(f"ddb-audit run started (pid {self.daemon.pid}, log {self.daemon_log.name})")

    def stop_daemon(self):
        log("SIGTERM to the daemon")
        t0 = time.time()
        self.daemon.send_signal(signal.SIGTERM)
        try:
            code = self.daemon.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise RuntimeError("the daemon did not exit within 5 s of SIGTERM")
        took = time.time() - t0
        self.daemon = None
        if code != 0:
            raise RuntimeError(f"the daemon exited {code} after SIGTERM (expected 0)")
        log(f"daemon exited 0 after {took:.2f} s")

    def cleanup(self):
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait()
        if self.moto is not None and self.moto.poll() is None:
            self.moto.terminate()
            try:
                self.moto.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.moto.kill()
                self.moto.wait()
            log("moto stopped")

    # -- the story -----------------------------------------------------------

    def create_table(self, name, key):
        self.ddb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        print(f"  table {name} (key {key}), stream NEW_AND_OLD_IMAGES")

    def setup(self):
        log("creating sample tables")
        self.create_table("accounts", "account_id")
        self.create_table("feature_flags", "flag")
        self.config = os.path.join(self.dir, "ddb-audit.toml")
        with open(self.config, "w") as f:
            f.write(
                'tables = ["accounts", "feature_flags"]\n\n'
                "[attribution]\n"
                'actor_attribute = "updated_by"\n'
            )
        log(f"config {self.config}:")
        print(open(self.config).read())
        self.cli("init", "--config", self.config)

    def write(self, what, fn, **kw):
        print(f"  {what}")
        fn(**kw)

    def changes(self):
        d = self.ddb
        log("making changes")
        self.write(
            "accounts/acct-1001 opened with balance 1000 (by onboarding-service)",
            d.put_item,
            TableName="accounts",
            Item={
                "account_id": {"S": "acct-1001"},
                "balance": {"N": "1000"},
                "currency": {"S": "EUR"},
                "profile": {"M": {"name": {"S": "Ann Lee"}, "email": {"S": "ann@example.com"}}},
                "updated_by": {"S": "onboarding-service"},
            },
        )
        self.write(
            "accounts/acct-1001 balance 1000 -> 900 (by alice)",
            d.update_item,
            TableName="accounts",
            Key={"account_id": {"S": "acct-1001"}},
            UpdateExpression="SET #b = :b, updated_by = :u",
            ExpressionAttributeNames={"#b": "balance"},
            ExpressionAttributeValues={":b": {"N": "900"}, ":u": {"S": "alice"}},
        )
        self.write(
            "accounts/acct-1001 profile.name Ann Lee -> Ann Smith (by bob)",
            d.update_item,
            TableName="accounts",
            Key={"account_id": {"S": "acct-1001"}},
            UpdateExpression="SET #p.#n = :n, updated_by = :u",
            ExpressionAttributeNames={"#p": "profile", "#n": "name"},
            ExpressionAttributeValues={":n": {"S": "Ann Smith"}, ":u": {"S": "bob"}},
        )
        self.write(
            "accounts/acct-1002 opened (by onboarding-service)",
            d.put_item,
            TableName="accounts",
            Item={
                "account_id": {"S": "acct-1002"},
                "balance": {"N": "0"},
                "currency": {"S": "USD"},
                "updated_by": {"S": "onboarding-service"},
            },
        )
        self.write(
            "accounts/acct-1002 closed: deleted (a delete names no one: history shows \"unknown (last writer: onboarding-service)\", actor null, last_writer in the JSON)",
            d.delete_item,
            TableName="accounts",
            Key={"account_id": {"S": "acct-1002"}},
        )
        rule = lambda plan, pct: {  # noqa: E731
            "M": {
                "conditions": {"L": [{"M": {"attribute": {"S": "plan"}, "op": {"S": "eq"}, "value": {"S": plan}}}]},
                "rollout_percent": {"N": str(pct)},
            }
        }
        self.write(
            "feature_flags/new-checkout created (by carol)",
            d.put_item,
            TableName="feature_flags",
            Item={
                "flag": {"S": "new-checkout"},
                "enabled": {"BOOL": True},
                "rules": {"L": [rule("internal", 100), rule("enterprise", 25)]},
                "environments": {"SS": ["staging", "production"]},
                "updated_by": {"S": "carol"},
            },
        )
        self.write(
            "feature_flags/new-checkout rules[1].conditions[0].value enterprise -> pro (by dave)",
            d.update_item,
            TableName="feature_flags",
            Key={"flag": {"S": "new-checkout"}},
            UpdateExpression="SET #r[1].#c[0].#v = :v, updated_by = :u",
            ExpressionAttributeNames={"#r": "rules", "#c": "conditions", "#v": "value"},
            ExpressionAttributeValues={":v": {"S": "pro"}, ":u": {"S": "dave"}},
        )
        # Expected entries per item once audited.
        return {
            ("accounts", "account_id=S:acct-1001"): 3,
            ("accounts", "account_id=S:acct-1002"): 2,
            ("feature_flags", "flag=S:new-checkout"): 2,
        }

    def history_json(self, table, key):
        out = self.cli(
            "history", "--config", self.config, "--table", table, "--key", key, "--json",
            check=False, quiet=True,
        )
        if out.returncode != 0:
            return None
        return [json.loads(l) for l in out.stdout.splitlines() if l.strip()]

    def wait_audited(self, expected):
        log("waiting until every change is audited")
        deadline = time.time() + 60
        pending = dict(expected)
        while pending:
            if self.daemon.poll() is not None:
                raise RuntimeError(
                    f"the daemon exited ({self.daemon.returncode}); see {self.daemon_log.name}"
                )
            for (table, key), n in list(pending.items()):
                entries = self.history_json(table, key)
                if entries is not None and len(entries) >= n:
                    del pending[(table, key)]
            if pending and time.time() > deadline:
                raise RuntimeError(f"not audited within 60 s: {pending}")
            time.sleep(0.3)
        print(f"  all {sum(expected.values())} changes audited")

    def show(self, expected):
        for table, key in expected:
            log(f"history of {table} {key}")
            print(self.cli("history", "--config", self.config, "--table", table, "--key", key).stdout)
            print(self.cli("history", "--config", self.config, "--table", table, "--key", key, "--json").stdout)

    def run(self):
        self.start_moto()
        self.setup()
        self.start_daemon()
        expected = self.changes()
        self.wait_audited(expected)
        self.show(expected)
        log("TTL expiry")
        print(
            "  moto never deletes expired items, so this demo cannot show a TTL\n"
            "  expiry (actor dynamodb.amazonaws.com, \"ttl_expiry\": true) and does\n"
            "  not fake one: that path is covered by the stream-simulator tests\n"
            "  run by `make test`."
        )
        self.stop_daemon()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/debug/ddb-audit", help="the ddb-audit binary")
    args = ap.parse_args()
    if not os.path.exists(args.bin):
        sys.exit(f"{args.bin} not found: run `make build` first")

    # SIGTERM (e.g. from CI) unwinds like Ctrl-C, so the finally below runs.
    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    with tempfile.TemporaryDirectory(prefix="ddb-audit-demo-") as workdir:
        demo = Demo(args.bin, workdir)
        try:
            demo.run()
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as e:  # report, then clean up
            print(f"demo failed: {e}", file=sys.stderr)
            log_path = os.path.join(workdir, "daemon.log")
            if os.path.exists(log_path):
                print("--- daemon log (tail) ---", file=sys.stderr)
                print("".join(open(log_path).readlines()[-40:]), file=sys.stderr)
            return 1
        finally:
            demo.cleanup()
    log("demo done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
