// The demo page (/) and the monitoring page (/monitor) in Debian chromium
// against a real `taskwire serve` with one worker (so a queue forms).

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { TaskwireClient } from '../../static/taskwire.js';
import { DEADLINE_MS, ROOT, deadline, downloadSha256, launchBrowser, startServer } from './support.mjs';

const T = { timeout: 90_000 };
const SCREENSHOTS = process.env.SCREENSHOTS === '1';

describe('pages', () => {
  let server;
  let browser;
  const clients = [];

  before(async () => {
    server = await startServer({ args: ['--workers', '1'] });
    browser = await launchBrowser();
  });
  after(async () => {
    for (const client of clients) client.close();
    await browser?.cleanup();
    await server?.stop();
  });

  async function nodeClient(key = server.keys.test) {
    const client = new TaskwireClient(server.url, { key });
    clients.push(client);
    await deadline(client.connect(), 'welcome');
    return client;
  }

  async function newPage() {
    const page = await browser.newPage();
    page.setDefaultTimeout(DEADLINE_MS);
    return page;
  }

  test('the demo page connects with the key from the fragment and runs tasks', T, async () => {
    const page = await newPage();
    await page.goto(`${server.url}/#key=${server.keys.test}`);
    await page.locator('#conn', { hasText: 'connected' }).waitFor();
    assert.equal(new URL(page.url()).hash, '', 'the key is taken out of the address bar');
    for (const name of ['echo', 'sleep', 'blob', 'abstract_booklet']) {
      await page.locator(`#tasks tr[data-task="${name}"]`).waitFor();
    }
    assert.ok((await page.locator('#tasks tr[data-task="sleep"] td').nth(1).textContent()).length > 0, 'tasks have descriptions');

    // echo through the client: the log shows its completion with the result.
    await page.locator('form[data-task="echo"] button[type="submit"]').click();
    await page.locator('#log li.t-completed', { hasText: '"hello":"world"' }).waitFor();

    // blob through the client: a download link appears; its bytes match.
    await page.fill('#blob-size', '4096');
    await page.fill('#blob-name', 'demo.bin');
    await page.locator('form[data-task="blob"] button[type="submit"]').click();
    const link = page.locator('#files a', { hasText: 'demo.bin' });
    await link.waitFor();
    const downloaded = page.waitForEvent('download');
    await link.click();
    const download = await downloaded;
    assert.equal(download.suggestedFilename(), 'demo.bin');
    const sha = await downloadSha256(download);
    assert.ok((await page.locator('#files li', { hasText: 'demo.bin' }).textContent()).includes(sha.slice(0, 12)));

    // sleep through the widget, with a browser token minted by the page.
    await page.fill('#sleep-ms', '600');
    await page.fill('#sleep-steps', '3');
    await page.locator('form[data-task="sleep"] taskwire-button button').click();
    await page.locator('#log li', { hasText: /widget:sleep +completed/ }).waitFor();
    assert.equal(await page.locator('#log li', { hasText: 'POST /v1/tokens failed' }).count(), 0, 'the widget got a browser token');

    // the booklet through the widget: an .odt is downloaded.
    const booklet = page.waitForEvent('download', { timeout: 60_000 });
    await page.locator('form[data-task="abstract_booklet"] taskwire-button button').click();
    const odt = await booklet;
    assert.match(odt.suggestedFilename(), /\.odt$/);
    await page.locator('#files a', { hasText: '.odt' }).waitFor();

    if (SCREENSHOTS) {
      await page.setViewportSize({ width: 1280, height: 1100 });
      await page.screenshot({ path: path.join(ROOT, 'docs/screenshot-demo.png'), fullPage: true });
    }
    await page.close();
  });

  test('the demo page asks for a key when the fragment has none', T, async () => {
    const page = await newPage();
    await page.goto(`${server.url}/`);
    await page.locator('#key-form').waitFor();
    await page.fill('#key-input', server.keys.test);
    await page.locator('#key-form button[type="submit"]').click();
    await page.locator('#conn', { hasText: 'connected' }).waitFor();
    await page.locator('#tasks tr[data-task="echo"]').waitFor();
    await page.close();
  });

  test('the monitoring page shows running, queued and failed tasks live, and cancels', T, async () => {
    const page = await newPage();
    await page.goto(`${server.url}/monitor#key=${server.keys.admin}`);
    await page.locator('#conn', { hasText: 'live' }).waitFor();
    await page.locator('#app').waitFor();

    const client = await nodeClient();
    const failing = client.submit('sleep', { ms: 100, steps: 1, fail: true });
    const failed = await failing.done.then(() => null, (e) => e);
    assert.equal(failed.code, 'task_error');
    const long = client.submit('sleep', { ms: 60_000, steps: 60 });
    await deadline(new Promise((resolve) => long.addEventListener('progress', resolve, { once: true })), 'progress');
    const waiting = client.submit('sleep', { ms: 60_000, steps: 60 });
    await deadline(waiting.accepted, 'accepted');

    const failedRow = page.locator(`#finished tr[data-task-id="${failing.taskId}"]`);
    await failedRow.waitFor();
    const failedText = await failedRow.textContent();
    assert.match(failedText, /failed/);
    assert.match(failedText, /task_error/);
    assert.match(failedText, /test/, 'the key name is shown');
    assert.ok(failedText.includes(failed.message), 'the error message is shown');

    const runningRow = page.locator(`#running tr[data-task-id="${long.taskId}"]`);
    await runningRow.waitFor();
    await page.waitForFunction((id) => document.querySelector(`#running tr[data-task-id="${id}"] progress`)?.value > 0, long.taskId);
    const queuedRow = page.locator(`#queued tr[data-task-id="${waiting.taskId}"]`);
    await queuedRow.waitFor();
    assert.match(await queuedRow.locator('td').first().textContent(), /^0$/);
    await page.waitForFunction(() => /1 \/ 1/.test(document.querySelector('#stat-busy').textContent));
    await page.waitForFunction(() => Number(document.querySelector('#counts tr[data-task="sleep"] td:nth-child(3)')?.textContent) >= 1);
    assert.ok(Number(await page.locator('#stat-connections').textContent()) >= 2);

    if (SCREENSHOTS) {
      await page.setViewportSize({ width: 1280, height: 900 });
      await page.screenshot({ path: path.join(ROOT, 'docs/screenshot-monitor.png'), fullPage: true });
    }

    // Cancel the queued one, then the running one, from the page.
    await queuedRow.getByRole('button', { name: /Cancel/ }).click();
    await page.locator(`#finished tr[data-task-id="${waiting.taskId}"][data-state="cancelled"]`).waitFor();
    await runningRow.getByRole('button', { name: /Cancel/ }).click();
    const cancelledRow = page.locator(`#finished tr[data-task-id="${long.taskId}"][data-state="cancelled"]`);
    await cancelledRow.waitFor();
    assert.match(await cancelledRow.textContent(), /client/);
    const error = await deadline(long.done.then(() => null, (e) => e), 'the submitter to see the cancel');
    assert.equal(error.code, 'cancelled');
    await page.waitForFunction(() => /0 \/ 1/.test(document.querySelector('#stat-busy').textContent));
    await page.close();
  });

  test('the monitoring page runs a task by name with JSON input', T, async () => {
    const page = await newPage();
    await page.goto(`${server.url}/monitor#key=${server.keys.admin}`);
    await page.locator('#conn', { hasText: 'live' }).waitFor();
    await page.selectOption('#submit-task', 'echo');
    await page.fill('#submit-input', '{"from": "monitor"}');
    await page.locator('#submit-form button[type="submit"]').click();
    await page.locator('#submit-result', { hasText: 'Submitted' }).waitFor();
    const id = await page.locator('#submit-result').getAttribute('data-task-id');
    await page.locator(`#finished tr[data-task-id="${id}"][data-state="completed"]`).waitFor();
    assert.match(await page.locator(`#finished tr[data-task-id="${id}"]`).textContent(), /admin/);
    await page.close();
  });

  test('the monitoring page refuses a key that is not admin', T, async () => {
    const page = await newPage();
    await page.goto(`${server.url}/monitor#key=${server.keys.test}`);
    await page.locator('#notice', { hasText: 'not an admin key' }).waitFor();
    assert.equal(await page.locator('#app').isVisible(), false);
    await page.close();
  });
});
