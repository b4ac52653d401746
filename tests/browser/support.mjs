// Fixtures of the browser tests: a real `taskwire serve` on a free port with
// a config file, Debian chromium through playwright-core (never a browser
// download), a TCP proxy the tests can cut, a page's own backend, and
// deadline helpers. Nothing here sleeps to synchronise: every wait is on an
// event, a socket or a condition, with a deadline.

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = process.env.TASKWIRE_BIN || path.join(ROOT, 'target/debug/taskwire');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** Default deadline of one wait in a test. */
export const DEADLINE_MS = 20_000;

export function sha256hex(data) {
  return createHash('sha256').update(data).digest('hex');
}

export function randomKey(prefix) {
  return `${prefix}_${randomBytes(24).toString('hex')}`;
}

/** A port nobody listens on now (bound on port 0, then released). */
export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Rejects after `ms` with a message naming what was awaited. */
export function deadline(promise, what, ms = DEADLINE_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Re-checks `check` whenever `tick` ms pass, until it returns a truthy
 * value (returned) or the deadline passes. For conditions no event announces
 * (a wall-clock expiry, readiness of a starting process).
 */
export async function until(check, what, { ms = DEADLINE_MS, tick = 50 } = {}) {
  const end = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, tick));
  }
}

/**
 * Starts `taskwire serve` with a fresh config: keys `test` (plain), `other`
 * (plain) and `admin` (admin = true), and the given allowed origins.
 * @param {{allowedOrigins?: string[], port?: number, args?: string[], extraToml?: string}} [options]
 */
export async function startServer({ allowedOrigins = [], port, args = [], extraToml = '' } = {}) {
  if (!fs.existsSync(BIN)) throw new Error(`no server binary at ${BIN} (build it or set TASKWIRE_BIN)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskwire-browser-'));
  const keys = { test: randomKey('twk_test'), other: randomKey('twk_other'), admin: randomKey('twk_admin') };
  const toml = [
    `allowed_origins = ${JSON.stringify(allowedOrigins)}`,
    extraToml,
    ...Object.entries(keys).map(
      ([name, key]) => `[[api_keys]]\nname = "${name}"\nsha256 = "sha256:${sha256hex(key)}"\nadmin = ${name === 'admin'}\n`,
    ),
  ].join('\n');
  const configPath = path.join(dir, 'taskwire.toml');
  fs.writeFileSync(configPath, toml);
  port ??= await freePort();
  const url = `http://127.0.0.1:${port}`;
  let output = '';
  const child = spawn(BIN, ['serve', '--config', configPath, '--listen', `127.0.0.1:${port}`, '--temp-dir', path.join(dir, 'files'), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, TASKWIRE_API_KEY: '', RUST_LOG: process.env.RUST_LOG ?? 'info' },
  });
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let early = null;
  exited.then((status) => (early = status));
  try {
    await until(async () => {
      if (early) throw new Error(`taskwire serve exited early (${JSON.stringify(early)}):\n${output}`);
      try {
        const response = await fetch(`${url}/readyz`);
        return response.status === 200;
      } catch {
        return false;
      }
    }, `${url}/readyz`, { ms: 30_000 });
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    url,
    port,
    keys,
    dir,
    logs: () => output,
    async stop() {
      if (!early) {
        child.kill('SIGTERM');
        const stopped = await deadline(exited, 'taskwire serve to stop', 10_000).catch(() => null);
        if (!stopped) {
          child.kill('SIGKILL');
          await exited;
        }
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Debian chromium, headless, in a fresh profile directory.
 * @returns {Promise<import('playwright-core').BrowserContext & {cleanup: () => Promise<void>}>}
 */
export async function launchBrowser() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'taskwire-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1280, height: 900 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      '--disable-sync',
      '--disable-quic',
    ],
  });
  context.cleanup = async () => {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  };
  return context;
}

/**
 * Routes `pageUrl` (any URL on any origin) to the given HTML, so a test page
 * lives on the origin it needs without a file in static/.
 */
export async function servePage(page, pageUrl, html) {
  await page.route(pageUrl, (route) => route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: html }));
}

/** Records every taskwire-* event of the page in `window.__taskwireEvents`. */
export async function recordWidgetEvents(page) {
  await page.addInitScript(() => {
    window.__taskwireEvents = [];
    for (const type of ['taskwire-progress', 'taskwire-done', 'taskwire-error']) {
      document.addEventListener(type, (e) => {
        window.__taskwireEvents.push({ type, detail: JSON.parse(JSON.stringify(e.detail, (k, v) => (k === 'error' && v instanceof Error ? { ...v, message: v.message } : v))) });
      });
    }
  });
}

/** Waits for a recorded widget event of `type` and returns its detail. */
export async function widgetEvent(page, type, ms = DEADLINE_MS) {
  const handle = await page.waitForFunction((t) => window.__taskwireEvents?.find((e) => e.type === t), type, { timeout: ms });
  return (await handle.jsonValue()).detail;
}

