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


def _event(creator: User, title: str, start: datetime, days: int) -> Any:
    event = create_event(Category.get_root(), EventType.conference,
                         {'title': title, 'timezone': TZ, 'start_dt': start, 'end_dt': start + timedelta(days=days),
                          'creator': creator})
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

    TaskwirePlugin.event_settings.set_multi(event, {'server_url': os.environ['TASKWIRE_URL'],
                                                    'api_key': keystore.encrypt(key)})


def seed_small(manager: User) -> dict[str, Any]:
    tz = ZoneInfo(TZ)
    start = datetime(2027, 9, 13, 8, 0, tzinfo=tz)
    event = _event(manager, 'E2E Conference on Light Sources', start, 3)
    track = Track(event=event, title='Beam Dynamics', code='BD')
    field = ContributionField(event=event, title='Funding Agency', field_type='text', is_active=True)
    poster_type = SessionType(event=event, name='Poster', is_poster=True)
    db.session.add_all([track, field, poster_type])
    people = [EventPerson(event=event, first_name=f, last_name=last, affiliation=aff, email=f'{f.lower()}@example.org')
              for f, last, aff in (('Ana', 'Silva', 'Laboratório Nacional de Luz Síncrotron, Campinas'),
                                   ('Ben', 'Wu', 'Lab B'), ('Chloé', 'Martin', ''), ('Li', 'Wei', 'Lab D'),
                                   ('Ines', 'Keller', 'Lab C'))]
    db.session.add_all(people)
    talks = Session(event=event, title='Opening and Facility Reports', code='MOA')
    posters = Session(event=event, title='Posters', code='MOP', type=poster_type)
    db.session.add_all([talks, posters])
    db.session.flush()
    blocks = []
    for session, title, offset, code in ((talks, 'Morning', timedelta(hours=1), ''),
                                         (talks, 'Second day', timedelta(days=1, hours=1), 'TUA'),
                                         (posters, 'Poster session', timedelta(hours=8), 'MOPB')):
        block = SessionBlock(session=session, title=title, duration=timedelta(hours=3), code=code)
        block.person_links = [SessionBlockPersonLink(person=people[4])]
        db.session.add(block)
        db.session.flush()
        _entry(event, block, start + offset)
        blocks.append(block)
    titles = []
    codes = [('Status of the Light Source', 0, 'MOA01'), ('Injector Upgrade Results', 0, 'MOA02'),
             ('Superconducting Undulators', 0, 'MOA03'), ('Second Day Keynote', 1, 'TUA01'),
             ('Beam Loss & Halo Studies <measured>', 2, 'MOPB01'), ('Vacuum Commissioning', 2, 'MOPB02')]
    for n, (title, block_index, code) in enumerate(codes):
        block = blocks[block_index]
        c = Contribution(event=event, title=title, code=code, duration=timedelta(minutes=20), board_number=f'P{n}',
                         track=track, description=f'The abstract of “{title}”.\nA second paragraph.',
                         session=block.session, session_block=block)
        db.session.add(c)
        db.session.flush()
        _entry(event, c, block.timetable_entry.start_dt + timedelta(minutes=20 * (n % 3)), parent=block.timetable_entry)
        c.person_links = [ContributionPersonLink(person=people[0], author_type=AuthorType.primary, is_speaker=True),
                          ContributionPersonLink(person=people[1], author_type=AuthorType.primary),
                          ContributionPersonLink(person=people[2], author_type=AuthorType.secondary),
                          ContributionPersonLink(person=people[3], author_type=AuthorType.none, is_speaker=n == 4)]
        c.set_custom_field(field.id, f'Agency {n}')
        titles.append(title)
    outside = Contribution(event=event, title='Closing Remarks Outside Sessions', duration=timedelta(minutes=15),
                           description='Thanks and goodbye.')
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
    key = (p.get('first_name') or '', p.get('last_name') or '', p.get('affiliation') or '')
    person = cache.get(key)
    if person is None:
        person = EventPerson(event=event, first_name=key[0], last_name=key[1] or '-', affiliation=key[2],
                             email='')
        cache[key] = person
    return person


