// taskwire.js: the browser (and Node 20+) client of taskwire's WebSocket protocol.
//
// One plain ES module, no dependencies, no build step. It owns one WebSocket
// to `<server>/v1/ws` (subprotocol `taskwire.v1`), authenticates with the
// `auth` message (an API key or a short-lived browser token), and routes the
// server's messages to request promises (by `ref`) and to task handles (by
// `task_id`). When the socket drops it reconnects with exponential backoff and
// jitter, authenticates again and re-subscribes every followed task with
// `after_seq` = the last seq it saw, so no event is lost; events are
// de-duplicated by seq. The wire contract is PROTOCOL.md; the extensions used
// here (browser tokens, admin `watch`) are in docs/protocol.md.
//
// What it never does: keep a key anywhere but in memory, put a key in a URL,
// or decode task inputs and results (they are the caller's JSON).

export const SUBPROTOCOL = 'taskwire.v1';

const TASK_EVENT_TYPES = new Set(['accepted', 'started', 'progress', 'completed', 'failed', 'cancelled']);
const TERMINAL_TYPES = new Set(['completed', 'failed', 'cancelled']);

/** Close codes after which reconnecting with the same credentials is pointless. */
const FATAL_CLOSE = new Map([
  [4401, ['unauthorized', 'the server refused the key or token (wrong, expired or revoked)']],
]);

/**
 * Error codes: the protocol's (`bad_message`, `unauthorized`, `unknown_task`,
 * `invalid_input`, `queue_full`, `rate_limited`, `not_found`,
 * `already_finished`, `timeout`, `task_error`, `internal`, `storage_full`,
 * `shutting_down`) plus four that only this client raises:
 * `cancelled` (a task ended with a `cancelled` event; `details.reason`),
 * `connection_failed` (no connection could be opened: server down, or the
 * request refused before the upgrade, e.g. an Origin not allowed),
 * `connection_lost` (a submit without idempotency key was in flight when the
 * socket dropped: it may or may not have been accepted),
 * `closed` (the client was closed while the request or task was pending).
 * @typedef {'bad_message'|'unauthorized'|'unknown_task'|'invalid_input'|'queue_full'|'rate_limited'|'not_found'|'already_finished'|'timeout'|'task_error'|'internal'|'storage_full'|'shutting_down'|'cancelled'|'connection_failed'|'connection_lost'|'closed'} ErrorCode
 */

/**
 * A typed error: a wire `error` object, a task's `failed`/`cancelled` event,
 * or a client-side failure.
 */
export class TaskwireError extends Error {
  /**
   * @param {ErrorCode|string} code
   * @param {string} message
   * @param {{details?: any, retryAfterMs?: number, event?: TaskEvent, cause?: unknown}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = 'TaskwireError';
    /** @type {ErrorCode|string} */
    this.code = code;
    /** Where and why (e.g. for `invalid_input`), as the server sent it. */
    this.details = extra.details;
    /** @type {number|undefined} When to retry (`queue_full`, `rate_limited`). */
    this.retryAfterMs = extra.retryAfterMs;
    /** @type {TaskEvent|undefined} The terminal event, for a failed or cancelled task. */
    this.event = extra.event;
  }

  /**
   * @param {{code?: string, message?: string, details?: any, retry_after_ms?: number}|undefined} wire
   * @param {TaskEvent} [event]
   */
  static fromWire(wire, event) {
    return new TaskwireError(wire?.code ?? 'internal', wire?.message ?? 'the server sent no error message', {
      details: wire?.details,
      retryAfterMs: wire?.retry_after_ms,
      event,
    });
  }
}

/**
 * A task event as on the wire: `accepted`, `started`, `progress`, `completed`,
 * `failed` or `cancelled`, with `task_id`, `seq` and `at`.
 * @typedef {{type: string, task_id: string, seq: number, at: string, ref?: string,
 *   position?: number, duplicate?: boolean, worker?: string, progress?: number, message?: string,
 *   data?: any, result?: any, files?: TaskFile[], duration_ms?: number,
 *   error?: {code: string, message: string, details?: any, retry_after_ms?: number},
 *   reason?: string}} TaskEvent
 */

/**
 * A file output of a completed task. `url` is absolute or a path on the
 * server: resolve it with {@link TaskwireClient#fileUrl}.
 * @typedef {{name: string, size: number, content_type: string, sha256: string, url: string, expires_at: string}} TaskFile
 */

