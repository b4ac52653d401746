"""Fixtures: a real `taskwire serve` child process, a seeded conference, logged-in test clients.

The taskwire binary comes from TASKWIRE_BIN (scripts/test-indico.sh sets it)
or target/debug/taskwire; without one the tests fail, they never skip.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from indico.modules.events.contributions.models.fields import ContributionField
from indico.modules.events.contributions.models.persons import AuthorType, ContributionPersonLink
from indico.modules.events.models.persons import EventPerson
from indico.modules.events.timetable.models.entries import TimetableEntry, TimetableEntryType
from indico.modules.events.tracks.models.tracks import Track
from indico.util.date_time import now_utc

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@dataclass
class Taskwire:
    url: str
    key: str
    other_key: str
    process: subprocess.Popen[bytes]


def _start_taskwire(allowed_origins: list[str]) -> tuple[Taskwire, str]:
    binary = os.environ.get('TASKWIRE_BIN') or str(ROOT / 'target/debug/taskwire')
    if not Path(binary).is_file():
        pytest.fail(f'no taskwire binary at {binary}: build it (cargo build) or set TASKWIRE_BIN')
    tmp = tempfile.mkdtemp(prefix='taskwire-plugin-test-')
    key, other = 'twk_plugin_' + secrets.token_hex(16), 'twk_other_' + secrets.token_hex(16)
    lines = [f'allowed_origins = {allowed_origins!r}'.replace("'", '"')]
    for name, k in (('plugin', key), ('other', other)):
        lines += ['[[api_keys]]', f'name = "{name}"', f'sha256 = "sha256:{hashlib.sha256(k.encode()).hexdigest()}"']
    Path(tmp, 'taskwire.toml').write_text('\n'.join(lines) + '\n')
    port = _free_port()
    log = open(Path(tmp, 'taskwire.log'), 'wb')
    process = subprocess.Popen(  # noqa: S603
        [
            binary,
            'serve',
            '--config',
            str(Path(tmp, 'taskwire.toml')),
            '--listen',
            f'127.0.0.1:{port}',
            '--temp-dir',
            str(Path(tmp, 'files')),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, 'TASKWIRE_API_KEY': ''},
    )
    url = f'http://127.0.0.1:{port}/'
    deadline = time.monotonic() + 30
    while True:  # readiness poll with a deadline
        if process.poll() is not None:
            pytest.fail(f'taskwire serve exited: {Path(tmp, "taskwire.log").read_text()}')
        try:
            if requests.get(url + 'readyz', timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail('taskwire serve did not become ready in 30 s')
        time.sleep(0.05)
    return Taskwire(url=url, key=key, other_key=other, process=process), tmp


@pytest.fixture(scope='session')
def taskwire() -> Iterator[Taskwire]:
    """A real taskwire server that allows the test app's origin (http://localhost)."""
    server, tmp = _start_taskwire(['http://localhost'])
    yield server
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens."""
    return f'http://127.0.0.1:{_free_port()}/'


@pytest.fixture
def login(test_client: Any) -> Callable[[Any], Any]:
    def _login(user: Any) -> Any:
        with test_client.session_transaction() as sess:
            sess.set_session_user(user)
        return test_client

    return _login


@pytest.fixture
def manager(dummy_event: Any, create_user: Any) -> Any:
    user = create_user(10, email='manager@example.org', first_name='Mara', last_name='Manager')
    dummy_event.update_principal(user, full_access=True)
    return user


@pytest.fixture
def outsider(create_user: Any) -> Any:
    return create_user(11, email='outsider@example.org', first_name='Otto', last_name='Outsider')


@pytest.fixture
def csrf(test_client: Any) -> Callable[[], str]:
    """The CSRF token of the test client's session (what a form carries)."""

    def _token() -> str:
        with test_client.session_transaction() as sess:
            sess['_csrf_token'] = sess.get('_csrf_token') or secrets.token_hex(16)
            return sess['_csrf_token']

    return _token


@dataclass
class Seeded:
    event: Any
    titles: list[str]
    outside_title: str
    unscheduled_in_session_title: str
    field: Any


