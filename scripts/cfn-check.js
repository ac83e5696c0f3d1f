#!/usr/bin/env node
// Checks CloudFormation templates against the AWS CDK's resource database
// (@aws-cdk/aws-service-spec's db.json.gz, fetched by scripts/deps.sh): every
// resource type exists; every property exists and has the right type,
// recursively into property types; required properties are present; every
// Ref, Fn::GetAtt and ${...} of Fn::Sub names a resource, parameter or pseudo
// parameter of the template (Fn::GetAtt an attribute of that resource's type);
// every IAM policy's actions belong to services whose resources the template
// makes, and its resources are the template's own ("*" only for the actions
// AWS gives no resource-level permissions).
//
//   node scripts/cfn-check.js [--db FILE] TEMPLATE.json...
//
// Prints `ok TEMPLATE` or one line per problem (`TEMPLATE: Resources.X.Properties.Y: ...`);
// exit status 0 when every template passes, 1 otherwise, 2 for a usage error.
'use strict';
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');

const root = path.resolve(__dirname, '..');
const SPEC_PACKAGE = process.env.CFN_SPEC_PACKAGE || '@aws-cdk/aws-service-spec@0.1.216';
const SPEC_DIR = process.env.CFN_SPEC_DIR || path.join(root, '.cache', 'aws-service-spec');

// Actions that take no resource-level permissions: "*" is what AWS requires.
const STAR_ACTIONS = new Set(['dynamodb:ListStreams', 'events:ListEventBuses', 'sqs:ListQueues',
  'logs:DescribeLogGroups', 'lambda:ListFunctions', 'xray:PutTraceSegments', 'xray:PutTelemetryRecords']);
// Services a policy may name beyond those of the template's resources.
const ALWAYS_SERVICES = new Set([]);
const PSEUDO = new Set(['AWS::AccountId', 'AWS::NotificationARNs', 'AWS::NoValue', 'AWS::Partition', 'AWS::Region',
  'AWS::StackId', 'AWS::StackName', 'AWS::URLSuffix']);
const TOP_KEYS = new Set(['AWSTemplateFormatVersion', 'Description', 'Metadata', 'Parameters', 'Rules', 'Mappings',
  'Conditions', 'Transform', 'Resources', 'Outputs']);
const RESOURCE_KEYS = new Set(['Type', 'Properties', 'DependsOn', 'DeletionPolicy', 'UpdateReplacePolicy',
  'Condition', 'Metadata', 'CreationPolicy', 'UpdatePolicy']);

function loadDb(file) {
  const db = JSON.parse(zlib.gunzipSync(fs.readFileSync(file)));
  const resources = new Map();
  for (const e of db.schema.resource.entities) resources.set(e.cloudFormationType, e);
  const types = new Map();
  for (const e of db.schema.typeDefinition.entities) types.set(e.$id, e);
  return { resources, types };
}

function isIntrinsic(v) {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return false;
  const keys = Object.keys(v);
  return keys.length === 1 && (keys[0] === 'Ref' || keys[0].startsWith('Fn::') || keys[0] === 'Condition');
}

