"""How taskwire API keys are kept: encrypted at rest, readable only on the server.

A key typed into a form is stored in Indico's settings tables as a Fernet token
(AES-128-CBC with an HMAC-SHA256, from ``cryptography``, which Indico already
depends on), prefixed ``fernet:``. The encryption key is derived with HKDF from
``PLUGIN_TASKWIRE_SECRET`` in ``indico.conf`` when set, else from Indico's own
``SECRET_KEY``; neither ever reaches the database. A database dump alone
therefore does not reveal a taskwire key.

Changing the secret makes stored keys unreadable: :func:`decrypt` then raises
:class:`KeyUnreadable` and the pages say to enter the key again.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = 'fernet:'
_INFO = b'indico-plugin-taskwire api key v1'


class KeyUnreadable(Exception):
    """A stored key cannot be decrypted (the server secret changed, or the value is damaged)."""


def _secret() -> bytes:
    from indico.core.config import config

    from indico_taskwire.plugin import TaskwirePlugin

    own = TaskwirePlugin.plugin_config.SECRET
    secret = own or config.SECRET_KEY
    if not secret:
        raise KeyUnreadable('neither PLUGIN_TASKWIRE_SECRET nor SECRET_KEY is set in indico.conf')
    return secret.encode() if isinstance(secret, str) else bytes(secret)


def _fernet() -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(_secret())
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt(key: str) -> str:
    """The stored form of a key (empty stays empty: no key)."""
    if not key:
        return ''
    return PREFIX + _fernet().encrypt(key.encode()).decode('ascii')


def decrypt(stored: str | None) -> str:
    """The key from its stored form ('' when none is stored)."""
    if not stored:
        return ''
    if not stored.startswith(PREFIX):
        raise KeyUnreadable('the stored key is not in the expected format')
    try:
        return _fernet().decrypt(stored[len(PREFIX) :].encode('ascii')).decode()
    except (InvalidToken, ValueError) as exc:
        raise KeyUnreadable('the stored key cannot be decrypted with the current server secret') from exc
