"""boto3's side of bench/throughput.sh (see there for the workloads).

    python3 bench/throughput/boto3.py PORT COUNT WARMUP

N requests in flight are N threads, each with its own boto3 Session and
resource Table (the high-level API: it turns plain values into
AttributeValues and back, as the DocumentClient does). Prints one JSON object
per measurement. CPU time is resource.getrusage(RUSAGE_SELF), user + sys.
"""
import json
import os
import resource
import sys
import threading
import time

# This file is boto3.py: keep its own directory off the path, or
# `import boto3` would find it instead of the SDK.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

PORT, COUNT, WARMUP = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
TABLE = "bench_events"
LEVELS = (1, 8, 32)
APPEND_STREAMS, QUERY_STREAMS, QUERY_ITEMS = 1000, 100, 10
ENDPOINT = "http://127.0.0.1:" + PORT


def new_table():
    session = boto3.session.Session(aws_access_key_id="AKIDBENCH", aws_secret_access_key="bench-secret",
                                    region_name="us-east-1")
    return session.resource("dynamodb", endpoint_url=ENDPOINT,
                            config=Config(max_pool_connections=4)).Table(TABLE)


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = 0

    def take(self):
        with self.lock:
            self.n += 1
            return self.n - 1


seq = Counter()      # unique, increasing sort keys
written = Counter()  # items written
next_id = Counter()  # round robin over the append streams


def sort_key():
    return "%013d%013d" % (int(time.time() * 1000), seq.take() + 1)


def put(table, stream_id):
    table.put_item(
        Item={"pk": "bench#%s#stream" % stream_id, "sk": sort_key(), "type": "tick", "log": "bench",
              "payload": {"id": stream_id, "n": written.take() + 1, "note": "some text"}},
        ConditionExpression="attribute_not_exists(pk)")
    return 0


def append_op(table, k):
    return put(table, str(next_id.take() % APPEND_STREAMS))


def query_op(table, k):
    out = table.query(KeyConditionExpression="pk = :pk",
                      ExpressionAttributeValues={":pk": "bench#q%d#stream" % (k % QUERY_STREAMS)},
                      ConsistentRead=False)
    if "LastEvaluatedKey" in out:
        raise RuntimeError("query: more than one page")
    return len(out["Items"])


def preload_op(table, k):
    return put(table, "q%d" % (k % QUERY_STREAMS))


tables = []  # one per thread, kept from one measurement to the next (connections stay open)


def run(n, in_flight, op):
    while len(tables) < in_flight:
        tables.append(new_table())
    started, items, failures = Counter(), [0] * in_flight, []

    def worker(i):
        table = tables[i]
        try:
            while True:
                k = started.take()
                if k >= n:
                    return
                items[i] += op(table, k)
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(in_flight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return sum(items)


def cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def measure(workload, in_flight):
    op = append_op if workload == "append" else query_op
    run(WARMUP, in_flight, op)
    t0, c0 = time.monotonic(), cpu()
    items = run(COUNT, in_flight, op)
    wall, used = time.monotonic() - t0, cpu() - c0
    rec = {"client": "boto3", "workload": workload, "in_flight": in_flight, "ops": COUNT,
           "seconds": round(wall, 4), "ops_per_s": round(COUNT / wall, 1),
           "cpu_us_per_op": round(used / COUNT * 1e6, 2), "errors": 0, "warmup_ops": WARMUP}
    if workload == "query":
        rec["items"] = items
    print(json.dumps(rec), flush=True)


def main():
    session = boto3.session.Session(aws_access_key_id="AKIDBENCH", aws_secret_access_key="bench-secret",
                                    region_name="us-east-1")
    session.client("dynamodb", endpoint_url=ENDPOINT).create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    # Preload: QUERY_ITEMS items in each query stream (not measured).
    run(QUERY_STREAMS * QUERY_ITEMS, 8, preload_op)
    for n in LEVELS:
        measure("append", n)
    for n in LEVELS:
        measure("query", n)
    print("boto3: %d items written" % written.n, file=sys.stderr)


main()
