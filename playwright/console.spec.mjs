// Browser test of the Gatehouse console: `node playwright/console.spec.mjs` (scripts/test.sh runs it).
//
// It starts everything it needs on 127.0.0.1 and free ports, and stops it again (also on failure):
//   * a real upstream MCP server: server-everything (Streamable HTTP) from $GATEHOUSE_PEERS_DIR,
//     preloaded with backend/cli/tests/peers/bind-localhost.cjs so it listens on loopback only;
//   * `target/debug/gatehouse serve` with a temp data dir and the console from target/site
//     (build both first: `cargo build -p gatehouse` and `scripts/build-console.sh`);
//   * Debian's Chromium ($CHROMIUM or /usr/bin/chromium) through playwright-core, headless, with a
//     fresh profile.
// Then it walks the console as an administrator would: sign in, create a tenant, register the
// upstream, grant a tool to a role, add a user and bind them, create a virtual server, issue an API
// token, call the gateway with it, and read the audit log. It checks that the page is hydrated and that
// forms update the page without a navigation.
//
// Output: one line per step, then `N passed, M failed`; exit status 1 on any failure. On failure a
// screenshot and the server logs are left in playwright/artifacts/. With SCREENSHOTS=1 it also saves
// a screenshot of every page there (pages-*.png). Every wait is bounded.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const ARTIFACTS = path.join(HERE, 'artifacts');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PEERS = process.env.GATEHOUSE_PEERS_DIR || path.join(ROOT, 'backend/cli/tests/peers/node_modules');
const GATEHOUSE_BIN = process.env.GATEHOUSE_BIN || path.join(ROOT, 'target/debug/gatehouse');
const SITE_ROOT = path.join(ROOT, 'target/site');
const SCREENSHOTS = process.env.SCREENSHOTS === '1';

const ADMIN_EMAIL = 'admin@example.com';
const ADMIN_PASSWORD = 'correct-horse-battery';
const TENANT = 'acme';
const SERVER = 'everything';
const ROLE = 'analyst';
const USER = 'bob@example.com';
const VS = 'eng';
const TOKEN = 'laptop';

const STEP_TIMEOUT_MS = 60_000; // one step, all its waits included
const WAIT_MS = 15_000; // one expectation
const WATCHDOG_MS = 6 * 60_000; // the whole run

// ------------------------------------------------------------------ processes

const children = [];

function startProcess(name, command, args, env) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const log = fs.createWriteStream(path.join(ARTIFACTS, `${name}.log`));
  const child = spawn(command, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  child.on('error', (e) => log.write(`spawn error: ${e.message}\n`));
  children.push({ name, child });
  return child;
}

async function stopAll() {
  await Promise.all(
    children.map(async ({ child }) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const exited = once(child, 'exit').then(() => true);
      const timeout = new Promise((resolve) => setTimeout(() => resolve(false), 3000));
      if (!(await Promise.race([exited, timeout]))) child.kill('SIGKILL');
    }),
  );
}

