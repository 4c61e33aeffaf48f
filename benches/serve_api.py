#!/usr/bin/env python3
"""`ddb-audit serve` under load: API latency (p50/p99) of history, query and
the item as of a time, and serve's memory, against moto (benches/e2e/
emulator.py: moto's app under waitress, keep-alive).

The trail: one item with 1,000 entries ("hot"), and 200 items with 5 entries
each by 5 actors (2,000 entries), written through the real `run`. Then, one
client on keep-alive, sequentially (latency, not throughput):
  - GET /api/history, first page of 100 of the hot item;
  - paging through all 1,000 entries of the hot item, 100 a page;
  - GET /api/query?actor=…, first page of 100 (400 matches);
  - GET /api/item?at=now on the hot item (a fold of 1,000 entries);
  - GET /api/verify of the table (the whole trail: 2,000 entries + digests);
and serve's VmRSS / VmHWM afterwards. Then the web page in headless Chromium
(Debian's, driven by Playwright as tests/browser/ does), opening the hot
item by deep link, signed in: the first page (50 entries) on screen, and all
1,000 on screen pressing "Load more" as soon as it shows.

Usage: serve_api.py --bin target/release/ddb-audit [--out FILE.json] [--quick]
"""

import argparse
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

import boto3

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "browser"))
TOKEN = "bench-token"
REGION = "us-east-1"
TABLE = "bench-serve-orders"
AUDIT = "bench-serve-entries"


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, limit=60):
    import socket
    deadline = time.time() + limit
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.time() > deadline:
                raise RuntimeError(f"{what} did not listen within {limit} s")
            time.sleep(0.1)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values, p):
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def vm(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class Client:
    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path, params):
        qs = urllib.parse.urlencode(params, doseq=True)
        t0 = time.perf_counter()
        self.conn.request("GET", f"{path}?{qs}", headers={"Authorization": f"Bearer {TOKEN}"})
        r = self.conn.getresponse()
        body = r.read()
        ms = (time.perf_counter() - t0) * 1000
        if r.status != 200:
            raise RuntimeError(f"{path} {params}: {r.status} {body[:300]!r}")
        return ms, json.loads(body)