/**
 * A TCP proxy to 127.0.0.1:`targetPort` that can drop every connection at
 * once, as a dead network or a crashed middlebox would.
 */
export async function startProxy(targetPort, { port } = {}) {
  const sockets = new Set();
  let accepted = 0;
  const waiters = [];
  const server = net.createServer((client) => {
    accepted += 1;
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
    for (const w of waiters.splice(0)) w();
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port ?? 0, '127.0.0.1', resolve);
  });
  const proxyPort = server.address().port;
  return {
    port: proxyPort,
    url: `http://127.0.0.1:${proxyPort}`,
    /** Connections accepted so far. */
    get accepted() {
      return accepted;
    },
    /** Resolves once more than `n` connections were accepted. */
    async acceptedMoreThan(n, what = `connection ${n + 1} through the proxy`) {
      await deadline(
        (async () => {
          while (accepted <= n) await new Promise((resolve) => waiters.push(resolve));
        })(),
        what,
      );
    },
    /** Resets every open connection (both directions). */
    cut() {
      for (const socket of sockets) socket.resetAndDestroy ? socket.resetAndDestroy() : socket.destroy();
      sockets.clear();
    },
    async close() {
      this.cut();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * A web application's own backend on its own origin: it serves `pages`
 * (path -> HTML) and answers `GET /token` by minting a browser token with
 * `POST /v1/tokens` and its API key (query `ttl_s`, `tasks`, `origin`
 * passed through), and `GET /input` with `input`.
 */
export async function startBackend({ serverUrl, apiKey, pages = {}, input = null, port }) {
  const minted = [];
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://backend');
    try {
      if (url.pathname === '/token') {
        const body = {};
        if (url.searchParams.has('ttl_s')) body.ttl_s = Number(url.searchParams.get('ttl_s'));
        if (url.searchParams.has('tasks')) body.tasks = url.searchParams.get('tasks').split(',');
        if (url.searchParams.has('origin')) body.origin = url.searchParams.get('origin');
        const response = await fetch(`${serverUrl}/v1/tokens`, {
          method: 'POST',
          headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
        const text = await response.text();
        if (response.status === 201) minted.push(JSON.parse(text));
        res.writeHead(response.status === 201 ? 200 : 502, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(response.status === 201 ? JSON.stringify({ token: JSON.parse(text).token }) : text);
        return;
      }
      if (url.pathname === '/input') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(input));
        return;
      }
      if (pages[url.pathname] !== undefined) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(pages[url.pathname]);
        return;
      }
      res.writeHead(404);
      res.end();
    } catch (err) {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(err));
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port ?? 0, '127.0.0.1', resolve);
  });
  const backendPort = server.address().port;
  return {
    port: backendPort,
    origin: `http://127.0.0.1:${backendPort}`,
    minted,
    setInput(value) {
      input = value;
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(resolve);
      }),
  };
}

/** The HTML of a page embedding the widget, its script loaded from `scriptBase`. */
export function widgetPage(scriptBase, attributes, label = 'Run') {
  const attrs = Object.entries(attributes)
    .map(([name, value]) => (value === true ? name : `${name}="${String(value).replace(/"/g, '&quot;')}"`))
    .join(' ');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>host page</title>
<script type="module" src="${scriptBase}/taskwire-button.js"></script></head>
<body><h1>Host page</h1><taskwire-button ${attrs}>${label}</taskwire-button></body></html>`;
}

/**
 * Sends a WebSocket upgrade request with an Origin header and resolves with
 * the HTTP status of the answer (101 when the server upgrades).
 */
export function upgradeStatus(serverUrl, origin) {
  return deadline(
    new Promise((resolve, reject) => {
      const request = http.request(`${serverUrl}/v1/ws`, {
        headers: {
          origin,
          connection: 'Upgrade',
          upgrade: 'websocket',
          'sec-websocket-version': '13',
          'sec-websocket-key': randomBytes(16).toString('base64'),
          'sec-websocket-protocol': 'taskwire.v1',
        },
      });
      request.on('upgrade', (response, socket) => {
        socket.destroy();
        resolve(response.statusCode);
      });
      request.on('response', (response) => {
        response.resume();
        resolve(response.statusCode);
      });
      request.on('error', reject);
      request.end();
    }),
    `the upgrade answer for origin ${origin}`,
  );
}

/** Downloads a URL and returns its bytes' sha256. */
export async function fetchSha256(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`GET ${url}: ${response.status}`);
  return sha256hex(Buffer.from(await response.arrayBuffer()));
}

/** Hashes a playwright Download's bytes. */
export async function downloadSha256(download) {
  const file = await download.path();
  return sha256hex(fs.readFileSync(file));
}
