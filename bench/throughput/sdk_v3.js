// The AWS SDK for JavaScript v3 (DynamoDBDocumentClient) side of
// bench/throughput.sh (see there for the workloads and
// bench/throughput/driver.py for the protocol).
//   node bench/throughput/sdk_v3.js PEERS_DIR PORT
// PEERS_DIR holds node_modules. Creates the table, prints {"ready":true},
// then runs one step per line read from stdin ("append|query|preload
// IN_FLIGHT OPS"), answering each with one JSON line; "quit" ends it.
// One client for the whole process, as an application keeps it, on one
// keep-alive http.Agent with maxSockets (64) above the most requests in
// flight (32). CPU time is process.cpuUsage(): getrusage(RUSAGE_SELF),
// user + sys of every thread.
"use strict";
const path = require("path");
const http = require("http");
const readline = require("readline");
const [peers, port] = process.argv.slice(2);
const req = (name) => require(path.resolve(peers, "node_modules", name));
const { DynamoDBClient, CreateTableCommand } = req("@aws-sdk/client-dynamodb");
const { NodeHttpHandler } = req("@smithy/node-http-handler");
const { DynamoDBDocumentClient, PutCommand, QueryCommand } = req("@aws-sdk/lib-dynamodb");

const TABLE = "bench_events";
const APPEND_STREAMS = 1000, QUERY_STREAMS = 100, QUERY_ITEMS = 10;

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const base = new DynamoDBClient({
  endpoint: `http://127.0.0.1:${port}`,
  region: "us-east-1",
  credentials: { accessKeyId: "AKIDBENCH", secretAccessKey: "bench-secret" },
  requestHandler: new NodeHttpHandler({ httpAgent: agent }),
});
const doc = DynamoDBDocumentClient.from(base);

// A unique, increasing 26-character sort key (the length of a ULID).
let seq = 0;
function sortKey() {
  seq++;
  return String(Date.now()).padStart(13, "0") + String(seq).padStart(13, "0");
}

let written = 0;
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
  let started = 0, items = 0, bad = 0;
  async function worker() {
    while (started < n) {
      const k = started++;
      const got = await op(k); // not `items += await …`: that reads items before the await
      items += got;
      if (got !== QUERY_ITEMS) bad++;
    }
  }
  await Promise.all(Array.from({ length: inFlight }, worker));
  return [items, bad];
}

const rr = { append: 0, preload: 0 }; // round robin over the streams, kept from one step to the next
const ops = {
  append: async () => { await put(String(rr.append++ % APPEND_STREAMS)); return 0; },
  preload: async () => { await put(`q${rr.preload++ % QUERY_STREAMS}`); return 0; },
  query: async (k) => {
    const out = await doc.send(new QueryCommand({
      TableName: TABLE, KeyConditionExpression: "pk = :pk",
      ExpressionAttributeValues: { ":pk": `bench#q${k % QUERY_STREAMS}#stream` }, ConsistentRead: false,
    }));
    if (out.LastEvaluatedKey) throw new Error("query: more than one page");
    return out.Items.length;
  },
};

async function step(workload, inFlight, n) {
  const op = ops[workload];
  if (!op) throw new Error(`unknown workload ${workload}`);
  const t0 = process.hrtime.bigint(), c0 = process.cpuUsage();
  const [items, bad] = await run(n, inFlight, op);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0);
  return { client: "sdk-v3", workload, in_flight: inFlight, ops: n, seconds: wall,
           cpu_seconds: (c.user + c.system) / 1e6, errors: 0, items: workload === "query" ? items : 0,
           bad_pages: workload === "query" ? bad : 0, written };
}

async function main() {
  await base.send(new CreateTableCommand({
    TableName: TABLE,
    AttributeDefinitions: [{ AttributeName: "pk", AttributeType: "S" }, { AttributeName: "sk", AttributeType: "S" }],
    KeySchema: [{ AttributeName: "pk", KeyType: "HASH" }, { AttributeName: "sk", KeyType: "RANGE" }],
    BillingMode: "PAY_PER_REQUEST",
    StreamSpecification: { StreamEnabled: true, StreamViewType: "NEW_AND_OLD_IMAGES" },
  }));
  process.stdout.write('{"ready":true}\n');
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (line === "quit") break;
    const m = /^([a-z]+) (\d+) (\d+)$/.exec(line);
    if (!m) throw new Error(`bad command: ${line}`);
    process.stdout.write(JSON.stringify(await step(m[1], Number(m[2]), Number(m[3]))) + "\n");
  }
  process.stderr.write(`sdk-v3: ${written} items written\n`);
  agent.destroy();
}

main().catch((e) => { console.error(e); process.exit(1); });
