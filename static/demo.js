// The demo page: connects with the key from the URL fragment (#key=...) or
// the form, lists the server's tasks, and submits the built-in tasks both
// through the client (taskwire.js) and through <taskwire-button>.
// The key is removed from the address bar at once and kept in memory only.

import { TaskwireClient, TaskwireError, mintToken } from './taskwire.js';

const server = new URL('./', location.href).href;
const $ = (selector) => document.querySelector(selector);
const MAX_LOG = 500;

let client = null;
let key = null;
let sampleEvent = null;

function keyFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const value = params.get('key');
  if (value !== null) history.replaceState(null, '', location.pathname + location.search);
  return value;
}

function log(source, type, text, taskId) {
  const item = document.createElement('li');
  item.className = `t-${type}`;
  const time = new Date().toISOString().slice(11, 23);
  const src = document.createElement('span');
  src.className = 'src';
  src.textContent = `${time} ${source} `;
  item.append(src, `${type}${taskId ? ` ${taskId}` : ''}${text ? ` ${text}` : ''}`);
  const list = $('#log');
  list.prepend(item);
  while (list.children.length > MAX_LOG) list.lastElementChild.remove();
}

function summarize(msg) {
  switch (msg.type) {
    case 'accepted': return `seq ${msg.seq} position ${msg.position}${msg.duplicate ? ' (duplicate)' : ''}`;
    case 'started': return `seq ${msg.seq} on ${msg.worker}`;
    case 'progress': return `seq ${msg.seq} ${typeof msg.progress === 'number' ? `${Math.round(msg.progress * 100)}%` : ''} ${msg.message ?? ''}`.trim();
    case 'completed': return `seq ${msg.seq} in ${msg.duration_ms} ms, ${msg.files?.length ?? 0} file(s), result ${JSON.stringify(msg.result).slice(0, 200)}`;
    case 'failed': return `seq ${msg.seq} ${msg.error?.code}: ${msg.error?.message}`;
    case 'cancelled': return `seq ${msg.seq} reason ${msg.reason}`;
    case 'rejected':
    case 'error': return `${msg.error?.code}: ${msg.error?.message}`;
    default: return '';
  }
}

function addFiles(completed, source) {
  const list = $('#files');
  list.querySelector('.empty')?.remove();
  for (const file of completed.files ?? []) {
    const item = document.createElement('li');
    const link = document.createElement('a');
    link.href = client.fileUrl(file);
    link.download = file.name;
    link.textContent = file.name;
    item.append(link, ` ${file.size} bytes, ${file.content_type}, sha256 ${file.sha256.slice(0, 12)}…, until ${file.expires_at} (${source})`);
    list.prepend(item);
  }
}

/** The input of a task form, or throws a readable error. */
function readInput(form) {
  const data = new FormData(form);
  const parse = (text, what) => {
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new TaskwireError('invalid_input', `${what} is not valid JSON: ${err.message}`);
    }
  };
  switch (form.dataset.task) {
    case 'echo':
      return parse(data.get('json'), 'the echo input');
    case 'sleep':
      return { ms: Number(data.get('ms')), steps: Number(data.get('steps')), fail: data.get('fail') === 'on' };
    case 'blob':
      return { size: Number(data.get('size')), name: String(data.get('name')) };
    case 'abstract_booklet': {
      if (!sampleEvent) throw new TaskwireError('invalid_input', 'the sample event is not loaded yet');
      return { event: sampleEvent, settings: parse(data.get('settings'), 'settings') };
    }
    default:
      throw new TaskwireError('unknown_task', `no form for ${form.dataset.task}`);
  }
}

async function submitWithClient(form) {
  let input;
  try {
    input = readInput(form);
  } catch (err) {
    log('client', 'error', err.message);
    return;
  }
  const handle = client.submit(form.dataset.task, input);
  log('client', 'submit', form.dataset.task);
  try {
    const completed = await handle.done;
    addFiles(completed, 'client');
  } catch (err) {
    if (!(err instanceof TaskwireError) || !err.event) log('client', 'error', `${err.code}: ${err.message}`);
  }
}

/** Widgets get short-lived browser tokens minted with the key. */
async function widgetToken() {
  try {
    return (await mintToken(server, key, { ttlS: 300 })).token;
  } catch (err) {
    log('widget', 'error', `POST /v1/tokens failed (${err.code}: ${err.message}); the widget uses the API key itself`);
    return key;
  }
}

function wireForms() {
  for (const form of document.querySelectorAll('#forms form')) {
    const widget = form.querySelector('taskwire-button');
    const refresh = () => {
      try {
        widget.input = readInput(form);
        widget.removeAttribute('disabled');
      } catch {
        widget.setAttribute('disabled', '');
      }
    };
    form.addEventListener('input', refresh);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      submitWithClient(form);
    });
    widget.setAttribute('server', server);
    widget.getToken = widgetToken;
    refresh();
    form.refreshWidget = refresh;
  }
  document.addEventListener('taskwire-progress', (e) => {
    const { event } = e.detail;
    log(`widget:${e.target.getAttribute('task')}`, event.type, summarize(event), event.task_id);
  });
  document.addEventListener('taskwire-done', (e) => {
    log(`widget:${e.target.getAttribute('task')}`, 'completed', summarize(e.detail), e.detail.task_id);
    addFiles(e.detail, 'widget');
  });
  document.addEventListener('taskwire-error', (e) => {
    log(`widget:${e.target.getAttribute('task')}`, 'error', `${e.detail.code}: ${e.detail.message}`);
  });
  $('#clear-log').addEventListener('click', () => {
    $('#log').replaceChildren();
  });
}

function showTasks(welcome) {
  const body = $('#tasks tbody');
  body.replaceChildren();
  for (const task of welcome.tasks) {
    const row = body.insertRow();
    row.dataset.task = task.name;
    const name = document.createElement('code');
    name.textContent = task.name;
    row.insertCell().append(name);
    row.insertCell().textContent = task.description ?? '';
  }
}

async function start(theKey) {
  key = theKey;
  $('#key-form').hidden = true;
  $('#notice').textContent = '';
  client = new TaskwireClient(server, { key });
  window.taskwireClient = client; // for the console
  const conn = $('#conn');
  client.addEventListener('state', (e) => {
    conn.dataset.state = e.detail;
    conn.textContent = e.detail === 'open' ? 'connected' : e.detail;
  });
  client.addEventListener('welcome', (e) => {
    log('client', 'welcome', `${e.detail.server?.name ?? ''} ${e.detail.server?.version ?? ''}, ${e.detail.tasks.length} tasks`);
    showTasks(e.detail);
  });
  client.addEventListener('message', (e) => {
    const msg = e.detail;
    if (msg.type === 'pong' || msg.type === 'welcome') return;
    log('client', msg.type, summarize(msg), msg.task_id);
  });
  try {
    await client.connect();
  } catch (err) {
    $('#notice').textContent = `Cannot connect: ${err.message} (${err.code})`;
    $('#key-form').hidden = false;
    return;
  }
  $('#app').hidden = false;
}

wireForms();
fetch('sample-event.json')
  .then((r) => r.json())
  .then((event) => {
    sampleEvent = event;
    document.querySelector('form[data-task="abstract_booklet"]').refreshWidget();
  })
  .catch((err) => log('page', 'error', `cannot load the sample event: ${err.message}`));

$('#key-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const value = $('#key-input').value.trim();
  $('#key-input').value = '';
  if (value) start(value);
});

const fragmentKey = keyFromFragment();
if (fragmentKey) start(fragmentKey);
else $('#key-form').hidden = false;
