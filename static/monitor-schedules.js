// The monitoring page's schedules panel: every schedule with its next run,
// its last runs (state, duration, and for failures the error code, message
// and details needed to fix it), and Run now / Pause / Resume buttons.
//
// Schedules change slowly and rarely, so the panel polls the admin REST
// route (`GET /v1/schedules`, docs/protocol.md) every few seconds instead of
// adding messages to the `watch` feed.

const POLL_MS = 2000;

function text(tag, content, className) {
  const el = document.createElement(tag);
  el.textContent = content ?? '';
  if (className) el.className = className;
  return el;
}

function when(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString([], { hour12: false });
}

function describeRun(run) {
  const li = document.createElement('li');
  li.dataset.state = run.state;
  const head = text('span', `${when(run.occurrence)} · ${run.state}`, 'run-state');
  li.append(head);
  if (typeof run.duration_ms === 'number') li.append(text('span', ` · ${(run.duration_ms / 1000).toFixed(1)} s`));
  if (run.trigger !== 'timer') li.append(text('span', ` · ${run.trigger}`, 'muted'));
  if (run.task_id) li.append(text('code', ` ${run.task_id.slice(0, 8)}`));
  if (run.error) {
    const details = document.createElement('details');
    const summary = text('summary', `${run.error.code}: ${run.error.message}`, 'error-code');
    details.append(summary);
    if (run.error.details !== undefined) {
      details.append(text('pre', JSON.stringify(run.error.details, null, 2)));
    }
    li.append(details);
  } else if (run.note) {
    li.append(text('span', ` · ${run.note}`, 'muted'));
  }
  return li;
}

function button(label, action, name) {
  const b = text('button', label, 'plain');
  b.type = 'button';
  b.dataset.scheduleAction = action;
  b.dataset.schedule = name;
  return b;
}

function render(table, schedules) {
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const s of schedules) {
    const tr = body.insertRow();
    tr.dataset.schedule = s.name;
    tr.insertCell().append(text('strong', s.name), document.createElement('br'), text('span', `${s.task} · ${s.when}`, 'muted'));
    tr.insertCell().textContent = s.paused ? 'paused' : when(s.next_run_at);
    const runs = document.createElement('ul');
    runs.className = 'runs';
    for (const run of s.runs.slice(0, 5)) runs.append(describeRun(run));
    tr.insertCell().append(runs);
    const actions = tr.insertCell();
    actions.append(button('Run now', 'run', s.name), ' ',
      s.paused ? button('Resume', 'resume', s.name) : button('Pause', 'pause', s.name));
  }
}

/** Starts the panel: `card` is shown once there is a schedule. */
export function startSchedules(server, key, card, notice) {
  const table = card.querySelector('table');
  const call = async (path, method = 'GET') => {
    const response = await fetch(new URL(path, server), { method, headers: { Authorization: `Bearer ${key}` } });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(`${body.error?.code ?? response.status}: ${body.error?.message ?? ''}`);
    return body;
  };
  const refresh = async () => {
    try {
      const { schedules } = await call('v1/schedules');
      card.hidden = schedules.length === 0;
      render(table, schedules);
    } catch (err) {
      notice(`Schedules: ${err.message}`);
    }
  };
  card.addEventListener('click', async (e) => {
    const b = e.target.closest?.('button[data-schedule-action]');
    if (!b) return;
    b.disabled = true;
    try {
      await call(`v1/schedules/${encodeURIComponent(b.dataset.schedule)}/${b.dataset.scheduleAction}`, 'POST');
    } catch (err) {
      notice(`${b.dataset.schedule}: ${err.message}`);
    }
    await refresh();
  });
  refresh();
  return setInterval(refresh, POLL_MS);
}