function tailOf(name, lines = 30) {
  try {
    const text = fs.readFileSync(path.join(ARTIFACTS, `${name}.log`), 'utf8');
    return text.split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function freePort() {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns a truthy value or `ms` pass. */
async function waitFor(what, ms, check) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(250);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
}

async function tcpOpen(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.setTimeout(1000);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

// ------------------------------------------------------------------ a tiny test runner

const results = [];
let chainBroken = false;
let page;

function safeName(name) {
  return name.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '').toLowerCase();
}

/**
 * Runs one step. Steps of the main walk depend on each other: after the first failure the rest of
 * the walk is skipped. `independent` steps run anyway.
 */
async function step(name, fn, { independent = false } = {}) {
  if (chainBroken && !independent) {
    results.push({ name, status: 'skipped' });
    console.log(`  SKIP  ${name}`);
    return;
  }
  const started = Date.now();
  let timer;
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`step took longer than ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS);
      }),
    ]);
    results.push({ name, status: 'passed' });
    console.log(`  PASS  ${name}  (${Date.now() - started} ms)`);
  } catch (e) {
    results.push({ name, status: 'failed', error: e });
    console.log(`  FAIL  ${name}  (${Date.now() - started} ms)\n        ${String(e.stack || e).split('\n').join('\n        ')}`);
    if (!independent) chainBroken = true;
    if (page) {
      const file = path.join(ARTIFACTS, `failure-${safeName(name)}.png`);
      await page.screenshot({ path: file, fullPage: true, timeout: 10_000 }).catch(() => {});
      console.log(`        screenshot: ${path.relative(ROOT, file)}  (page URL ${page.url()})`);
    }
  } finally {
    clearTimeout(timer);
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

// ------------------------------------------------------------------ page helpers

const byTestId = (id) => page.locator(`[data-testid="${id}"]`);

/** Waits until the WebAssembly half has hydrated the page (set by the app in an effect). */
async function hydrated() {
  await page.locator('body[data-hydrated="true"]').waitFor({ state: 'attached', timeout: WAIT_MS });
}

async function textOf(id) {
  const el = byTestId(id);
  await el.waitFor({ timeout: WAIT_MS });
  return (await el.textContent()) ?? '';
}

async function waitText(id, expected, ms = WAIT_MS) {
  return waitFor(`[data-testid=${id}] to contain ${JSON.stringify(expected)}`, ms, async () => {
    const el = byTestId(id);
    if ((await el.count()) === 0) return false;
    const text = (await el.first().textContent()) ?? '';
    return text.includes(expected) ? text : false;
  });
}

async function snap(name) {
  if (SCREENSHOTS) await page.screenshot({ path: path.join(ARTIFACTS, `pages-${name}.png`), fullPage: true });
}

/** Opens a tenant tab by clicking it (client-side routing) and waits for the section. */
async function openTab(section, heading) {
  await byTestId(`tab-${section}`).click({ timeout: WAIT_MS });
  await page.waitForURL(`**/t/${TENANT}/${section}`, { timeout: WAIT_MS });
  await page.getByRole('heading', { name: heading, exact: true }).waitFor({ timeout: WAIT_MS });
}

/**
 * Remembers the current document; `assertSameDocument` then proves that no navigation (no page
 * load) happened in between: same `performance.timeOrigin`, the marker still on `window`, no `load`.
 */
async function markDocument() {
  const marker = `m${Math.random()}`;
  const timeOrigin = await page.evaluate((m) => {
    window.__gatehouseMarker = m;
    return performance.timeOrigin;
  }, marker);
  return { marker, timeOrigin, loads: loadCount };
}

async function assertSameDocument(mark) {
  const now = await page.evaluate(() => ({ marker: window.__gatehouseMarker, timeOrigin: performance.timeOrigin }));
  assert(now.timeOrigin === mark.timeOrigin, `performance.timeOrigin changed (${mark.timeOrigin} → ${now.timeOrigin})`);
  assert(now.marker === mark.marker, 'the window marker is gone: the page was reloaded');
  assert(loadCount === mark.loads, `${loadCount - mark.loads} page load(s) happened`);
}

let loadCount = 0;

// ------------------------------------------------------------------ MCP client (to make audit events)

/** One JSON-RPC request to a Streamable HTTP endpoint; answers JSON or SSE. */
/** Opens a session on the virtual server with the token and calls one tool; `null` while the gateway
 * does not accept the token yet (the bundle is on its way). */
async function callInFreshSession(endpoint, token, tool, args) {
  const init = await mcpRequest(endpoint, token, {
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'console-spec', version: '1.0.0' } },
  });
  if (!init.sessionId) return null;
  return mcpRequest(
    endpoint,
    token,
    { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: tool, arguments: args } },
    init.sessionId,
  );
}

async function mcpRequest(url, token, body, sessionId) {
  const headers = {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    authorization: `Bearer ${token}`,
  };
  if (sessionId) {
    headers['mcp-session-id'] = sessionId;
    headers['mcp-protocol-version'] = '2025-11-25';
  }
  const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body), signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  let message = null;
  if ((res.headers.get('content-type') || '').includes('text/event-stream')) {
    for (const line of text.split('\n')) {
      // An event may carry no data (a priming event that only sets an id for resumption).
      if (line.startsWith('data:') && line.slice(5).trim()) {
        const m = JSON.parse(line.slice(5));
        if (m.id === body.id) message = m;
      }
    }
  } else if (text.trim()) {
    message = JSON.parse(text);
  }
  return { status: res.status, sessionId: res.headers.get('mcp-session-id'), message, text };
}

// ------------------------------------------------------------------ main

async function main() {
  fs.rmSync(ARTIFACTS, { recursive: true, force: true });
  fs.mkdirSync(ARTIFACTS, { recursive: true });

  for (const [what, file] of [
    ['the gatehouse binary (cargo build -p gatehouse)', GATEHOUSE_BIN],
    ['the console bundle (scripts/build-console.sh)', path.join(SITE_ROOT, 'pkg/gatehouse_console_bg.wasm')],
    ['Chromium (apt-get install chromium, or set CHROMIUM)', CHROMIUM],
    ['server-everything (scripts/setup.sh test)', path.join(PEERS, '@modelcontextprotocol/server-everything/dist/index.js')],
  ]) {
    if (!fs.existsSync(file)) throw new Error(`missing ${what}: ${file}`);
  }

  const [upstreamPort, controlPort, gatewayPort] = [await freePort(), await freePort(), await freePort()];
  const base = `http://127.0.0.1:${controlPort}`;
  const upstreamUrl = `http://127.0.0.1:${upstreamPort}/mcp`;
  const endpoint = `http://127.0.0.1:${gatewayPort}/mcp/${TENANT}/${VS}`;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-console-test-'));
  const profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-chromium-'));

  let context;
  let secret = '';
  const pageErrors = [];
  try {
    const upstream = startProcess(
      'server-everything',
      process.execPath,
      ['--require', path.join(ROOT, 'backend/cli/tests/peers/bind-localhost.cjs'), path.join(PEERS, '@modelcontextprotocol/server-everything/dist/index.js'), 'streamableHttp'],
      { PORT: String(upstreamPort) },
    );
    const gatehouse = startProcess(
      'gatehouse',
      GATEHOUSE_BIN,
      [
        'serve',
        '--data-dir', dataDir,
        '--listen', `127.0.0.1:${controlPort}`,
        '--gateway-listen', `127.0.0.1:${gatewayPort}`,
        '--site-root', SITE_ROOT,
      ],
      {
        GATEHOUSE_ADMIN_EMAIL: ADMIN_EMAIL,
        GATEHOUSE_ADMIN_PASSWORD: ADMIN_PASSWORD,
        // stdio upstreams (docs/decisions/0016-stdio-and-sse-upstreams.md): only `node` may be launched.
        GATEHOUSE_STDIO_COMMANDS: 'node',
        RUST_LOG: process.env.RUST_LOG || 'info',
        NO_COLOR: '1',
      },
    );

    await step('upstream MCP server and gatehouse start', async () => {
      await waitFor('server-everything to listen', 20_000, async () => {
        if (upstream.exitCode !== null) throw new Error(`server-everything exited:\n${tailOf('server-everything')}`);
        return tcpOpen(upstreamPort);
      });
      await waitFor('gatehouse /healthz', 45_000, async () => {
        if (gatehouse.exitCode !== null) throw new Error(`gatehouse exited:\n${tailOf('gatehouse')}`);
        const res = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(2000) });
        return res.ok;
      });
      const js = await fetch(`${base}/pkg/gatehouse_console.js`, { signal: AbortSignal.timeout(5000) });
      assert(js.ok, `/pkg/gatehouse_console.js answered ${js.status}`);
    });

    await step('chromium starts', async () => {
      context = await chromium.launchPersistentContext(profileDir, {
        executablePath: CHROMIUM,
        headless: true,
        timeout: 30_000,
        viewport: { width: 1280, height: 900 },
        args: [
          '--headless',
          '--no-sandbox',
          '--disable-gpu',
          '--disable-quic',
          '--no-first-run',
          '--disable-background-networking',
          '--disable-component-update',
          '--disable-sync',
        ],
      });
      context.setDefaultTimeout(WAIT_MS);
      page = context.pages()[0] ?? (await context.newPage());
      page.on('load', () => {
        loadCount += 1;
      });
      page.on('pageerror', (e) => pageErrors.push(e));
      page.on('console', (m) => {
        if (m.type() === 'error') console.log(`        [browser console] ${m.text()}`);
      });
    });

    await step('an unauthenticated visit is sent to /login', async () => {
      const res = await page.goto(`${base}/t/${TENANT}/roles`, { timeout: WAIT_MS });
      assert(res && res.ok(), `status ${res && res.status()}`);
      const url = new URL(page.url());
      assert(url.pathname === '/login', `landed on ${page.url()}`);
      assert(url.searchParams.get('next') === `/t/${TENANT}/roles`, `next= is ${url.searchParams.get('next')}`);
      await hydrated();
      await snap('01-login');
    });

    await step('sign in', async () => {
      await page.goto(`${base}/login`);
      await hydrated();
      await byTestId('login-email').fill(ADMIN_EMAIL);
      await byTestId('login-password').fill(ADMIN_PASSWORD);
      await byTestId('login-submit').click();
      await page.waitForURL(`${base}/`, { timeout: WAIT_MS });
      await waitText('whoami', ADMIN_EMAIL);
      await page.getByRole('heading', { name: 'Tenants', exact: true }).waitFor();
    });

    await step('bad input is reported next to the form', async () => {
      await page.goto(`${base}/`);
      await hydrated();
      await byTestId('tenant-slug').fill('Not A Slug');
      await byTestId('tenant-name').fill('Broken');
      const mark = await markDocument();
      await byTestId('create-tenant').click();
      const text = await waitText('create-tenant-error', 'slug');
      assert(/lowercase|a-z/.test(text), `unexpected message: ${text}`);
      await assertSameDocument(mark);
    });

    await step('create a tenant', async () => {
      await byTestId('tenant-slug').fill(TENANT);
      await byTestId('tenant-name').fill('Acme Corp');
      const mark = await markDocument();
      await byTestId('create-tenant').click();
      await byTestId(`tenant-${TENANT}`).waitFor();
      await assertSameDocument(mark);
      await snap('02-tenants');
      await byTestId(`tenant-${TENANT}`).getByRole('link', { name: 'Acme Corp' }).click();
      await page.waitForURL(`${base}/t/${TENANT}`);
      await waitText('tenant-title', 'Acme Corp');
      await byTestId('bundle-revision').waitFor();
      await snap('03-tenant');
    });

    await step('register the upstream server and see its tools', async () => {
      await openTab('servers', 'Upstream MCP servers');
      await byTestId('server-slug').fill(SERVER);
      await byTestId('server-name').fill('Everything');
      await byTestId('server-url').fill(upstreamUrl);
      await byTestId('register-server').click();
      await waitText(`tools-${SERVER}`, 'echo', 30_000);
      const tools = await textOf(`tools-${SERVER}`);
      assert(tools.includes('get-sum'), `tools list lacks get-sum: ${tools.slice(0, 200)}`);
      await snap('04-servers');
    });

    await step('create a role without a page load (hydrated form)', async () => {
      await openTab('roles', 'Access roles');
      await hydrated();
      const mark = await markDocument();
      await byTestId('role-slug').fill(ROLE);
      await byTestId('role-description').fill('Reads data');
      await byTestId('create-role').click();
      await byTestId(`role-${ROLE}`).waitFor();
      await waitText(`grants-${ROLE}`, 'Grants nothing yet');
      await assertSameDocument(mark);
    });

    await step('grant echo to the role with the checkboxes', async () => {
      const mark = await markDocument();
      await byTestId(`grant-${ROLE}-${SERVER}-echo`).check();
      await byTestId(`save-grants-${ROLE}`).click();
      await waitText(`grants-${ROLE}`, `echo of ${SERVER}`);
      await assertSameDocument(mark);
      // Saved for real: a fresh server-rendered page shows the box ticked.
      await page.reload();
      await hydrated();
      assert(await byTestId(`grant-${ROLE}-${SERVER}-echo`).isChecked(), 'echo is not ticked after a reload');
      assert(!(await byTestId(`grant-${ROLE}-${SERVER}-get-sum`).isChecked()), 'get-sum is ticked');
      await snap('05-roles');
    });

    await step('create a user and bind them to the role', async () => {
      await openTab('users', 'Users');
      await byTestId('user-email').fill(USER);
      await byTestId('user-name').fill('Bob');
      await byTestId('user-console-role').selectOption('member');
      await byTestId('create-user').click();
      await byTestId(`user-${USER}`).waitFor();
      await byTestId('bind-user').selectOption(USER);
      await byTestId('bind-role').selectOption(ROLE);
      await byTestId('bind-submit').click();
      await waitFor(`${USER} to have role ${ROLE}`, WAIT_MS, async () =>
        ((await byTestId(`user-${USER}`).locator('[data-testid="user-roles"]').textContent()) ?? '').includes(ROLE),
      );
      await snap('06-users');
      await openTab('roles', 'Access roles');
      await waitText(`members-${ROLE}`, USER);
    });

    await step('create a virtual server and see its endpoint', async () => {
      await openTab('virtual-servers', 'Virtual servers');
      await byTestId('vs-slug').fill(VS);
      await byTestId('vs-name').fill('Engineering');
      await byTestId(`vs-server-${SERVER}`).check();
      await byTestId('create-vs').click();
      const shown = await waitText(`vs-endpoint-${VS}`, `/mcp/${TENANT}/${VS}`);
      assert(shown.trim() === endpoint, `endpoint shown is ${shown.trim()}, expected ${endpoint}`);
      await snap('07-virtual-servers');
    });

    await step('create an API token and see its secret once', async () => {
      await openTab('tokens', 'API tokens');
      await byTestId('token-user').selectOption(USER);
      await byTestId('token-name').fill(TOKEN);
      await byTestId('token-expiry').fill('30');
      await byTestId('create-token').click();
      await byTestId('token-secret').waitFor();
      secret = await byTestId('token-secret').inputValue();
      assert(/^ghp_[0-9a-f]{64}$/.test(secret), `unexpected secret ${secret.slice(0, 8)}…`);
      await waitText(`token-${TOKEN}`, USER);
      await waitText(`token-${TOKEN}`, 'active');
      await byTestId('toggle-secret').click();
      assert((await byTestId('token-secret').getAttribute('type')) === 'password', 'hide did not mask the secret');
      await byTestId('toggle-secret').click();
      await snap('08-tokens');
      await page.reload();
      await hydrated();
      await byTestId(`token-${TOKEN}`).waitFor();
      assert((await byTestId('token-secret').count()) === 0, 'the secret is shown again after a reload');
      assert(!(await page.content()).includes(secret), 'the secret is in the page after a reload');
    });

    await step('an MCP client calls the virtual server with the token', async () => {
      // The worker picks up the new bundle by long-poll; allow it a moment.
      const init = await waitFor('the gateway to accept the token', 20_000, async () => {
        const r = await mcpRequest(endpoint, secret, {
          jsonrpc: '2.0',
          id: 1,
          method: 'initialize',
          params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'console-spec', version: '1.0.0' } },
        });
        return r.status === 200 && r.message && r.message.result ? r : false;
      });
      await mcpRequest(endpoint, secret, { jsonrpc: '2.0', method: 'notifications/initialized' }, init.sessionId);
      const call = await mcpRequest(
        endpoint,
        secret,
        { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'echo', arguments: { message: 'hello gatehouse' } } },
        init.sessionId,
      );
      assert(call.message && call.message.result, `echo failed: ${call.status} ${call.text.slice(0, 300)}`);
      const denied = await mcpRequest(
        endpoint,
        secret,
        { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'get-sum', arguments: { a: 1, b: 2 } } },
        init.sessionId,
      );
      assert(denied.message && (denied.message.error || denied.message.result?.isError), `get-sum was not refused: ${denied.text.slice(0, 300)}`);
    });

    await step('explain what the user can do on the virtual server', async () => {
      await openTab('virtual-servers', 'Virtual servers');
      await byTestId('explain-vs').selectOption(VS);
      await byTestId('explain-user').selectOption(USER);
      const mark = await markDocument();
      await byTestId('explain').click();
      const echo = await waitText(`explain-${SERVER}-echo`, 'allowed');
      assert(echo.includes(`granted by role ${ROLE}`), `echo row: ${echo}`);
      const sum = await waitText(`explain-${SERVER}-get-sum`, 'refused');
      assert(sum.includes('not granted'), `get-sum row: ${sum}`);
      await assertSameDocument(mark);
      await snap('09-explain');
    });

    await step('add an access rule; a bad one is refused naming the field', async () => {
      await openTab('roles', 'Access roles');
      await hydrated();
      const mark = await markDocument();
      await byTestId(`add-rule-open-${ROLE}`).click();
      await byTestId(`rule-${ROLE}-effect`).selectOption('allow');
      await byTestId(`rule-${ROLE}-server`).selectOption(SERVER);
      await byTestId(`rule-${ROLE}-tools`).fill('echo');
      await byTestId(`rule-${ROLE}-param`).fill('nope');
      await byTestId(`rule-${ROLE}-max-length`).fill('3');
      await byTestId(`add-rule-${ROLE}`).click();
      const refused = await waitText(`add-rule-error-${ROLE}`, 'params[0].param');
      assert(refused.includes("no parameter 'nope'"), `refusal: ${refused}`);
      await byTestId(`rule-${ROLE}-param`).fill('message');
      await byTestId(`rule-${ROLE}-max-length`).fill('');
      await byTestId(`rule-${ROLE}-pattern`).fill('hello.*');
      await byTestId(`rule-${ROLE}-description`).fill('greetings only');
      await byTestId(`add-rule-${ROLE}`).click();
      const rule = await waitText(`rule-${ROLE}-echo`, 'matches hello.*');
      assert(rule.includes('greetings only'), `rule row: ${rule}`);
      await assertSameDocument(mark);
      // Saved for real: a fresh server-rendered page lists it; then delete it again.
      await page.reload();
      await hydrated();
      await waitText(`rule-${ROLE}-echo`, 'matches hello.*');
      await snap('10-rules');
      await byTestId(`rule-${ROLE}-echo`).getByRole('button', { name: /Delete rule/ }).click();
      await waitFor('the rule to be gone', WAIT_MS, async () => (await byTestId(`rule-${ROLE}-echo`).count()) === 0);
    });

    await step('switch the virtual server to monitor-only and back', async () => {
      await openTab('virtual-servers', 'Virtual servers');
      await hydrated();
      await waitText(`vs-mode-${VS}`, 'enforced');
      await byTestId(`vs-set-mode-${VS}`).click();
      await waitText(`vs-mode-${VS}`, 'monitor only');
      await byTestId(`vs-set-mode-${VS}`).click();
      await waitText(`vs-mode-${VS}`, 'enforced');
    });

    await step('label the server and add a data rule; the gateway redacts by it', async () => {
      await openTab('servers', 'Upstream MCP servers');
      await hydrated();
      await byTestId(`labels-input-${SERVER}`).fill('PII, eu');
      await byTestId(`labels-save-${SERVER}`).click();
      await waitText(`labels-${SERVER}`, 'PII, eu');
      await openTab('data', 'Data rules');
      await hydrated();
      await byTestId('data-name').fill('mask mail');
      await byTestId('data-detector').selectOption('pattern');
      await byTestId('data-pattern').fill('(');
      await byTestId('add-data-rule').click();
      await waitText('add-data-rule-error', 'pattern:');
      await byTestId('data-detector').selectOption('email');
      await byTestId('data-pattern').fill('');
      await byTestId('data-action').selectOption('redact');
      await byTestId('data-scope').selectOption('responses');
      await byTestId('data-labels').fill('PII');
      await byTestId('add-data-rule').click();
      const rule = await waitText('data-rule-mask mail', 'servers labelled PII');
      assert(rule.includes('Redact e-mail addresses in results'), `rule row: ${rule}`);
      await snap('11-data-rules');
      // The gateway applies it once the new bundle arrives.
      await waitFor('the gateway to redact the e-mail address', 20_000, async () => {
        const call = await callInFreshSession(endpoint, secret, 'echo', { message: 'mail bob@example.com' });
        if (!call) return false;
        return call.text.includes('[REDACTED:email]') && !call.text.includes('bob@example.com');
      });
    });

    await step('add a rate limit; a bad one is refused naming the field; the gateway answers 429', async () => {
      await openTab('limits', 'Rate limits');
      await hydrated();
      await byTestId('limit-scope').selectOption('role');
      await byTestId('limit-requests').fill('1');
      await byTestId('limit-per').fill('3600');
      await byTestId('add-limit').click();
      await waitText('add-limit-error', 'role:');
      await byTestId('limit-role').fill(ROLE);
      await byTestId('limit-server').fill(SERVER);
      await byTestId('limit-tool').fill('echo');
      await byTestId('add-limit').click();
      await waitText('rate-limits', `Each holder of role ${ROLE}: 1 calls of echo of ${SERVER} per 3600 s`);
      await snap('12-rate-limits');
      // Once the bundle is there, the second echo of the hour is refused with Retry-After.
      await waitFor('the gateway to answer 429', 20_000, async () => {
        const call = await callInFreshSession(endpoint, secret, 'echo', { message: 'again' });
        if (!call) return false;
        return call.status === 429;
      });
      // Remove it again, so the steps after this one are not limited.
      await byTestId('rate-limits').getByRole('button', { name: /Delete rate limit/ }).click();
      await waitText('rate-limits', 'No rate limits');
    });

    await step('pull the kill switch on a tool and lift it again', async () => {
      await byTestId('tab-overview').click();
      await page.getByRole('heading', { name: 'Kill switch', exact: true }).waitFor({ timeout: WAIT_MS });
      await hydrated();
      const mark = await markDocument();
      await byTestId('kill-submit').click();
      // The browser refuses the empty required reason; with a reason but no target, the server says what is missing.
      await byTestId('kill-reason').fill('prompt injection seen in the wild');
      await byTestId('kill-submit').click();
      await waitText('kill-error', 'name a user, or a server');
      await byTestId('kill-server').fill(SERVER);
      await byTestId('kill-tool').fill('echo');
      await byTestId('kill-submit').click();
      const listed = await waitText('suspensions', `tool echo of ${SERVER}`);
      assert(listed.includes('prompt injection seen in the wild'), `suspensions: ${listed}`);
      await snap('13-kill-switch');
      await byTestId('suspensions').getByRole('button', { name: /Lift the suspension/ }).click();
      await waitText('suspensions', 'Nothing is suspended');
      await assertSameDocument(mark);
    });

    await step('the audit page shows the calls (refresh without a page load)', async () => {
      await openTab('audit', 'Audit log');
      const mark = await markDocument();
      await waitFor('the echo call in the audit table', 30_000, async () => {
        const table = byTestId('audit-table');
        if ((await table.count()) > 0 && ((await table.textContent()) ?? '').includes('echo')) return true;
        await byTestId('audit-refresh').click();
        await sleep(750);
        return false;
      });
      const text = await textOf('audit-table');
      assert(text.includes(USER), 'the audit table does not name the user');
      assert(text.includes('console-spec'), 'the audit table does not name the client');
      assert(text.includes('allowed'), 'no allowed outcome in the audit table');
      await assertSameDocument(mark);
      await snap('09-audit');
    });

    await step('revoke the token', async () => {
      await openTab('tokens', 'API tokens');
      await byTestId(`revoke-${TOKEN}`).click();
      await waitText(`token-${TOKEN}`, 'revoked');
    });

    // ---- Publishing (decision 0015): reviewed mode, the draft's diff, publish, rollback.
    await step('reviewed publishing: a grant waits in the draft, is published with a note, and rolled back', async () => {
      await openTab('publish', 'Publish');
      await hydrated();
      await waitText('publishing-mode', 'automatic');
      await byTestId('publish-submit').click();
      await waitText('publish-error', 'nothing to publish');
      await byTestId('mode-switch').click();
      await waitText('publishing-mode', 'reviewed');
      // Grant get-sum: it waits in the draft.
      await openTab('roles', 'Access roles');
      await hydrated();
      await byTestId(`grant-${ROLE}-${SERVER}-get-sum`).check();
      await byTestId(`save-grants-${ROLE}`).click();
      await waitText(`grants-${ROLE}`, 'get-sum');
      await openTab('publish', 'Publish');
      await hydrated();
      const diff = await waitText('access-diff', USER);
      assert(diff.includes(`${SERVER}/get-sum`), `access diff: ${diff}`);
      await waitText('replay-summary', 'Replayed');
      await byTestId('publish-note').fill('console spec: get-sum for the analyst');
      await byTestId('publish-submit').click();
      await waitText('draft-state', 'Nothing to publish');
      const history = await waitText('publications', 'console spec: get-sum for the analyst');
      assert(history.includes(ADMIN_EMAIL), `publications: ${history}`);
      await snap('14-publish');
      // Roll back to the publication before it: the draft keeps the grant and says so.
      const rows = byTestId('publications').locator('button', { hasText: 'Roll back to this' });
      await rows.first().click();
      await waitText('rolled-back', 'rolled-back revision');
      await waitText('publications', 'rollback to #');
      // Leave the tenant as the steps after this one expect it: get-sum not granted, automatic publishing.
      await openTab('roles', 'Access roles');
      await hydrated();
      await byTestId(`grant-${ROLE}-${SERVER}-get-sum`).uncheck();
      await byTestId(`save-grants-${ROLE}`).click();
      await waitFor('get-sum to leave the grants', WAIT_MS, async () => {
        const text = (await byTestId(`grants-${ROLE}`).textContent()) ?? '';
        return text.includes('echo') && !text.includes('get-sum');
      });
      await openTab('publish', 'Publish');
      await hydrated();
      await waitText('draft-state', 'Nothing to publish');
      await byTestId('mode-switch').click();
      await waitText('publishing-mode', 'automatic');
    });

    // Groups, attributes and CEL conditions (docs/decisions/0012-groups-and-conditions.md): a bad
    // condition is refused naming the field and the place; a good one is saved and shown.
    await step('groups and attributes; a rule condition with a bad CIDR is refused naming the field', async () => {
      await openTab('groups', 'Groups');
      await hydrated();
      await byTestId('group-slug').fill('oncall');
      await byTestId('group-name').fill('On call');
      await byTestId('group-create').click();
      await waitText('group-oncall', 'On call');
      await byTestId('attrs-email').fill(USER);
      await byTestId('attrs-text').fill('department=payments');
      await byTestId('attrs-save').click();
      await waitText('attrs-saved', 'Saved: department=payments');
      await openTab('roles', 'Access roles');
      await hydrated();
      const mark = await markDocument();
      await byTestId(`add-rule-open-${ROLE}`).click();
      await byTestId(`rule-${ROLE}-effect`).selectOption('allow');
      await byTestId(`rule-${ROLE}-server`).selectOption(SERVER);
      await byTestId(`rule-${ROLE}-tools`).fill('get-tiny-image');
      await byTestId(`rule-${ROLE}-condition`).fill("inCidr(client.ip, '10.0.0.0/33')");
      await byTestId(`add-rule-${ROLE}`).click();
      const refused = await waitText(`add-rule-error-${ROLE}`, 'condition: line 1, column 19');
      assert(refused.includes('the prefix length must be a number from 0 to 32'), `refusal: ${refused}`);
      await byTestId(`rule-${ROLE}-condition`).fill("'oncall' in user.groups");
      await byTestId(`add-rule-${ROLE}`).click();
      await waitText(`rule-${ROLE}-get-tiny-image`, "only when 'oncall' in user.groups");
      await assertSameDocument(mark);
      await snap('15-conditions');
    });

    // Gateway status (docs/decisions/0014-gateway-groups.md): the worker of `serve` reports the revision
    // it runs for this tenant; the overview's Gateways card shows it as the newest, online.
    await step('the overview shows the gateway worker running the newest revision', async () => {
      await byTestId('tab-overview').click();
      await page.getByRole('heading', { name: 'Gateways', exact: true }).waitFor({ timeout: WAIT_MS });
      await hydrated();
      await waitText('gateway-group', 'Gateway group default');
      const row = await waitFor('a worker marked latest and online', WAIT_MS, async () => {
        await byTestId('gateways-refresh').click();
        const table = byTestId('gateway-workers');
        if ((await table.count()) === 0) return false;
        const text = (await table.first().textContent()) ?? '';
        return text.includes('latest') && text.includes('online') ? text : false;
      });
      assert(!row.includes('behind'), `a worker is behind: ${row}`);
      await snap('16-gateways');
    });

    // Virtual-server shaping (docs/decisions/0013-virtual-server-shaping.md): a self-contained block.
    await step('shape a tool: a bad fixed value is refused naming the field; rename and fix; prefix strategy', async () => {
      await openTab('virtual-servers', 'Virtual servers');
      const mark = await markDocument();
      const row = (tool) => byTestId(`shape-tool-${SERVER}-${tool}`);
      await row('get-sum').waitFor({ timeout: WAIT_MS });
      await row('get-sum').locator('[data-testid=edit-override]').click();
      await byTestId('ov-fixed').fill('{"a": "forty"}');
      await byTestId('save-override').click();
      await waitText('override-error', 'override.fixed.a: "forty" is not of the parameter\'s type "number"');
      await byTestId('ov-fixed').fill('{"a": 40}');
      await byTestId('ov-rename').fill('add-forty');
      await byTestId('save-override').click();
      await waitText(`shape-tool-${SERVER}-get-sum`, 'add-forty');
      const params = (await row('get-sum').locator('[data-testid=params]').textContent())?.trim();
      assert(params === 'b', `the fixed parameter is still advertised: ${params}`);
      await byTestId('shape-strategy').selectOption('prefix');
      await byTestId('save-strategy').click();
      await waitText(`shape-tool-${SERVER}-echo`, `${SERVER}__echo`);
      assert((await row('get-sum').locator('[data-testid=exposed]').textContent())?.trim() === 'add-forty', 'a rename is never prefixed');
      await assertSameDocument(mark);
      await snap('16-shaping');
    });

    // stdio upstreams (docs/decisions/0016-stdio-and-sse-upstreams.md): a self-contained block.
    await step('register a stdio server; a command off the allow-list is refused naming the field', async () => {
      await openTab('servers', 'Upstream MCP servers');
      await hydrated();
      const mark = await markDocument();
      await byTestId('server-slug').fill('local');
      await byTestId('server-name').fill('Local everything');
      await byTestId('server-transport').selectOption('stdio');
      await byTestId('server-command').fill('/usr/bin/touch');
      await byTestId('server-args').fill('/tmp/gatehouse-console-spec-must-not-exist');
      await byTestId('register-server').click();
      await waitText('register-server-error', 'command: ');
      assert((await textOf('register-server-error')).includes('stdio_commands'), 'the refusal names the setting');
      assert(!fs.existsSync('/tmp/gatehouse-console-spec-must-not-exist'), 'a refused command was launched');
      await byTestId('server-command').fill('node');
      await byTestId('server-args').fill(`${path.join(PEERS, '@modelcontextprotocol/server-everything/dist/index.js')}\nstdio`);
      await byTestId('register-server').click();
      await waitText('tools-local', 'get-env', 30_000);
      await waitText('transport-local', 'stdio: node ');
      await assertSameDocument(mark);
      await snap('17-stdio-server');
    });

    // MCP sessions (docs/decisions/0006-stateless-sessions.md, "Ending sessions"): a self-contained block.
    await step('end a user\'s MCP sessions; rotate the session key; retiring the old one needs force', async () => {
      await byTestId('tab-overview').click();
      await page.getByRole('heading', { name: 'MCP sessions', exact: true }).waitFor({ timeout: WAIT_MS });
      await hydrated();
      const mark = await markDocument();
      await byTestId('end-sessions-user').fill('nobody@example.com');
      await byTestId('end-sessions').click();
      await waitText('end-sessions-error', 'nobody@example.com');
      await byTestId('end-sessions-user').fill(USER);
      await byTestId('end-sessions').click();
      await waitText('session-cutoffs', `Sessions of ${USER} started before`);
      const keys = () => byTestId('session-keys').locator('li').count();
      await waitFor('one session key', WAIT_MS, async () => (await keys()) === 1);
      await byTestId('rotate-session-key').click();
      await waitFor('a second session key', WAIT_MS, async () => (await keys()) === 2);
      const sealing = await byTestId('session-keys').locator('li').first().textContent();
      assert(sealing.includes('seals new sessions'), `the new key is listed first and seals: ${sealing}`);
      const retire = byTestId('session-keys').getByRole('button', { name: /Retire session key/ });
      await retire.waitFor({ timeout: WAIT_MS });
      await retire.click();
      await waitText('retire-error', 'pass force');
      await byTestId('session-keys').getByRole('checkbox').check();
      await retire.click();
      await waitFor('one key left', WAIT_MS, async () => (await keys()) === 1);
      await assertSameDocument(mark);
      await snap('18-sessions');
    });

    await step('sign out', async () => {
      await byTestId('sign-out').click();
      await page.waitForURL(`${base}/login`, { timeout: WAIT_MS });
      await page.goto(`${base}/`);
      assert(new URL(page.url()).pathname === '/login', `after sign-out / went to ${page.url()}`);
    });

    await step(
      'a wrong password shows an error',
      async () => {
        assert(page, 'no browser');
        await context.clearCookies();
        await page.goto(`${base}/login`);
        await hydrated();
        const mark = await markDocument();
        await byTestId('login-email').fill(ADMIN_EMAIL);
        await byTestId('login-password').fill('not-the-password');
        await byTestId('login-submit').click();
        await waitText('login-error', 'e-mail or password is wrong');
        await assertSameDocument(mark);
        assert(new URL(page.url()).pathname === '/login', `left the login page: ${page.url()}`);
        await snap('10-login-error');
      },
      { independent: true },
    );

    await step(
      'no uncaught errors in the page',
      async () => {
        assert(pageErrors.length === 0, `page errors:\n${pageErrors.map((e) => e.stack || e).join('\n')}`);
      },
      { independent: true },
    );
  } finally {
    if (context) await context.close().catch(() => {});
    await stopAll();
    fs.rmSync(dataDir, { recursive: true, force: true });
    fs.rmSync(profileDir, { recursive: true, force: true });
  }
}

const watchdog = setTimeout(async () => {
  console.log(`console.spec: the whole run exceeded ${WATCHDOG_MS / 1000} s; stopping`);
  await stopAll();
  process.exit(1);
}, WATCHDOG_MS);

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, async () => {
    await stopAll();
    process.exit(130);
  });
}

let crashed = null;
try {
  console.log('console.spec: the Gatehouse console in Chromium');
  await main();
} catch (e) {
  crashed = e;
  console.log(`console.spec: ${e.stack || e}`);
}
clearTimeout(watchdog);

const passed = results.filter((r) => r.status === 'passed').length;
const failed = results.filter((r) => r.status === 'failed').length + (crashed ? 1 : 0);
const skipped = results.filter((r) => r.status === 'skipped').length;
if (failed) {
  console.log(`\ngatehouse log (tail):\n${tailOf('gatehouse')}`);
  console.log(`artifacts: ${path.relative(ROOT, ARTIFACTS)}/`);
}
console.log(`\n${passed} passed, ${failed} failed${skipped ? ` (${skipped} skipped after the first failure)` : ''}`);
process.exit(failed ? 1 : 0);
