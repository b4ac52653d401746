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
// (a function returning a token, instead of the attributes), `busy`, `run()`.
// Events (bubbling, composed): `taskwire-progress` (detail: {event, state,
// progress, message, position}), `taskwire-done` (detail: the completed
// event), `taskwire-error` (detail: {code, message, error}).
// Styling: parts `button`, `spinner`, `label`, `progress`, `status`, `error`,
// `link`; custom properties --taskwire-accent, --taskwire-accent-text,
// --taskwire-radius, --taskwire-font, --taskwire-gap, --taskwire-error,
// --taskwire-spinner-size, --taskwire-progress-width.

import { TaskwireClient, TaskwireError } from './taskwire.js';

const DEFAULT_SERVER = new URL('./', import.meta.url).href;

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
button:focus-visible { outline: 3px solid var(--taskwire-focus, #f59e0b); outline-offset: 2px; }
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
[part="status"], [part="error"], [part="link"] { font-size: 0.9em; min-height: 1em; max-width: 100%; overflow-wrap: anywhere; }
[part="status"]:empty, [part="error"]:empty { display: none; }
[part="error"] { color: var(--taskwire-error, #b91c1c); }
[hidden] { display: none !important; }
`;

/** Fetches JSON from a URL, with a readable error. */
async function fetchJson(url, what) {
  let response;
  try {
    response = await fetch(url, { credentials: 'same-origin', headers: { accept: 'application/json' } });
  } catch (cause) {
    throw new TaskwireError('connection_failed', `cannot fetch the ${what} from ${url}`, { cause });
  }
  if (!response.ok) {
    throw new TaskwireError(response.status === 401 || response.status === 403 ? 'unauthorized' : 'internal',
      `the ${what} URL answered ${response.status}`);
  }
  try {
    return await response.json();
  } catch (cause) {
    throw new TaskwireError('bad_message', `the ${what} URL did not answer JSON`, { cause });
  }
}

export class TaskwireButton extends HTMLElement {
  static observedAttributes = ['task', 'disabled'];

  /** The task's JSON input, unless `input-url` is set. */
  input = null;
  /** @type {import('./taskwire.js').SubmitOptions} Submit options. */
  options = {};
  /** @type {(() => string|Promise<string>)|null} Returns a token; wins over the attributes. */
  getToken = null;
  /** @type {TaskwireClient|null} The client of the current run. */
  client = null;

  #busy = false;
  #button;
  #progress;
  #status;
  #error;
  #link;
  #fallback;

  constructor() {
    super();
    const root = this.attachShadow({ mode: 'open', delegatesFocus: true });
    root.innerHTML = `<style>${STYLE}</style>
<button part="button" type="button" aria-describedby="status error">
  <span part="spinner" aria-hidden="true"></span>
  <span part="label"><slot></slot></span>
</button>
<progress part="progress" max="1" aria-label="Progress" hidden></progress>
<div part="status" id="status" role="status" aria-live="polite"></div>
<div part="error" id="error" role="alert"></div>
<a part="link" hidden></a>`;
    this.#button = root.querySelector('button');
    this.#progress = root.querySelector('progress');
    this.#status = root.getElementById('status');
    this.#error = root.getElementById('error');
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
    if (typeof reply?.token !== 'string') throw new TaskwireError('unauthorized', 'the token URL answered no token');
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
        this.#setStatus(ev.position > 0 ? `Queued (${ev.position} ahead)` : 'Waiting for a worker…');
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
    this.#busy = true;
    this.#render();
    this.setAttribute('aria-busy', 'true');
    this.#error.textContent = '';
    this.#link.hidden = true;
    this.#progress.removeAttribute('value'); // indeterminate until the first progress
    this.#progress.hidden = false;
    this.#setStatus('Connecting…');
    let client = null;
    try {
      const task = this.getAttribute('task');
      if (!task) throw new TaskwireError('unknown_task', 'no task: set the task attribute');
      const input = await this.#input();
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
      this.#setStatus('Submitting…');
      const completed = await handle.done;
      this.#progress.value = 1;
      const file = completed.files?.[0];
      if (file) {
        this.#link.href = client.fileUrl(file);
        this.#link.download = file.name;
        this.#link.textContent = `Download ${file.name}`;
        this.#link.hidden = false;
        if (!this.hasAttribute('no-download')) this.#link.click();
        this.#setStatus(`Done: ${file.name}`);
      } else {
        this.#setStatus('Done');
      }
      this.#emit('taskwire-done', completed);
      return completed;
    } catch (err) {
      const error = err instanceof TaskwireError ? err : new TaskwireError('internal', String(err?.message ?? err), { cause: err });
      this.#setStatus('');
      this.#progress.hidden = true;
      this.#error.textContent = `${error.message} (${error.code})`;
      this.#emit('taskwire-error', { code: error.code, message: error.message, error });
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