@pytest.fixture
def seeded_event(
    db: Any,
    dummy_event: Any,
    create_session: Any,
    create_session_block: Any,
    create_contribution: Any,
    create_timetable_entry: Any,
) -> Seeded:
    """A conference with two sessions (one poster, one with two blocks), authors with affiliations,
    speakers, abstracts, a track, board numbers, a custom field, one contribution outside any
    session and one in a session but not scheduled."""
    event = dummy_event
    start = now_utc().replace(hour=8, minute=0, second=0, microsecond=0) + timedelta(days=30)
    event.start_dt, event.end_dt = start, start + timedelta(days=2)
    track = Track(event=event, title='Beam Dynamics', code='BD')
    field = ContributionField(event=event, title='Funding Agency', field_type='text', is_active=True)
    db.session.add_all([track, field])
    talks = create_session(event, 'Opening and Facility Reports', code='MOA')
    posters = create_session(event, 'Poster Session', code='MOP')
    from indico.modules.events.sessions.models.types import SessionType

    posters.type = SessionType(event=event, name='Poster', is_poster=True)
    block1 = create_session_block(talks, 'Morning', timedelta(hours=2), start + timedelta(hours=1))
    block2 = create_session_block(talks, 'Afternoon', timedelta(hours=2), start + timedelta(days=1, hours=5))
    block3 = create_session_block(posters, '', timedelta(hours=2), start + timedelta(hours=8), code='MOPB')
    people = [
        EventPerson(event=event, first_name=f, last_name=last, affiliation=aff, email=f'{f.lower()}@example.org')
        for f, last, aff in (
            ('Ana', 'Silva', 'Lab A, Dept. of Physics'),
            ('Ben', 'Wu', 'Lab B'),
            ('Chloé', 'Martin', ''),
            ('Li', 'Wei', 'Lab D'),
        )
    ]
    db.session.add_all(people)
    titles = []

    def contribution(title: str, block: Any, offset: timedelta | None, code: str, session: Any = None) -> Any:
        c = create_contribution(
            event,
            title,
            timedelta(minutes=20),
            code=code,
            description=f'Abstract of {title}.\nSecond paragraph.',
            board_number=f'B{len(titles) + 1}',
            track=track,
        )
        if block is not None:
            c.session = block.session
            c.session_block = block
            # parent before object: Indico's listener reads the parent when the entry is attached
            entry = TimetableEntry(
                event=event,
                parent=block.timetable_entry,
                type=TimetableEntryType.CONTRIBUTION,
                start_dt=block.timetable_entry.start_dt + offset,
            )
            entry.object = c
            db.session.add(entry)
        elif session is not None:
            c.session = session
        c.person_links = [
            ContributionPersonLink(person=people[0], author_type=AuthorType.primary, is_speaker=True),
            ContributionPersonLink(person=people[1], author_type=AuthorType.primary),
            ContributionPersonLink(person=people[2], author_type=AuthorType.secondary),
            ContributionPersonLink(person=people[3], author_type=AuthorType.none, is_speaker=True),
        ]
        c.set_custom_field(field.id, f'Agency for {code}')
        titles.append(title)
        return c

    db.session.flush()
    contribution('Status of the Light Source', block1, timedelta(0), 'MOA01')
    contribution('Injector Upgrade', block1, timedelta(minutes=30), 'MOA02')
    contribution('Second Day Keynote', block2, timedelta(0), 'TUA01')
    contribution('Beam <loss> & halo studies', block3, timedelta(0), 'MOPB01')
    outside = contribution('Closing Remarks', None, None, '')
    create_timetable_entry(event, outside, start + timedelta(days=1, hours=9))
    contribution('Unscheduled Talk in a Session', None, None, 'MOA99', session=talks)
    db.session.flush()
    return Seeded(
        event=event,
        titles=titles,
        outside_title='Closing Remarks',
        unscheduled_in_session_title='Unscheduled Talk in a Session',
        field=field,
    )


def configure_event(event: Any, url: str, key: str, **extra: Any) -> None:
    from indico_taskwire import keystore
    from indico_taskwire.plugin import TaskwirePlugin

    TaskwirePlugin.event_settings.set_multi(event, {'server_url': url, 'api_key': keystore.encrypt(key), **extra})
