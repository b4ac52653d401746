// The booklet page: loads <taskwire-button> from the event's taskwire server
// and words its messages for Indico's event managers. If the server cannot
// be reached the button cannot even load: say so instead of showing nothing.

const host = document.getElementById('taskwire-booklet');
const server = host?.dataset.server;

/** Editor texts for this page (they win over the widget's generic ones). */
const TEXTS = {
  'token:unauthorized': {
    text: 'The taskwire server refused this event\'s API key.',
    next: 'Enter a valid key under "Service settings" below (or ask your Indico administrator for one), then press the button again.',
  },
  'token:not_configured': {
    text: 'No taskwire server is set up for this event.',
    next: 'Enter its URL and key under "Service settings" below, then press the button again.',
  },
  'token:connection_failed': {
    text: 'Indico cannot reach the taskwire server that builds the booklet.',
    next: 'Try again in a minute. If it keeps failing, check the URL under "Service settings" or tell your Indico administrator that the booklet service is down.',
  },
  'token:unknown_task': {
    text: 'The taskwire server does not offer the abstract booklet.',
    next: 'Ask your Indico administrator to update or reconfigure the taskwire server.',
  },
  'token:page_error': {
    text: 'Indico did not accept this request (your session may have expired).',
    next: 'Reload the page, log in again if asked, and press the button again.',
  },
  'input:page_error': {
    text: 'Indico could not gather this event\'s data for the booklet.',
    next: 'Reload the page and try again. If it keeps failing, send the details below to your Indico administrator.',
  },
  connection_failed: {
    text: 'Your browser cannot reach the taskwire server that builds the booklet.',
    next: 'Check your network connection and try again in a minute. If it keeps failing, tell your Indico administrator (the server may be down, or may not accept this Indico site).',
  },
  unauthorized: {
    text: 'The booklet service no longer accepts this page\'s access.',
    next: 'Reload the page and press the button again.',
  },
  invalid_input: {
    text: 'The booklet service could not read this event\'s data.',
    next: 'Check the booklet options below (the heading templates) and try again. If it keeps failing, send the details below to your Indico administrator.',
  },
  task_error: {
    text: 'Building the booklet failed.',
    next: 'Press the button again. If it fails again, send the details below to your Indico administrator.',
  },
  timeout: {
    text: 'Building the booklet took too long and was stopped.',
    next: 'Press the button again. If it happens again, tell your Indico administrator.',
  },
};

if (host && server) {
  try {
    await import(new URL('taskwire-button.js', server).href);
    await customElements.whenDefined('taskwire-button');
    host.querySelector('taskwire-button').texts = TEXTS;
  } catch {
    const box = host.querySelector('.taskwire-load-error');
    box.textContent =
      'The booklet service cannot be reached, so its button cannot be shown. Reload the page in a minute; if it ' +
      'keeps failing, check "Service settings" below or tell your Indico administrator that the booklet service is down.';
    box.hidden = false;
    host.querySelector('taskwire-button').hidden = true;
  }
}
