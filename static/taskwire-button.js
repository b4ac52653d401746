// <taskwire-button>: a button that runs one taskwire task and downloads its file.
//
//   <script type="module" src="https://tasks.example.org/taskwire-button.js"></script>
//   <taskwire-button task="abstract_booklet" token-url="/booklet/token"
//                    input-url="/booklet/input">Abstract booklet</taskwire-button>
//
// Attributes:
//   server      taskwire's base URL (default: where this script was loaded from)
//   task        the task name
//   token       a browser token (or, for trusted pages, an API key)
//   token-url   a same-origin URL answering {"token": "..."}, fetched at click
//               time and again on every reconnection (tokens are short-lived)
//   input-url   a URL answering the task's JSON input, fetched at click time
//               (else the `input` property is sent)
//   no-download do not start the download of the first file on completion
//   disabled    the button cannot be pressed
// Properties: `input`, `options` (submit options, protocol names), `getToken`
// (a function returning a token, instead of the attributes), `texts` (editor
// texts per error code, over ERROR_TEXTS), `busy`, `run()`.
// Events (bubbling, composed): `taskwire-progress` (detail: {event, state,
// progress, message, position}), `taskwire-done` (detail: the completed
// event), `taskwire-error` (detail: {code, message, details, text, next, error}).
// Styling: parts `button`, `spinner`, `label`, `progress`, `status`, `error`,
// `error-text`, `error-next`, `error-details`, `result`, `link`, `file-name`,
// `file-size`; custom properties --taskwire-accent, --taskwire-accent-text,
// --taskwire-radius, --taskwire-font, --taskwire-gap, --taskwire-error,
// --taskwire-spinner-size, --taskwire-progress-width.
//
// What people read: every error is shown as one plain sentence (what
// happened) and one with what to do next; the code, the developer message and
// the details stay in the `taskwire-error` event and behind a "Details"
// toggle. The widget's states (idle, busy, done, error) each own one part of
// the shadow DOM, so a new state (e.g. a question to answer) is one more
// part and one more `#show*` method.

import { TaskwireClient, TaskwireError } from './taskwire.js';

const DEFAULT_SERVER = new URL('./', import.meta.url).href;

/**
 * What the widget tells a person for each error code: `text` (what
 * happened) and `next` (what to do now). A value may be a function of the
 * error. Keys are a code, or `<stage>:<code>` for an error the page's own
 * backend answered while the widget fetched the token (`token`) or the input
 * (`input`). Besides the protocol's and taskwire.js's codes the widget raises
 * two: `page_unreachable` (the page's own backend cannot be reached) and
 * `page_error` (it answered an HTTP error without an error object, or no
 * JSON). `default` is the fallback. Pages override entries with the
 * element's `texts` property (to name who to ask, or to translate).
 * @type {Record<string, {text: string|((e: TaskwireError) => string), next: string|((e: TaskwireError) => string)}>}
 */