function describe(v) {
  if (Array.isArray(v)) return 'an array';
  if (v === null) return 'null';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)}`;
}

function checkTemplate(db, file) {
  const problems = [];
  const problem = (where, msg) => problems.push(`${where}: ${msg}`);
  let t;
  try {
    t = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    return [`${e.message}`];
  }
  for (const k of Object.keys(t)) if (!TOP_KEYS.has(k)) problem(k, 'not a section of a template');
  const resources = t.Resources || {};
  const parameters = t.Parameters || {};
  if (!t.Resources || Object.keys(resources).length === 0) problem('Resources', 'a template needs resources');

  // Ref, GetAtt and Sub targets, anywhere.
  function checkRefs(v, where) {
    if (Array.isArray(v)) { v.forEach((x, i) => checkRefs(x, `${where}[${i}]`)); return; }
    if (!v || typeof v !== 'object') return;
    for (const [k, x] of Object.entries(v)) {
      if (k === 'Ref') {
        if (typeof x !== 'string' || !(x in resources || x in parameters || PSEUDO.has(x))) {
          problem(where, `Ref ${JSON.stringify(x)} names no resource, parameter or pseudo parameter`);
        }
      } else if (k === 'Fn::GetAtt') {
        const [id, attr] = typeof x === 'string' ? x.split(/\.(.*)/s) : (Array.isArray(x) ? x : []);
        const r = resources[id];
        if (!r) {
          problem(where, `Fn::GetAtt names no resource: ${JSON.stringify(id)}`);
        } else {
          const spec = db.resources.get(r.Type);
          if (spec && !(attr in (spec.attributes || {}))) {
            problem(where, `Fn::GetAtt: ${r.Type} has no attribute ${JSON.stringify(attr)} (it has ${
              Object.keys(spec.attributes || {}).join(', ') || 'none'})`);
          }
        }
      } else if (k === 'Fn::Sub') {
        const text = Array.isArray(x) ? x[0] : x;
        const vars = Array.isArray(x) && x[1] ? x[1] : {};
        if (typeof text === 'string') {
          for (const m of text.matchAll(/\$\{([^!}][^}]*)\}/g)) {
            const [id, attr] = m[1].split(/\.(.*)/s);
            if (id in vars) continue;
            if (attr !== undefined) checkRefs({ 'Fn::GetAtt': [id, attr] }, where);
            else checkRefs({ Ref: id }, where);
          }
        }
        if (Array.isArray(x) && x[1]) checkRefs(x[1], `${where}.Fn::Sub[1]`);
        continue;
      }
      checkRefs(x, `${where}.${k}`);
    }
  }

  function checkValue(type, v, where) {
    if (isIntrinsic(v)) return; // its target is checked by checkRefs
    switch (type.type) {
      case 'string': case 'date-time':
        if (typeof v !== 'string' && typeof v !== 'number') problem(where, `must be a string, got ${describe(v)}`);
        else if (type.allowedValues && !type.allowedValues.includes(String(v))) {
          problem(where, `${JSON.stringify(v)} is not one of ${type.allowedValues.join(', ')}`);
        }
        return;
      case 'integer':
        if (!(Number.isInteger(v) || (typeof v === 'string' && /^-?\d+$/.test(v)))) {
          problem(where, `must be an integer, got ${describe(v)}`);
        }
        return;
      case 'number':
        if (!(typeof v === 'number' || (typeof v === 'string' && v !== '' && !isNaN(Number(v))))) {
          problem(where, `must be a number, got ${describe(v)}`);
        }
        return;
      case 'boolean':
        if (!(typeof v === 'boolean' || v === 'true' || v === 'false')) {
          problem(where, `must be a boolean, got ${describe(v)}`);
        }
        return;
      case 'json':
        if (v === null || typeof v !== 'object') problem(where, `must be a JSON object, got ${describe(v)}`);
        return;
      case 'tag':
        if (!v || typeof v !== 'object' || Array.isArray(v)) { problem(where, `must be a tag, got ${describe(v)}`); return; }
        for (const k of Object.keys(v)) if (k !== 'Key' && k !== 'Value') problem(`${where}.${k}`, 'not a field of a tag');
        if (!('Key' in v) || !('Value' in v)) problem(where, 'a tag needs Key and Value');
        return;
      case 'array':
        if (!Array.isArray(v)) { problem(where, `must be an array, got ${describe(v)}`); return; }
        v.forEach((x, i) => checkValue(type.element, x, `${where}[${i}]`));
        return;
      case 'map':
        if (!v || typeof v !== 'object' || Array.isArray(v)) { problem(where, `must be a map, got ${describe(v)}`); return; }
        for (const [k, x] of Object.entries(v)) checkValue(type.element, x, `${where}.${k}`);
        return;
      case 'ref': {
        const def = db.types.get(type.reference.$ref);
        if (!v || typeof v !== 'object' || Array.isArray(v)) {
          problem(where, `must be an object (${def ? def.name : 'a property type'}), got ${describe(v)}`);
          return;
        }
        checkProperties(def ? def.properties : {}, v, where, def ? def.name : '?');
        return;
      }
      case 'union': {
        // Accept when one member accepts it without problems.
        const before = problems.length;
        for (const member of type.types) {
          checkValue(member, v, where);
          if (problems.length === before) return;
          problems.length = before;
        }
        problem(where, `matches none of its types (${type.types.map((m) => m.type).join(', ')}), got ${describe(v)}`);
        return;
      }
      default:
        problem(where, `unknown type ${type.type} in the database`);
    }
  }

  function checkProperties(spec, props, where, typeName) {
    for (const [name, v] of Object.entries(props)) {
      const p = spec[name];
      if (!p) {
        problem(`${where}.${name}`, `${typeName} has no property ${name} (it has ${Object.keys(spec).join(', ')})`);
        continue;
      }
      checkValue(p.type, v, `${where}.${name}`);
    }
    for (const [name, p] of Object.entries(spec)) {
      if (p.required && !(name in props)) problem(where, `${typeName} requires ${name}`);
    }
  }

  const services = new Set();
  for (const [id, r] of Object.entries(resources)) {
    const where = `Resources.${id}`;
    if (!/^[A-Za-z0-9]+$/.test(id)) problem(where, 'logical ids are alphanumeric');
    for (const k of Object.keys(r)) if (!RESOURCE_KEYS.has(k)) problem(`${where}.${k}`, 'not an attribute of a resource');
    const spec = db.resources.get(r.Type);
    if (!spec) { problem(`${where}.Type`, `no resource type ${JSON.stringify(r.Type)}`); continue; }
    services.add(r.Type.split('::')[1].toLowerCase());
    checkProperties(spec.properties || {}, r.Properties || {}, `${where}.Properties`, r.Type);
    for (const dep of [].concat(r.DependsOn || [])) {
      if (!(dep in resources)) problem(`${where}.DependsOn`, `names no resource: ${dep}`);
    }
    checkRefs(r.Properties || {}, `${where}.Properties`);
  }
  checkRefs(t.Outputs || {}, 'Outputs');

  // IAM: the policies of roles, managed policies and queue policies.
  function checkPolicy(doc, where) {
    if (!doc || typeof doc !== 'object' || !Array.isArray(doc.Statement)) {
      problem(where, 'a policy document needs a Statement array');
      return;
    }
    doc.Statement.forEach((s, i) => {
      const at = `${where}.Statement[${i}]`;
      const actions = [].concat(s.Action || []);
      if (actions.length === 0) problem(at, 'no Action');
      for (const a of actions) {
        const service = typeof a === 'string' && a.split(':')[0];
        if (!service || a.includes('*')) problem(at, `action ${JSON.stringify(a)}: name actions one by one`);
        else if (!services.has(service) && !ALWAYS_SERVICES.has(service)) {
          problem(at, `action ${a}: the template makes no ${service} resource`);
        }
      }
      const list = [].concat(s.Resource || []);
      if (list.length === 0) problem(at, 'no Resource');
      for (const res of list) {
        if (res === '*') {
          const other = actions.filter((a) => !STAR_ACTIONS.has(a));
          if (other.length) problem(at, `Resource "*" for ${other.join(', ')}: name the template's resources`);
        } else if (typeof res === 'string') {
          problem(at, `Resource ${res}: name the template's resources (Ref, Fn::GetAtt)`);
        } else if (!isIntrinsic(res)) {
          problem(at, `Resource ${describe(res)}: not a reference`);
        } else if (res.Ref && !(res.Ref in resources)) {
          problem(at, `Resource {Ref: ${res.Ref}}: not a resource of the template`);
        }
      }
    });
  }
  for (const [id, r] of Object.entries(resources)) {
    const p = r.Properties || {};
    if (r.Type === 'AWS::IAM::Role') {
      (p.Policies || []).forEach((pol, i) => checkPolicy(pol.PolicyDocument, `Resources.${id}.Properties.Policies[${i}].PolicyDocument`));
      if (p.ManagedPolicyArns) problem(`Resources.${id}.Properties.ManagedPolicyArns`, 'managed policies grant what this check cannot see');
    } else if (r.Type === 'AWS::IAM::ManagedPolicy' || r.Type === 'AWS::IAM::Policy' || r.Type === 'AWS::SQS::QueuePolicy') {
      checkPolicy(p.PolicyDocument, `Resources.${id}.Properties.PolicyDocument`);
    }
  }
  return problems;
}

function main(argv) {
  let db = path.join(SPEC_DIR, SPEC_PACKAGE, 'db.json.gz');
  const files = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--db') db = argv[++i];
    else files.push(argv[i]);
  }
  if (files.length === 0 || !db) {
    process.stderr.write('usage: node scripts/cfn-check.js [--db FILE] TEMPLATE.json...\n');
    return 2;
  }
  if (!fs.existsSync(db)) {
    process.stderr.write(`cfn-check: ${db} is missing; run scripts/deps.sh\n`);
    return 2;
  }
  const spec = loadDb(db);
  let status = 0;
  for (const file of files) {
    const problems = checkTemplate(spec, file);
    if (problems.length === 0) {
      process.stdout.write(`ok ${file}\n`);
    } else {
      status = 1;
      for (const p of problems) process.stdout.write(`${file}: ${p}\n`);
    }
  }
  return status;
}

process.exitCode = main(process.argv.slice(2));
