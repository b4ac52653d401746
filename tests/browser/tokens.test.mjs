// Browser tokens (POST /v1/tokens) and cross-origin embedding: a web
// application's own backend (a Node http server on its own origin) mints
// tokens with its API key and serves a page embedding <taskwire-button>
// from the taskwire server. Origin A is in allowed_origins, origin B is not.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { TaskwireClient, TaskwireError, mintToken } from '../../static/taskwire.js';
import {
  DEADLINE_MS,
  deadline,
  downloadSha256,
  freePort,
  launchBrowser,
  recordWidgetEvents,
  startBackend,
  startServer,
  until,
  upgradeStatus,
  widgetEvent,
  widgetPage,
} from './support.mjs';

const T = { timeout: 90_000 };

describe('browser tokens and origins', () => {
  let server;
  let allowed;
  let foreign;
  let browser;
  const clients = [];

  before(async () => {
    const allowedPort = await freePort();
    server = await startServer({ allowedOrigins: [`http://127.0.0.1:${allowedPort}`] });
    const input = { size: 50_000, name: 'embedded.bin' };
    const page = (extra) =>
      widgetPage(server.url, { server: server.url, task: 'blob', 'input-url': '/input', ...extra }, 'Get the file');
    const pages = {
      '/widget': page({ 'token-url': '/token?tasks=blob' }),
      '/bound': page({ 'token-url': `/token?tasks=blob&origin=http://127.0.0.1:${allowedPort}` }),
    };
    allowed = await startBackend({ serverUrl: server.url, apiKey: server.keys.test, pages, input, port: allowedPort });
    foreign = await startBackend({ serverUrl: server.url, apiKey: server.keys.test, pages, input });
    browser = await launchBrowser();
  });
  after(async () => {
    for (const client of clients) client.close();
    await browser?.cleanup();
    await allowed?.close();
    await foreign?.close();
    await server?.stop();
  });

  async function newPage() {
    const page = await browser.newPage();
    page.setDefaultTimeout(DEADLINE_MS);
    await recordWidgetEvents(page);
    return page;
  }

  const button = (page) => page.locator('taskwire-button').locator('button');

  /**
   * Opens a host page and waits for <taskwire-button> to be defined: its
   * module script comes from the taskwire server, another origin, so it loads
   * only if the server answers it with CORS headers.
   */
  async function goto(page, url) {
    const messages = [];
    page.on('console', (m) => messages.push(m.text()));
    await page.goto(url);
    const defined = await page
      .waitForFunction(() => customElements.get('taskwire-button') !== undefined, null, { timeout: 5_000 })
      .then(() => true, () => false);
    assert.ok(defined, `${server.url}/taskwire-button.js did not load on ${url}: ${messages.join(' | ')}`);
  }

  test('a token minted by the backend (token-url) works from an allowed origin; the download matches', T, async () => {
    const page = await newPage();
    await goto(page, `${allowed.origin}/widget`);
    const minted = allowed.minted.length;
    const downloaded = page.waitForEvent('download');
    await button(page).click();
    const download = await downloaded;
    const done = await widgetEvent(page, 'taskwire-done');
    assert.ok(allowed.minted.length > minted, 'the widget fetched a token at click time');
    assert.ok(allowed.minted.at(-1).token.startsWith('twt_'));
    assert.equal(done.files[0].name, 'embedded.bin');
    assert.equal(await downloadSha256(download), done.files[0].sha256);
    await page.close();
  });

  test('a token bound to the page origin works from that origin', T, async () => {
    const page = await newPage();
    await goto(page, `${allowed.origin}/bound`);
    await button(page).click();
    const done = await widgetEvent(page, 'taskwire-done');
    assert.equal(done.type, 'completed');
    await page.close();
  });

  test('an expired token is refused: the widget shows unauthorized', T, async () => {
    const response = await fetch(`${allowed.origin}/token?ttl_s=1&tasks=blob`);
    assert.equal(response.status, 200);
    const { token } = await response.json();
    const { expires_at: expiresAt } = allowed.minted.find((m) => m.token === token);
    assert.ok(Date.parse(expiresAt) - Date.now() <= 1500, `expires_at ${expiresAt} is about 1 s away`);
    await until(() => Date.now() > Date.parse(expiresAt) + 200, `the token to expire at ${expiresAt}`, { ms: 10_000 });

    // Refused on REST (401, error body) and on the WebSocket (close 4401) ...
    const rest = await fetch(`${server.url}/v1/tasks/t_anything`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(rest.status, 401);
    assert.equal((await rest.json()).error.code, 'unauthorized');
    const client = new TaskwireClient(server.url, { key: token });
    clients.push(client);
    await assert.rejects(deadline(client.connect(), 'the refusal'), (e) => e instanceof TaskwireError && e.code === 'unauthorized');
    // ... and so in the widget, on the server's own origin (the demo page,
    // emptied down to one widget) ...
    const own = await newPage();
    await own.goto(`${server.url}/`);
    await own.evaluate(async (t) => {
      await customElements.whenDefined('taskwire-button');
      const el = document.createElement('taskwire-button');
      el.setAttribute('task', 'echo');
      el.setAttribute('token', t);
      el.input = 1;
      document.body.replaceChildren(el);
    }, token);
    await button(own).click();
    assert.equal((await widgetEvent(own, 'taskwire-error')).code, 'unauthorized');
    await own.locator('taskwire-button').getByRole('alert').waitFor();
    await own.close();
    // ... and embedded in the backend's page on its own origin.
    const page = await newPage();
    await goto(page, `${allowed.origin}/widget`);
    await page.evaluate((t) => {
      const el = document.querySelector('taskwire-button');
      el.removeAttribute('token-url');
      el.setAttribute('token', t);
    }, token);
    await button(page).click();
    const error = await widgetEvent(page, 'taskwire-error');
    assert.equal(error.code, 'unauthorized');
    await page.locator('taskwire-button').getByRole('alert').waitFor();
    await page.close();
  });

  test('a token limited to some tasks is refused others; its tasks belong to the minting key', T, async () => {
    const { token } = await mintToken(server.url, server.keys.test, { ttlS: 60, tasks: ['echo'] });
    const client = new TaskwireClient(server.url, { key: token });
    clients.push(client);
    const echo = client.submit('echo', { via: 'token' });
    const completed = await deadline(echo.done, 'completed');
    const refused = await deadline(client.submit('blob', { size: 1, name: 'x' }).done.then(() => null, (e) => e), 'rejected');
    assert.equal(refused?.code, 'unauthorized');
    // The task is the minting key's: that key sees it on REST, another does not.
    const mine = await fetch(`${server.url}/v1/tasks/${completed.task_id}`, { headers: { authorization: `Bearer ${server.keys.test}` } });
    assert.equal(mine.status, 200);
    const theirs = await fetch(`${server.url}/v1/tasks/${completed.task_id}`, { headers: { authorization: `Bearer ${server.keys.other}` } });
    assert.equal(theirs.status, 404);
  });

  test('a revoked token is refused; a token cannot mint tokens', T, async () => {
    const { token } = await mintToken(server.url, server.keys.test, { ttlS: 60 });
    const cannot = await fetch(`${server.url}/v1/tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: '{}',
    });
    assert.ok([401, 403].includes(cannot.status), `POST /v1/tokens with a token: ${cannot.status}`);
    const revoked = await fetch(`${server.url}/v1/tokens/${token}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${server.keys.test}` },
    });
    assert.equal(revoked.status, 204);
    const client = new TaskwireClient(server.url, { key: token });
    clients.push(client);
    await assert.rejects(deadline(client.connect(), 'the refusal'), (e) => e.code === 'unauthorized');
  });

  test('a page on an origin that is not allowed fails cleanly', T, async () => {
    const page = await newPage();
    await goto(page, `${foreign.origin}/widget`);
    await button(page).click();
    const error = await widgetEvent(page, 'taskwire-error');
    assert.equal(error.code, 'connection_failed');
    await page.locator('taskwire-button').getByRole('alert').waitFor();
    await page.waitForFunction(() => {
      const el = document.querySelector('taskwire-button');
      return !el.hasAttribute('aria-busy') && !el.shadowRoot.querySelector('button').disabled;
    });
    assert.equal(await page.evaluate(() => window.__taskwireEvents.some((e) => e.type === 'taskwire-done')), false);
    // The server refused the upgrade itself (403), not just the browser.
    assert.equal(await upgradeStatus(server.url, foreign.origin), 403);
    assert.equal(await upgradeStatus(server.url, allowed.origin), 101);
    await page.close();
  });
});