export const ERROR_TEXTS = {
  connection_failed: {
    text: 'The task service cannot be reached.',
    next: 'Check your network connection and try again in a minute. If it keeps failing, the service may be down or may not accept this site: tell the site\'s administrator.',
  },
  connection_lost: {
    text: 'The connection dropped while the task was being sent.',
    next: 'Press the button again.',
  },
  unauthorized: {
    text: 'The task service no longer accepts this page\'s access (it is only valid for a few minutes).',
    next: 'Reload the page and try again. If it keeps happening, tell the site\'s administrator.',
  },
  unknown_task: {
    text: 'The task service does not offer this task.',
    next: 'Tell the site\'s administrator: the service may be an older version or configured without it.',
  },
  invalid_input: {
    text: 'The task service could not use the data it was sent.',
    next: 'Check the settings on this page and try again. If it keeps failing, send the details below to the site\'s administrator.',
  },
  queue_full: {
    text: 'The task service is busy right now.',
    next: (e) => `Try again in ${retryIn(e)}.`,
  },
  rate_limited: {
    text: 'Too many requests were sent to the task service.',
    next: (e) => `Try again in ${retryIn(e)}.`,
  },
  shutting_down: {
    text: 'The task service is restarting.',
    next: 'Try again in a minute.',
  },
  timeout: {
    text: 'The task took too long and was stopped.',
    next: 'Try again. If it happens again, tell the site\'s administrator (the service\'s time limit may be too short).',
  },
  task_error: {
    text: 'The task failed.',
    next: 'Try again. If it fails again, send the details below to the site\'s administrator.',
  },
  storage_full: {
    text: 'The task service has no room for the file right now.',
    next: 'Try again later. If it keeps happening, tell the site\'s administrator.',
  },
  not_found: {
    text: 'The task service no longer knows this task (it may have restarted).',
    next: 'Press the button again.',
  },
  cancelled: {
    text: (e) =>
      e.details?.reason === 'shutdown' ? 'The task was stopped because the task service is restarting.' : 'The task was cancelled.',
    next: 'Press the button to start it again.',
  },
  closed: { text: 'The task was stopped.', next: 'Press the button to start it again.' },
  'token:unauthorized': {
    text: 'The task service refused this site\'s key.',
    next: 'Tell the site\'s administrator: the key in the service settings is wrong or was revoked.',
  },
  'token:page_error': {
    text: 'This page is no longer allowed to start the task (your session may have expired).',
    next: 'Reload the page, log in again if asked, and try again.',
  },
  'input:page_error': {
    text: 'This site could not prepare the data for the task.',
    next: 'Reload the page and try again. If it keeps failing, send the details below to the site\'s administrator.',
  },
  page_unreachable: {
    text: 'This site could not be reached.',
    next: 'Check your network connection, then try again.',
  },
  default: {
    text: 'Something went wrong.',
    next: 'Try again. If it keeps failing, send the details below to the site\'s administrator.',
  },
};

function retryIn(error) {
  const seconds = Math.max(1, Math.ceil((error.retryAfterMs ?? 30_000) / 1000));
  return seconds === 1 ? 'a second' : seconds < 90 ? `${seconds} seconds` : `${Math.ceil(seconds / 60)} minutes`;
}

/**
 * The sentences a person reads for an error: `{text, next}`.
 * @param {TaskwireError} error
 * @param {typeof ERROR_TEXTS} [overrides] entries that win over ERROR_TEXTS
 */
export function describeError(error, overrides = {}) {
  const stage = error.details?.stage;
  const table = { ...ERROR_TEXTS, ...overrides };
  const keys = stage ? [`${stage}:${error.code}`] : [];
  keys.push(error.code, 'default');
  const entry = keys.map((key) => table[key]).find(Boolean);
  const resolve = (value) => (typeof value === 'function' ? value(error) : value);
  return { text: resolve(entry.text), next: resolve(entry.next) };
}

