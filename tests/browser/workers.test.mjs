// The monitoring page's workers section, with a real managed worker (the
// Node example) started by `taskwire serve`.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { TaskwireClient } from '../../static/taskwire.js';
import { ROOT, deadline, launchBrowser, startServer } from './support.mjs';

const T = { timeout: 90_000 };

describe('workers on the monitoring page', () => {
  let server;
  let browser;

  before(async () => {
    const example = path.join(ROOT, 'examples/workers/textstats.mjs');
    server = await startServer({
      args: ['--workers', '1'],
      extraToml: `[[workers]]\nname = "text"\ncommand = [${JSON.stringify(process.execPath)}, ${JSON.stringify(example)}]\n`,
    });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.cleanup();
    await server?.stop();
  });

  test('a managed worker is listed with its pid, tasks, slots and counts', T, async () => {
    const page = await browser.newPage();
    await page.goto(`${server.url}/monitor#key=${server.keys.admin}`);
    const row = page.locator('#workers tr', { hasText: 'text-1' });
    await row.waitFor();
    const text = await row.textContent();
    assert.match(text, /managed, pid \d+/);
    assert.match(text, /text_stats, noop/);
    assert.match(text, /0 \/ 1/, 'busy / slots');

    const client = new TaskwireClient(server.url, { key: server.keys.test });
    await client.connect();
    const handle = client.submit('text_stats', { text: 'one two' });
    const result = await deadline(handle.done, 'the task to complete');
    assert.equal(result.result.words, 2);
    await page.waitForFunction(() => /1 \/ 0/.test(document.querySelector('#workers tr[data-worker-name="text-1"] td:nth-child(8)')?.textContent ?? ''));
    await page.waitForFunction(() => document.querySelector('#workers tr[data-worker-name="text-1"] td.heartbeat')?.textContent !== '');
    client.close();
    await page.close();
  });
});
