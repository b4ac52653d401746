"""The plugin class: settings, the side-menu entry, the blueprint."""

from __future__ import annotations

from typing import Any

from flask import session
from indico.core import signals
from indico.core.plugins import IndicoPlugin, url_for_plugin
from indico.web.menu import SideMenuItem

from indico_taskwire.forms import AdminSettingsForm

#: Booklet options a manager can set per event; each is a setting of the
#: `abstract_booklet` task (its defaults apply when empty).
BOOKLET_TEMPLATE_KEYS = (
    'ab_session_h1',
    'ab_session_h2',
    'ab_contribution_h1',
    'ab_contribution_h2',
    'ab_outside_h1',
    'ab_toc_title',
)


class TaskwirePlugin(IndicoPlugin):
    """taskwire: abstract booklet

    Builds an event's abstract booklet (an OpenDocument text) with a taskwire
    server, from a button in the event's management area.
    """

    configurable = True
    settings_form = AdminSettingsForm
    #: indico.conf: PLUGIN_TASKWIRE_SECRET encrypts stored API keys (else SECRET_KEY does).
    plugin_config_defaults = {'SECRET': None}
    default_settings = {
        'server_url': '',
        'api_key': '',  # encrypted, see keystore.py
        'timeout_s': 10,
    }
    default_event_settings = {
        'server_url': '',
        'api_key': '',  # encrypted, see keystore.py
        'timeout_s': None,
        'custom_fields': [],  # ids of the event's contribution fields to print
        **dict.fromkeys(BOOKLET_TEMPLATE_KEYS, ''),
    }

    def init(self) -> None:
        super().init()
        self.connect(signals.menu.items, self._extend_event_management_menu, sender='event-management-sidemenu')

    def get_blueprints(self) -> Any:
        from indico_taskwire.blueprint import blueprint

        return blueprint

    def _extend_event_management_menu(self, sender: str, event: Any, **kwargs: Any) -> SideMenuItem | None:
        if not event.can_manage(session.user):
            return None
        return SideMenuItem(
            'taskwire', 'Abstract booklet', url_for_plugin('taskwire.booklet', event), section='workflows', icon='book'
        )