def browser_timings(port, hot_n, reps):
    """The hot item's timeline in Chromium, `reps` times: milliseconds to
    the first page on screen (from opening the link, and the page's own
    count from the search to its render), to all `hot_n` entries on screen
    pressing "Load more" at once each time, and the DOM work for them all."""
    from playwright.sync_api import sync_playwright
    from serve_ui import ARGS, CHROMIUM

    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"the browser bench needs Chromium at {CHROMIUM}: run  sudo apt-get install -y chromium")
    base = f"http://127.0.0.1:{port}"
    link = base + "/?" + urllib.parse.urlencode([("table", TABLE), ("key", "pk=S:hot")])
    out = {"link_to_first_page_ms": [], "search_to_first_page_ms": [], f"link_to_all_{hot_n}_ms": [],
           f"dom_all_{hot_n}_ms": []}
    with tempfile.TemporaryDirectory(prefix="ddb-audit-bench-chromium-") as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                                                   viewport={"width": 1280, "height": 800})
        ctx.set_default_timeout(120_000)
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        page.goto(base + "/")
        page.get_by_label("Token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("Signed in as").wait_for()
        for i in range(reps + 1):  # the first, warming up, is not counted
            t0 = time.perf_counter()
            page.goto(link)
            page.wait_for_function("() => +document.body.dataset.rendered >= 50")
            first = (time.perf_counter() - t0) * 1000
            search_first = int(page.evaluate("() => document.body.dataset.firstPageMs"))
            while page.evaluate("() => document.body.dataset.hasMore") == "yes":
                n = int(page.evaluate("() => document.body.dataset.rendered"))
                # A click as the button's own handler gets it: the page's
                # scroll observer may load the page first (the click is then
                # a no-op), and a pointer click would wait for a button gone.
                page.evaluate("() => document.getElementById('more').click()")
                page.wait_for_function("n => +document.body.dataset.rendered > n", arg=n)
            shown = int(page.evaluate("() => document.body.dataset.rendered"))
            assert shown == hot_n, f"the page showed {shown} of {hot_n} entries"
            total = (time.perf_counter() - t0) * 1000
            dom = int(page.evaluate("() => document.body.dataset.domMs"))
            if i > 0:
                for k, v in zip(out, (first, search_first, total, dom)):
                    out[k].append(v)
        ctx.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out")
    ap.add_argument("--quick", action="store_true", help="tiny workload, for a smoke run")
    a = ap.parse_args()
    # A SIGTERM (a timeout, Ctrl-C from make) still stops what was started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    hot_n, items, per_item, reps = (1000, 200, 5, 60) if not a.quick else (50, 10, 2, 5)

    work = tempfile.mkdtemp(prefix="ddb-audit-bench-serve-")
    driver, counted, serve_port = free_port(), free_port(), free_port()
    emu = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "e2e", "emulator.py"), "--audit-table", AUDIT,
         "--port", f"driver={driver}", "--port", f"ddbaudit={counted}"],
        stdout=open(os.path.join(work, "emulator.log"), "w"), stderr=subprocess.STDOUT,
    )
    procs = [emu]
    try:
        wait_port(counted, emu, "emulator")
        ddb = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{driver}", region_name=REGION,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        ddb.create_table(
            TableName=TABLE, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        config = os.path.join(work, "config.toml")
        digest = hashlib.sha256(TOKEN.encode()).hexdigest()
        with open(config, "w") as f:
            f.write(f'tables = ["{TABLE}"]\n[attribution]\nactor_attribute = "updated_by"\n'
                    f'[storage]\nstreams_table = "bench-serve-streams"\nshards_table = "bench-serve-shards"\n'
                    f'audit_table = "{AUDIT}"\n[serve]\nlisten = "127.0.0.1:{serve_port}"\n'
                    f'token_sha256 = ["{digest}"]\n'
                    # Signed digests, so /api/verify checks signatures as it would in production.
                    f'[proof]\nsigning_key_file = "{os.path.join(HERE, "..", "src", "proof", "testdata", "ed25519-private.pem")}"\n'
                    f'digest_interval_secs = 5\n')
        env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{counted}", AWS_REGION=REGION,
                   AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                   AWS_EC2_METADATA_DISABLED="true", RUST_LOG="warn")
        subprocess.run([a.bin, "init", "--config", config], env=env, check=True, stdout=subprocess.DEVNULL)
        run = subprocess.Popen([a.bin, "run", "--config", config], env=env,
                               stderr=open(os.path.join(work, "run.log"), "w"))
        procs.append(run)

        t0 = time.time()
        for i in range(hot_n):
            ddb.put_item(TableName=TABLE, Item={"pk": {"S": "hot"}, "n": {"N": str(i)},
                                                "updated_by": {"S": f"actor-{i % 5}"}})
        for r in range(per_item):
            for i in range(items):
                ddb.put_item(TableName=TABLE, Item={"pk": {"S": f"item-{i}"}, "rev": {"N": str(r)},
                                                    "updated_by": {"S": f"actor-{(i + r) % 5}"}})
        print(f"wrote {hot_n + items * per_item} changes in {time.time() - t0:.1f} s", flush=True)

        serve = subprocess.Popen([a.bin, "serve", "--config", config], env=env,
                                 stderr=open(os.path.join(work, "serve.log"), "w"))
        procs.append(serve)
        wait_port(serve_port, serve, "serve")
        c = Client(serve_port)
        hot = {"table": TABLE, "key": "pk=S:hot"}
        deadline = time.time() + 300
        while True:
            _, page = c.get("/api/history", {**hot, "order": "desc", "limit": 1})
            if page["entries"] and page["entries"][0]["changes"] and any(
                ch["path"] == "n" and ch.get("new") == {"N": str(hot_n - 1)} for ch in page["entries"][0]["changes"]
            ):
                _, last = c.get("/api/query", {"table": TABLE, "key": f"pk=S:item-{items - 1}", "limit": per_item})
                if len(last["entries"]) == per_item:
                    break
            if time.time() > deadline:
                raise RuntimeError("the trail was not complete within 300 s")
            time.sleep(0.5)
        print(f"audited in {time.time() - t0:.1f} s", flush=True)

        results = {}
        cpu0 = (cpu_seconds(serve.pid), cpu_seconds(emu.pid))
        wall0 = time.perf_counter()

        def measure(name, path, params, n):
            lat = [c.get(path, params)[0] for _ in range(n)]
            results[name] = {"n": n, "p50_ms": round(pct(lat, 50), 1), "p99_ms": round(pct(lat, 99), 1)}

        measure("history_first_page_100", "/api/history", {**hot, "limit": 100}, reps)
        measure("query_actor_first_page_100", "/api/query", {"table": TABLE, "actor": "actor-3", "limit": 100}, reps)
        measure("item_at_now_1000_entries", "/api/item", {**hot, "at": "0s"}, max(reps // 4, 3))
        measure("verify_table", "/api/verify", {"table": TABLE}, max(reps // 6, 3))
        _, v = c.get("/api/verify", {"table": TABLE})
        results["verify_summary"] = {k: v["summary"][k] for k in ("status", "entries", "digests", "key_fingerprint")}
        print(f"verify: {results['verify_summary']}", flush=True)
        walks = []
        for _ in range(max(reps // 20, 2)):
            t, cursor, seen = time.perf_counter(), None, 0
            while True:
                params = {**hot, "limit": 100, **({"cursor": cursor} if cursor else {})}
                _, page = c.get("/api/history", params)
                seen += len(page["entries"])
                cursor = page["next"]
                if not cursor:
                    break
            assert seen == hot_n, f"paged {seen} of {hot_n}"
            walks.append((time.perf_counter() - t) * 1000)
        results[f"history_all_{hot_n}_by_100"] = {"n": len(walks), "p50_ms": round(pct(walks, 50), 1),
                                                 "p99_ms": round(pct(walks, 99), 1)}
        wall = time.perf_counter() - wall0  # the API's share; the browser runs after
        results["cpu_while_measuring"] = {
            "wall_s": round(wall, 1),
            "serve_cpu_s": round(cpu_seconds(serve.pid) - cpu0[0], 2),
            "emulator_cpu_s": round(cpu_seconds(emu.pid) - cpu0[1], 2),
        }
        for k, v in browser_timings(serve_port, hot_n, max(reps // 12, 2)).items():
            results["browser_" + k] = {"n": len(v), "p50_ms": round(pct(v, 50), 1), "p99_ms": round(pct(v, 99), 1)}
        results["serve_memory"] = {"rss_mb": round(vm(serve.pid, "VmRSS"), 1),
                                   "peak_rss_mb": round(vm(serve.pid, "VmHWM"), 1)}
        print(f"{'measure':36} {'n':>5} {'p50 ms':>9} {'p99 ms':>9}")
        for k, v in results.items():
            if "p50_ms" in v:
                print(f"{k:36} {v['n']:>5} {v['p50_ms']:>9} {v['p99_ms']:>9}")
        m = results["serve_memory"]
        print(f"serve RSS {m['rss_mb']} MB (peak {m['peak_rss_mb']} MB)")
        u = results["cpu_while_measuring"]
        print(f"CPU while measuring ({u['wall_s']} s): serve {u['serve_cpu_s']} s, emulator {u['emulator_cpu_s']} s")
        if a.out:
            with open(a.out, "w") as f:
                json.dump(results, f, indent=2)
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=10)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()
