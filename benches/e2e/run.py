#!/usr/bin/env python3
"""End-to-end benchmark: the ddb-audit release binary and the naive poller
(naive_poller.py, the peer) against the same moto server, same workloads.

Layout: one moto server; one counting proxy (proxy.py) per system under test,
between it and moto, which counts API calls by operation and timestamps the
moment each audit entry's PutItem succeeds (= the entry is visible). The
driver writes straight to moto with boto3 and timestamps each write when the
service acknowledged it.

Phases, per system (ddb-audit, then the peer), each on its own source tables:
  steady   20 writes/s for STEADY_SECS to one table (one shard); latency from
           write acknowledged to audit entry visible, p50/p99.
  burst    5,000 writes (BatchWriteItem, 25 per call, as fast as moto takes
           them) to the same table; latency per write, p50/p99, and drain time.
  idle     both systems at once, each on 8 idle tables (moto: one shard per
           table); after a 15 s warm-up, API calls per idle shard per second
           over IDLE_SECS. Then one write per table: latency after idleness.
  catch-up both systems read one table; 10 writes seen by both; both stopped;
           20,000 writes; then each system alone is started and timed from
           process start until all 20,000 entries are visible.

Usage: run.py --bin target/release/ddb-audit [--quick] [--out results.json]
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3

HERE = os.path.dirname(os.path.abspath(__file__))
REGION = "us-east-1"
DDB_AUDIT_TABLE = "ddb-audit-entries"
PEER_AUDIT_TABLE = "peer-audit"
PEER_CHECKPOINTS = "peer-checkpoints"
IDLE_TABLES = 8


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, proc, what):
    deadline = time.time() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode})")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            if time.time() > deadline:
                raise RuntimeError(f"{what} did not answer within 60 s")
            time.sleep(0.1)


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


class Proxy:
    def __init__(self, name, upstream, audit_table, workdir):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(workdir, f"proxy-{name}.log"), "w")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "proxy.py"), "--listen", str(self.port),
             "--upstream", upstream, "--audit-table", audit_table],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        wait_http(self.url + "/__bench/summary", self.proc, f"proxy {name}")

    def _get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def stats(self):
        return self._get("/__bench/stats")

    def summary(self, prefix):
        return self._get(f"/__bench/summary?prefix={prefix}")

    def reset(self):
        req = urllib.request.Request(self.url + "/__bench/reset", data=b"", method="POST")
        urllib.request.urlopen(req, timeout=30).read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


class System:
    """A system under test: start(tables) / stop(), talking through its proxy."""

    def __init__(self, name, proxy, env, workdir):
        self.name = name
        self.proxy = proxy
        self.env = dict(env, AWS_ENDPOINT_URL=proxy.url)
        self.dir = workdir
        self.proc = None
        self.runs = 0

    def command(self, tables):
        raise NotImplementedError

    def start(self, tables):
        self.runs += 1
        logf = open(os.path.join(self.dir, f"{self.name}-{self.runs}.log"), "w")
        self.proc = subprocess.Popen(
            self.command(tables), env=self.env, stdout=logf, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def stop(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see {self.dir}")


class DdbAudit(System):
    def __init__(self, binary, *a):
        super().__init__("ddb-audit", *a)
        self.bin = binary

    def command(self, tables):
        cfg = os.path.join(self.dir, f"ddb-audit-{self.runs}.toml")
        with open(cfg, "w") as f:
            f.write("tables = [" + ", ".join(json.dumps(t) for t in tables) + "]\n")
            f.write('[attribution]\nactor_attribute = "updated_by"\n')
        return [self.bin, "run", "--config", cfg]


class Peer(System):
    def __init__(self, *a):
        super().__init__("naive-poller", *a)

    def command(self, tables):
        cmd = [sys.executable, os.path.join(HERE, "naive_poller.py"), "--endpoint", self.proxy.url,
               "--audit-table", PEER_AUDIT_TABLE, "--checkpoint-table", PEER_CHECKPOINTS]
        for t in tables:
            cmd += ["--table", t]
        return cmd


class Bench:
    def __init__(self, args, workdir):
        self.args = args
        self.dir = workdir
        self.q = args.quick
        self.results = {"quick": self.q}

    # -- setup -------------------------------------------------------------

    def start(self):
        moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
        port = free_port()
        self.moto_log = open(os.path.join(self.dir, "moto.log"), "w")
        self.moto = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],
                                     stdout=self.moto_log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{port}"
        wait_http(self.endpoint + "/moto-api/", self.moto, "moto_server")
        log(f"moto on {self.endpoint}; logs in {self.dir}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION, AWS_ACCESS_KEY_ID="bench",
                   AWS_SECRET_ACCESS_KEY="bench", AWS_EC2_METADATA_DISABLED="true",
                   AWS_CONFIG_FILE=os.path.join(self.dir, "none"),
                   AWS_SHARED_CREDENTIALS_FILE=os.path.join(self.dir, "none"),
                   RUST_LOG="warn")
        os.environ.update({k: env[k] for k in env if k.startswith("AWS_")})
        self.ddb = boto3.client("dynamodb", endpoint_url=self.endpoint, region_name=REGION)
        self.proxies = {
            "ddb-audit": Proxy("ddb-audit", self.endpoint, DDB_AUDIT_TABLE, self.dir),
            "naive-poller": Proxy("naive-poller", self.endpoint, PEER_AUDIT_TABLE, self.dir),
        }
        self.systems = [
            DdbAudit(self.args.bin, self.proxies["ddb-audit"], env, self.dir),
            Peer(self.proxies["naive-poller"], env, self.dir),
        ]
        # The daemon's own tables, and the peer's.
        cfg = os.path.join(self.dir, "init.toml")
        with open(cfg, "w") as f:
            f.write('tables = ["unused"]\n')
        subprocess.run([self.args.bin, "init", "--config", cfg], env=dict(env, AWS_ENDPOINT_URL=self.endpoint),
                       check=True, capture_output=True, timeout=120)
        self.create(PEER_AUDIT_TABLE, ("pk", "sk"), stream=False)
        self.create(PEER_CHECKPOINTS, ("stream_arn", "shard_id"), stream=False)

    def create(self, name, keys=("pk",), stream=True):
        kw = dict(
            TableName=name,
            KeySchema=[{"AttributeName": k, "KeyType": t} for k, t in zip(keys, ("HASH", "RANGE"))],
            AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in keys],
            BillingMode="PAY_PER_REQUEST",
        )
        if stream:
            kw["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
        self.ddb.create_table(**kw)

    def stop(self):
        for s in getattr(self, "systems", []):
            s.stop()
        for p in getattr(self, "proxies", {}).values():
            p.stop()
        if getattr(self, "moto", None):
            self.moto.terminate()
            self.moto.wait(timeout=10)

    # -- workload ----------------------------------------------------------

    @staticmethod
    def item(key, n):
        """~500 bytes: the key, an actor, a few typed attributes."""
        return {
            "pk": {"S": key},
            "updated_by": {"S": f"user-{n % 7}"},
            "status": {"S": ["new", "paid", "shipped"][n % 3]},
            "amount": {"N": str(1000 + n)},
            "profile": {"M": {"name": {"S": f"Customer {n}"}, "tier": {"S": "pro"},
                              "tags": {"L": [{"S": "a"}, {"S": "b"}]}}},
            "note": {"S": "x" * 300},
        }

    def put(self, table, key, n):
        self.ddb.put_item(TableName=table, Item=self.item(key, n))
        return time.time()

    def batch_put(self, table, keys):
        """BatchWriteItem 25 at a time; returns {key: time acknowledged}."""
        acked = {}
        for i in range(0, len(keys), 25):
            chunk = keys[i:i + 25]
            req = {table: [{"PutRequest": {"Item": self.item(k, i + j)}} for j, k in enumerate(chunk)]}
            while req:
                resp = self.ddb.batch_write_item(RequestItems=req)
                req = resp.get("UnprocessedItems") or None
            now = time.time()
            for k in chunk:
                acked[k] = now
        return acked

    def wait_visible(self, system, keys, timeout):
        """Waits until every key is visible in the system's audit table;
        returns {key: visible time} for those that are."""
        deadline = time.time() + timeout
        keys = set(keys)
        while True:
            system.check_alive()
            vis = system.proxy.stats()["visible"]
            if keys <= vis.keys() or time.time() > deadline:
                return {k: vis[k] for k in keys if k in vis}
            time.sleep(0.5)

    def latencies(self, system, acked, timeout):
        vis = self.wait_visible(system, acked.keys(), timeout)
        lat = [vis[k] - acked[k] for k in acked if k in vis]
        missing = len(acked) - len(lat)
        return {
            "writes": len(acked), "visible": len(lat), "missing": missing,
            "p50_ms": round(pct(lat, 50) * 1000, 1), "p99_ms": round(pct(lat, 99) * 1000, 1),
            "max_ms": round(max(lat, default=float("nan")) * 1000, 1),
            "mean_ms": round(statistics.fmean(lat) * 1000, 1) if lat else None,
            "last_visible": max(vis.values(), default=None),
        }

    # -- phases ------------------------------------------------------------

    def phase_latency(self, system):
        tag = "d" if system.name == "ddb-audit" else "p"
        table = f"bench-lat-{tag}"
        self.create(table)
        system.start([table])
        # Ready: the first write is seen (daemon started, shard polled).
        t = self.put(table, "bk-warm-1", 1)
        self.latencies(system, {"bk-warm-1": t}, 60)
        rate = 20
        secs = 10 if self.q else self.args.steady_secs
        log(f"{system.name}: steady {rate} writes/s for {secs} s")
        acked = {}
        t0 = time.time()
        for i in range(rate * secs):
            due = t0 + i / rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            key = f"bk-steady-{i}"
            acked[key] = self.put(table, key, i)
        achieved = len(acked) / (time.time() - t0)
        steady = self.latencies(system, acked, 120)
        steady["achieved_rate"] = round(achieved, 2)
        log(f"{system.name}: steady p50 {steady['p50_ms']} ms, p99 {steady['p99_ms']} ms "
            f"({steady['visible']}/{steady['writes']} visible, {achieved:.1f} writes/s achieved)")

        n = 300 if self.q else 5000
        log(f"{system.name}: burst of {n} writes")
        time.sleep(2)
        keys = [f"bk-burst-{i}" for i in range(n)]
        t0 = time.time()
        acked = self.batch_put(table, keys)
        write_secs = time.time() - t0
        burst = self.latencies(system, acked, 600)
        burst["write_secs"] = round(write_secs, 2)
        if burst["last_visible"]:
            burst["drain_secs"] = round(burst["last_visible"] - t0, 2)
        log(f"{system.name}: burst p50 {burst['p50_ms']} ms, p99 {burst['p99_ms']} ms, written in "
            f"{write_secs:.1f} s, all visible {burst.get('drain_secs')} s after the first write")
        system.stop()
        return {"steady": steady, "burst": burst}

    def phase_idle(self):
        secs = 10 if self.q else self.args.idle_secs
        tables = {}
        for s in self.systems:
            tag = "d" if s.name == "ddb-audit" else "p"
            tables[s.name] = [f"bench-idle-{tag}{i}" for i in range(IDLE_TABLES)]
            for t in tables[s.name]:
                self.create(t)
        for s in self.systems:
            s.start(tables[s.name])
        log(f"idle: both systems on {IDLE_TABLES} idle tables each; 15 s warm-up, then {secs} s counted")
        time.sleep(15)
        for s in self.systems:
            s.check_alive()
            s.proxy.reset()
        t0 = time.time()
        time.sleep(secs)
        out = {}
        for s in self.systems:
            calls = s.proxy.stats()["calls"]
            elapsed = time.time() - t0
            per = lambda op: round(calls.get(op, 0) / elapsed / IDLE_TABLES, 4)
            out[s.name] = {
                "seconds": round(elapsed, 1), "shards": IDLE_TABLES, "calls": calls,
                "get_records_per_shard_per_sec": per("GetRecords"),
                "describe_stream_per_stream_per_min": round(per("DescribeStream") * 60, 2),
                "get_shard_iterator_per_shard_per_sec": per("GetShardIterator"),
                "all_calls_per_shard_per_sec": round(sum(calls.values()) / elapsed / IDLE_TABLES, 4),
            }
            log(f"{s.name}: idle GetRecords/shard/s {out[s.name]['get_records_per_shard_per_sec']}, "
                f"DescribeStream/stream/min {out[s.name]['describe_stream_per_stream_per_min']}, calls {calls}")
        # Latency after idleness: one write per idle table.
        for s in self.systems:
            acked = {}
            for i, t in enumerate(tables[s.name]):
                acked[f"bk-idle-{i}"] = self.put(t, f"bk-idle-{i}", i)
            out[s.name]["after_idle"] = self.latencies(s, acked, 60)
            log(f"{s.name}: first write after idleness p50 {out[s.name]['after_idle']['p50_ms']} ms, "
                f"max {out[s.name]['after_idle']['max_ms']} ms")
        for s in self.systems:
            s.stop()
        return out

    def phase_catchup(self):
        n = 500 if self.q else 20000
        table = "bench-catchup"
        self.create(table)
        for s in self.systems:
            s.start([table])
        acked = {f"bk-cuwarm-{i}": self.put(table, f"bk-cuwarm-{i}", i) for i in range(10)}
        for s in self.systems:
            self.latencies(s, acked, 60)
            s.stop()
        log(f"catch-up: both stopped; writing a backlog of {n}")
        t0 = time.time()
        self.batch_put(table, [f"bk-cu-{i}" for i in range(n)])
        log(f"catch-up: backlog written in {time.time() - t0:.1f} s")
        out = {}
        for s in self.systems:
            s.proxy.reset()
            time.sleep(1)
            t0 = time.time()
            s.start([table])
            deadline = t0 + (120 if self.q else 900)
            while True:
                s.check_alive()
                summ = s.proxy.summary("bk-cu-")
                if summ["count"] >= n or time.time() > deadline:
                    break
                time.sleep(0.5)
            secs = (summ["last"] - t0) if summ["last"] else None
            out[s.name] = {"records": n, "visible": summ["count"], "seconds": round(secs, 2) if secs else None,
                           "records_per_sec": round(summ["count"] / secs, 1) if secs else None,
                           "calls": summ["calls"]}
            log(f"{s.name}: catch-up of {n}: {summ['count']} visible, {out[s.name]['seconds']} s, "
                f"calls {summ['calls']}")
            s.stop()
        return out

    def run(self):
        self.start()
        phases = self.args.phases.split(",")
        if "latency" in phases:
            self.results["latency"] = {s.name: self.phase_latency(s) for s in self.systems}
        if "idle" in phases:
            self.results["idle"] = self.phase_idle()
        if "catchup" in phases:
            self.results["catchup"] = self.phase_catchup()


def ratio(a, b):
    try:
        return f"{a / b:.2f}"
    except (TypeError, ZeroDivisionError):
        return "n/a"


def print_table(r):
    d, p = "ddb-audit", "naive-poller"
    rows = []
    if "latency" in r:
        for phase in ("steady", "burst"):
            for q in ("p50_ms", "p99_ms"):
                a, b = r["latency"][d][phase][q], r["latency"][p][phase][q]
                rows.append((f"latency {phase} {q[:3]} (ms)", a, b, ratio(a, b)))
        a, b = r["latency"][d]["burst"].get("drain_secs"), r["latency"][p]["burst"].get("drain_secs")
        rows.append(("burst: all visible after (s)", a, b, ratio(a, b)))
    if "idle" in r:
        for key, label in (("get_records_per_shard_per_sec", "idle GetRecords /shard/s"),
                           ("describe_stream_per_stream_per_min", "idle DescribeStream /stream/min"),
                           ("all_calls_per_shard_per_sec", "idle calls of any kind /shard/s")):
            a, b = r["idle"][d][key], r["idle"][p][key]
            rows.append((label, a, b, ratio(a, b)))
        for q in ("p50_ms", "max_ms"):
            a, b = r["idle"][d]["after_idle"][q], r["idle"][p]["after_idle"][q]
            rows.append((f"first write after idle {q[:3]} (ms)", a, b, ratio(a, b)))
    if "catchup" in r:
        a, b = r["catchup"][d]["seconds"], r["catchup"][p]["seconds"]
        rows.append((f"catch-up {r['catchup'][d]['records']} records (s)", a, b, ratio(a, b)))
    print(f"\n{'figure':<38} {'ddb-audit':>12} {'naive poller':>14} {'ratio':>8}")
    for label, a, b, rt in rows:
        print(f"{label:<38} {str(a):>12} {str(b):>14} {rt:>8}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steady-secs", type=int, default=60)
    ap.add_argument("--idle-secs", type=int, default=60)
    ap.add_argument("--phases", default="latency,idle,catchup")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    workdir = tempfile.mkdtemp(prefix="ddb-audit-e2e-bench-")
    bench = Bench(args, workdir)
    t0 = time.time()
    try:
        bench.run()
    finally:
        bench.stop()
    bench.results["wall_secs"] = round(time.time() - t0, 1)
    print_table(bench.results)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(bench.results, f, indent=2)
        log(f"results in {args.out}")
    log(f"e2e done in {bench.results['wall_secs']} s; logs in {workdir}")


if __name__ == "__main__":
    main()
