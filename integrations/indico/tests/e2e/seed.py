"""Seeds the end-to-end Indico (INDICO_CONFIG): two users, a conference, and optionally a big event.

- manager@example.org (password in the output): manager of both events;
- outsider@example.org: an ordinary user, no rights on them;
- "E2E Conference": sessions (one poster session), blocks on two days, contributions with authors,
  affiliations, speakers, abstracts, a track, board numbers, a custom field, one contribution outside
  any session; its taskwire settings point at TASKWIRE_URL with TASKWIRE_KEY_SMALL;
- with SEED_BIG=<file>: the generated event in that file (the booklet task's plugin shape), rebuilt as
  Indico sessions, blocks and contributions, with TASKWIRE_KEY_BIG.

Prepares the (empty) database as `indico db prepare` does, then seeds it; writes JSON for the
test to OUT.json: ids, titles, credentials. With HOST:PORT it then serves that Indico as
`indico run` does, until stopped (one Indico start for both: each costs about 10 s of CPU).
Usage: ``seed.py OUT.json [HOST:PORT]``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from indico.core.db import db
from indico.core.db.sqlalchemy.migration import migrate, prepare_db
from indico.core.db.sqlalchemy.util.queries import increment_and_get
from indico.modules.auth.models.identities import Identity
from indico.modules.categories.models.categories import Category
from indico.modules.events.contributions.models.contributions import Contribution
from indico.modules.events.contributions.models.fields import ContributionField
from indico.modules.events.contributions.models.persons import AuthorType, ContributionPersonLink
from indico.modules.events.models.events import Event, EventType
from indico.modules.events.models.persons import EventPerson
from indico.modules.events.operations import create_event
from indico.modules.events.sessions.models.blocks import SessionBlock
from indico.modules.events.sessions.models.persons import SessionBlockPersonLink
from indico.modules.events.sessions.models.sessions import Session
from indico.modules.events.sessions.models.types import SessionType
from indico.modules.events.timetable.models.entries import TimetableEntry, TimetableEntryType
from indico.modules.events.tracks.models.tracks import Track
from indico.modules.users.models.users import User
from indico.web.flask.app import make_app

TZ = 'Europe/Zurich'


def _user(first: str, last: str, login: str, password: str) -> User:
    user = User(first_name=first, last_name=last)
    user.email = f'{login}@example.org'
    db.session.add(user)
    db.session.flush()
    Identity(user=user, provider='indico', identifier=login, password=password)
    return user


def _event(creator: User, title: str, start: datetime, days: int, end: datetime | None = None) -> Any:
    event = create_event(
        Category.get_root(),
        EventType.conference,
        {
            'title': title,
            'timezone': TZ,
            'start_dt': start,
            'end_dt': end or start + timedelta(days=days),
            'creator': creator,
        },
    )
    db.session.commit()  # friendly ids come from another transaction: commit before adding sessions
    return event


def _entry(event: Any, obj: Any, start: datetime, parent: Any = None) -> TimetableEntry:
    kind = TimetableEntryType.SESSION_BLOCK if isinstance(obj, SessionBlock) else TimetableEntryType.CONTRIBUTION
    entry = TimetableEntry(event=event, parent=parent, type=kind, start_dt=start)  # parent before object
    entry.object = obj
    db.session.add(entry)
    return entry


def _configure(event: Any, key: str) -> None:
    from indico_taskwire import keystore
    from indico_taskwire.plugin import TaskwirePlugin

    TaskwirePlugin.event_settings.set_multi(
        event, {'server_url': os.environ['TASKWIRE_URL'], 'api_key': keystore.encrypt(key)}
    )


def seed_small(manager: User) -> dict[str, Any]:
    tz = ZoneInfo(TZ)
    start = datetime(2027, 9, 13, 8, 0, tzinfo=tz)
    event = _event(manager, 'E2E Conference on Light Sources', start, 3)
    track = Track(event=event, title='Beam Dynamics', code='BD')
    field = ContributionField(event=event, title='Funding Agency', field_type='text', is_active=True)
    poster_type = SessionType(event=event, name='Poster', is_poster=True)
    db.session.add_all([track, field, poster_type])
    people = [
        EventPerson(event=event, first_name=f, last_name=last, affiliation=aff, email=f'{f.lower()}@example.org')
        for f, last, aff in (
            ('Ana', 'Silva', 'Laboratório Nacional de Luz Síncrotron, Campinas'),
            ('Ben', 'Wu', 'Lab B'),
            ('Chloé', 'Martin', ''),
            ('Li', 'Wei', 'Lab D'),
            ('Ines', 'Keller', 'Lab C'),
        )
    ]
    db.session.add_all(people)
    talks = Session(event=event, title='Opening and Facility Reports', code='MOA')
    posters = Session(event=event, title='Posters', code='MOP', type=poster_type)
    db.session.add_all([talks, posters])
    db.session.flush()
    blocks = []
    for session, title, offset, code in (
        (talks, 'Morning', timedelta(hours=1), ''),
        (talks, 'Second day', timedelta(days=1, hours=1), 'TUA'),
        (posters, 'Poster session', timedelta(hours=8), 'MOPB'),
    ):
        block = SessionBlock(session=session, title=title, duration=timedelta(hours=3), code=code)
        block.person_links = [SessionBlockPersonLink(person=people[4])]
        db.session.add(block)
        db.session.flush()
        _entry(event, block, start + offset)
        blocks.append(block)
    titles = []
    codes = [
        ('Status of the Light Source', 0, 'MOA01'),
        ('Injector Upgrade Results', 0, 'MOA02'),
        ('Superconducting Undulators', 0, 'MOA03'),
        ('Second Day Keynote', 1, 'TUA01'),
        ('Beam Loss & Halo Studies <measured>', 2, 'MOPB01'),
        ('Vacuum Commissioning', 2, 'MOPB02'),
    ]
    for n, (title, block_index, code) in enumerate(codes):
        block = blocks[block_index]
        c = Contribution(
            event=event,
            title=title,
            code=code,
            duration=timedelta(minutes=20),
            board_number=f'P{n}',
            track=track,
            description=f'The abstract of “{title}”.\nA second paragraph.',
            session=block.session,
            session_block=block,
        )
        db.session.add(c)
        db.session.flush()
        _entry(event, c, block.timetable_entry.start_dt + timedelta(minutes=20 * (n % 3)), parent=block.timetable_entry)
        c.person_links = [
            ContributionPersonLink(person=people[0], author_type=AuthorType.primary, is_speaker=True),
            ContributionPersonLink(person=people[1], author_type=AuthorType.primary),
            ContributionPersonLink(person=people[2], author_type=AuthorType.secondary),
            ContributionPersonLink(person=people[3], author_type=AuthorType.none, is_speaker=n == 4),
        ]
        c.set_custom_field(field.id, f'Agency {n}')
        titles.append(title)
    outside = Contribution(
        event=event,
        title='Closing Remarks Outside Sessions',
        duration=timedelta(minutes=15),
        description='Thanks and goodbye.',
    )
    db.session.add(outside)
    db.session.flush()
    _entry(event, outside, start + timedelta(days=2, hours=3))
    outside.person_links = [ContributionPersonLink(person=people[4], author_type=AuthorType.none, is_speaker=True)]
    titles.append(outside.title)
    event.update_principal(manager, full_access=True)
    _configure(event, os.environ['TASKWIRE_KEY_SMALL'])
    db.session.commit()
    return {'id': event.id, 'titles': titles}


def _person_key(p: dict[str, Any]) -> tuple[str, str, str]:
    return (_text(p.get('first_name')), _text(p.get('last_name')), _text(p.get('affiliation')))


def _text(value: Any) -> str:
    """A generated string as PostgreSQL can hold it (no NUL; the generator makes nasty text on purpose)."""
    return str(value or '').replace('\x00', '')


def _minutes(rc: dict[str, Any]) -> timedelta:
    value = rc.get('duration')
    return timedelta(minutes=value if isinstance(value, int) and 0 < value < 24 * 60 else 20)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _when(value: Any) -> datetime | None:
    """A generated date (the generator also makes malformed ones: those count as none)."""
    try:
        return datetime.fromisoformat(f'{value["date"]}T{value["time"]}').replace(tzinfo=ZoneInfo(value['tz']))
    except (TypeError, KeyError, ValueError):
        return None


def _ids(model: Any, n: int) -> list[int]:
    """`n` fresh primary keys from the table's own sequence (rows inserted in bulk need them up front)."""
    table = model.__table__.fullname
    rows = db.session.execute(
        db.text('SELECT nextval(pg_get_serial_sequence(:table, :column)) FROM generate_series(1, :n)'),
        {'table': table, 'column': 'id', 'n': n},
    )
    return [row[0] for row in rows]


