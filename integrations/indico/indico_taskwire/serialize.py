"""An Indico event as the `abstract_booklet` task's input, in the plugin ("PURR", snake_case) shape.

Shape: ``{"event": {..., "sessions": [block, ...], "contributions": [...]}, "settings": {...}}``
where ``sessions`` holds one entry per session *block* (with its scheduled
contributions) and ``contributions`` every contribution that is in no block:
outside any session, or in a session but not scheduled into one of its
blocks. The booklet prints the latter in its own section, so nothing is left
out. Dates are ``{"date", "time", "tz"}`` in the event's timezone.

Everything is loaded in a fixed number of queries (no per-contribution
query), so a 3,000-contribution event serialises in about a second.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from indico.modules.events.contributions.models.contributions import Contribution
from indico.modules.events.contributions.models.fields import ContributionFieldValue
from indico.modules.events.contributions.models.persons import AuthorType, ContributionPersonLink
from indico.modules.events.sessions.models.blocks import SessionBlock
from indico.modules.events.sessions.models.persons import SessionBlockPersonLink
from indico.modules.events.sessions.models.sessions import Session
from sqlalchemy.orm import joinedload, selectinload


def _dt(value: datetime | None, tz: Any) -> dict[str, str] | None:
    if value is None:
        return None
    local = value.astimezone(tz)
    return {'date': local.strftime('%Y-%m-%d'), 'time': local.strftime('%H:%M:%S'), 'tz': str(tz)}


def _person(link: Any) -> dict[str, Any]:
    affiliation = link.affiliation or ''
    return {
        'id': str(link.person_id if link.person_id is not None else link.id),
        'first_name': link.first_name or '',
        'last_name': link.last_name or '',
        'affiliation': affiliation,
        'multiple_affiliations': [affiliation] if affiliation else [],
    }


def _ordered(links: Any) -> list[Any]:
    return sorted(links, key=lambda link: (link.display_order, link.last_name or '', link.first_name or '', link.id))


def _field_values(contribution: Contribution) -> list[dict[str, Any]]:
    values = []
    for fv in contribution.field_values:
        field = fv.contribution_field
        if field is None or not field.is_active:
            continue
        friendly = fv.friendly_data
        if isinstance(friendly, (list, tuple)):
            friendly = '\n'.join(str(v) for v in friendly)
        values.append({'id': str(field.id), 'name': field.title, 'value': '' if friendly is None else str(friendly)})
    return values


def _contribution(contribution: Contribution, tz: Any, block_code: str = '') -> dict[str, Any]:
    links = _ordered(contribution.person_links)
    description = contribution.description or ''
    if not str(description).strip() and contribution.abstract is not None:
        description = contribution.abstract.description or ''
    track = contribution.track
    entry = contribution.timetable_entry
    start = entry.start_dt if entry is not None else None
    return {
        'id': str(contribution.id),
        'friendly_id': contribution.friendly_id,
        'code': contribution.code or '',
        'title': contribution.title,
        'description': str(description),
        'start_dt': _dt(start, tz),
        'end_dt': _dt(start + contribution.duration if start is not None else None, tz),
        'duration': int(contribution.duration.total_seconds() // 60) if contribution.duration else None,
        'type': contribution.type.name if contribution.type is not None else None,
        'board_number': contribution.board_number or '',
        'keywords': list(contribution.keywords or []),
        'track': {'id': track.id, 'code': track.code or '', 'title': track.title} if track is not None else None,
        'session_code': block_code,
        'session_id': contribution.session_block_id,
        'url': contribution.external_url,
        'speakers': [_person(link) for link in links if link.is_speaker],
        'primary_authors': [_person(link) for link in links if link.author_type == AuthorType.primary],
        'coauthors': [_person(link) for link in links if link.author_type == AuthorType.secondary],
        'field_values': _field_values(contribution),
    }


def _contributions_query(event: Any) -> Any:
    return (
        Contribution.query.filter(Contribution.event_id == event.id)
        .filter(~Contribution.is_deleted)
        .options(
            # person links read names from their EventPerson: load those too (no query per link)
            selectinload(Contribution.person_links).joinedload(ContributionPersonLink.person),
            selectinload(Contribution.field_values).joinedload(ContributionFieldValue.contribution_field),
            joinedload(Contribution.timetable_entry),
            joinedload(Contribution.track),
            joinedload(Contribution.type),
            joinedload(Contribution.abstract),
            joinedload(Contribution.event),
        )
        .order_by(Contribution.friendly_id)
    )


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
    by_block: dict[int, list[Contribution]] = {b.id: [] for b in blocks}
    outside: list[Contribution] = []
    for contribution in _contributions_query(event):
        if contribution.session_block_id in by_block and contribution.timetable_entry is not None:
            by_block[contribution.session_block_id].append(contribution)
        else:
            outside.append(contribution)

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
            'contributions': [_contribution(c, tz, code) for c in by_block[block.id]],
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
            _contribution(c, tz, (sessions[c.session_id].code or '') if c.session_id in sessions else '')
            for c in outside
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
