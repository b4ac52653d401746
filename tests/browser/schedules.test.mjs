// The monitoring page's schedules panel in Debian chromium against a real
// `taskwire serve` with one schedule: it lists it, runs it now, shows the
// failed run's error, pauses and resumes it.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { DEADLINE_MS, launchBrowser, startServer } from './support.mjs';

const T = { timeout: 90_000 };

describe('schedules panel', () => {
  let server;
  let browser;

  before(async () => {
    server = await startServer({
      extraToml: [
        '[[schedules]]',
        'name = "nightly-check"',
        'cron = "0 3 * * *"',
        'timezone = "Europe/Zurich"',
        'task = "sleep"',
        'input = { ms = 10, fail = true }',
        'key = "test"',
      ].join('\n'),
    });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.cleanup();
    await server?.stop();
  });

  test('lists the schedule, runs it now, shows the error, pauses and resumes', T, async () => {
    const page = await browser.newPage();
    page.setDefaultTimeout(DEADLINE_MS);
    await page.goto(`${server.url}/monitor#key=${server.keys.admin}`);
    const row = page.locator('#schedules tr[data-schedule="nightly-check"]');
    await row.waitFor();
    assert.match(await row.textContent(), /sleep · cron 0 3 \* \* \* \(Europe\/Zurich\)/);
    await row.locator('button', { hasText: 'Run now' }).click();
    const failed = row.locator('li[data-state="failed"]');
    await failed.waitFor();
    assert.match(await failed.textContent(), /manual/);
    assert.match(await failed.locator('summary').textContent(), /^task_error: /);
    await row.locator('button', { hasText: 'Pause' }).click();
    await row.locator('td', { hasText: /^paused$/ }).waitFor();
    await row.locator('button', { hasText: 'Resume' }).click();
    await row.locator('button', { hasText: 'Pause' }).waitFor();
    await page.close();
  });
});
