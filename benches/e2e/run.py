#!/usr/bin/env python3
"""End-to-end benchmark: the ddb-audit release binary and the naive poller
(naive_poller.py, the peer) against the same emulator, same workloads, at the
same time.

Layout: one emulator per system under test (emulator.py: moto's server app,
the pinned moto[server], hosted by waitress), so that the two systems never
queue behind each other's calls; each emulator is a single Python process
(one core's worth, GIL-bound), and the OS shares the 2 cores between them.
Each emulator has a counted port, which its system talks to: it counts API
calls by operation and timestamps the moment each audit entry's PutItem
succeeded (= the entry is visible); and a driver port, which the workload
writes to (boto3; each write timestamped when the emulator acknowledged it).
Latency = visible - acknowledged, on one host clock.

Phases; in each, both systems run at once, each against its own emulator:
  steady   20 writes/s for STEADY_SECS to one table (one shard); latency from
           write acknowledged to audit entry visible, p50/p99.
  burst    5,000 writes (BatchWriteItem, 25 per call, as fast as the emulator
           takes them) to the same table; latency per write, p50/p99, and
           the time until all are visible.
  idle     8 idle tables each (moto: one shard per table); after a 15 s
           warm-up, API calls per idle shard per second over IDLE_SECS. Then
           one write per table: latency after idleness.
  catch-up one table; 10 writes seen; the system stopped; 20,000 writes; the
           system started again and timed from process start until all
           20,000 entries are visible. CPU of the system and of its emulator.

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
import threading
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


def moto_version():
    from importlib.metadata import version
    return version("moto")


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


class Emulator:
    """One emulator process (emulator.py) for one system under test: a
    counted port for the system, a driver port for the workload."""

    def __init__(self, name, workdir):
        self.name = name
        ports = {"driver": free_port(), "counted": free_port()}
        self.log = open(os.path.join(workdir, f"emulator-{name}.log"), "w")
        cmd = [sys.executable, os.path.join(HERE, "emulator.py"),
               "--audit-table", DDB_AUDIT_TABLE, "--audit-table", PEER_AUDIT_TABLE,
               "--port", f"driver={ports['driver']}", "--port", f"{name}={ports['counted']}"]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.driver_url = f"http://127.0.0.1:{ports['driver']}"
        self.url = f"http://127.0.0.1:{ports['counted']}"
        try:
            wait_http(self.url + "/__bench/summary", self.proc, f"emulator for {name}")
        except RuntimeError:
            self.proc.kill()
            raise
        self.ddb = boto3.client("dynamodb", endpoint_url=self.driver_url, region_name=REGION)

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

    def cpu_seconds(self):
        return proc_cpu_seconds(self.proc.pid)

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

    def put(self, table, key, n):
        self.ddb.put_item(TableName=table, Item=item(key, n))
        return time.time()

    def batch_put(self, table, keys):
        """BatchWriteItem 25 at a time; returns {key: time acknowledged}."""
        acked = {}
        for i in range(0, len(keys), 25):
            chunk = keys[i:i + 25]
            req = {table: [{"PutRequest": {"Item": item(k, i + j)}} for j, k in enumerate(chunk)]}
            while req:
                resp = self.ddb.batch_write_item(RequestItems=req)
                req = resp.get("UnprocessedItems") or None
            now = time.time()
            for k in chunk:
                acked[k] = now
        return acked

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


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


class System:
    """A system under test: start(tables) / stop(), against its own emulator."""

    def __init__(self, name, emulator, env, workdir):
        self.name = name
        self.emu = emulator
        self.env = dict(env, AWS_ENDPOINT_URL=emulator.url)
        self.dir = workdir
        self.proc = None
        self.runs = 0

    def command(self, tables):
        raise NotImplementedError

    def setup(self):
        """Creates the system's own tables (audit, checkpoints)."""
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

    def cpu_seconds(self):
        """User + system CPU of the running process so far (Linux /proc)."""
        return proc_cpu_seconds(self.proc.pid)

    def check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see {self.dir}")

    def wait_visible(self, keys, timeout):
        """Waits until every key is visible in the system's audit table;
        returns {key: visible time} for those that are."""
        deadline = time.time() + timeout
        keys = set(keys)
        while True:
            self.check_alive()
            vis = self.emu.stats()["visible"]
            if keys <= vis.keys() or time.time() > deadline:
                return {k: vis[k] for k in keys if k in vis}
            time.sleep(0.5)

    def latencies(self, acked, timeout):
        vis = self.wait_visible(acked.keys(), timeout)
        lat = [vis[k] - acked[k] for k in acked if k in vis]
        return {
            "writes": len(acked), "visible": len(lat), "missing": len(acked) - len(lat),
            "p50_ms": round(pct(lat, 50) * 1000, 1), "p99_ms": round(pct(lat, 99) * 1000, 1),
            "max_ms": round(max(lat, default=float("nan")) * 1000, 1),
            "mean_ms": round(statistics.fmean(lat) * 1000, 1) if lat else None,
            "last_visible": max(vis.values(), default=None),
        }


