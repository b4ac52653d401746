"""Forms: the service (URL, key, timeout) admin-wide and per event, and the booklet options.

The API key field is write-only: it is never filled from the stored value (a
password field renders empty), an empty submit keeps the stored key, and the
value is encrypted before it reaches a settings table (`keystore`).
"""

from __future__ import annotations

from typing import Any

from indico.web.forms.base import IndicoForm
from indico.web.forms.fields import IndicoPasswordField, IndicoSelectMultipleCheckboxField
from wtforms.fields import BooleanField, IntegerField, StringField, URLField
from wtforms.validators import URL, NumberRange, Optional

from indico_taskwire import keystore

#: The booklet task's defaults (shown as placeholders).
TEMPLATE_DEFAULTS = {
    'ab_session_h1': '{code} - {title}',
    'ab_session_h2': '{start} / {end}',
    'ab_contribution_h1': '| {code} | / | {start} |',
    'ab_contribution_h2': '| {code} | / | {start} |',
    'ab_outside_h1': 'Contributions outside sessions',
    'ab_toc_title': 'Table of Contents',
}

_KEY_HELP = (
    'Write-only: the stored key is never shown. Leave empty to keep it. It is stored encrypted and '
    'never sent to a browser.'
)


class _ServiceFields(IndicoForm):
    server_url = URLField(
        'taskwire URL',
        [Optional(), URL(require_tld=False)],
        description='The base URL of the taskwire server, e.g. https://tasks.example.org/',
    )
    api_key = IndicoPasswordField('API key', [Optional()], description=_KEY_HELP)
    clear_key = BooleanField('Remove the stored key', description='Forget the stored API key.')

    def _key_data(self, data: dict[str, Any]) -> dict[str, Any]:
        """Replaces the typed key by what is stored: encrypted, kept, or removed."""
        typed = data.pop('api_key', '') or ''
        clear = data.pop('clear_key', False)
        if typed:
            data['api_key'] = keystore.encrypt(typed.strip())
        elif clear:
            data['api_key'] = ''
        return data


class AdminSettingsForm(_ServiceFields):
    """Indico's own plugin settings page saves `data` as it is: so `data` holds the stored form of the key."""

    timeout_s = IntegerField(
        'Request timeout (s)',
        [NumberRange(min=1, max=300)],
        description='How long Indico waits for the taskwire server on each request.',
    )

    @property
    def data(self) -> dict[str, Any]:
        data = dict(super().data)
        data['server_url'] = (data.get('server_url') or '').strip()
        return self._key_data(data)


class EventServiceForm(_ServiceFields):
    timeout_s = IntegerField(
        'Request timeout (s)',
        [Optional(), NumberRange(min=1, max=300)],
        description='Empty: the default set by the Indico administrator.',
    )

    @property
    def data(self) -> dict[str, Any]:
        data = dict(super().data)
        data['server_url'] = (data.get('server_url') or '').strip()
        return self._key_data(data)


class BookletOptionsForm(IndicoForm):
    custom_fields = IndicoSelectMultipleCheckboxField(
        'Custom fields to print', coerce=int, description='Printed under each abstract, in this order.'
    )
    ab_session_h1 = StringField('Session heading', description='Placeholders: {code} {title} {start} {end}')
    ab_session_h2 = StringField('Session time line', description='Placeholders: {code} {title} {start} {end}')
    ab_contribution_h1 = StringField(
        'Contribution header', description='Written as | a | b | c | it becomes a one-row table.'
    )
    ab_contribution_h2 = StringField('Poster header', description='The contribution header in poster sessions.')
    ab_outside_h1 = StringField('Heading of contributions outside sessions')
    ab_toc_title = StringField('Title of the table of contents')

    def __init__(self, *args: Any, fields: list[tuple[int, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.custom_fields.choices = fields or []
        for name, default in TEMPLATE_DEFAULTS.items():
            getattr(self, name).render_kw = {'placeholder': default}