/**
 * The `welcome` message.
 * @typedef {{type: 'welcome', server: any, protocol: number,
 *   tasks: {name: string, description: string, input_schema: any}[],
 *   limits: {max_message_bytes: number, queue_capacity: number, workers: number, max_timeout_s: number, file_ttl_s: number}}} Welcome
 */

/**
 * Submit options, with the protocol's names.
 * @typedef {{timeout_s?: number, priority?: 'high'|'normal'|'low', idempotency_key?: string,
 *   concurrency_key?: string, delivery?: 'link'|'stream', cancel_on_disconnect?: boolean}} SubmitOptions
 */

/**
 * @typedef {object} ClientOptions
 * @property {string|(() => string|Promise<string>)} key An API key or browser
 *   token, or a function returning one; the function is called for every
 *   (re)connection, so it can fetch a fresh short-lived token.
 * @property {typeof WebSocket} [WebSocket] The WebSocket constructor (default
 *   `globalThis.WebSocket`; Node 20 needs `--experimental-websocket`).
 * @property {number} [connectAttempts=3] Attempts before the first connection
 *   is given up (`connect()` rejects with `connection_failed`).
 * @property {number} [reconnectAttempts=Infinity] Attempts in a row before a
 *   dropped connection is given up (followed tasks reject with `connection_failed`).
 * @property {number} [minDelayMs=250] First reconnection delay; it doubles per attempt.
 * @property {number} [maxDelayMs=10000] Largest reconnection delay (before jitter).
 * @property {number} [heartbeatMs=25000] A `ping` is sent this often; no `pong`
 *   before the next one counts as a dead connection (0 disables).
 * @property {boolean} [retrySafeSubmit=true] Give every submit an
 *   `idempotency_key` (unless it has one), so a submit in flight when the
 *   connection drops is re-sent safely instead of failing with `connection_lost`.
 */

/** An `Event` with a `detail`, in browsers and in Node. */
export class TaskwireEvent extends Event {
  /** @param {string} type @param {any} detail */
  constructor(type, detail) {
    super(type);
    this.detail = detail;
  }
}

