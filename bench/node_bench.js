// Node side of bench/run.sh: npm ulid, aws4, @smithy/signature-v4 (the v3 SDK's SignatureV4).
// node node_bench.js PEERS_DIR BODY_FILE   -> one JSON object per line
'use strict';
const path = require('path');
const fs = require('fs');
const peers = path.resolve(process.argv[2]);
const req_ = (m) => require(path.join(peers, 'node_modules', m));
const { monotonicFactory } = req_('ulid');
const aws4 = req_('aws4');
const { SignatureV4 } = req_('@smithy/signature-v4');
const { Hash } = req_('@smithy/hash-node');
const body = fs.readFileSync(process.argv[3], 'utf8');
const ROUNDS = 7;
const label = `node ${process.version}`;

function out(bench, impl, r, n) {
  r.sort((a, b) => a - b);
  console.log(JSON.stringify({ bench, impl: `${impl} (${label})`, unit: 'ns', best: +r[0].toFixed(1),
    median: +r[ROUNDS >> 1].toFixed(1), worst: +r[ROUNDS - 1].toFixed(1), iters: n, rounds: ROUNDS }));
}
function report(bench, impl, n, f) {
  f(Math.floor(n / 10) + 1);
  const r = [];
  for (let i = 0; i < ROUNDS; i++) {
    const t0 = process.hrtime.bigint();
    f(n);
    r.push(Number(process.hrtime.bigint() - t0) / n);
  }
  out(bench, impl, r, n);
}
async function reportAsync(bench, impl, n, f) {
  await f(Math.floor(n / 10) + 1);
  const r = [];
  for (let i = 0; i < ROUNDS; i++) {
    const t0 = process.hrtime.bigint();
    await f(n);
    r.push(Number(process.hrtime.bigint() - t0) / n);
  }
  out(bench, impl, r, n);
}

const NSECRETS = 4096;
const secrets = [];
for (let i = 0; i < NSECRETS; i++) secrets.push('wJalrXUtnFEMI/K7MDENG+bPxRfi' + String(i).padStart(12, '0'));
const date = new Date(1764000000 * 1000);
const amzDate = '20251124T160000Z';

function aws4Opts() {
  return { host: 'dynamodb.us-east-1.amazonaws.com', path: '/', method: 'POST', service: 'dynamodb', region: 'us-east-1',
    body, headers: { 'Content-Type': 'application/x-amz-json-1.0', 'X-Amz-Target': 'DynamoDB_20120810.PutItem', 'X-Amz-Date': amzDate } };
}
function smithyReq() {
  return { method: 'POST', protocol: 'https:', hostname: 'dynamodb.us-east-1.amazonaws.com', path: '/', query: {},
    headers: { host: 'dynamodb.us-east-1.amazonaws.com', 'content-type': 'application/x-amz-json-1.0',
      'x-amz-target': 'DynamoDB_20120810.PutItem' }, body };
}
const newSigner = (secret) => new SignatureV4({ credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: secret },
  region: 'us-east-1', service: 'dynamodb', sha256: Hash.bind(null, 'sha256') });

(async () => {
  const ulid = monotonicFactory();
  report('ulid', 'npm ulid monotonicFactory', 300000, (n) => { let x; for (let i = 0; i < n; i++) x = ulid(); return x; });

  const creds0 = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: secrets[0] };
  const o = aws4.sign(aws4Opts(), creds0);
  process.stderr.write(`aws4: ${o.headers.Authorization}\n`);
  report('sigv4_cached', 'aws4.sign', 4000, (n) => { for (let i = 0; i < n; i++) aws4.sign(aws4Opts(), creds0); });
  let k = 1;
  report('sigv4_derived', 'aws4.sign', 4000, (n) => {
    for (let i = 0; i < n; i++) aws4.sign(aws4Opts(), { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: secrets[k++ % NSECRETS] });
  });

  const s0 = newSigner(secrets[0]);
  const signed = await s0.sign(smithyReq(), { signingDate: date });
  process.stderr.write(`smithy: ${signed.headers.authorization}\n`);
  await reportAsync('sigv4_cached', '@smithy/signature-v4 SignatureV4.sign', 4000, async (n) => {
    for (let i = 0; i < n; i++) await s0.sign(smithyReq(), { signingDate: date });
  });
  await reportAsync('sigv4_derived', '@smithy/signature-v4 new SignatureV4 + sign', 1500, async (n) => {
    for (let i = 0; i < n; i++) await newSigner(secrets[k++ % NSECRETS]).sign(smithyReq(), { signingDate: date });
  });
})().catch((e) => { console.error(e); process.exit(1); });
