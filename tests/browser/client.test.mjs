// static/taskwire.js in Node (built-in WebSocket: node --experimental-websocket
// on Node 20) against a real `taskwire serve`.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { TaskwireClient, TaskwireError } from '../../static/taskwire.js';
import { deadline, fetchSha256, startProxy, startServer } from './support.mjs';

const T = { timeout: 60_000 };

/** Seqs 1..n in order, each once. */
function assertGapFree(events) {
  assert.deepEqual(
    events.map((e) => e.seq),
    events.map((_, i) => i + 1),
    `seqs ${events.map((e) => `${e.seq}:${e.type}`).join(' ')}`,
  );
}

describe('taskwire.js in Node', () => {
  let server;
  const clients = [];
  const connect = async (key = server.keys.test, url = server.url, options = {}) => {
    const client = new TaskwireClient(url, { key, ...options });
    clients.push(client);
    await deadline(client.connect(), 'welcome');
    return client;
  };

  before(async () => {
    server = await startServer();
  });
  after(async () => {
    for (const client of clients) client.close();
    await server?.stop();
  });

  test('connects, authenticates and lists the built-in tasks', T, async () => {
    const client = await connect();
    assert.equal(client.state, 'open');
    assert.equal(client.welcome.protocol, 1);
    const names = client.welcome.tasks.map((t) => t.name);
    for (const name of ['echo', 'sleep', 'blob', 'abstract_booklet']) assert.ok(names.includes(name), `${name} in ${names}`);
    assert.equal(client.url, `${server.url.replace('http', 'ws')}/v1/ws`);
    await deadline(client.ping(), 'pong');
  });

  test('a wrong key is refused with unauthorized, without retrying forever', T, async () => {
    const client = new TaskwireClient(server.url, { key: 'twk_wrong' });
    clients.push(client);
    const error = await deadline(client.connect().then(() => null, (e) => e), 'the refusal');
    assert.ok(error instanceof TaskwireError, String(error));
    assert.equal(error.code, 'unauthorized');
    assert.equal(client.state, 'closed');
  });

  test('submit echo: await done, and iterate the events in seq order', T, async () => {
    const client = await connect();
    const input = { hello: 'world', list: [1, 2, 3], nested: { ok: true } };
    const handle = client.submit('echo', input);
    const completed = await deadline(handle.done, 'completed');
    assert.equal(completed.type, 'completed');
    assert.deepEqual(completed.result, input);
    assert.equal(handle.state, 'completed');
    const seen = [];
    for await (const ev of handle) seen.push(ev);
    assert.equal(seen[0].type, 'accepted');
    assert.equal(seen.at(-1).type, 'completed');
    assertGapFree(seen);
    assert.ok(handle.taskId);
  });

  test('sleep reports progress while it runs', T, async () => {
    const client = await connect();
    const handle = client.submit('sleep', { ms: 400, steps: 4 });
    const types = [];
    const progress = [];
    for await (const ev of handle) {
      types.push(ev.type);
      if (ev.type === 'progress' && typeof ev.progress === 'number') progress.push(ev.progress);
    }
    assert.deepEqual(types.slice(0, 2), ['accepted', 'started']);
    assert.equal(types.at(-1), 'completed');
    assert.ok(progress.length >= 1, `progress events: ${progress}`);
    assert.deepEqual([...progress].sort((a, b) => a - b), progress, 'progress never goes back');
    assertGapFree(handle.events);
  });

  test('a failing task rejects done with a TaskwireError carrying the failed event', T, async () => {
    const client = await connect();
    const handle = client.submit('sleep', { ms: 10, steps: 1, fail: true });
    const error = await deadline(handle.done.then(() => null, (e) => e), 'failed');
    assert.ok(error instanceof TaskwireError);
    assert.equal(error.code, 'task_error');
    assert.equal(error.event?.type, 'failed');
    assert.equal(handle.state, 'failed');
    // Iterating still yields every event and ends without throwing.
    const types = [];
    for await (const ev of handle) types.push(ev.type);
    assert.equal(types.at(-1), 'failed');
  });

  test('an unknown task is rejected with unknown_task', T, async () => {
    const client = await connect();
    const handle = client.submit('no_such_task', {});
    const error = await deadline(handle.done.then(() => null, (e) => e), 'rejected');
    assert.equal(error.code, 'unknown_task');
    await assert.rejects(handle.accepted, (e) => e.code === 'unknown_task');
    assert.equal(handle.state, 'error');
    // Iteration surfaces the rejection.
    await assert.rejects(async () => {
      for await (const _ of handle);
    }, (e) => e.code === 'unknown_task');
  });

  test('invalid input is rejected with invalid_input and details', T, async () => {
    const client = await connect();
    const error = await deadline(client.submit('sleep', { ms: 'soon' }).done.then(() => null, (e) => e), 'rejected');
    assert.equal(error?.code, 'invalid_input', String(error));
  });

  test('handle.cancel() ends the task with cancelled', T, async () => {
    const client = await connect();
    const handle = client.submit('sleep', { ms: 30_000, steps: 30 });
    await deadline(handle.accepted, 'accepted');
    const cancelled = await deadline(handle.cancel(), 'cancelled');
    assert.equal(cancelled.type, 'cancelled');
    assert.equal(cancelled.reason, 'client');
    const error = await handle.done.then(() => null, (e) => e);
    assert.equal(error.code, 'cancelled');
    assert.equal(error.details.reason, 'client');
    await assert.rejects(client.cancel(handle.taskId), (e) => e.code === 'already_finished');
    await assert.rejects(client.cancel('t_nonexistent'), (e) => e.code === 'not_found');
  });

  test('subscribe with afterSeq replays the rest of a task from another connection', T, async () => {
    const first = await connect();
    const handle = first.submit('echo', { n: 1 });
    const completed = await deadline(handle.done, 'completed');
    const second = await connect();
    const replay = second.subscribe(handle.taskId, { afterSeq: 1 });
    const again = await deadline(replay.done, 'replayed completed');
    assert.equal(again.seq, completed.seq);
    assert.deepEqual(
      replay.events.map((e) => e.seq),
      handle.events.slice(1).map((e) => e.seq),
    );
    // Another key never sees the task.
    const stranger = await connect(server.keys.other);
    await assert.rejects(stranger.subscribe(handle.taskId).done, (e) => e.code === 'not_found');
  });

  test('blob: the file link serves bytes with the announced sha256', T, async () => {
    const client = await connect();
    const completed = await deadline(client.submit('blob', { size: 100_000, name: 'data.bin' }).done, 'completed');
    assert.equal(completed.files.length, 1);
    const [file] = completed.files;
    assert.equal(file.name, 'data.bin');
    assert.equal(file.size, 100_000);
    assert.equal(await fetchSha256(client.fileUrl(file)), file.sha256);
  });

  test('a dropped connection mid-task reconnects and resumes with after_seq: no event lost or repeated', T, async () => {
    const proxy = await startProxy(server.port);
    try {
      const client = await connect(server.keys.test, proxy.url, { minDelayMs: 50 });
      const states = [];
      client.addEventListener('state', (e) => states.push(e.detail));
      const handle = client.submit('sleep', { ms: 1500, steps: 15 });
      await deadline(
        new Promise((resolve) => handle.addEventListener('progress', resolve, { once: true })),
        'first progress',
      );
      const before = proxy.accepted;
      proxy.cut();
      await proxy.acceptedMoreThan(before, 'the reconnection');
      const completed = await deadline(handle.done, 'completed after the drop');
      assert.equal(completed.type, 'completed');
      assertGapFree(handle.events);
      assert.equal(handle.events.filter((e) => e.type === 'started').length, 1);
      assert.ok(states.includes('reconnecting'), `states: ${states}`);
      assert.equal(client.state, 'open');
    } finally {
      await proxy.close();
    }
  });

  test('a submit made before the connection is up is sent once it is', T, async () => {
    const client = new TaskwireClient(server.url, { key: server.keys.test });
    clients.push(client);
    const completed = await deadline(client.submit('echo', 7).done, 'completed');
    assert.equal(completed.result, 7);
  });

  test('close() rejects what is pending with closed', T, async () => {
    const client = await connect();
    const handle = client.submit('sleep', { ms: 30_000 });
    await deadline(handle.accepted, 'accepted');
    client.close();
    const error = await handle.done.then(() => null, (e) => e);
    assert.equal(error.code, 'closed');
    assert.equal(client.state, 'closed');
    // The task itself goes on: cancel it from a fresh connection.
    const other = await connect();
    await deadline(other.cancel(handle.taskId), 'cancel');
  });
});
