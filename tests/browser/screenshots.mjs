// Saves docs/screenshot-demo.png, docs/screenshot-widget-busy.png and
// docs/screenshot-monitor.png from a real `taskwire serve` in Debian
// chromium. Run by run.sh when SCREENSHOTS=1 (or: node --experimental-websocket
// screenshots.mjs). Every wait is on page state, with a deadline.

import path from 'node:path';

import { TaskwireClient } from '../../static/taskwire.js';
import { DEADLINE_MS, ROOT, deadline, launchBrowser, startServer } from './support.mjs';

const out = (name) => path.join(ROOT, 'docs', name);
const server = await startServer({ args: ['--workers', '2'] });
const browser = await launchBrowser();
const client = new TaskwireClient(server.url, { key: server.keys.test });

try {
  await deadline(client.connect(), 'welcome');

  // The demo page after a few runs: tasks listed, event log, download links.
  const demo = await browser.newPage();
  await demo.setViewportSize({ width: 1280, height: 1000 });
  demo.setDefaultTimeout(DEADLINE_MS);
  await demo.goto(`${server.url}/#key=${server.keys.test}`);
  await demo.locator('#conn', { hasText: 'connected' }).waitFor();
  await demo.locator('#tasks tr[data-task="echo"]').waitFor();
  await demo.locator('form[data-task="echo"] button[type="submit"]').click();
  await demo.locator('#log li.t-completed').first().waitFor();
  await demo.fill('#blob-size', '65536');
  await demo.fill('#blob-name', 'sample.bin');
  await demo.locator('form[data-task="blob"] button[type="submit"]').click();
  await demo.locator('#files a', { hasText: 'sample.bin' }).waitFor();
  await demo.locator('form[data-task="abstract_booklet"] taskwire-button button').click();
  await demo.locator('#files a', { hasText: '.odt' }).waitFor({ timeout: 60_000 });
  await demo.fill('#sleep-ms', '800');
  await demo.fill('#sleep-steps', '4');
  await demo.locator('form[data-task="sleep"] taskwire-button button').click();
  await demo.locator('#log li', { hasText: /widget:sleep +completed/ }).waitFor();
  await demo.fill('#sleep-ms', '60000');
  await demo.fill('#sleep-steps', '60');
  await demo.locator('form[data-task="sleep"] taskwire-button button').click();
  await demo.waitForFunction(() => {
    const bar = document.querySelector('form[data-task="sleep"] taskwire-button').shadowRoot.querySelector('progress');
    return bar.hasAttribute('value') && bar.value > 0;
  });
  await demo.screenshot({ path: out('screenshot-demo.png'), fullPage: true });
  await demo.close();

  // The widget alone, spinning, mid-progress.
  const widget = await browser.newPage();
  await widget.setViewportSize({ width: 480, height: 150 });
  widget.setDefaultTimeout(DEADLINE_MS);
  await widget.goto(`${server.url}/`);
  await widget.evaluate(async (token) => {
    await customElements.whenDefined('taskwire-button');
    const el = document.createElement('taskwire-button');
    el.setAttribute('task', 'sleep');
    el.setAttribute('token', token);
    el.textContent = 'Build the abstract booklet';
    el.input = { ms: 60_000, steps: 20 };
    el.style.setProperty('--taskwire-progress-width', '18em');
    const main = document.createElement('main');
    main.style.padding = '28px';
    main.append(el);
    document.body.replaceChildren(main);
  }, server.keys.test);
  await widget.locator('taskwire-button button').click();
  await widget.waitForFunction(() => {
    const root = document.querySelector('taskwire-button').shadowRoot;
    const bar = root.querySelector('progress');
    return bar.hasAttribute('value') && bar.value >= 0.1;
  });
  await widget.screenshot({ path: out('screenshot-widget-busy.png') });
  await widget.close();

  // The long sleeps the pages above started outlive them: cancel them.
  const listed = await (await fetch(`${server.url}/v1/admin/tasks`, { headers: { authorization: `Bearer ${server.keys.admin}` } })).json();
  for (const t of listed.tasks.filter((t) => t.state === 'running' || t.state === 'queued')) await client.cancel(t.task_id);

  // The monitoring page with running, queued, failed, cancelled and completed tasks.
  const finished = [client.submit('echo', { hello: 'monitor' }), client.submit('sleep', { ms: 50, steps: 1, fail: true })];
  await Promise.allSettled(finished.map((h) => h.done));
  const cancelled = client.submit('sleep', { ms: 60_000 });
  await deadline(cancelled.accepted, 'accepted');
  await cancelled.cancel();
  const monitor = await browser.newPage();
  await monitor.setViewportSize({ width: 1280, height: 900 });
  monitor.setDefaultTimeout(DEADLINE_MS);
  await monitor.goto(`${server.url}/monitor#key=${server.keys.admin}`);
  await monitor.locator('#conn', { hasText: 'live' }).waitFor();
  const running = [client.submit('sleep', { ms: 120_000, steps: 100 }), client.submit('sleep', { ms: 90_000, steps: 30 })];
  const queued = [client.submit('blob', { size: 1024, name: 'later.bin' }), client.submit('echo', { waiting: true })];
  await Promise.all([...running, ...queued].map((h) => deadline(h.accepted, 'accepted')));
  await monitor.locator(`#queued tr[data-task-id="${queued[1].taskId}"]`).waitFor();
  await monitor.waitForFunction(() => [...document.querySelectorAll('#running progress')].filter((p) => p.value > 0).length >= 2);
  await monitor.screenshot({ path: out('screenshot-monitor.png'), fullPage: true });
  await monitor.close();
  for (const h of [...running, ...queued]) await client.cancel(h.taskId).catch(() => {});
  console.log('saved docs/screenshot-demo.png, docs/screenshot-widget-busy.png, docs/screenshot-monitor.png');
} finally {
  client.close();
  await browser.cleanup();
  await server.stop();
}
