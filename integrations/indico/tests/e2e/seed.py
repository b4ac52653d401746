"""Seeds the end-to-end Indico (INDICO_CONFIG): two users, a conference, and optionally a big event.

- manager@example.org (password in the output): manager of both events;
- outsider@example.org: an ordinary user, no rights on them;
- "E2E Conference": sessions (one poster session), blocks on two days, contributions with authors,
  affiliations, speakers, abstracts, a track, board numbers, a custom field, one contribution outside
  any session; its taskwire settings point at TASKWIRE_URL with TASKWIRE_KEY_SMALL;
- with SEED_BIG=<file>: the generated event in that file (the booklet task's plugin shape), rebuilt as
  Indico sessions, blocks and contributions, with TASKWIRE_KEY_BIG.

Prints JSON for the test: ids, titles, credentials.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from indico.core.db import db
from indico.modules.auth.models.identities import Identity
from indico.modules.categories.models.categories import Category
from indico.modules.events.contributions.models.contributions import Contribution
from indico.modules.events.contributions.models.fields import ContributionField
from indico.modules.events.contributions.models.persons import AuthorType, ContributionPersonLink
from indico.modules.events.models.events import EventType
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


def _person(event: Any, cache: dict[tuple[str, str, str], EventPerson], p: dict[str, Any]) -> EventPerson:
    key = tuple(_text(p.get(k)) for k in ('first_name', 'last_name', 'affiliation'))
    person = cache.get(key)
    if person is None:
        person = EventPerson(event=event, first_name=key[0], last_name=key[1] or '-', affiliation=key[2], email='')
        cache[key] = person
    return person


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


def seed_big(manager: User, path: str) -> dict[str, Any]:
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
    cache: dict[tuple[str, str, str], EventPerson] = {}
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
    db.session.flush()
    Contribution.allocate_friendly_ids(event, sum(len(c) for _r, _b, c in plan) + len(outside))
    count = 0
    for raw, begin, children in plan:
        session = raw['__session']
        if begin is None:  # an unscheduled block: its contributions stay in the session, unscheduled
            for rc, _start, _duration in children:
                _contribution(event, cache, rc, session, None)
                count += 1
            continue
        end = _when(raw.get('end_dt')) or begin + timedelta(hours=1)
        end = max([end, begin + timedelta(minutes=1)] + [s + d for _rc, s, d in children])
        block = SessionBlock(
            session=session, title=_text(raw.get('title')), code=_text(raw.get('code')), duration=end - begin
        )
        conveners = {id(p): p for p in (_person(event, cache, c) for c in _dicts(raw.get('conveners')))}
        block.person_links = [SessionBlockPersonLink(person=p) for p in conveners.values()]
        db.session.add(block)
        entry = _entry(event, block, begin)
        for rc, c_start, _duration in children:
            c = _contribution(event, cache, rc, session, block)
            child = TimetableEntry(event=event, parent=entry, type=TimetableEntryType.CONTRIBUTION, start_dt=c_start)
            child.object = c
            db.session.add(child)
            count += 1
    for rc, when in outside:
        c = _contribution(event, cache, rc, None, None)
        if when is not None:
            _entry(event, c, when)
        count += 1
    db.session.flush()
    event.update_principal(manager, full_access=True)
    _configure(event, os.environ['TASKWIRE_KEY_BIG'])
    db.session.commit()
    return {'id': event.id, 'contributions': count}


def _contribution(
    event: Any,
    cache: dict[tuple[str, str, str], EventPerson],
    rc: dict[str, Any],
    session: Session | None,
    block: SessionBlock | None,
) -> Contribution:
    c = Contribution(
        event=event,
        title=_text(rc.get('title') or '(untitled)')[:1000],
        code=_text(rc.get('code')),
        duration=_minutes(rc),
        description=_text(rc.get('description')),
        session=session,
        session_block=block,
    )
    links: dict[int, ContributionPersonLink] = {}
    speakers = {(p.get('first_name'), p.get('last_name')) for p in _dicts(rc.get('speakers'))}
    for kind, people in (
        (AuthorType.primary, rc.get('primary_authors')),
        (AuthorType.secondary, rc.get('coauthors')),
        (AuthorType.none, rc.get('speakers')),
    ):
        for p in people if isinstance(people, list) else []:
            if not isinstance(p, dict):
                continue
            person = _person(event, cache, p)
            if id(person) in links:
                continue
            links[id(person)] = ContributionPersonLink(
                person=person, author_type=kind, is_speaker=(p.get('first_name'), p.get('last_name')) in speakers
            )
    c.person_links = list(links.values())
    db.session.add(c)
    return c


def main() -> None:
    app = make_app()
    with app.test_request_context():
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
        if os.environ.get('SEED_BIG'):
            out['big'] = seed_big(manager, os.environ['SEED_BIG'])
        json.dump(out, sys.stdout)


if __name__ == '__main__':
    main()
