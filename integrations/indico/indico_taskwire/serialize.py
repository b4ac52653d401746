"""An Indico event as the `abstract_booklet` task's input, in the plugin ("PURR", snake_case) shape.

Shape: ``{"event": {..., "sessions": [block, ...], "contributions": [...]}, "settings": {...}}``
where ``sessions`` holds one entry per session *block* (with its scheduled
contributions) and ``contributions`` every contribution that is in no block:
outside any session, or in a session but not scheduled into one of its
blocks. The booklet prints the latter in its own section, so nothing is left
out. Dates are ``{"date", "time", "tz"}`` in the event's timezone.

Speed: a big event has thousands of contributions and tens of thousands of
person links. Building an ORM object per row cost about 6 s of CPU for 3,000
contributions (46,000 links); so contributions, their person links and their
custom-field values are read as plain rows (three queries, the columns the
booklet needs, no ORM objects), and only the few sessions, blocks and fields
are loaded as models. The rows give what the models would: a person link's
name and affiliation are its own when set, else its person's (Indico's
``override_attr``), and field values go through the field's own
``get_friendly_value``. BENCHMARKS.md has the numbers.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from indico.core.db import db
from indico.modules.events.abstracts.models.abstracts import Abstract
from indico.modules.events.contributions.models.contributions import Contribution
from indico.modules.events.contributions.models.fields import ContributionField, ContributionFieldValue
from indico.modules.events.contributions.models.persons import AuthorType, ContributionPersonLink
from indico.modules.events.contributions.models.types import ContributionType
from indico.modules.events.models.persons import EventPerson
from indico.modules.events.sessions.models.blocks import SessionBlock
from indico.modules.events.sessions.models.persons import SessionBlockPersonLink
from indico.modules.events.sessions.models.sessions import Session
from indico.modules.events.timetable.models.entries import TimetableEntry
from indico.modules.events.tracks.models.tracks import Track
from indico.web.flask.util import url_for
from sqlalchemy import Integer, func, select, type_coerce
from sqlalchemy.orm import joinedload, selectinload

# A contribution id no event has, to make one URL template for all contributions.
_URL_MARKER = 9_087_654_321_012_345


def _dt(value: datetime | None, tz: Any) -> dict[str, str] | None:
    if value is None:
        return None
    local = value.astimezone(tz)
    return {'date': local.strftime('%Y-%m-%d'), 'time': local.strftime('%H:%M:%S'), 'tz': str(tz)}


def _person_json(person_id: int | None, link_id: int, first: str | None, last: str | None, aff: str | None) -> dict:
    # An Indico 3.3 person link has one affiliation: no `multiple_affiliations` list (the booklet
    # reads `affiliation` without one; repeating it there was a quarter of a big event's bytes).
    return {
        'id': str(person_id if person_id is not None else link_id),
        'first_name': first or '',
        'last_name': last or '',
        'affiliation': aff or '',
    }


def _person(link: Any) -> dict[str, Any]:
    """A person link model (conveners, chairs) as JSON."""
    return _person_json(link.person_id, link.id, link.first_name, link.last_name, link.affiliation)


def _ordered(links: Any) -> list[Any]:
    return sorted(links, key=lambda link: (link.display_order, link.last_name or '', link.first_name or '', link.id))


def _event_contributions(event: Any) -> Any:
    contribution = Contribution.__table__.c
    return (contribution.event_id == event.id) & ~contribution.is_deleted


def _person_links(event: Any) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """Each contribution's speakers, primary authors and co-authors, in display order."""
    link, person, contribution = (m.__table__.c for m in (ContributionPersonLink, EventPerson, Contribution))
    first_name = func.coalesce(link.first_name, person.first_name)
    last_name = func.coalesce(link.last_name, person.last_name)
    rows = db.session.execute(
        select(
            link.contribution_id,
            link.id,
            link.person_id,
            first_name,
            last_name,
            func.coalesce(link.affiliation, person.affiliation),
            link.is_speaker,
            type_coerce(link.author_type, Integer),  # the plain int: no enum object per row
        )
        .select_from(
            ContributionPersonLink.__table__.join(EventPerson.__table__, link.person_id == person.id).join(
                Contribution.__table__, link.contribution_id == contribution.id
            )
        )
        .where(_event_contributions(event))
        # _ordered()'s order; "C" compares code points, as Python compares str
        .order_by(link.display_order, last_name.collate('C'), first_name.collate('C'), link.id)
    ).all()
    out: dict[int, dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: {'speakers': [], 'primary_authors': [], 'coauthors': []}
    )
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}  # one JSON object per distinct person as linked
    for contribution_id, link_id, person_id, first, last, aff, is_speaker, author_type in rows:
        people = out[contribution_id]
        key = (person_id, link_id if person_id is None else None, first, last, aff)
        entry = seen.get(key)
        if entry is None:
            entry = seen[key] = _person_json(person_id, link_id, first, last, aff)
        if is_speaker:
            people['speakers'].append(entry)
        if author_type == AuthorType.primary:
            people['primary_authors'].append(entry)
        elif author_type == AuthorType.secondary:
            people['coauthors'].append(entry)
    return out


