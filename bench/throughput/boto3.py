"""boto3's side of bench/throughput.sh (see there for the workloads and
bench/throughput/driver.py for the protocol).

    python3 bench/throughput/boto3.py PORT

Creates the table, prints {"ready":true}, then runs one step per line read
from stdin ("append|query|preload IN_FLIGHT OPS"), answering each with one
JSON line; "quit" ends it.

Set up as a careful user would: one low-level client for the whole process,
shared by every thread (boto3 clients are thread-safe; resources are not),
with botocore Config(max_pool_connections=64), above the most requests in
flight (32), so that no thread waits for a connection. N requests in flight
are N threads. Items go through boto3.dynamodb.types' TypeSerializer and
TypeDeserializer, the conversion the resource Table applies (plain values to
AttributeValues and back, as the DocumentClient does). CPU time is
resource.getrusage(RUSAGE_SELF), user + sys of every thread.
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
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer  # noqa: E402
from botocore.config import Config  # noqa: E402

PORT = sys.argv[1]
TABLE = "bench_events"
APPEND_STREAMS, QUERY_STREAMS, QUERY_ITEMS = 1000, 100, 10
MAX_IN_FLIGHT = 32

SESSION = boto3.session.Session(aws_access_key_id="AKIDBENCH", aws_secret_access_key="bench-secret",
                                region_name="us-east-1")
CLIENT = SESSION.client("dynamodb", endpoint_url="http://127.0.0.1:" + PORT,
                        config=Config(max_pool_connections=2 * MAX_IN_FLIGHT))
SER, DESER = TypeSerializer(), TypeDeserializer()


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
rr = {"append": Counter(), "preload": Counter()}  # round robin over the streams


def sort_key():
    return "%013d%013d" % (int(time.time() * 1000), seq.take() + 1)


def put(stream_id):
    item = {"pk": "bench#%s#stream" % stream_id, "sk": sort_key(), "type": "tick", "log": "bench",
            "payload": {"id": stream_id, "n": written.take() + 1, "note": "some text"}}
    CLIENT.put_item(TableName=TABLE, Item={k: SER.serialize(v) for k, v in item.items()},
                    ConditionExpression="attribute_not_exists(pk)")
    return 0


def append_op(k):
    return put(str(rr["append"].take() % APPEND_STREAMS))


def preload_op(k):
    return put("q%d" % (rr["preload"].take() % QUERY_STREAMS))


def query_op(k):
    out = CLIENT.query(TableName=TABLE, KeyConditionExpression="pk = :pk",
                       ExpressionAttributeValues={":pk": {"S": "bench#q%d#stream" % (k % QUERY_STREAMS)}},
                       ConsistentRead=False)
    if "LastEvaluatedKey" in out:
        raise RuntimeError("query: more than one page")
    items = [{k: DESER.deserialize(v) for k, v in item.items()} for item in out["Items"]]
    return len(items)


OPS = {"append": append_op, "preload": preload_op, "query": query_op}


def run(n, in_flight, op):
    started, items, bad, failures = Counter(), [0] * in_flight, [0] * in_flight, []

    def worker(i):
        try:
            while True:
                k = started.take()
                if k >= n:
                    return
                got = op(k)
                items[i] += got
                if got != QUERY_ITEMS:
                    bad[i] += 1
        except Exception as e:  # noqa: BLE001 - raised again below
            failures.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(in_flight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return sum(items), sum(bad)


def cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main():
    CLIENT.create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    print(json.dumps({"ready": True}), flush=True)
    for line in iter(sys.stdin.readline, ""):
        line = line.strip()
        if line == "quit":
            break
        workload, in_flight, n = line.split()
        in_flight, n = int(in_flight), int(n)
        t0, c0 = time.monotonic(), cpu()
        items, bad = run(n, in_flight, OPS[workload])
        wall, used = time.monotonic() - t0, cpu() - c0
        query = workload == "query"
        print(json.dumps({"client": "boto3", "workload": workload, "in_flight": in_flight, "ops": n,
                          "seconds": wall, "cpu_seconds": used, "errors": 0, "items": items if query else 0,
                          "bad_pages": bad if query else 0, "written": written.n}), flush=True)
    print("boto3: %d items written" % written.n, file=sys.stderr)


main()
