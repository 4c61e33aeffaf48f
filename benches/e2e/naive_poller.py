#!/usr/bin/env python3
"""THE PEER — A MEASURING STICK, NOT A PRODUCT. Do not deploy this.

A naive DynamoDB Streams audit poller, written the way most teams start and
the way ../../../shared/seeds/004 (and its "Polling Processing Logic")
describes: Python + boto3, one loop, and per round, for every table:
  - DescribeStream (the full listing, all pages) every round;
  - shards read one after another, in listing order; a closed shard already
    read to its end is skipped, any other shard is read from its checkpoint
    (GetShardIterator AFTER_SEQUENCE_NUMBER, else TRIM_HORIZON) page by page
    until a page comes back empty (open shard: "caught up") or the shard ends
    (closed shard: marked closedAndProcessed);
  - for every record, one PutItem into the audit table holding the whole new
    (or, for REMOVE, old) image as JSON: no field-level diff;
  - after each page (batch), a PutItem of the checkpoint (stream, shard,
    sequence number, status) into a checkpoint table;
  - when a whole round found no records, sleep 1 s ("poll every second").
No retries beyond boto3's defaults, no rate limiting, no concurrency.

The benchmark runs it against the same emulator and workload as ddb-audit.
Its audit items use the same partition key layout as ddb-audit's
(`<table>|<key JSON>`) only so the benchmark emulator can spot them.

Usage: naive_poller.py --endpoint URL --table T [--table T2 ...]
                       --audit-table A --checkpoint-table C
SIGTERM/SIGINT stop it.
"""

import argparse
import json
import signal
import time

import boto3

stop = False


def on_signal(*_):
    global stop
    stop = True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--table", action="append", required=True)
    p.add_argument("--audit-table", required=True)
    p.add_argument("--checkpoint-table", required=True)
    p.add_argument("--idle-sleep", type=float, default=1.0)
    a = p.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    kw = dict(endpoint_url=a.endpoint, region_name=a.region)
    ddb = boto3.client("dynamodb", **kw)
    streams = boto3.client("dynamodbstreams", **kw)

    stream_arns = {t: ddb.describe_table(TableName=t)["Table"]["LatestStreamArn"] for t in a.table}

    # Checkpoints: (stream arn, shard id) -> {"seq": str|None, "status": str}
    checkpoints = {}
    for t, arn in stream_arns.items():
        resp = ddb.query(
            TableName=a.checkpoint_table,
            KeyConditionExpression="stream_arn = :a",
            ExpressionAttributeValues={":a": {"S": arn}},
        )
        for it in resp.get("Items", []):
            checkpoints[(arn, it["shard_id"]["S"])] = {
                "seq": it.get("sequence_no", {}).get("S"),
                "status": it["status"]["S"],
            }

    def save_checkpoint(arn, shard_id, seq, status):
        item = {"stream_arn": {"S": arn}, "shard_id": {"S": shard_id}, "status": {"S": status}}
        if seq:
            item["sequence_no"] = {"S": seq}
        ddb.put_item(TableName=a.checkpoint_table, Item=item)
        checkpoints[(arn, shard_id)] = {"seq": seq, "status": status}

    while not stop:
        found = 0
        for table, arn in stream_arns.items():
            if stop:
                break
            shards = []
            start = None
            while True:  # DescribeStream, every round, all pages
                kw = {"StreamArn": arn}
                if start:
                    kw["ExclusiveStartShardId"] = start
                desc = streams.describe_stream(**kw)["StreamDescription"]
                shards.extend(desc["Shards"])
                start = desc.get("LastEvaluatedShardId")
                if not start:
                    break
            for shard in shards:  # one after another
                if stop:
                    break
                sid = shard["ShardId"]
                closed = "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
                cp = checkpoints.get((arn, sid), {"seq": None, "status": "open"})
                if cp["status"] == "closedAndProcessed":
                    continue
                if cp["seq"]:
                    it = streams.get_shard_iterator(
                        StreamArn=arn,
                        ShardId=sid,
                        ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                        SequenceNumber=cp["seq"],
                    )["ShardIterator"]
                else:
                    it = streams.get_shard_iterator(
                        StreamArn=arn, ShardId=sid, ShardIteratorType="TRIM_HORIZON"
                    )["ShardIterator"]
                seq = cp["seq"]
                while it and not stop:
                    resp = streams.get_records(ShardIterator=it, Limit=1000)
                    records = resp.get("Records", [])
                    for r in records:  # one audit item per record, whole image
                        d = r["dynamodb"]
                        key_json = json.dumps(d["Keys"], sort_keys=True, separators=(",", ":"))
                        image = d.get("NewImage") or d.get("OldImage") or {}
                        ddb.put_item(
                            TableName=a.audit_table,
                            Item={
                                "pk": {"S": f"{table}|{key_json}"},
                                "sk": {"S": d["SequenceNumber"].zfill(40)},
                                "event": {"S": r["eventName"]},
                                "image": {"S": json.dumps(image)},
                                "written_at": {"N": repr(time.time())},
                            },
                        )
                        seq = d["SequenceNumber"]
                    found += len(records)
                    it = resp.get("NextShardIterator")
                    if records:  # checkpoint after each batch
                        save_checkpoint(arn, sid, seq, "closed" if closed else "open")
                    if not it and closed:
                        save_checkpoint(arn, sid, seq, "closedAndProcessed")
                    if not records and not closed:
                        break  # empty page: open shard caught up (for now)
        if found == 0 and not stop:
            time.sleep(a.idle_sleep)


if __name__ == "__main__":
    main()
