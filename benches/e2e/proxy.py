#!/usr/bin/env python3
"""A counting reverse proxy for the end-to-end benchmark (127.0.0.1 only).

Sits between one system under test (ddb-audit or the naive poller) and moto,
forwards every request unchanged, and records:
  - calls per operation (from the X-Amz-Target header, e.g.
    DynamoDBStreams_20120810.GetRecords);
  - for every successful PutItem into an audit table whose partition key names
    a benchmark item (`bk-<phase>-<n>`), the time the response came back from
    moto: the moment that audit entry became visible. This is independent of
    what the system under test says about itself.

Control endpoints (answered by the proxy, never forwarded):
  GET  /__bench/stats   -> {"calls": {op: n}, "visible": {key: epoch_s}}
  GET  /__bench/summary?prefix=P -> {"count": keys visible with prefix P,
                          "last": latest of their times, "calls": {op: n}}
  POST /__bench/reset   -> zeroes the call counts (visibility is kept)

Usage: proxy.py --listen PORT --upstream http://127.0.0.1:MOTO --audit-table T [--audit-table T2]
"""

import argparse
import http.client
import http.server
import json
import re
import socket
import sys
import threading
import time
import urllib.parse

KEY_RE = re.compile(r"bk-[a-z]+-\d+")
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"}


class State:
    def __init__(self, audit_tables):
        self.lock = threading.Lock()
        self.calls = {}
        self.visible = {}
        self.audit_tables = set(audit_tables)


def make_handler(state, upstream):
    up = urllib.parse.urlparse(upstream)
    local = threading.local()

    def conn():
        c = getattr(local, "conn", None)
        if c is None:
            c = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
            c.connect()
            # Small writes + Nagle + delayed ACK would add ~40 ms per call.
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local.conn = c
        return c

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without TCP_NODELAY,
        # Nagle + the client's delayed ACK add ~40 ms to every call.
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def _reply(self, code, body, ctype="application/json"):
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/__bench/stats":
                with state.lock:
                    body = json.dumps({"calls": dict(state.calls), "visible": dict(state.visible)})
                return self._reply(200, body)
            if self.path.startswith("/__bench/summary"):
                q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                prefix = q.get("prefix", [""])[0]
                with state.lock:
                    times = [t for k, t in state.visible.items() if k.startswith(prefix)]
                    calls = dict(state.calls)
                body = json.dumps({"count": len(times), "last": max(times, default=None), "calls": calls})
                return self._reply(200, body)
            self._forward(b"")

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path == "/__bench/reset":
                with state.lock:
                    state.calls = {}
                return self._reply(200, "{}")
            self._forward(body)

        def _forward(self, body):
            target = self.headers.get("X-Amz-Target", "")
            op = target.split(".", 1)[-1] if target else f"{self.command} {self.path}"
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            for attempt in (0, 1):
                try:
                    c = conn()
                    c.request(self.command, self.path, body=body, headers=headers)
                    resp = c.getresponse()
                    data = resp.read()
                    break
                except (http.client.HTTPException, OSError):
                    try:
                        local.conn.close()
                    except Exception:
                        pass
                    local.conn = None
                    if attempt == 1:
                        return self._reply(502, '{"message":"proxy: upstream failed"}')
            now = time.time()
            with state.lock:
                state.calls[op] = state.calls.get(op, 0) + 1
            if op == "PutItem" and resp.status == 200 and body:
                try:
                    req = json.loads(body)
                    if req.get("TableName") in state.audit_tables:
                        pk = req.get("Item", {}).get("pk", {}).get("S", "")
                        m = KEY_RE.search(pk)
                        if m:
                            with state.lock:
                                state.visible.setdefault(m.group(0), now)
                except ValueError:
                    pass
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--audit-table", action="append", default=[])
    a = p.parse_args()
    state = State(a.audit_table)
    srv = Server(("127.0.0.1", a.listen), make_handler(state, a.upstream))
    print(f"proxy on 127.0.0.1:{a.listen} -> {a.upstream}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
