// The AWS SDK for JavaScript v3 (DynamoDBDocumentClient) side of
// bench/throughput.sh (see there for the workloads).
//   node bench/throughput/sdk_v3.js PEERS_DIR PORT COUNT WARMUP
// PEERS_DIR holds node_modules. Prints one JSON object per measurement.
// CPU time is process.cpuUsage(): getrusage(RUSAGE_SELF), user + sys.
"use strict";
const path = require("path");
const http = require("http");
const [peers, port, countArg, warmupArg] = process.argv.slice(2);
const req = (name) => require(path.join(peers, "node_modules", name));
const { DynamoDBClient, CreateTableCommand } = req("@aws-sdk/client-dynamodb");
const { DynamoDBDocumentClient, PutCommand, QueryCommand } = req("@aws-sdk/lib-dynamodb");

const TABLE = "bench_events";
const LEVELS = [1, 8, 32];
const APPEND_STREAMS = 1000, QUERY_STREAMS = 100, QUERY_ITEMS = 10;
const count = Number(countArg), warmup = Number(warmupArg);

// Kept-alive connections, at least as many as requests in flight.
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const base = new DynamoDBClient({
  endpoint: `http://127.0.0.1:${port}`,
  region: "us-east-1",
  credentials: { accessKeyId: "AKIDBENCH", secretAccessKey: "bench-secret" },
  requestHandler: { httpAgent: agent },
});
const doc = DynamoDBDocumentClient.from(base);

// A unique, increasing 26-character sort key (the length of a ULID).
let seq = 0;
function sortKey() {
  seq++;
  return String(Date.now()).padStart(13, "0") + String(seq).padStart(13, "0");
}

let written = 0;
let nextId = 0;
async function put(id) {
  const n = ++written;
  await doc.send(new PutCommand({
    TableName: TABLE,
    Item: { pk: `bench#${id}#stream`, sk: sortKey(), type: "tick", log: "bench",
            payload: { id, n, note: "some text" } },
    ConditionExpression: "attribute_not_exists(pk)",
  }));
}

// Runs n operations with `inFlight` promises each looping over a shared counter.
async function run(n, inFlight, op) {
  let started = 0, items = 0;
  async function worker() {
    while (started < n) {
      const k = started++;
      const got = await op(k); // not `items += await …`: that reads items before the await
      items += got;
    }
  }
  await Promise.all(Array.from({ length: inFlight }, worker));
  return items;
}

const appendOp = async () => { await put(String(nextId++ % APPEND_STREAMS)); return 0; };
const queryOp = async (k) => {
  const out = await doc.send(new QueryCommand({
    TableName: TABLE, KeyConditionExpression: "pk = :pk",
    ExpressionAttributeValues: { ":pk": `bench#q${k % QUERY_STREAMS}#stream` }, ConsistentRead: false,
  }));
  if (out.LastEvaluatedKey) throw new Error("query: more than one page");
  return out.Items.length;
};

async function measure(workload, inFlight) {
  const op = workload === "append" ? appendOp : queryOp;
  await run(warmup, inFlight, op);
  const t0 = process.hrtime.bigint(), c0 = process.cpuUsage();
  const items = await run(count, inFlight, op);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0);
  const rec = { client: "sdk-v3", workload, in_flight: inFlight, ops: count, seconds: +wall.toFixed(4),
                ops_per_s: +(count / wall).toFixed(1), cpu_us_per_op: +((c.user + c.system) / count).toFixed(2),
                errors: 0, warmup_ops: warmup };
  if (workload === "query") rec.items = items;
  process.stdout.write(JSON.stringify(rec) + "\n");
}

async function main() {
  await base.send(new CreateTableCommand({
    TableName: TABLE,
    AttributeDefinitions: [{ AttributeName: "pk", AttributeType: "S" }, { AttributeName: "sk", AttributeType: "S" }],
    KeySchema: [{ AttributeName: "pk", KeyType: "HASH" }, { AttributeName: "sk", KeyType: "RANGE" }],
    BillingMode: "PAY_PER_REQUEST",
    StreamSpecification: { StreamEnabled: true, StreamViewType: "NEW_AND_OLD_IMAGES" },
  }));
  // Preload: QUERY_ITEMS items in each query stream (not measured).
  let p = 0;
  await run(QUERY_STREAMS * QUERY_ITEMS, 8, async () => { await put(`q${p++ % QUERY_STREAMS}`); return 0; });
  for (const n of LEVELS) await measure("append", n);
  for (const n of LEVELS) await measure("query", n);
  process.stderr.write(`sdk-v3: ${written} items written\n`);
}

main().catch((e) => { console.error(e); process.exit(1); });