const STYLE = `
:host {
  display: inline-flex;
  flex-direction: column;
  align-items: flex-start;
  gap: var(--taskwire-gap, 0.35em);
  font: var(--taskwire-font, inherit);
  max-width: 100%;
}
:host([hidden]) { display: none; }
button {
  display: inline-flex;
  align-items: center;
  gap: 0.5em;
  font: inherit;
  padding: 0.5em 1em;
  border: 1px solid transparent;
  border-radius: var(--taskwire-radius, 6px);
  background: var(--taskwire-accent, #1d4ed8);
  color: var(--taskwire-accent-text, #fff);
  cursor: pointer;
}
button:hover:not(:disabled) { filter: brightness(1.1); }
button:focus-visible, a:focus-visible, summary:focus-visible {
  outline: 3px solid var(--taskwire-focus, #f59e0b); outline-offset: 2px;
}
button:disabled { cursor: progress; opacity: 0.75; }
:host([disabled]) button:disabled { cursor: not-allowed; }
[part="spinner"] {
  display: none;
  box-sizing: border-box;
  width: var(--taskwire-spinner-size, 1em);
  height: var(--taskwire-spinner-size, 1em);
  border: 0.15em solid currentColor;
  border-right-color: transparent;
  border-radius: 50%;
  animation: taskwire-spin 0.8s linear infinite;
}
:host([aria-busy="true"]) [part="spinner"] { display: inline-block; }
@keyframes taskwire-spin { to { transform: rotate(360deg); } }
@media (prefers-reduced-motion: reduce) { [part="spinner"] { animation-duration: 2.4s; } }
progress {
  width: var(--taskwire-progress-width, 12em);
  accent-color: var(--taskwire-accent, #1d4ed8);
}
[part="status"], [part="error"], [part="result"] { font-size: 0.9em; max-width: 100%; }
[part="status"]:empty, [part="error"]:empty { display: none; }
[part="error"] {
  color: var(--taskwire-error, #b91c1c);
  border-left: 3px solid currentColor;
  padding: 0.1em 0 0.1em 0.6em;
}
[part="error"] p { margin: 0 0 0.25em; }
[part="error-text"] { font-weight: 600; }
[part="error-next"] { color: inherit; }
[part="error-details"] { color: #4b5563; }
[part="error-details"] summary { cursor: pointer; width: max-content; }
[part="error-details"] pre {
  margin: 0.25em 0 0;
  white-space: pre-wrap;
  overflow-wrap: anywhere;
  font: 0.85em/1.4 ui-monospace, "DejaVu Sans Mono", monospace;
}
[part="link"] {
  display: inline-flex;
  flex-wrap: wrap;
  align-items: baseline;
  column-gap: 0.5em;
  max-width: 100%;
  box-sizing: border-box;
  padding: 0.4em 0.8em;
  border: 1px solid var(--taskwire-accent, #1d4ed8);
  border-radius: var(--taskwire-radius, 6px);
  color: var(--taskwire-accent, #1d4ed8);
  text-decoration: none;
}
[part="link"]:hover { background: color-mix(in srgb, var(--taskwire-accent, #1d4ed8) 8%, transparent); }
[part="link"] strong { white-space: nowrap; }
[part="file-name"] { min-width: 0; overflow-wrap: break-word; color: inherit; }
[part="file-size"] { color: #4b5563; white-space: nowrap; }
[hidden] { display: none !important; }
`;

/** Splits a file name into text with break chances after `_`, `-` and `.` (no mid-word breaks). */
function breakableName(name) {
  const out = [];
  for (const piece of name.split(/(?<=[_\-.])/)) {
    if (out.length) out.push(document.createElement('wbr'));
    out.push(document.createTextNode(piece));
  }
  return out;
}

