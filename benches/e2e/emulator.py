#!/usr/bin/env python3
"""The end-to-end benchmark's emulator: moto (the pinned moto[server]), the
same WSGI application that `moto_server` runs, hosted by waitress in one
process on several ports: one per client, each counted on its own.

Why not `moto_server` (werkzeug's development server) plus a counting proxy
per system, as before: on 2 cores the emulator was the limit of every
end-to-end figure, and most of its time was not DynamoDB's work. py-spy on
`moto_server` under a PutItem load: a log line per request (~13 %), a
directory scan of moto's package per request to find the backend (~7 %),
and a new TCP connection and thread per request, because werkzeug's
development server closes every connection after one response (real
DynamoDB endpoints keep them open). Then each proxy parsed and forwarded every
call a second time. Measured here with 8 client threads: moto_server took
6.3 ms of CPU per conditional PutItem; moto's app under waitress, with
keep-alive and no log line, 1.9 ms. What answers the calls (tables, items,
streams, shards, sequence numbers) is moto's code, untouched; the backends'
state is one per process, so every port sees the same tables and streams.

On each counted port (a WSGI middleware in front of moto's app):
  - calls per operation (from X-Amz-Target, e.g. GetRecords);
  - for every successful PutItem into an audit table whose partition key names
    a benchmark item (`bk-<phase>-<n>`), the time moto's handler returned: the
    moment that audit entry became visible. This is observed outside the
    system under test, the same way for every system.
Control endpoints on each counted port (answered here, never sent to moto):
  GET  /__bench/stats   -> {"calls": {op: n}, "visible": {key: epoch_s}}
  GET  /__bench/summary?prefix=P -> {"count": keys visible with prefix P,
                          "last": latest of their times, "calls": {op: n}}
  POST /__bench/reset   -> zeroes the call counts (visibility is kept)
A port named "driver" is not counted: the workload's own writes go there.

Usage: emulator.py --port NAME=PORT [--port NAME=PORT ...] --audit-table T [...]
Prints "ready" once every port listens.
"""

import argparse
import functools
import io
import json
import logging
import re
import threading
import time
import urllib.parse

import waitress
from moto import backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

KEY_RE = re.compile(r"bk-[a-z]+-\d+")


class Counter:
    """Counts calls and audit-entry visibility for the clients of one port."""

    def __init__(self, app, audit_tables):
        self.app = app
        self.audit_tables = set(audit_tables)
        self.lock = threading.Lock()
        self.calls = {}
        self.visible = {}

    def control(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        with self.lock:
            if path == "/__bench/stats":
                body = {"calls": dict(self.calls), "visible": dict(self.visible)}
            elif path == "/__bench/summary":
                q = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
                prefix = q.get("prefix", [""])[0]
                times = [t for k, t in self.visible.items() if k.startswith(prefix)]
                body = {"count": len(times), "last": max(times, default=None), "calls": dict(self.calls)}
            elif path == "/__bench/reset":
                self.calls = {}
                body = {}
            else:
                body = {"error": f"unknown control path {path}"}
        data = json.dumps(body).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/__bench/"):
            return self.control(environ, start_response)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        op = target.split(".", 1)[-1] if target else f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"
        body = b""
        if op == "PutItem":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
        status = []

        def capture(s, headers, exc_info=None):
            status.append(s)
            return start_response(s, headers, exc_info)

        result = self.app(environ, capture)
        now = time.time()
        with self.lock:
            self.calls[op] = self.calls.get(op, 0) + 1
        if body and status and status[0].startswith("200"):
            try:
                req = json.loads(body)
                if req.get("TableName") in self.audit_tables:
                    m = KEY_RE.search(req.get("Item", {}).get("pk", {}).get("S", ""))
                    if m:
                        with self.lock:
                            self.visible.setdefault(m.group(0), now)
            except ValueError:
                pass
        return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", action="append", required=True, help="NAME=PORT")
    p.add_argument("--audit-table", action="append", default=[])
    p.add_argument("--threads", type=int, default=16)
    a = p.parse_args()
    # moto scans its package directory on every request to recognise a host
    # name; the answer cannot change while the process runs.
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = functools.cache(lambda: modules)
    moto_app = DomainDispatcherApplication(create_backend_app)
    by_port = {}
    for spec in a.port:
        name, port = spec.split("=", 1)
        by_port[port] = moto_app if name == "driver" else Counter(moto_app, a.audit_table)

    def app(environ, start_response):
        return by_port[environ["SERVER_PORT"]](environ, start_response)

    # waitress warns whenever all its threads are busy: expected under a burst.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    server = waitress.create_server(app, listen=" ".join(f"127.0.0.1:{p}" for p in by_port),
                                    threads=a.threads, connection_limit=1000)
    print("ready", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
