"""Request handlers. Every one is an event-management handler: only the event's managers pass."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from flask import flash, jsonify, redirect
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
    """The task input: the event with its sessions and contributions, and the booklet options."""

    def _process(self) -> Any:
        from indico_taskwire.serialize import booklet_settings, event_input

        body = json.dumps(
            event_input(self.event, booklet_settings(self.event)), ensure_ascii=False, separators=(',', ':')
        )
        return _no_store(Response(body, mimetype='application/json'))


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
