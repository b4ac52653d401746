"""Talking to taskwire from Indico's server: which server and key apply, test connection, token minting.

Only this module holds a decrypted API key, and only for the length of one
request; no key, token or event data is ever logged or put in a message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import connect

from indico_taskwire import keystore

BOOKLET_TASK = 'abstract_booklet'
SUBPROTOCOL = 'taskwire.v1'
#: A browser token lives this long; the widget fetches a new one for every (re)connection.
TOKEN_TTL_S = 120


class ServiceError(Exception):
    """A failure talking to taskwire: `code` for the widget (protocol codes), `text` for people."""

    code = 'internal'
    status = 502

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def as_json(self) -> dict[str, Any]:
        return {'error': {'code': self.code, 'message': self.text}}


class NotConfigured(ServiceError):
    code = 'not_configured'
    status = 409


class Unreachable(ServiceError):
    code = 'connection_failed'
    status = 503


class NotTaskwire(ServiceError):
    code = 'connection_failed'
    status = 502


class KeyRefused(ServiceError):
    code = 'unauthorized'
    status = 502


class TaskMissing(ServiceError):
    code = 'unknown_task'
    status = 502


@dataclass(frozen=True)
class Service:
    """The taskwire server one event uses. `key` is the decrypted key: never log or show it."""

    url: str
    key: str = ''
    timeout_s: float = 10.0
    source: str = 'event'  # 'event' or 'admin': who set the URL

    def __repr__(self) -> str:
        return f'Service(url={self.url!r}, source={self.source!r}, timeout_s={self.timeout_s})'

    @property
    def base(self) -> str:
        return self.url if self.url.endswith('/') else self.url + '/'

    @property
    def ws_url(self) -> str:
        parts = urlsplit(self.base)
        scheme = 'wss' if parts.scheme == 'https' else 'ws'
        return urlunsplit((scheme, parts.netloc, parts.path + 'v1/ws', '', ''))


@dataclass(frozen=True)
class Probe:
    """What "test connection" learned."""

    version: str
    tasks: list[str]

    @property
    def booklet(self) -> bool:
        return BOOKLET_TASK in self.tasks


def service_for(event: Any) -> Service:
    """The service an event uses: its own URL and key, else the admin-wide ones.

    An event that sets its own URL must set its own key too: the admin-wide key
    only ever goes to the admin-wide URL, so an event manager cannot send it
    elsewhere.
    """
    from indico_taskwire.plugin import TaskwirePlugin

    admin = TaskwirePlugin.settings.get_all()
    own = TaskwirePlugin.event_settings.get_all(event)
    timeout = own['timeout_s'] or admin['timeout_s'] or 10
    if own['server_url']:
        url, stored, source = own['server_url'], own['api_key'], 'event'
    else:
        # An event's own key may be used with the admin-wide server.
        url, stored, source = admin['server_url'], own['api_key'] or admin['api_key'], 'admin'
    if not url:
        raise NotConfigured(
            'No taskwire server is set up for this event: enter its URL and key under '
            '"Service settings", or ask your Indico administrator to set a default.'
        )
    try:
        key = keystore.decrypt(stored)
    except keystore.KeyUnreadable as exc:
        raise NotConfigured(
            'The stored API key cannot be read any more (the server secret changed): '
            'enter the key again under "Service settings".'
        ) from exc
    if not key:
        raise NotConfigured('No API key is set for the taskwire server: enter it under "Service settings".')
    return Service(url=url, key=key, timeout_s=float(timeout), source=source)


def probe(service: Service) -> Probe:
    """Opens the WebSocket, authenticates, reads `welcome` (version and tasks), closes."""
    try:
        with connect(
            service.ws_url,
            subprotocols=[SUBPROTOCOL],
            open_timeout=service.timeout_s,
            close_timeout=1,
            max_size=1 << 22,
            user_agent_header='indico-plugin-taskwire',
        ) as ws:
            ws.send(json.dumps({'type': 'auth', 'key': service.key}))
            raw = ws.recv(timeout=service.timeout_s)
    except InvalidURI as exc:
        raise NotTaskwire(f'"{service.url}" is not a URL a taskwire server can have.') from exc
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status == 401:
            raise KeyRefused('The taskwire server refused the API key (wrong, or revoked).') from exc
        raise NotTaskwire(
            f'{service.url} answered HTTP {status} where a taskwire server accepts connections: check the URL.'
        ) from exc
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else None
        if code == 4401:
            raise KeyRefused('The taskwire server refused the API key (wrong, or revoked).') from exc
        raise Unreachable(f'The taskwire server at {service.url} closed the connection (code {code}).') from exc
    except InvalidHandshake as exc:
        raise NotTaskwire(f'{service.url} does not speak the taskwire protocol: check the URL.') from exc
    except TimeoutError as exc:
        raise Unreachable(
            f'The taskwire server at {service.url} did not answer within {service.timeout_s:g} s.'
        ) from exc
    except OSError as exc:
        raise Unreachable(f'Cannot reach a server at {service.url} (it is down, or the URL is wrong).') from exc
    try:
        welcome = json.loads(raw)
    except ValueError as exc:
        raise NotTaskwire(f'{service.url} does not speak the taskwire protocol: check the URL.') from exc
    if not isinstance(welcome, dict) or welcome.get('type') != 'welcome':
        raise NotTaskwire(f'{service.url} does not speak the taskwire protocol: check the URL.')
    server = welcome.get('server') or {}
    tasks = [t.get('name') for t in welcome.get('tasks') or [] if isinstance(t, dict)]
    return Probe(version=str(server.get('version', 'unknown')), tasks=[t for t in tasks if isinstance(t, str)])


def mint_token(service: Service, origin: str, ttl_s: int = TOKEN_TTL_S) -> str:
    """A browser token bound to `origin` that may only submit the booklet task (`POST /v1/tokens`)."""
    try:
        response = requests.post(
            service.base + 'v1/tokens',
            json={'ttl_s': ttl_s, 'tasks': [BOOKLET_TASK], 'origin': origin},
            headers={'Authorization': f'Bearer {service.key}'},
            timeout=service.timeout_s,
            allow_redirects=False,
        )
    except requests.Timeout as exc:
        raise Unreachable(f'The taskwire server did not answer within {service.timeout_s:g} s.') from exc
    except requests.RequestException as exc:
        raise Unreachable('Cannot reach the taskwire server (it is down, or its URL is wrong).') from exc
    try:
        reply = response.json()
    except ValueError:
        reply = None
    if response.status_code == 201 and isinstance(reply, dict) and isinstance(reply.get('token'), str):
        return reply['token']
    code = (reply or {}).get('error', {}).get('code') if isinstance(reply, dict) else None
    if response.status_code == 401 or code == 'unauthorized':
        raise KeyRefused("The taskwire server refused this event's API key (wrong, or revoked).")
    if code == 'unknown_task':
        raise TaskMissing('The taskwire server does not offer the abstract booklet task.')
    if code == 'rate_limited':
        raise Unreachable('The taskwire server is too busy to hand out access right now.')
    if code is None:
        raise NotTaskwire(
            f'The taskwire URL answered HTTP {response.status_code}, not like a taskwire server: check the URL.'
        )
    raise ServiceError(f'The taskwire server answered HTTP {response.status_code} ({code}).')