function randomHex(bytes) {
  const buf = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(buf);
  return Array.from(buf, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The base URL of a server, ending with `/`. Relative URLs resolve against
 * the page (in a browser).
 * @param {string|URL} server
 */
function baseUrl(server) {
  const here = globalThis.location?.href;
  const url = here ? new URL(String(server), here) : new URL(String(server));
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  url.search = '';
  url.hash = '';
  return url;
}

/**
 * Follows one task: its events in seq order, awaitable and iterable.
 * Dispatches one {@link TaskwireEvent} per task event, named by its type,
 * and `event` for every one.
 *
 * @example
 * const handle = client.submit('sleep', {ms: 500, steps: 5});
 * for await (const ev of handle) console.log(ev.type, ev.progress);
 * const completed = await handle.done; // rejects with a TaskwireError unless completed
 */
export class TaskHandle extends EventTarget {
  /** @type {string|null} Known once `accepted` arrived (at once for `subscribe`). */
  taskId = null;
  /** @type {string|null} The task name, when submitted by this client. */
  task = null;
  /** @type {'submitting'|'queued'|'running'|'completed'|'failed'|'cancelled'|'error'} */
  state = 'submitting';
  /** @type {TaskEvent[]} Every event received, in seq order. */
  events = [];
  /** Highest seq received (0 before any). */
  lastSeq = 0;
  /** @type {number|undefined} Latest progress, 0.0 to 1.0. */
  progress = undefined;
  /** @type {string|undefined} Latest progress message. */
  message = undefined;
  /** @type {number|undefined} Position in the queue, from `accepted`. */
  position = undefined;
  /** @type {Map<string, Blob>} Files received with `delivery: "stream"`, by name. */
  blobs = new Map();
  /** @type {TaskwireError|null} Why the handle ended without `completed`. */
  error = null;

  #client;
  #finished = false;
  /** @type {(() => void)|null} */
  #wake = null;
  /** @type {Promise<void>|null} */
  #changed = null;
  #resolveAccepted;
  #rejectAccepted;
  #resolveDone;
  #rejectDone;

  /** @param {TaskwireClient} client */
  constructor(client) {
    super();
    this.#client = client;
    /** @type {Promise<TaskEvent>} The `accepted` event (for a `subscribe` that starts after it, the first event received); rejects if the submit is rejected. */
    this.accepted = new Promise((resolve, reject) => {
      this.#resolveAccepted = resolve;
      this.#rejectAccepted = reject;
    });
    /** @type {Promise<TaskEvent>} The `completed` event; rejects with a TaskwireError on `failed`, `cancelled`, `rejected` or a lost connection. */
    this.done = new Promise((resolve, reject) => {
      this.#resolveDone = resolve;
      this.#rejectDone = reject;
    });
    // A caller that only iterates must not get "unhandled rejection" noise;
    // whoever awaits these still sees the rejection.
    this.accepted.catch(() => {});
    this.done.catch(() => {});
  }

  /** True once a terminal event or an error ended the handle. */
  get finished() {
    return this.#finished;
  }

  /** The terminal event, once received. */
  get terminal() {
    const last = this.events[this.events.length - 1];
    return last && TERMINAL_TYPES.has(last.type) ? last : undefined;
  }

  /**
   * Asks the server to cancel the task.
   * @returns {Promise<TaskEvent>} the `cancelled` event
   */
  async cancel() {
    const accepted = await this.accepted;
    return this.#client.cancel(accepted.task_id);
  }

  /** Stops following the task (the task itself goes on). */
  unsubscribe() {
    if (this.taskId) this.#client.unsubscribe(this.taskId);
  }

  /** @returns {AsyncIterator<TaskEvent>} every event, from the first, ending after the terminal one */
  [Symbol.asyncIterator]() {
    let next = 0;
    const handle = this;
    return {
      async next() {
        for (;;) {
          if (next < handle.events.length) return { value: handle.events[next++], done: false };
          if (handle.#finished) {
            if (handle.error && !handle.terminal) throw handle.error;
            return { value: undefined, done: true };
          }
          await handle.#nextChange();
        }
      },
      async return() {
        next = Infinity;
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  #nextChange() {
    if (!this.#changed) {
      this.#changed = new Promise((resolve) => {
        this.#wake = resolve;
      });
    }
    return this.#changed;
  }

  #notify() {
    const wake = this.#wake;
    this.#changed = null;
    this.#wake = null;
    wake?.();
  }

  /**
   * Takes one event from the client; false if it is a duplicate.
   * @param {TaskEvent} ev
   * @internal
   */
  _push(ev) {
    if (this.#finished || ev.seq <= this.lastSeq) return false;
    this.lastSeq = ev.seq;
    this.taskId ??= ev.task_id;
    this.events.push(ev);
    switch (ev.type) {
      case 'accepted':
        this.state = 'queued';
        this.position = ev.position;
        this.#resolveAccepted(ev);
        break;
      case 'started':
        this.state = 'running';
        this.position = undefined;
        break;
      case 'progress':
        this.state = 'running';
        if (typeof ev.progress === 'number') this.progress = ev.progress;
        if (typeof ev.message === 'string') this.message = ev.message;
        break;
      case 'completed':
        this.state = 'completed';
        this.progress = 1;
        break;
      case 'failed':
        this.state = 'failed';
        this.error = TaskwireError.fromWire(ev.error, ev);
        break;
      case 'cancelled':
        this.state = 'cancelled';
        this.error = new TaskwireError('cancelled', `the task was cancelled (${ev.reason ?? 'no reason given'})`, {
          details: { reason: ev.reason },
          event: ev,
        });
        break;
    }
    if (ev.type !== 'accepted' && ev.seq > 1) {
      // Subscribed after `accepted` was forgotten, or joined late: the task exists.
      this.#resolveAccepted(this.events[0]);
    }
    if (TERMINAL_TYPES.has(ev.type)) {
      this.#finished = true;
      if (ev.type === 'completed') this.#resolveDone(ev);
      else this.#rejectDone(this.error);
    }
    this.dispatchEvent(new TaskwireEvent(ev.type, ev));
    this.dispatchEvent(new TaskwireEvent('event', ev));
    this.#notify();
    return true;
  }

  /**
   * Ends the handle without a terminal event (rejected submit, unknown task,
   * lost connection, client closed).
   * @param {TaskwireError} error
   * @internal
   */
  _fail(error) {
    if (this.#finished) return;
    this.#finished = true;
    this.state = 'error';
    this.error = error;
    this.#rejectAccepted(error);
    this.#rejectDone(error);
    this.dispatchEvent(new TaskwireEvent('error', error));
    this.#notify();
  }
}

/**
 * A connection to one taskwire server. It extends `EventTarget` and
 * dispatches {@link TaskwireEvent}s:
 * `welcome` (detail: the welcome message, after every (re)connection),
 * `state` (detail: the new {@link TaskwireClient#state}),
 * `message` (detail: every message from the server, e.g. the admin
 * `task_update` and `stats`), `error` (detail: a TaskwireError for an
 * `error` message that answers no request of this client).
 *
 * @example
 * const client = new TaskwireClient('https://tasks.example.org', {key: token});
 * const welcome = await client.connect();
 * const completed = await client.submit('echo', {hello: 'world'}).done;
 */
export class TaskwireClient extends EventTarget {
  /** @type {'idle'|'connecting'|'open'|'reconnecting'|'closed'} */
  state = 'idle';
  /** @type {Welcome|null} The latest welcome message. */
  welcome = null;

  #base;
  #wsUrl;
  #opts;
  #WebSocket;
  /** @type {WebSocket|null} */
  #socket = null;
  #nextRef = 0;
  /** @type {Map<string, {kind: string, msg: any, sent: boolean, resolve: (v: any) => void, reject: (e: any) => void, handle?: TaskHandle, taskId?: string}>} */
  #pending = new Map();
  /** @type {Map<string, TaskHandle>} followed tasks by id */
  #handles = new Map();
  /** @type {Map<number, {taskId: string, name: string, contentType: string, chunks: ArrayBuffer[]}>} */
  #streams = new Map();
  /** @type {Promise<Welcome>|null} */
  #connecting = null;
  #everConnected = false;
  /** Wakes the backoff sleep early on close(). */
  #cancelSleep = null;
  /** Ends the wait for the current socket's close. */
  #socketClosed = null;
  #heartbeat = null;
  #awaitingPong = null;
  /** Per-task seq for which a gap triggered a resubscription (once per seq). */
  #gapRetried = new Map();

  /**
   * @param {string|URL} server base URL (`https://host[:port][/prefix]`); in a
   *   browser it may be relative to the page
   * @param {ClientOptions} options
   */
  constructor(server, options) {
    super();
    if (!options || options.key === undefined || options.key === null || options.key === '') {
      throw new TypeError('TaskwireClient: options.key (an API key, a browser token or a function returning one) is required');
    }
    this.#base = baseUrl(server);
    const ws = new URL('v1/ws', this.#base);
    ws.protocol = this.#base.protocol === 'https:' ? 'wss:' : 'ws:';
    this.#wsUrl = ws.href;
    this.#opts = {
      connectAttempts: 3,
      reconnectAttempts: Infinity,
      minDelayMs: 250,
      maxDelayMs: 10_000,
      heartbeatMs: 25_000,
      retrySafeSubmit: true,
      ...options,
    };
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== 'function') {
      throw new TypeError('TaskwireClient: no WebSocket constructor (Node 20: run with --experimental-websocket or pass options.WebSocket)');
    }
  }

  /** The server's base URL, ending with `/`. */
  get server() {
    return this.#base.href;
  }

  /** The WebSocket URL (`ws://` or `wss://`, path `v1/ws`). */
  get url() {
    return this.#wsUrl;
  }

  /**
   * An absolute download URL for a file output.
   * @param {TaskFile|string} file
   */
  fileUrl(file) {
    return new URL(typeof file === 'string' ? file : file.url, this.#base).href;
  }

  /**
   * Opens the connection (once; later calls return the same promise) and
   * resolves with the first `welcome`.
   * @returns {Promise<Welcome>}
   */
  connect() {
    if (this.state === 'closed') return Promise.reject(new TaskwireError('closed', 'the client is closed'));
    if (!this.#connecting) {
      this.#connecting = new Promise((resolve, reject) => {
        this.#run(resolve, reject);
      });
      this.#connecting.catch(() => {});
    }
    return this.#connecting;
  }

  /**
   * Submits a task. The handle follows it at once; the request is sent as
   * soon as the connection is up (connecting if needed).
   * @param {string} task the task name
   * @param {any} input the task's JSON input
   * @param {SubmitOptions} [options]
   * @returns {TaskHandle}
   */
  submit(task, input, options = {}) {
    const handle = new TaskHandle(this);
    handle.task = task;
    const opts = { ...options };
    if (this.#opts.retrySafeSubmit && opts.idempotency_key === undefined) {
      opts.idempotency_key = `twc-${randomHex(16)}`;
    }
    const msg = { type: 'submit', task, input };
    if (Object.keys(opts).length) msg.options = opts;
    this.#request('submit', msg, { handle }).catch(() => {});
    return handle;
  }

  /**
   * Follows a task by id (an admin key may follow any key's task). Events
   * after `afterSeq` that the server still holds arrive first, then live ones
   * (so an `afterSeq` at or past the terminal event's seq receives nothing).
   * An unknown task, or another key's, rejects with `not_found`.
   * @param {string} taskId
   * @param {{afterSeq?: number}} [options]
   * @returns {TaskHandle}
   */
  subscribe(taskId, { afterSeq = 0 } = {}) {
    const existing = this.#handles.get(taskId);
    if (existing && !existing.finished) return existing;
    const handle = new TaskHandle(this);
    handle.taskId = taskId;
    handle.lastSeq = afterSeq;
    if (this.state === 'closed') {
      handle._fail(new TaskwireError('closed', 'the client is closed'));
      return handle;
    }
    this.#handles.set(taskId, handle);
    if (this.state === 'open') this.#sendSubscribe(handle);
    else this.connect().catch(() => {});
    return handle;
  }

  /**
   * Stops following a task.
   * @param {string} taskId
   * @returns {Promise<any>} the `unsubscribed` reply
   */
  unsubscribe(taskId) {
    this.#handles.delete(taskId);
    return this.#request('unsubscribe', { type: 'unsubscribe', task_id: taskId });
  }

  /**
   * Cancels a task (an admin key may cancel any key's task).
   * @param {string} taskId
   * @returns {Promise<TaskEvent>} the `cancelled` event; rejects with
   *   `not_found` or `already_finished`
   */
  cancel(taskId) {
    return this.#request('cancel', { type: 'cancel', task_id: taskId }, { taskId });
  }

  /** @returns {Promise<any>} the `pong` */
  ping() {
    return this.#request('ping', { type: 'ping' });
  }

  /**
   * Sends any message with a fresh `ref` and resolves with the server's
   * direct reply (rejects with a TaskwireError on `error`/`rejected`). Used
   * for messages this client has no method for, e.g. the admin `watch`.
   * @param {{type: string, [k: string]: any}} msg
   * @returns {Promise<any>}
   */
  request(msg) {
    return this.#request('request', { ...msg });
  }

  /**
   * Closes the connection for good. Pending requests and followed tasks
   * reject with `closed` (the tasks themselves go on on the server).
   */
  close() {
    if (this.state === 'closed') return;
    this.#finish(new TaskwireError('closed', 'the client was closed'));
  }

  // ---- requests ----

  #request(kind, msg, extra = {}) {
    if (this.state === 'closed') {
      const error = new TaskwireError('closed', 'the client is closed');
      extra.handle?._fail(error);
      return Promise.reject(error);
    }
    const ref = `r${++this.#nextRef}`;
    msg.ref = ref;
    return new Promise((resolve, reject) => {
      this.#pending.set(ref, { kind, msg, sent: false, resolve, reject, ...extra });
      if (this.state === 'open') this.#sendPending(ref);
      else this.connect().catch(() => {});
    });
  }

  #sendPending(ref) {
    const entry = this.#pending.get(ref);
    if (!entry) return;
    if (this.#send(entry.msg)) entry.sent = true;
  }

  #send(msg) {
    const socket = this.#socket;
    if (!socket || socket.readyState !== 1) return false;
    socket.send(JSON.stringify(msg));
    return true;
  }

  #sendSubscribe(handle) {
    const msg = { type: 'subscribe', task_id: handle.taskId };
    if (handle.lastSeq > 0) msg.after_seq = handle.lastSeq;
    // The reply is the events themselves; the entry only catches an `error`.
    this.#request('subscribe', msg, { handle }).catch(() => {});
  }

  // ---- connection lifecycle ----

  #setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new TaskwireEvent('state', state));
  }

  #delay(attempt) {
    const { minDelayMs, maxDelayMs } = this.#opts;
    const delay = Math.min(maxDelayMs, minDelayMs * 2 ** Math.max(0, attempt - 1));
    return delay / 2 + Math.random() * (delay / 2);
  }

  #sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#cancelSleep = () => {
        clearTimeout(timer);
        resolve();
      };
    }).finally(() => {
      this.#cancelSleep = null;
    });
  }

  async #run(resolveFirst, rejectFirst) {
    let attempt = 0;
    let firstSettled = false;
    while (this.state !== 'closed') {
      this.#setState(this.#everConnected ? 'reconnecting' : 'connecting');
      let welcome;
      try {
        welcome = await this.#dial();
      } catch (error) {
        if (this.state === 'closed') break;
        attempt += 1;
        const limit = this.#everConnected ? this.#opts.reconnectAttempts : this.#opts.connectAttempts;
        if (error.fatal || attempt >= limit) {
          if (!firstSettled) {
            firstSettled = true;
            rejectFirst(error.error);
          }
          this.#finish(error.error);
          break;
        }
        await this.#sleep(this.#delay(attempt));
        continue;
      }
      attempt = 0;
      this.#everConnected = true;
      this.welcome = welcome;
      const closed = new Promise((resolve) => {
        this.#socketClosed = resolve;
      });
      this.#setState('open');
      this.#startHeartbeat();
      if (!firstSettled) {
        firstSettled = true;
        resolveFirst(welcome);
      }
      this.dispatchEvent(new TaskwireEvent('welcome', welcome));
      this.#resume();
      const close = await closed;
      this.#stopHeartbeat();
      this.#socket = null;
      this.#streams.clear();
      if (this.state === 'closed') break;
      if (close.code === 1009) {
        // Our own message was too big: re-sending it would loop.
        this.#failSent('submit', new TaskwireError('bad_message', 'a message was larger than the server accepts (close 1009)'));
      }
      // Reconnect at once the first time (the common case is a dropped
      // proxy or a server restart), then back off.
      attempt = 1;
      await this.#sleep(this.#delay(1) / 4);
    }
  }

  /**
   * Opens one socket, authenticates, resolves with `welcome`.
   * Rejects with `{error: TaskwireError, fatal: boolean}`.
   */
  #dial() {
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (error, fatal = false) => {
        if (settled) return;
        settled = true;
        reject({ error, fatal });
      };
      Promise.resolve()
        .then(() => (typeof this.#opts.key === 'function' ? this.#opts.key() : this.#opts.key))
        .then(
          (key) => {
            if (this.state === 'closed') {
              fail(new TaskwireError('closed', 'the client was closed'), true);
              return;
            }
            if (typeof key !== 'string' || key === '') {
              fail(new TaskwireError('unauthorized', 'no key or token to authenticate with'), true);
              return;
            }
            let socket;
            try {
              socket = new this.#WebSocket(this.#wsUrl, SUBPROTOCOL);
            } catch (cause) {
              fail(new TaskwireError('connection_failed', `cannot open ${this.#wsUrl}: ${cause?.message ?? cause}`, { cause }), true);
              return;
            }
            socket.binaryType = 'arraybuffer';
            this.#socket = socket;
            socket.onopen = () => socket.send(JSON.stringify({ type: 'auth', key }));
            socket.onmessage = (e) => {
              if (settled) {
                this.#onFrame(e.data);
                return;
              }
              let msg;
              try {
                msg = JSON.parse(e.data);
              } catch {
                return;
              }
              if (msg?.type === 'welcome') {
                settled = true;
                resolve(msg);
              } else if (msg?.type === 'error') {
                // Not expected before welcome; keep waiting for welcome or close.
                this.dispatchEvent(new TaskwireEvent('error', TaskwireError.fromWire(msg.error)));
              }
            };
            socket.onerror = () => {};
            socket.onclose = (e) => {
              if (this.#socket === socket) this.#socket = null;
              if (settled) {
                this.#socketClosed?.({ code: e.code, reason: e.reason });
                return;
              }
              const fatal = FATAL_CLOSE.get(e.code);
              if (fatal) fail(new TaskwireError(fatal[0], fatal[1], { details: { url: this.#wsUrl, close_code: e.code, close_reason: e.reason } }), true);
              else
                fail(
                  new TaskwireError(
                    'connection_failed',
                    `cannot connect to ${this.#wsUrl} (close ${e.code}${e.reason ? `: ${e.reason}` : ''}; the server may be down or may refuse this page's origin)`,
                    { details: { url: this.#wsUrl, close_code: e.code, close_reason: e.reason } },
                  ),
                );
            };
          },
          (cause) => {
            const error =
              cause instanceof TaskwireError
                ? cause
                : new TaskwireError('unauthorized', `cannot get a token: ${cause?.message ?? cause}`, { cause });
            fail(error, true);
          },
        );
    });
  }

  /** After a (re)connection: re-follow tasks, then send what waits. */
  #resume() {
    for (const [ref, entry] of this.#pending) {
      if (entry.kind === 'subscribe') this.#pending.delete(ref); // re-sent below with a fresh ref
    }
    for (const handle of this.#handles.values()) {
      if (!handle.finished) this.#sendSubscribe(handle);
    }
    for (const [ref, entry] of [...this.#pending]) {
      if (entry.kind === 'subscribe') continue;
      if (entry.sent && entry.kind === 'submit' && entry.msg.options?.idempotency_key === undefined) {
        this.#pending.delete(ref);
        const error = new TaskwireError(
          'connection_lost',
          'the connection dropped before the server answered the submit: the task may or may not have been accepted',
        );
        entry.handle?._fail(error);
        entry.reject(error);
        continue;
      }
      this.#sendPending(ref);
    }
  }

  #failSent(kind, error) {
    for (const [ref, entry] of [...this.#pending]) {
      if (entry.kind === kind && entry.sent) {
        this.#pending.delete(ref);
        entry.handle?._fail(error);
        entry.reject(error);
      }
    }
  }

  #finish(error) {
    this.#setState('closed');
    this.#stopHeartbeat();
    this.#cancelSleep?.();
    const socket = this.#socket;
    this.#socket = null;
    if (socket && socket.readyState <= 1) socket.close(1000);
    this.#socketClosed?.({ code: 1000, reason: '' });
    for (const entry of this.#pending.values()) {
      entry.handle?._fail(error);
      entry.reject(error);
    }
    this.#pending.clear();
    for (const handle of this.#handles.values()) handle._fail(error);
    this.#handles.clear();
  }

  #startHeartbeat() {
    const every = this.#opts.heartbeatMs;
    if (!every) return;
    this.#heartbeat = setInterval(() => {
      if (this.#awaitingPong) {
        // No pong since the last ping: the connection is dead without a close.
        this.#awaitingPong = null;
        this.#socket?.close(4000, 'heartbeat timeout');
        return;
      }
      const ref = `hb${++this.#nextRef}`;
      this.#awaitingPong = ref;
      this.#send({ type: 'ping', ref });
    }, every);
    this.#heartbeat.unref?.();
  }

  #stopHeartbeat() {
    clearInterval(this.#heartbeat);
    this.#heartbeat = null;
    this.#awaitingPong = null;
  }

  // ---- incoming ----

  #onFrame(data) {
    if (typeof data !== 'string') {
      this.#onBinary(data);
      return;
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (!msg || typeof msg.type !== 'string') return;
    this.#route(msg);
    this.dispatchEvent(new TaskwireEvent('message', msg));
  }

  #route(msg) {
    const entry = msg.ref !== undefined ? this.#pending.get(msg.ref) : undefined;
    if (msg.type === 'pong' && msg.ref === this.#awaitingPong) {
      this.#awaitingPong = null;
      return;
    }
    if (TASK_EVENT_TYPES.has(msg.type)) {
      this.#onTaskEvent(msg, entry);
      return;
    }
    switch (msg.type) {
      case 'rejected':
      case 'error': {
        const error = TaskwireError.fromWire(msg.error);
        if (entry) {
          this.#pending.delete(msg.ref);
          if (entry.kind === 'subscribe' && entry.handle) this.#handles.delete(entry.handle.taskId);
          entry.handle?._fail(error);
          entry.reject(error);
        } else {
          this.dispatchEvent(new TaskwireEvent('error', error));
        }
        return;
      }
      case 'stream_begin':
        this.#streams.set(msg.stream, { taskId: msg.task_id, name: msg.name, contentType: msg.content_type, chunks: [] });
        return;
      case 'stream_end': {
        const stream = this.#streams.get(msg.stream);
        this.#streams.delete(msg.stream);
        const handle = stream && this.#handles.get(stream.taskId);
        if (handle) handle.blobs.set(stream.name, new Blob(stream.chunks, { type: stream.contentType }));
        return;
      }
      default:
        if (entry) {
          this.#pending.delete(msg.ref);
          entry.resolve(msg);
        }
    }
  }

  /** @param {TaskEvent} ev */
  #onTaskEvent(ev, entry) {
    if (entry?.kind === 'submit' && ev.type === 'accepted') {
      this.#pending.delete(ev.ref);
      const handle = entry.handle;
      handle.taskId = ev.task_id;
      const known = this.#handles.get(ev.task_id);
      if (known && known !== handle && !known.finished) {
        // A retried submit answered as a duplicate of a task already followed.
        known.addEventListener('event', (e) => handle._push(e.detail));
        known.events.forEach((e) => handle._push(e));
      } else {
        this.#handles.set(ev.task_id, handle);
      }
      entry.resolve(ev);
      if (ev.duplicate && this.#handles.get(ev.task_id) === handle) {
        // A duplicate submit is not necessarily followed: follow it explicitly.
        handle._push(ev);
        this.#sendSubscribe(handle);
        return;
      }
    }
    const handle = this.#handles.get(ev.task_id);
    if (handle) {
      for (const [ref, pending] of this.#pending) {
        if (pending.kind === 'subscribe' && pending.handle === handle) this.#pending.delete(ref);
      }
      const expected = handle.lastSeq + 1;
      if (ev.seq > expected && this.#gapRetried.get(ev.task_id) !== handle.lastSeq && !handle.finished) {
        // A gap: something was dropped. Ask for the missing events once; the
        // live ones that follow are de-duplicated by seq.
        this.#gapRetried.set(ev.task_id, handle.lastSeq);
        this.#sendSubscribe(handle);
        return;
      }
      handle._push(ev);
      if (handle.finished) {
        this.#handles.delete(ev.task_id);
        this.#gapRetried.delete(ev.task_id);
      }
    }
    // A cancel is answered by the task's `cancelled` event (with its ref),
    // or ends when the task's terminal event arrives another way.
    if (entry?.kind === 'cancel') {
      this.#pending.delete(ev.ref);
      if (ev.type === 'cancelled') entry.resolve(ev);
      else entry.reject(new TaskwireError('already_finished', `the task had already ended (${ev.type})`, { event: ev }));
    } else if (TERMINAL_TYPES.has(ev.type)) {
      for (const [ref, pending] of this.#pending) {
        if (pending.kind === 'cancel' && pending.taskId === ev.task_id) {
          this.#pending.delete(ref);
          if (ev.type === 'cancelled') pending.resolve(ev);
          else pending.reject(new TaskwireError('already_finished', `the task had already ended (${ev.type})`, { event: ev }));
        }
      }
    }
  }

  #onBinary(data) {
    const bytes = data instanceof ArrayBuffer ? data : data?.buffer;
    if (!(bytes instanceof ArrayBuffer) || bytes.byteLength < 4) return;
    const stream = this.#streams.get(new DataView(bytes).getUint32(0));
    stream?.chunks.push(bytes.slice(4));
  }
}

/**
 * Mints a short-lived browser token (`POST /v1/tokens`, see docs/protocol.md)
 * with an API key. For a page's own backend, or a trusted page holding a key.
 * @param {string|URL} server
 * @param {string} apiKey
 * @param {{ttlS?: number, tasks?: string[], origin?: string, fetch?: typeof fetch}} [options]
 * @returns {Promise<{token: string, expiresAt: string}>}
 */
export async function mintToken(server, apiKey, options = {}) {
  const body = {};
  if (options.ttlS !== undefined) body.ttl_s = options.ttlS;
  if (options.tasks !== undefined) body.tasks = options.tasks;
  if (options.origin !== undefined) body.origin = options.origin;
  const doFetch = options.fetch ?? globalThis.fetch;
  const response = await doFetch(new URL('v1/tokens', baseUrl(server)), {
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const reply = await response.json().catch(() => null);
  if (!response.ok || typeof reply?.token !== 'string') {
    throw reply?.error
      ? TaskwireError.fromWire(reply.error)
      : new TaskwireError(response.status === 401 ? 'unauthorized' : 'internal', `POST /v1/tokens answered ${response.status}`);
  }
  return { token: reply.token, expiresAt: reply.expires_at };
}