class DdbAudit(System):
    def __init__(self, binary, *a):
        super().__init__("ddb-audit", *a)
        self.bin = binary

    def setup(self):
        cfg = os.path.join(self.dir, "init.toml")
        with open(cfg, "w") as f:
            f.write('tables = ["unused"]\n')
        subprocess.run([self.bin, "init", "--config", cfg], env=dict(self.env, AWS_ENDPOINT_URL=self.emu.driver_url),
                       check=True, capture_output=True, timeout=120)

    def command(self, tables):
        cfg = os.path.join(self.dir, f"ddb-audit-{self.runs}.toml")
        with open(cfg, "w") as f:
            f.write("tables = [" + ", ".join(json.dumps(t) for t in tables) + "]\n")
            f.write('[attribution]\nactor_attribute = "updated_by"\n')
        return [self.bin, "run", "--config", cfg]


class Peer(System):
    def __init__(self, *a):
        super().__init__("naive-poller", *a)

    def setup(self):
        self.emu.create(PEER_AUDIT_TABLE, ("pk", "sk"), stream=False)
        self.emu.create(PEER_CHECKPOINTS, ("stream_arn", "shard_id"), stream=False)

    def command(self, tables):
        cmd = [sys.executable, os.path.join(HERE, "naive_poller.py"), "--endpoint", self.emu.url,
               "--audit-table", PEER_AUDIT_TABLE, "--checkpoint-table", PEER_CHECKPOINTS]
        for t in tables:
            cmd += ["--table", t]
        return cmd


def both(fn, systems):
    """Runs fn(system) for every system at once (one thread each); returns
    {name: result}, re-raising the first failure."""
    results, errors = {}, []

    def run(s):
        try:
            results[s.name] = fn(s)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in systems]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