def _field_values(event: Any) -> dict[int, list[dict[str, Any]]]:
    """Each contribution's values of the event's active custom fields, in the fields' order."""
    fields = {f.id: f for f in ContributionField.query.filter_by(event_id=event.id, is_active=True)}
    if not fields:
        return {}
    kinds = {field_id: field.field for field_id, field in fields.items()}
    value, contribution = ContributionFieldValue.__table__.c, Contribution.__table__.c
    rows = db.session.execute(
        select(value.contribution_id, value.contribution_field_id, value.data)
        .select_from(
            ContributionFieldValue.__table__.join(Contribution.__table__, value.contribution_id == contribution.id)
        )
        .where(_event_contributions(event), value.contribution_field_id.in_(list(fields)))
    ).all()
    rows.sort(key=lambda r: (fields[r[1]].position, r[1]))
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for contribution_id, field_id, data in rows:
        friendly = kinds[field_id].get_friendly_value(data)
        if isinstance(friendly, (list, tuple)):
            friendly = '\n'.join(str(v) for v in friendly)
        out[contribution_id].append(
            {'id': str(field_id), 'name': fields[field_id].title, 'value': '' if friendly is None else str(friendly)}
        )
    return out


def _contribution_rows(event: Any) -> list[Any]:
    """One row per contribution, with its timetable entry, track, type and abstract, by friendly id."""
    tables = (Contribution, TimetableEntry, Track, ContributionType, Abstract)
    contribution, entry, track, kind, abstract = (m.__table__.c for m in tables)
    joined = (
        Contribution.__table__.outerjoin(TimetableEntry.__table__, entry.contribution_id == contribution.id)
        .outerjoin(Track.__table__, track.id == contribution.track_id)
        .outerjoin(ContributionType.__table__, kind.id == contribution.type_id)
        .outerjoin(Abstract.__table__, abstract.id == contribution.abstract_id)
    )
    return db.session.execute(
        select(
            contribution.id,
            contribution.friendly_id,
            contribution.code,
            contribution.title,
            contribution.description,
            contribution.duration,
            contribution.board_number,
            contribution.keywords,
            contribution.session_id,
            contribution.session_block_id,
            entry.start_dt,
            track.id.label('track_id'),
            track.code.label('track_code'),
            track.title.label('track_title'),
            kind.name.label('type_name'),
            abstract.description.label('abstract_description'),
            abstract.id.isnot(None).label('has_abstract'),
        )
        .select_from(joined)
        .where(_event_contributions(event))
        .order_by(contribution.friendly_id)
    ).all()