def _links(rc: dict[str, Any]) -> list[tuple[tuple[str, str, str], AuthorType, bool]]:
    """A generated contribution's people as (person key, author type, is speaker), one per person."""
    links: dict[tuple[str, str, str], tuple[tuple[str, str, str], AuthorType, bool]] = {}
    speakers = {(p.get('first_name'), p.get('last_name')) for p in _dicts(rc.get('speakers'))}
    for kind, people in (
        (AuthorType.primary, rc.get('primary_authors')),
        (AuthorType.secondary, rc.get('coauthors')),
        (AuthorType.none, rc.get('speakers')),
    ):
        for p in _dicts(people):
            key = _person_key(p)
            if key not in links:
                links[key] = (key, kind, (p.get('first_name'), p.get('last_name')) in speakers)
    return list(links.values())


def seed_big(manager: User, path: str) -> dict[str, Any]:
    """The generated event as Indico sessions, blocks and contributions.

    Sessions and blocks (a few hundred objects) go through Indico's models. The
    contributions, their people, person links and timetable entries (about
    60,000 rows for 3,000 contributions) are inserted in bulk as plain rows:
    through the ORM they cost about 0.5 ms of CPU each, 30 s in all. The rows
    are what the models would write (column defaults included, the same ids
    from the same sequences, friendly ids allocated as Indico allocates them).
    """
    with open(path, encoding='utf-8') as f:
        data = json.load(f)
    data = data.get('event', data)
    # Plan every entry first: Indico's database refuses entries outside the event's dates
    # and children outside their block, so the event and each block are sized to hold them.
    plan = []  # (raw block, begin, [(raw contribution, start, duration)])
    times: list[datetime] = []
    for raw in _dicts(data.get('sessions')):
        begin = _when(raw.get('start_dt'))
        children = []
        for rc in _dicts(raw.get('contributions')):
            c_start = max(_when(rc.get('start_dt')) or begin, begin) if begin else None
            children.append((rc, c_start, _minutes(rc)))
            if c_start:
                times += [c_start, c_start + _minutes(rc)]
        if begin:
            end = _when(raw.get('end_dt')) or begin + timedelta(hours=1)
            times += [begin, end]
        plan.append((raw, begin, children))
    outside = [(rc, _when(rc.get('start_dt'))) for rc in _dicts(data.get('contributions'))]
    times += [t for _rc, t in outside if t] + [t + timedelta(hours=2) for _rc, t in outside if t]
    fallback = datetime(2028, 8, 21, 8, 0, tzinfo=ZoneInfo(TZ))
    start = min(times, default=fallback).astimezone(ZoneInfo(TZ)).replace(hour=0, minute=0, second=0)
    finish = max(times, default=fallback) + timedelta(days=1)
    # (the event row must not change after this commit: friendly ids are taken in another
    # transaction that would wait for our lock on it)
    event = _event(manager, _text(data.get('title') or 'Big event')[:250], start, 1, end=finish)
    # Indico's timetable-consistency triggers check each entry against its siblings at commit:
    # quadratic for 3,000 entries (minutes). The plan above is consistent by construction, so
    # this seed transaction runs with triggers off (the test cluster's role is a superuser).
    db.session.execute(db.text("SET LOCAL session_replication_role = 'replica'"))
    sessions: dict[str, Session] = {}
    poster_type = SessionType(event=event, name='Poster', is_poster=True)
    db.session.add(poster_type)
    for raw, _begin, _children in plan:
        info = raw.get('session') if isinstance(raw.get('session'), dict) else {}
        sid = str(info.get('id') or raw.get('id'))
        if sid not in sessions:
            sessions[sid] = Session(
                event=event,
                title=_text(info.get('title') or raw.get('title') or 'Session'),
                code=_text(info.get('code')),
                type=poster_type if info.get('is_poster') else None,
            )
            db.session.add(sessions[sid])
        raw['__session'] = sessions[sid]
    # Each contribution as (raw, session, block, block entry, start); blocks and their entries as models.
    planned: list[tuple[dict[str, Any], Session | None, SessionBlock | None, TimetableEntry | None, Any]] = []
    conveners: list[tuple[SessionBlock, tuple[str, str, str]]] = []
    for raw, begin, children in plan:
        session = raw['__session']
        if begin is None:  # an unscheduled block: its contributions stay in the session, unscheduled
            planned += [(rc, session, None, None, None) for rc, _start, _duration in children]
            continue
        end = _when(raw.get('end_dt')) or begin + timedelta(hours=1)
        end = max([end, begin + timedelta(minutes=1)] + [s + d for _rc, s, d in children])
        block = SessionBlock(
            session=session, title=_text(raw.get('title')), code=_text(raw.get('code')), duration=end - begin
        )
        db.session.add(block)
        entry = _entry(event, block, begin)
        conveners += [(block, key) for key in dict.fromkeys(_person_key(c) for c in _dicts(raw.get('conveners')))]
        planned += [(rc, session, block, entry, c_start) for rc, c_start, _duration in children]
    planned += [(rc, None, None, None, when) for rc, when in outside]
    db.session.flush()

    # The rest as plain rows, in bulk.
    links = [_links(rc) for rc, *_rest in planned]
    keys = dict.fromkeys([key for _block, key in conveners] + [key for ls in links for key, _k, _s in ls])
    person_ids = dict(zip(keys, _ids(EventPerson, len(keys)), strict=True))
    contribution_ids = _ids(Contribution, len(planned))
    last = increment_and_get(Event._last_friendly_contribution_id, Event.id == event.id, len(planned))
    friendly_ids = range(last - len(planned) + 1, last + 1)
    insert = db.session.execute
    insert(
        EventPerson.__table__.insert(),
        [
            {'id': pid, 'event_id': event.id, 'first_name': k[0], 'last_name': k[1] or '-', 'affiliation': k[2]}
            for k, pid in person_ids.items()
        ],
    )
    if conveners:
        insert(
            SessionBlockPersonLink.__table__.insert(),
            [{'session_block_id': block.id, 'person_id': person_ids[key]} for block, key in conveners],
        )
    insert(
        Contribution.__table__.insert(),
        [
            {
                'id': cid,
                'friendly_id': fid,
                'event_id': event.id,
                'session_id': session.id if session else None,
                'session_block_id': block.id if block else None,
                'title': _text(rc.get('title') or '(untitled)')[:1000],
                'code': _text(rc.get('code')),
                'duration': _minutes(rc),
                'description': _text(rc.get('description')),
            }
            for cid, fid, (rc, session, block, _entry_, _start) in zip(
                contribution_ids, friendly_ids, planned, strict=True
            )
        ],
    )
    insert(
        ContributionPersonLink.__table__.insert(),
        [
            {'contribution_id': cid, 'person_id': person_ids[key], 'author_type': kind, 'is_speaker': speaker}
            for cid, ls in zip(contribution_ids, links, strict=True)
            for key, kind, speaker in ls
        ],
    )
    entries = [
        {
            'event_id': event.id,
            'parent_id': parent.id if parent else None,
            'type': TimetableEntryType.CONTRIBUTION,
            'start_dt': when,
            'contribution_id': cid,
        }
        for cid, (_rc, _session, _block, parent, when) in zip(contribution_ids, planned, strict=True)
        if when is not None
    ]
    if entries:
        insert(TimetableEntry.__table__.insert(), entries)
    event.update_principal(manager, full_access=True)
    _configure(event, os.environ['TASKWIRE_KEY_BIG'])
    db.session.commit()
    # plain titles the test looks for in the booklet (the generator also makes nasty ones on purpose)
    plain = [t for t in (_text(rc.get('title')) for rc, *_rest in planned) if re.fullmatch(r'[A-Za-z0-9 ,.:-]{12,}', t)]
    return {'id': event.id, 'contributions': len(planned), 'sample_titles': plain[:: max(1, len(plain) // 25)]}


def _took(what: str, since: float) -> float:
    now = time.monotonic()
    print(f'seed.py: {what} in {now - since:.1f} s ({time.process_time():.1f} s of CPU since start)', flush=True)
    return now


def main() -> None:
    t = time.monotonic()
    app = make_app()
    with app.test_request_context():
        t = _took('app made (after importing Indico)', t)
        # What `indico db prepare` does, in this process: one Indico start instead of two (each
        # start costs about 10 s of CPU, mostly importing Indico and configuring its models).
        migrate.init_app(app, db, os.path.join(app.root_path, 'migrations'))  # as `indico db` does
        if not prepare_db(verbose=False):
            sys.exit('seed.py: the database is not empty or not usable (see above)')
        t = _took('database prepared', t)
        password = secrets.token_urlsafe(12)
        manager = _user('Mara', 'Manager', 'manager', password)
        outsider = _user('Otto', 'Outsider', 'outsider', password)
        db.session.commit()
        out: dict[str, Any] = {
            'password': password,
            'manager': 'manager',
            'outsider': 'outsider',
            'outsider_id': outsider.id,
            'small': seed_small(manager),
        }
        t = _took('users and the small event seeded', t)
        if os.environ.get('SEED_BIG'):
            out['big'] = seed_big(manager, os.environ['SEED_BIG'])
            t = _took('the big event seeded', t)
    with open(sys.argv[1], 'w', encoding='utf-8') as f:
        json.dump(out, f)
    if len(sys.argv) == 3:
        _serve(app, sys.argv[2])


def _serve(app: Any, address: str) -> None:
    """Serves the seeded Indico as `indico run` does (werkzeug, threaded, Indico's quiet request
    log), from this process: the app is made once, not again by a second Indico start."""
    from indico.cli.devserver import QuietWSGIRequestHandler
    from werkzeug.serving import run_simple

    host, port = address.rsplit(':', 1)
    os.environ['INDICO_DEV_SERVER'] = '1'  # as `indico run` sets it (error pages)
    print(f'seed.py: serving on {address}', flush=True)
    run_simple(host, int(port), app, threaded=True, use_reloader=False, request_handler=QuietWSGIRequestHandler)


if __name__ == '__main__':
    if len(sys.argv) not in (2, 3):
        sys.exit('usage: seed.py OUT.json [HOST:PORT]')
    main()
