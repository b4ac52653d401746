"""Request handlers. Every one is an event-management handler: only the event's managers pass."""

from __future__ import annotations

import gzip
import json
import time
from typing import Any
from urllib.parse import urlsplit

from flask import flash, jsonify, redirect, request
from indico.core.config import config
from indico.core.plugins import WPJinjaMixinPlugin, url_for_plugin
from indico.modules.events.management.controllers import RHManageEventBase
from indico.modules.events.management.views import WPEventManagement
from indico.web.forms.base import FormDefaults
from werkzeug.wrappers import Response

from indico_taskwire import service as tw
from indico_taskwire.forms import BookletOptionsForm, EventServiceForm


class WPTaskwire(WPJinjaMixinPlugin, WPEventManagement):
    sidemenu_option = 'taskwire'


def _settings(event: Any) -> dict[str, Any]:
    from indico_taskwire.plugin import TaskwirePlugin

    return TaskwirePlugin.event_settings.get_all(event)


def _no_store(response: Response) -> Response:
    response.headers['Cache-Control'] = 'no-store'
    return response


def indico_origin() -> str:
    """The origin of Indico's pages (what a browser sends as `Origin`), from BASE_URL."""
    parts = urlsplit(config.BASE_URL)
    return f'{parts.scheme}://{parts.netloc}'


class RHBooklet(RHManageEventBase):
    """The booklet page: explanation, the button, the booklet options."""

    def _process(self) -> Any:
        from indico_taskwire.plugin import TaskwirePlugin

        fields = [(f.id, f.title) for f in self.event.contribution_fields if f.is_active]
        stored = _settings(self.event)
        form = BookletOptionsForm(obj=FormDefaults(**stored), fields=fields)
        if form.validate_on_submit():
            TaskwirePlugin.event_settings.set_multi(self.event, form.data)
            flash('Booklet options saved.', 'success')
            return redirect(url_for_plugin('taskwire.booklet', self.event))
        try:
            server = tw.service_for(self.event).base
            problem = None
        except tw.NotConfigured as exc:
            server, problem = None, exc.text
        counts = {
            'contributions': sum(1 for c in self.event.contributions),
            'blocks': sum(len(s.blocks) for s in self.event.sessions),
        }
        return WPTaskwire.render_template(
            'booklet.html', self.event, form=form, server=server, problem=problem, counts=counts
        )


class RHServiceSettings(RHManageEventBase):
    """This event's taskwire server: URL, key (write-only), timeout; and the test-connection button."""

    def _process(self) -> Any:
        from indico_taskwire.plugin import TaskwirePlugin

        stored = _settings(self.event)
        form = EventServiceForm(obj=FormDefaults(server_url=stored['server_url'], timeout_s=stored['timeout_s']))
        if form.validate_on_submit():
            TaskwirePlugin.event_settings.set_multi(self.event, form.data)
            flash('Service settings saved.', 'success')
            return redirect(url_for_plugin('taskwire.service', self.event))
        admin = TaskwirePlugin.settings.get_all()
        return WPTaskwire.render_template(
            'service.html',
            self.event,
            form=form,
            has_event_key=bool(stored['api_key']),
            admin_url=admin['server_url'],
            has_admin_key=bool(admin['api_key']),
            admin_timeout=admin['timeout_s'],
        )


class RHTestConnection(RHManageEventBase):
    """Connects with the stored settings and says what it found (as a flashed message)."""

    def _process(self) -> Any:
        try:
            service = tw.service_for(self.event)
            found = tw.probe(service)
        except tw.ServiceError as exc:
            flash(f'Test failed: {exc.text}', 'error')
        else:
            if found.booklet:
                flash(
                    f'Connected to taskwire {found.version} at {service.base}; the key was accepted and the '
                    'server offers the abstract booklet.',
                    'success',
                )
            else:
                flash(
                    f'Connected to taskwire {found.version} at {service.base} and the key was accepted, but this '
                    'server does not offer the abstract booklet task: ask its administrator to update it.',
                    'warning',
                )
        return redirect(url_for_plugin('taskwire.service', self.event))


class RHBookletInput(RHManageEventBase):
    """The task input: the event with its sessions and contributions, and the booklet options.

    Gzipped when the browser accepts it: a 3,000-contribution event is about 10 MB of JSON and
    1 MB gzipped at level 1, which costs about 0.04 s of CPU (a web server in front may not
    compress JSON). The body holds no secret, so compressing it leaks nothing.

    A ``Server-Timing`` header says where the time went (``gather``: the event read from the
    database into dicts; ``encode``: JSON; ``compress``: gzip), for the browser's developer tools
    and the end-to-end test's timings; it holds durations only.
    """

    def _process(self) -> Any:
        from indico_taskwire.serialize import booklet_settings, event_input

        t0 = time.perf_counter()
        data = event_input(self.event, booklet_settings(self.event))
        t1 = time.perf_counter()
        body = json.dumps(data, ensure_ascii=False, separators=(',', ':')).encode()
        t2 = time.perf_counter()
        response = Response(mimetype='application/json')
        response.headers['Vary'] = 'Accept-Encoding'
        if request.accept_encodings['gzip']:
            response.set_data(gzip.compress(body, compresslevel=1))
            response.headers['Content-Encoding'] = 'gzip'
        else:
            response.set_data(body)
        t3 = time.perf_counter()
        response.headers['Server-Timing'] = ', '.join(
            f'{name};dur={(b - a) * 1000:.1f}'
            for name, a, b in (('gather', t0, t1), ('encode', t1, t2), ('compress', t2, t3))
        )
        return _no_store(response)


class RHBookletToken(RHManageEventBase):
    """A short-lived browser token for the booklet task, bound to Indico's origin; the key stays here."""

    def _process(self) -> Any:
        try:
            token = tw.mint_token(tw.service_for(self.event), indico_origin())
        except tw.ServiceError as exc:
            response = jsonify(exc.as_json())
            response.status_code = exc.status
            return _no_store(response)
        return _no_store(jsonify(token=token))