def event_input(event: Any, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole task input for `event`: ``{"event": ..., "settings": ...}``."""
    tz = event.tzinfo
    sessions = {
        s.id: s
        for s in Session.query.filter(Session.event_id == event.id, ~Session.is_deleted)
        .options(joinedload(Session.type))
        .all()
    }
    blocks = (
        (
            SessionBlock.query.filter(SessionBlock.session_id.in_(list(sessions)))
            .options(
                joinedload(SessionBlock.timetable_entry),
                selectinload(SessionBlock.person_links).joinedload(SessionBlockPersonLink.person),
            )
            .all()
        )
        if sessions
        else []
    )
    people = _person_links(event)
    values = _field_values(event)
    url = url_for('contributions.display_contribution', event, contrib_id=_URL_MARKER, _external=True)
    no_people = {'speakers': [], 'primary_authors': [], 'coauthors': []}

    def contribution_json(row: Any, block_code: str) -> dict[str, Any]:
        description = row.description or ''
        if not description.strip() and row.has_abstract:
            description = row.abstract_description or ''
        start = row.start_dt
        track = (
            {'id': row.track_id, 'code': row.track_code or '', 'title': row.track_title}
            if row.track_id is not None
            else None
        )
        return {
            'id': str(row.id),
            'friendly_id': row.friendly_id,
            'code': row.code or '',
            'title': row.title,
            'description': description,
            'start_dt': _dt(start, tz),
            'end_dt': _dt(start + row.duration if start is not None else None, tz),
            'duration': int(row.duration.total_seconds() // 60) if row.duration else None,
            'type': row.type_name,
            'board_number': row.board_number or '',
            'keywords': list(row.keywords or []),
            'track': track,
            'session_code': block_code,
            'session_id': row.session_block_id,
            'url': url.replace(str(_URL_MARKER), str(row.id)),
            **people.get(row.id, no_people),
            'field_values': values.get(row.id, []),
        }

    by_block: dict[int, list[Any]] = {b.id: [] for b in blocks}
    outside: list[Any] = []
    for row in _contribution_rows(event):
        if row.session_block_id in by_block and row.start_dt is not None:
            by_block[row.session_block_id].append(row)
        else:
            outside.append(row)

    def session_json(session: Session) -> dict[str, Any]:
        return {
            'id': str(session.id),
            'friendly_id': session.friendly_id,
            'code': session.code or '',
            'title': session.title,
            'is_poster': bool(session.is_poster),
            'type': session.type.name if session.type is not None else None,
        }

    def block_json(block: SessionBlock) -> dict[str, Any]:
        session = sessions[block.session_id]
        code = block.code or session.code or ''
        entry = block.timetable_entry
        return {
            'id': block.id,
            'code': code,
            'title': block.full_title,
            'start_dt': _dt(entry.start_dt if entry else None, tz),
            'end_dt': _dt(entry.end_dt if entry else None, tz),
            'conveners': [_person(link) for link in _ordered(block.person_links)],
            'session': session_json(session),
            'contributions': [contribution_json(row, code) for row in by_block[block.id]],
        }

    chairs = _ordered(event.person_links)
    data = {
        'id': str(event.id),
        'title': event.title,
        'description': str(event.description or ''),
        'timezone': event.timezone,
        'start_dt': _dt(event.start_dt, tz),
        'end_dt': _dt(event.end_dt, tz),
        'location': event.venue_name or '',
        'room_name': event.room_name or '',
        'address': event.address or '',
        'url': event.external_url,
        'keywords': list(event.keywords or []),
        'chairs': [_person(link) for link in chairs],
        'sessions': [block_json(b) for b in blocks],
        'contributions': [
            contribution_json(row, (sessions[row.session_id].code or '') if row.session_id in sessions else '')
            for row in outside
        ],
    }
    return {'event': data, 'settings': settings or {}}


def booklet_settings(event: Any) -> dict[str, Any]:
    """The task's `settings` from the event's booklet options (empty ones take the task's defaults)."""
    from indico_taskwire.plugin import BOOKLET_TEMPLATE_KEYS, TaskwirePlugin

    stored = TaskwirePlugin.event_settings.get_all(event)
    wanted = [int(i) for i in stored['custom_fields'] or []]
    titles = {f.id: f.title for f in event.contribution_fields}
    settings: dict[str, Any] = {key: stored[key] for key in BOOKLET_TEMPLATE_KEYS if stored[key]}
    settings['custom_fields'] = [{'id': str(i), 'name': titles[i]} for i in wanted if i in titles]
    return settings