class Bench:
    def __init__(self, args, workdir):
        self.args = args
        self.dir = workdir
        self.q = args.quick
        self.results = {"quick": self.q}
        self.emulators = []
        self.systems = []

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION, AWS_ACCESS_KEY_ID="bench",
                   AWS_SECRET_ACCESS_KEY="bench", AWS_EC2_METADATA_DISABLED="true",
                   AWS_CONFIG_FILE=os.path.join(self.dir, "none"),
                   AWS_SHARED_CREDENTIALS_FILE=os.path.join(self.dir, "none"),
                   RUST_LOG="warn")
        os.environ.update({k: env[k] for k in env if k.startswith("AWS_")})
        for name in ("ddb-audit", "naive-poller"):
            self.emulators.append(Emulator(name, self.dir))
        d, p = self.emulators
        self.systems = [DdbAudit(self.args.bin, d, env, self.dir), Peer(p, env, self.dir)]
        for s in self.systems:
            s.setup()
        log(f"moto {moto_version()} under waitress: " + ", ".join(
            f"{e.name}'s emulator {e.url} (driver {e.driver_url})" for e in self.emulators) + f"; logs in {self.dir}")

    def stop(self):
        for s in self.systems:
            s.stop()
        for e in self.emulators:
            e.stop()

    # -- phases ------------------------------------------------------------

    def latency(self, s):
        emu, table = s.emu, "bench-lat"
        emu.create(table)
        s.start([table])
        # Ready: the first write is seen (process started, shard polled).
        s.latencies({"bk-warm-1": emu.put(table, "bk-warm-1", 1)}, 60)
        if self.args.after_remove:
            # A table whose trail holds a removal: an item created from now
            # on may have had an earlier life, so its first entry costs the
            # daemon one read of the store (ddb-audit's item chain).
            emu.ddb.delete_item(TableName=table, Key={"pk": {"S": "bk-warm-1"}})
            time.sleep(3)
        rate = 20
        secs = 10 if self.q else self.args.steady_secs
        log(f"{s.name}: steady {rate} writes/s for {secs} s")
        acked = {}
        t0 = time.time()
        for i in range(rate * secs):
            delay = t0 + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
            key = f"bk-steady-{i}"
            acked[key] = emu.put(table, key, i)
        achieved = len(acked) / (time.time() - t0)
        steady = s.latencies(acked, 120)
        steady["achieved_rate"] = round(achieved, 2)
        log(f"{s.name}: steady p50 {steady['p50_ms']} ms, p99 {steady['p99_ms']} ms "
            f"({steady['visible']}/{steady['writes']} visible, {achieved:.1f} writes/s achieved)")
        return steady

    def burst(self, s):
        n = 300 if self.q else 5000
        log(f"{s.name}: burst of {n} writes")
        keys = [f"bk-burst-{i}" for i in range(n)]
        t0 = time.time()
        acked = s.emu.batch_put("bench-lat", keys)
        write_secs = time.time() - t0
        burst = s.latencies(acked, 600)
        burst["write_secs"] = round(write_secs, 2)
        if burst["last_visible"]:
            burst["drain_secs"] = round(burst["last_visible"] - t0, 2)
        log(f"{s.name}: burst p50 {burst['p50_ms']} ms, p99 {burst['p99_ms']} ms, written in "
            f"{write_secs:.1f} s, all visible {burst.get('drain_secs')} s after the first write")
        s.stop()
        return burst

    def phase_latency(self):
        steady = both(self.latency, self.systems)
        time.sleep(2)
        burst = both(self.burst, self.systems)
        return {name: {"steady": steady[name], "burst": burst[name]} for name in steady}

    def phase_idle(self):
        secs = 10 if self.q else self.args.idle_secs
        tables = [f"bench-idle-{i}" for i in range(IDLE_TABLES)]
        for s in self.systems:
            for t in tables:
                s.emu.create(t)
            s.start(tables)
        log(f"idle: each system on {IDLE_TABLES} idle tables; 15 s warm-up, then {secs} s counted")
        time.sleep(15)
        for s in self.systems:
            s.check_alive()
            s.emu.reset()
        t0 = time.time()
        time.sleep(secs)
        out = {}
        for s in self.systems:
            calls = s.emu.stats()["calls"]
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

        def after_idle(s):
            acked = {f"bk-idle-{i}": s.emu.put(t, f"bk-idle-{i}", i) for i, t in enumerate(tables)}
            res = s.latencies(acked, 60)
            log(f"{s.name}: first write after idleness p50 {res['p50_ms']} ms, max {res['max_ms']} ms")
            s.stop()
            return res

        for name, res in both(after_idle, self.systems).items():
            out[name]["after_idle"] = res
        return out

    def catchup(self, s):
        n = 500 if self.q else 20000
        emu, table = s.emu, "bench-catchup"
        emu.create(table)
        s.start([table])
        s.latencies({f"bk-cuwarm-{i}": emu.put(table, f"bk-cuwarm-{i}", i) for i in range(10)}, 60)
        s.stop()
        t0 = time.time()
        emu.batch_put(table, [f"bk-cu-{i}" for i in range(n)])
        log(f"{s.name}: stopped; backlog of {n} written in {time.time() - t0:.1f} s")
        emu.reset()
        emu_cpu0 = emu.cpu_seconds()
        t0 = time.time()
        s.start([table])
        deadline = t0 + (120 if self.q else 900)
        while True:
            s.check_alive()
            summ = emu.summary("bk-cu-")
            if summ["count"] >= n or time.time() > deadline:
                break
            time.sleep(0.5)
        secs = (summ["last"] - t0) if summ["last"] else None
        cpu = s.cpu_seconds()
        emu_cpu = emu.cpu_seconds() - emu_cpu0
        out = {"records": n, "visible": summ["count"], "seconds": round(secs, 2) if secs else None,
               "records_per_sec": round(summ["count"] / secs, 1) if secs else None,
               "cpu_secs": round(cpu, 2), "cpu_us_per_record": round(cpu / n * 1e6, 1),
               "emulator_cpu_secs": round(emu_cpu, 2), "calls": summ["calls"]}
        log(f"{s.name}: catch-up of {n}: {summ['count']} visible, {out['seconds']} s, "
            f"CPU {cpu:.1f} s (its emulator {emu_cpu:.1f} s), calls {summ['calls']}")
        s.stop()
        return out

    def run(self):
        self.start()
        phases = self.args.phases.split(",")
        if "latency" in phases:
            self.results["latency"] = self.phase_latency()
        if "idle" in phases:
            self.results["idle"] = self.phase_idle()
        if "catchup" in phases:
            self.results["catchup"] = both(self.catchup, self.systems)


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
        for key, label in (("cpu_us_per_record", "catch-up: system CPU us/record"),
                           ("emulator_cpu_secs", "catch-up: its emulator's CPU (s)")):
            a, b = r["catchup"][d][key], r["catchup"][p][key]
            rows.append((label, a, b, ratio(a, b)))
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
    ap.add_argument("--after-remove", action="store_true",
                    help="latency: delete the warm-up item first, so the table's trail holds a removal")
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
