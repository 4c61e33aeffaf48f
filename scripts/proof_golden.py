#!/usr/bin/env python3
"""Writes src/proof/testdata/golden.json: the proof format's test vectors,
computed by a second, independent implementation (Python's hashlib/json and
openssl for Ed25519), so the Rust code is checked against the spec in
docs/proof-format.md, not against itself. Re-run only when the format
version changes; the vectors of v1 must never change."""
import base64, hashlib, json, os, subprocess, tempfile

HERE = os.path.join(os.path.dirname(__file__), "..", "src", "proof", "testdata")

def canon(v):
    # RFC 8785 for these inputs: ASCII member names (UTF-16 order = byte
    # order), no floats.
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

def H(b): return hashlib.sha256(b).digest()
def leaf(b): return H(b"\x00" + b)
def node(l, r): return H(b"\x01" + l + r)

def mth(ls):
    if not ls: return H(b"")
    if len(ls) == 1: return ls[0]
    k = 1
    while k * 2 < len(ls): k *= 2
    return node(mth(ls[:k]), mth(ls[k:]))

arn = "arn:aws:dynamodb:us-east-1:000000000000:table/orders/stream/2026-11-23T19:00:00.000"
entries = [
  {"table":"orders","key":{"pk":{"S":"u1"}},"event":"INSERT","sequence_number":"100000000000000000001",
   "shard_id":"shardId-00000001","event_time":"2026-11-23T19:05:00Z","actor":"alice",
   "changes":[{"path":"balance","new":{"N":"1000"}},{"path":"name","new":{"S":"Zoë \"Z\"\n"}}]},
  {"table":"orders","key":{"pk":{"S":"u1"}},"event":"MODIFY","sequence_number":"100000000000000000002",
   "shard_id":"shardId-00000001","event_time":"2026-11-23T19:06:00Z","actor":None,
   "changes":[{"path":"balance","old":{"N":"1000"},"new":{"N":"900"}},
              {"path":"tags","old":{"SS":["a"]},"new":{"SS":["a","b"]},"added":["b"],"removed":[]}]},
  {"table":"orders","key":{"pk":{"S":"u1"}},"event":"REMOVE","sequence_number":"100000000000000000003",
   "shard_id":"shardId-00000001","event_time":"2026-11-23T19:07:00Z","actor":"dynamodb.amazonaws.com",
   "changes":[{"path":"balance","old":{"N":"900"}}],"ttl_expiry":True},
]
out = {"stream_arn": arn, "entries": []}
prev = None
hashes = []
for e in entries:
    doc = {"type":"ddb-audit.entry.v1","stream_arn":arn,"prev_hash":prev,"entry":e}
    c = canon(doc)
    h = leaf(c)
    out["entries"].append({"entry": e, "prev_hash": prev, "canonical": c.decode(), "hash": h.hex()})
    prev = h.hex()
    hashes.append(h)
gap = {"table":"orders","stream_arn":arn,"shard_id":"shardId-00000001",
       "after_sequence_number":"100000000000000000003","after_time":"2026-11-23T19:07:00.000Z",
       "resumed_at_sequence_number":None,"resumed_at_time":None,
       "detected_at":"2026-11-24T00:00:00.000Z"}
gdoc = {"type":"ddb-audit.gap.v1","stream_arn":arn,"prev_hash":prev,
        "gap":{k:v for k,v in gap.items() if k != "detected_at"}}
gh = leaf(canon(gdoc))
out["gap"] = {"gap": gap, "prev_hash": prev, "canonical": canon(gdoc).decode(), "hash": gh.hex()}
hashes.append(gh)
out["merkle"] = {"leaves": [h.hex() for h in hashes],
                 "roots": [mth(hashes[:n]).hex() for n in range(len(hashes) + 1)]}
fingerprint = open(os.path.join(HERE, "ed25519-public.fingerprint")).read().strip()
digest = {"type":"ddb-audit.digest.v1","table":"orders","stream_arn":arn,"number":1,
          "time":"2026-11-24T00:00:01.000Z","previous":None,"final":True,"interval_secs":60,
          "retention_days":None,"key":{"algorithm":"ed25519","fingerprint":fingerprint},
          "shards":[{"shard_id":"shardId-00000001","parent_shard_id":None,"status":"open",
                     "size":len(hashes),"root":mth(hashes).hex(),"last_hash":gh.hex(),
                     "last_sequence_number":"100000000000000000003"}]}
dbytes = canon(digest)
with tempfile.TemporaryDirectory() as d:
    msg = os.path.join(d, "m")
    open(msg, "wb").write(dbytes)
    sig = subprocess.run(["openssl","pkeyutl","-sign","-rawin","-inkey",
                          os.path.join(HERE,"ed25519-private.pem"),"-in",msg],
                         check=True, capture_output=True).stdout
out["digest"] = {"document": digest, "canonical": dbytes.decode(), "hash": H(dbytes).hex(),
                 "signature": base64.b64encode(sig).decode()}
with open(os.path.join(HERE, "golden.json"), "w") as f:
    json.dump(out, f, indent=1, ensure_ascii=False)
    f.write("\n")
