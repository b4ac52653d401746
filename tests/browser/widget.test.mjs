// <taskwire-button> in Debian chromium against a real `taskwire serve`.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  DEADLINE_MS,
  ROOT,
  downloadSha256,
  freePort,
  launchBrowser,
  recordWidgetEvents,
  startProxy,
  startServer,
  widgetEvent,
} from './support.mjs';

const T = { timeout: 90_000 };
const SCREENSHOTS = process.env.SCREENSHOTS === '1';

describe('<taskwire-button>', () => {
  let server;
  let proxy;
  let browser;

  before(async () => {
    // The proxy's origin serves a test page too, so it is allowed.
    const proxyPort = await freePort();
    server = await startServer({ allowedOrigins: [`http://127.0.0.1:${proxyPort}`] });
    proxy = await startProxy(server.port, { port: proxyPort });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.cleanup();
    await proxy?.close();
    await server?.stop();
  });

  /**
   * A page on `origin` (the server's own by default) with one widget: the
   * demo page (which loads taskwire-button.js), emptied down to the widget.
   * (A page fulfilled by page.route would count as non-local to chromium,
   * whose local-network-access checks then block its loopback WebSocket.)
   */
  async function open({ task, input, origin = server.url, serverUrl = origin, label = `Run ${task}` }) {
    const page = await browser.newPage();
    page.setDefaultTimeout(DEADLINE_MS);
    await recordWidgetEvents(page);
    await page.goto(`${origin}/`);
    await page.evaluate(
      async ({ task, input, serverUrl, token, label }) => {
        await customElements.whenDefined('taskwire-button');
        const widget = document.createElement('taskwire-button');
        widget.setAttribute('server', serverUrl);
        widget.setAttribute('task', task);
        widget.setAttribute('token', token);
        widget.textContent = label;
        widget.input = input;
        const main = document.createElement('main');
        main.append(widget);
        document.body.replaceChildren(main);
        document.title = 'widget test';
      },
      { task, input, serverUrl, token: server.keys.test, label },
    );
    return page;
  }

  const host = (page) => page.locator('taskwire-button');
  const button = (page) => page.locator('taskwire-button').locator('button');

  test('goes busy, shows progress, then is enabled again with focus kept', T, async () => {
    const page = await open({ task: 'sleep', input: { ms: 2500, steps: 10 } });
    assert.equal((await button(page).textContent()).trim(), 'Run sleep');
    assert.equal(await button(page).isEnabled(), true);
    await button(page).click();
    await page.waitForFunction(() => {
      const el = document.querySelector('taskwire-button');
      return el.getAttribute('aria-busy') === 'true' && el.shadowRoot.querySelector('button').disabled;
    });
    const spinner = host(page).locator('[part="spinner"]');
    assert.equal(await spinner.isVisible(), true, 'the spinner shows while busy');
    // Progress: the bar fills and the status says how far.
    await page.waitForFunction(() => {
      const root = document.querySelector('taskwire-button').shadowRoot;
      const bar = root.querySelector('progress');
      return !bar.hidden && bar.hasAttribute('value') && bar.value > 0 && /%/.test(root.querySelector('[part="status"]').textContent);
    });
    const progress = await widgetEvent(page, 'taskwire-progress');
    assert.ok(['queued', 'running'].includes(progress.state));
    if (SCREENSHOTS) {
      await host(page).evaluate((el) => {
        document.body.style.padding = '24px';
        el.style.setProperty('--taskwire-progress-width', '16em');
      });
      await page.setViewportSize({ width: 520, height: 220 });
      await page.screenshot({ path: path.join(ROOT, 'docs/screenshot-widget-busy.png') });
    }
    const done = await widgetEvent(page, 'taskwire-done');
    assert.equal(done.type, 'completed');
    await page.waitForFunction(() => {
      const el = document.querySelector('taskwire-button');
      return !el.hasAttribute('aria-busy') && !el.shadowRoot.querySelector('button').disabled;
    });
    assert.equal(await spinner.isVisible(), false);
    assert.match(await host(page).locator('[part="status"]').textContent(), /Done/);
    // A task without a file shows no download.
    assert.equal(await host(page).locator('[part="link"]').isVisible(), false);
    const focused = await page.evaluate(() => {
      const el = document.querySelector('taskwire-button');
      return document.activeElement === el && el.shadowRoot.activeElement === el.shadowRoot.querySelector('button');
    });
    assert.equal(focused, true, 'focus is back on the button');
    const progressEvents = await page.evaluate(() => window.__taskwireEvents.filter((e) => e.type === 'taskwire-progress').map((e) => e.detail));
    assert.ok(progressEvents.some((d) => d.progress > 0 && d.progress < 1), 'intermediate progress was dispatched');
    await page.close();
  });

  test('downloads the first file through its link; the bytes match its sha256', T, async () => {
    const page = await open({ task: 'blob', input: { size: 300_000, name: 'widget.bin' } });
    const downloaded = page.waitForEvent('download');
    await button(page).click();
    const download = await downloaded;
    const done = await widgetEvent(page, 'taskwire-done');
    const [file] = done.files;
    assert.equal(download.suggestedFilename(), 'widget.bin');
    assert.equal(file.size, 300_000);
    assert.equal(await downloadSha256(download), file.sha256);
    assert.ok(download.url().endsWith(file.url), `${download.url()} is the file link ${file.url}`);
    assert.equal(await host(page).locator('[part="link"]').getAttribute('download'), 'widget.bin');
    await page.waitForFunction(() => !document.querySelector('taskwire-button').shadowRoot.querySelector('button').disabled);
    await page.close();
  });

  test('abstract_booklet with the bundled sample event downloads an .odt', T, async () => {
    const sample = await (await fetch(`${server.url}/sample-event.json`)).json();
    const page = await open({ task: 'abstract_booklet', input: { event: sample } });
    const downloaded = page.waitForEvent('download', { timeout: 60_000 });
    await button(page).click();
    const download = await downloaded;
    const done = await widgetEvent(page, 'taskwire-done', 60_000);
    const [file] = done.files;
    assert.match(file.name, /\.odt$/);
    assert.equal(download.suggestedFilename(), file.name);
    assert.equal(await downloadSha256(download), file.sha256);
    await page.close();
  });

  test('a failing task shows its error in an alert and dispatches taskwire-error', T, async () => {
    const page = await open({ task: 'sleep', input: { ms: 200, steps: 2, fail: true } });
    await button(page).click();
    const error = await widgetEvent(page, 'taskwire-error');
    assert.equal(error.code, 'task_error');
    // An editor reads a sentence and what to do next; no code, no developer message.
    assert.equal(error.text, 'The task failed.');
    assert.match(error.next, /Try again/);
    const alert = host(page).getByRole('alert');
    await alert.waitFor();
    assert.equal(await host(page).locator('[part="error-text"]').innerText(), 'The task failed.');
    assert.match(await host(page).locator('[part="error-next"]').innerText(), /Try again.*administrator/);
    assert.doesNotMatch(await alert.innerText(), /task_error/, 'the code is not shown before Details is opened');
    // The code and the task's own message are behind the Details toggle.
    const details = host(page).locator('[part="error-details"]');
    assert.equal(await details.locator('pre').isVisible(), false);
    await details.locator('summary').click();
    await details.locator('pre').waitFor({ state: 'visible' });
    const developer = await details.locator('pre').innerText();
    assert.match(developer, /code: task_error/);
    assert.ok(developer.includes(error.message), `the details hold the message: ${developer}`);
    await page.waitForFunction(() => {
      const el = document.querySelector('taskwire-button');
      return !el.hasAttribute('aria-busy') && !el.shadowRoot.querySelector('button').disabled;
    });
    assert.equal(await page.evaluate(() => window.__taskwireEvents.some((e) => e.type === 'taskwire-done')), false);
    await page.close();
  });

  test('a connection dropped mid-task reconnects, resumes and still ends completed', T, async () => {
    const page = await open({ task: 'sleep', input: { ms: 3000, steps: 12 }, origin: proxy.url });
    await button(page).click();
    await page.waitForFunction(() => window.__taskwireEvents.some((e) => e.type === 'taskwire-progress' && e.detail.progress > 0));
    const before = proxy.accepted;
    proxy.cut(); // resets the page's WebSocket, as a dead network would
    await proxy.acceptedMoreThan(before, 'the widget to reconnect');
    const done = await widgetEvent(page, 'taskwire-done');
    assert.equal(done.type, 'completed');
    const seqs = await page.evaluate(() =>
      window.__taskwireEvents.filter((e) => e.type === 'taskwire-progress').map((e) => e.detail.event.seq),
    );
    for (let i = 1; i < seqs.length; i += 1) assert.ok(seqs[i] > seqs[i - 1], `seqs strictly increase: ${seqs}`);
    assert.ok(done.seq > seqs.at(-1));
    await page.waitForFunction(() => !document.querySelector('taskwire-button').hasAttribute('aria-busy'));
    await page.close();
  });

  test('an unreachable server fails cleanly', T, async () => {
    const port = await freePort();
    const page = await open({ task: 'echo', input: 1, serverUrl: `http://127.0.0.1:${port}` });
    await button(page).click();
    const error = await widgetEvent(page, 'taskwire-error');
    assert.equal(error.code, 'connection_failed');
    await host(page).getByRole('alert').waitFor();
    const shown = await host(page).getByRole('alert').innerText();
    assert.match(shown, /^The task service cannot be reached\./);
    assert.match(shown, /try again/i);
    assert.doesNotMatch(shown, /ws:|1006|connection_failed/, `no socket URL, close code or error code: ${shown}`);
    // The developer's view keeps them.
    await host(page).locator('[part="error-details"] summary').click();
    const developer = await host(page).locator('[part="error-details"] pre').innerText();
    assert.match(developer, /code: connection_failed/);
    assert.match(developer, /"close_code":1006/);
    assert.match(developer, new RegExp(`ws://127\\.0\\.0\\.1:${port}/v1/ws`));
    await page.waitForFunction(() => !document.querySelector('taskwire-button').shadowRoot.querySelector('button').disabled);
    await page.close();
  });

  test('done: the file name is shown once, wraps at its separators, and the download link is the next action', T, async () => {
    const name = '1443_6th_Workshop_on_Free-Electron_Lasers_and_Bright_Sources_abstract_booklet.odt';
    const page = await open({ task: 'blob', input: { size: 2048, name } });
    await host(page).evaluate((el) => {
      el.setAttribute('no-download', '');
      el.style.width = '260px';
    });
    await button(page).click();
    await widgetEvent(page, 'taskwire-done');
    const link = host(page).locator('[part="link"]');
    await link.waitFor({ state: 'visible' });
    const status = await host(page).locator('[part="status"]').innerText();
    assert.equal(status, 'Done: your file is ready.');
    const visible = await host(page).evaluate((el) => el.shadowRoot.textContent);
    assert.equal(visible.split(name).length - 1, 1, 'the name appears once in the widget');
    assert.match(await link.innerText(), /^Download/);
    assert.equal(await link.getAttribute('download'), name);
    assert.match(await link.innerText(), /2 KB/);
    // Wrapped: several lines, each ending at a separator, none wider than the widget.
    const lines = await host(page).evaluate((el) => {
      const nameEl = el.shadowRoot.querySelector('[part="file-name"]');
      const range = document.createRange();
      const tops = new Map();
      for (const node of nameEl.childNodes) {
        if (node.nodeType !== Node.TEXT_NODE) continue;
        for (let i = 0; i < node.length; i += 1) {
          range.setStart(node, i);
          range.setEnd(node, i + 1);
          const rect = range.getBoundingClientRect();
          const top = Math.round(rect.top);
          tops.set(top, (tops.get(top) ?? '') + node.data[i]);
        }
      }
      return { lines: [...tops.values()], overflow: nameEl.scrollWidth > el.getBoundingClientRect().width };
    });
    assert.ok(lines.lines.length >= 2, `the name wraps: ${JSON.stringify(lines.lines)}`);
    for (const line of lines.lines.slice(0, -1)) assert.match(line, /[_\-.]$/, `each line ends at a separator: ${line}`);
    assert.equal(lines.overflow, false);
    // The link downloads the file.
    const downloaded = page.waitForEvent('download');
    await link.click();
    assert.equal((await downloaded).suggestedFilename(), name);
    await page.close();
  });

  test('a busy server reads "try again in N seconds"; pages can word errors their way', T, async () => {
    const page = await open({ task: 'sleep', input: { ms: 10, steps: 1 } });
    const shown = await page.evaluate(async () => {
      const { describeError } = await import('/taskwire-button.js');
      const { TaskwireError } = await import('/taskwire.js');
      const busy = describeError(new TaskwireError('queue_full', 'queue is full', { retryAfterMs: 4200 }));
      const refused = describeError(new TaskwireError('unauthorized', 'key refused', { details: { stage: 'token', status: 502 } }));
      const own = describeError(new TaskwireError('unauthorized', 'key refused', { details: { stage: 'token' } }), {
        'token:unauthorized': { text: 'The key of this event was refused.', next: 'Ask the event managers.' },
      });
      const unknown = describeError(new TaskwireError('something_new', 'x'));
      return { busy, refused, own, unknown };
    });
    assert.deepEqual(shown.busy, { text: 'The task service is busy right now.', next: 'Try again in 5 seconds.' });
    assert.match(shown.refused.text, /refused this site's key/);
    assert.deepEqual(shown.own, { text: 'The key of this event was refused.', next: 'Ask the event managers.' });
    assert.equal(shown.unknown.text, 'Something went wrong.');
    await page.close();
  });

  test('the texts property words an error the page\'s way', T, async () => {
    const port = await freePort();
    const page = await open({ task: 'echo', input: 1, serverUrl: `http://127.0.0.1:${port}` });
    await host(page).evaluate((el) => {
      el.texts = { connection_failed: { text: 'The booklet service is down.', next: 'Ask the event managers.' } };
    });
    await button(page).click();
    const error = await widgetEvent(page, 'taskwire-error');
    assert.equal(error.text, 'The booklet service is down.');
    assert.equal(await host(page).locator('[part="error-text"]').innerText(), 'The booklet service is down.');
    assert.equal(await host(page).locator('[part="error-next"]').innerText(), 'Ask the event managers.');
    await page.close();
  });
});