def _when(value: dict[str, str] | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(f'{value["date"]}T{value["time"]}').replace(tzinfo=ZoneInfo(value['tz']))


def seed_big(manager: User, path: str) -> dict[str, Any]:
    data = json.load(open(path, encoding='utf-8'))  # noqa: SIM115 (read once)
    data = data.get('event', data)
    first = next((_when(b.get('start_dt')) for b in data['sessions'] if b.get('start_dt')), None)
    start = (first or datetime(2028, 8, 21, 8, 0, tzinfo=ZoneInfo(TZ))).replace(hour=0, minute=0)
    event = _event(manager, str(data['title'])[:250], start, 5)
    cache: dict[tuple[str, str, str], EventPerson] = {}
    sessions: dict[str, Session] = {}
    poster_type = SessionType(event=event, name='Poster', is_poster=True)
    db.session.add(poster_type)
    all_contributions = [(None, c) for c in data.get('contributions') or []]
    blocks = []
    for raw in data['sessions']:
        info = raw.get('session') or {}
        sid = str(info.get('id') or raw.get('id'))
        if sid not in sessions:
            sessions[sid] = Session(event=event, title=info.get('title') or raw.get('title') or 'Session',
                                    code=info.get('code') or '', type=poster_type if info.get('is_poster') else None)
            db.session.add(sessions[sid])
        blocks.append((raw, sessions[sid]))
    db.session.flush()
    total = sum(len(raw.get('contributions') or []) for raw, _ in blocks) + len(all_contributions)
    Contribution.allocate_friendly_ids(event, total)
    count = 0
    for raw, session in blocks:
        begin, end = _when(raw.get('start_dt')), _when(raw.get('end_dt'))
        if begin is None:
            continue
        block = SessionBlock(session=session, title=raw.get('title') or '', code=raw.get('code') or '',
                             duration=max((end - begin) if end else timedelta(hours=1), timedelta(minutes=1)))
        block.person_links = [SessionBlockPersonLink(person=_person(event, cache, p)) for p in raw.get('conveners') or []]
        db.session.add(block)
        entry = _entry(event, block, begin)
        for rc in raw.get('contributions') or []:
            c_start = _when(rc.get('start_dt')) or begin
            c = _contribution(event, cache, rc, session, block)
            child = TimetableEntry(event=event, parent=entry, type=TimetableEntryType.CONTRIBUTION,
                                   start_dt=max(c_start, begin))
            child.object = c
            db.session.add(child)
            count += 1
    for _none, rc in all_contributions:
        c = _contribution(event, cache, rc, None, None)
        when = _when(rc.get('start_dt'))
        if when is not None:
            _entry(event, c, when)
        count += 1
    db.session.flush()
    event.update_principal(manager, full_access=True)
    _configure(event, os.environ['TASKWIRE_KEY_BIG'])
    db.session.commit()
    return {'id': event.id, 'contributions': count}


def _contribution(event: Any, cache: dict[tuple[str, str, str], EventPerson], rc: dict[str, Any],
                  session: Session | None, block: SessionBlock | None) -> Contribution:
    c = Contribution(event=event, title=str(rc.get('title') or '(untitled)')[:1000], code=rc.get('code') or '',
                     duration=timedelta(minutes=int(rc.get('duration') or 20) or 20),
                     description=rc.get('description') or '', session=session, session_block=block)
    links: dict[int, ContributionPersonLink] = {}
    speakers = {(p.get('first_name'), p.get('last_name')) for p in rc.get('speakers') or []}
    for kind, people in ((AuthorType.primary, rc.get('primary_authors')), (AuthorType.secondary, rc.get('coauthors')),
                         (AuthorType.none, rc.get('speakers'))):
        for p in people or []:
            person = _person(event, cache, p)
            if id(person) in links:
                continue
            links[id(person)] = ContributionPersonLink(
                person=person, author_type=kind, is_speaker=(p.get('first_name'), p.get('last_name')) in speakers)
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
        out: dict[str, Any] = {'password': password, 'manager': 'manager', 'outsider': 'outsider',
                               'outsider_id': outsider.id, 'small': seed_small(manager)}
        if os.environ.get('SEED_BIG'):
            out['big'] = seed_big(manager, os.environ['SEED_BIG'])
        json.dump(out, sys.stdout)


if __name__ == '__main__':
    main()