function formatSize(bytes) {
  if (typeof bytes !== 'number') return '';
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

/** The developer view of an error, for the details toggle. */
function developerText(error) {
  const lines = [`code: ${error.code}`, `message: ${error.message}`];
  if (error.details !== undefined) lines.push(`details: ${JSON.stringify(error.details)}`);
  if (error.retryAfterMs !== undefined) lines.push(`retry_after_ms: ${error.retryAfterMs}`);
  if (error.event?.task_id) lines.push(`task: ${error.event.task_id}`);
  return lines.join('\n');
}

/**
 * Fetches JSON from the page's own backend (`stage`: `token` or `input`). A
 * non-2xx answer with `{"error": {"code", "message"}}` keeps that code, so
 * a backend can say why (e.g. `unauthorized`: its key was refused).
 */
async function fetchJson(url, stage) {
  let response;
  try {
    response = await fetch(url, { credentials: 'same-origin', headers: { accept: 'application/json' } });
  } catch (cause) {
    throw new TaskwireError('page_unreachable', `cannot fetch the ${stage} from ${url}`, { cause, details: { stage, url: String(url) } });
  }
  const reply = await response.json().catch(() => undefined);
  if (!response.ok) {
    const wire = reply?.error;
    if (typeof wire?.code === 'string') {
      const details = { ...(typeof wire.details === 'object' && wire.details ? wire.details : {}), stage, status: response.status };
      throw new TaskwireError(wire.code, String(wire.message ?? `the ${stage} URL answered ${response.status}`), {
        details,
        retryAfterMs: wire.retry_after_ms,
      });
    }
    throw new TaskwireError('page_error', `the ${stage} URL answered ${response.status}`, {
      details: { stage, url: String(url), status: response.status },
    });
  }
  if (reply === undefined) {
    throw new TaskwireError('page_error', `the ${stage} URL did not answer JSON`, { details: { stage, url: String(url), status: response.status } });
  }
  return reply;
}

export class TaskwireButton extends HTMLElement {
  static observedAttributes = ['task', 'disabled'];

  /** The task's JSON input, unless `input-url` is set. */
  input = null;
  /** @type {import('./taskwire.js').SubmitOptions} Submit options. */
  options = {};
  /** @type {(() => string|Promise<string>)|null} Returns a token; wins over the attributes. */
  getToken = null;
  /** @type {Partial<typeof ERROR_TEXTS>} Editor texts that win over ERROR_TEXTS (e.g. naming who to ask). */
  texts = {};
  /** @type {TaskwireClient|null} The client of the current run. */
  client = null;

  #busy = false;
  #button;
  #progress;
  #status;
  #error;
  #result;
  #link;
  #fallback;

  constructor() {
    super();
    const root = this.attachShadow({ mode: 'open', delegatesFocus: true });
    root.innerHTML = `<style>${STYLE}</style>
<button part="button" type="button" aria-describedby="status error result">
  <span part="spinner" aria-hidden="true"></span>
  <span part="label"><slot></slot></span>
</button>
<progress part="progress" max="1" aria-label="Progress" hidden></progress>
<div part="status" id="status" role="status" aria-live="polite"></div>
<div part="error" id="error" role="alert"></div>
<div part="result" id="result" hidden>
  <a part="link"><strong>Download</strong> <span part="file-name"></span> <span part="file-size"></span></a>
</div>`;
    this.#button = root.querySelector('button');
    this.#progress = root.querySelector('progress');
    this.#status = root.getElementById('status');
    this.#error = root.getElementById('error');
    this.#result = root.getElementById('result');
    this.#link = root.querySelector('a');
    this.#fallback = root.querySelector('slot');
    this.#button.addEventListener('click', () => {
      this.run();
    });
  }

  connectedCallback() {
    this.#render();
  }

  attributeChangedCallback() {
    this.#render();
  }

  /** True while a task runs. */
  get busy() {
    return this.#busy;
  }

  #render() {
    this.#fallback.textContent = `Run ${this.getAttribute('task') ?? 'task'}`;
    this.#button.disabled = this.#busy || this.hasAttribute('disabled');
  }

  #setStatus(text) {
    this.#status.textContent = text;
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }

  /** Busy: spinner, indeterminate bar, no earlier outcome left on screen. */
  #showBusy() {
    this.#busy = true;
    this.#render();
    this.setAttribute('aria-busy', 'true');
    this.#error.replaceChildren();
    this.#result.hidden = true;
    this.#progress.removeAttribute('value'); // indeterminate until the first progress
    this.#progress.hidden = false;
    this.#setStatus('Connecting…');
  }

  /** Done: one line of status, and the file (named once) as the next action. */
  #showDone(completed, client) {
    this.#progress.value = 1;
    const file = completed.files?.[0];
    if (!file) {
      this.#setStatus('Done.');
      return;
    }
    this.#link.href = client.fileUrl(file);
    this.#link.download = file.name;
    this.#link.title = file.name;
    this.#link.querySelector('[part="file-name"]').replaceChildren(...breakableName(file.name));
    this.#link.querySelector('[part="file-size"]').textContent = formatSize(file.size);
    this.#result.hidden = false;
    if (this.hasAttribute('no-download')) {
      this.#setStatus('Done: your file is ready.');
    } else {
      this.#setStatus('Done: your download has started.');
      this.#link.click();
    }
  }

  /** Error: what happened, what to do, and the developer's view behind a toggle. */
  #showError(error) {
    const { text, next } = describeError(error, this.texts ?? {});
    this.#setStatus('');
    this.#progress.hidden = true;
    const p = (part, content) => {
      const el = document.createElement('p');
      el.setAttribute('part', part);
      el.textContent = content;
      return el;
    };
    const details = document.createElement('details');
    details.setAttribute('part', 'error-details');
    const summary = document.createElement('summary');
    summary.textContent = 'Details';
    const pre = document.createElement('pre');
    pre.textContent = developerText(error);
    details.append(summary, pre);
    this.#error.replaceChildren(p('error-text', text), p('error-next', next), details);
    return { text, next };
  }

  /** The credential for one (re)connection. */
  async #token() {
    if (this.getToken) return this.getToken();
    const token = this.getAttribute('token');
    if (token) return token;
    const tokenUrl = this.getAttribute('token-url');
    if (!tokenUrl) throw new TaskwireError('unauthorized', 'no token: set the token or token-url attribute');
    const url = new URL(tokenUrl, document.baseURI);
    if (url.origin !== location.origin) {
      throw new TaskwireError('unauthorized', 'token-url must be on the page\'s own origin');
    }
    const reply = await fetchJson(url, 'token');
    if (typeof reply?.token !== 'string') {
      throw new TaskwireError('page_error', 'the token URL answered no token', { details: { stage: 'token', url: String(url) } });
    }
    return reply.token;
  }

  async #input() {
    const inputUrl = this.getAttribute('input-url');
    if (!inputUrl) return this.input;
    return fetchJson(new URL(inputUrl, document.baseURI), 'input');
  }

  #onEvent(ev) {
    switch (ev.type) {
      case 'accepted':
        this.#setStatus(ev.position > 0 ? `Waiting in line (${ev.position} ahead)…` : 'Waiting for a worker…');
        break;
      case 'started':
        this.#setStatus('Running…');
        break;
      case 'progress': {
        if (typeof ev.progress === 'number') this.#progress.value = ev.progress;
        const percent = typeof ev.progress === 'number' ? `${Math.round(ev.progress * 100)}%` : '';
        this.#setStatus([percent, ev.message].filter(Boolean).join(' · ') || 'Running…');
        break;
      }
      default:
        return;
    }
    this.#emit('taskwire-progress', {
      event: ev,
      state: ev.type === 'accepted' ? 'queued' : 'running',
      progress: typeof ev.progress === 'number' ? ev.progress : undefined,
      message: ev.message,
      position: ev.position,
    });
  }

  /**
   * Runs the task (what a click does). Resolves with the completed event, or
   * null when it failed (the error is shown and `taskwire-error` dispatched).
   */
  async run() {
    if (this.#busy || this.hasAttribute('disabled')) return null;
    const hadFocus = this.shadowRoot.activeElement === this.#button;
    this.#showBusy();
    let client = null;
    try {
      const task = this.getAttribute('task');
      if (!task) throw new TaskwireError('unknown_task', 'no task: set the task attribute');
      this.#setStatus('Preparing…');
      const input = await this.#input();
      this.#setStatus('Connecting…');
      client = new TaskwireClient(this.getAttribute('server') || DEFAULT_SERVER, {
        key: () => this.#token(),
        connectAttempts: 2,
      });
      this.client = client;
      client.addEventListener('state', (e) => {
        if (e.detail === 'reconnecting') this.#setStatus('Connection lost, reconnecting…');
      });
      await client.connect();
      const handle = client.submit(task, input, this.options ?? {});
      handle.addEventListener('event', (e) => this.#onEvent(e.detail));
      this.#setStatus('Sending…');
      const completed = await handle.done;
      this.#showDone(completed, client);
      this.#emit('taskwire-done', completed);
      return completed;
    } catch (err) {
      const error = err instanceof TaskwireError ? err : new TaskwireError('internal', String(err?.message ?? err), { cause: err });
      const { text, next } = this.#showError(error);
      this.#emit('taskwire-error', { code: error.code, message: error.message, details: error.details, text, next, error });
      return null;
    } finally {
      client?.close();
      this.#busy = false;
      this.removeAttribute('aria-busy');
      this.#render();
      if (hadFocus) {
        const active = document.activeElement;
        if (!active || active === document.body || active === this) this.#button.focus();
      }
    }
  }
}

if (!customElements.get('taskwire-button')) customElements.define('taskwire-button', TaskwireButton);
