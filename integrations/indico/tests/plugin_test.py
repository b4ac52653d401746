"""The plugin in Indico: menu entry, access, settings, the key's storage, token minting, the event input."""

from __future__ import annotations

import gzip
import json
import time
from datetime import timedelta
from typing import Any

import pytest
import requests
from indico.modules.events.models.settings import EventSetting
from indico.web.menu import get_menu_item

from indico_taskwire import keystore, service
from indico_taskwire.plugin import TaskwirePlugin
from indico_taskwire.serialize import booklet_settings, event_input
from tests.conftest import configure_event

pytestmark = pytest.mark.usefixtures('db', 'request_context')


def _stored(event: Any, name: str) -> Any:
    row = EventSetting.query.filter_by(event_id=event.id, module='plugin_taskwire', name=name).one()
    return row.value


# --- menu and access ----------------------------------------------------------------------


def test_menu_entry_only_for_managers(dummy_event: Any, manager: Any, outsider: Any) -> None:
    from flask import session

    session.set_session_user(manager)
    item = get_menu_item('event-management-sidemenu', 'taskwire', event=dummy_event)
    assert item is not None
    assert item.section == 'workflows'
    assert item.url.endswith(f'/event/{dummy_event.id}/manage/taskwire/')
    session.set_session_user(outsider)
    assert get_menu_item('event-management-sidemenu', 'taskwire', event=dummy_event) is None


@pytest.mark.parametrize('path', ['/', '/service', '/booklet-input.json', '/token'])
def test_outsiders_get_no_access(dummy_event: Any, outsider: Any, login: Any, path: str) -> None:
    client = login(outsider)
    response = client.get(f'/event/{dummy_event.id}/manage/taskwire{path}')
    assert response.status_code == 403


def test_anonymous_is_sent_to_login(dummy_event: Any, test_client: Any) -> None:
    response = test_client.get(f'/event/{dummy_event.id}/manage/taskwire/token')
    assert response.status_code in (302, 401, 403)
    assert 'token' not in response.get_data(as_text=True).lower() or response.status_code == 302


def test_booklet_page_shows_the_button_from_the_configured_server(
    seeded_event: Any, manager: Any, login: Any, taskwire: Any
) -> None:
    configure_event(seeded_event.event, taskwire.url, taskwire.key)
    page = login(manager).get(f'/event/{seeded_event.event.id}/manage/taskwire/')
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '<taskwire-button task="abstract_booklet"' in html
    assert f'server="{taskwire.url}"' in html
    assert 'booklet.js' in html
    assert '6 contributions' in html
    assert taskwire.key not in html


def test_booklet_page_without_service_says_what_to_do(dummy_event: Any, manager: Any, login: Any) -> None:
    html = login(manager).get(f'/event/{dummy_event.id}/manage/taskwire/').get_data(as_text=True)
    assert 'No taskwire server is set up for this event' in html
    assert '<taskwire-button' not in html


def test_booklet_options_are_saved_and_become_task_settings(
    seeded_event: Any, manager: Any, login: Any, csrf: Any
) -> None:
    event = seeded_event.event
    client = login(manager)
    form = client.get(f'/event/{event.id}/manage/taskwire/').get_data(as_text=True)
    assert 'Funding Agency' in form
    response = client.post(
        f'/event/{event.id}/manage/taskwire/',
        data={
            'csrf_token': csrf(),
            'custom_fields': [str(seeded_event.field.id)],
            'ab_session_h1': '{title} ({code})',
            'ab_toc_title': 'Contents',
            'ab_session_h2': '',
            'ab_contribution_h1': '',
            'ab_contribution_h2': '',
            'ab_outside_h1': '',
        },
    )
    assert response.status_code == 302
    assert booklet_settings(event) == {
        'ab_session_h1': '{title} ({code})',
        'ab_toc_title': 'Contents',
        'custom_fields': [{'id': str(seeded_event.field.id), 'name': 'Funding Agency'}],
    }


# --- the key: write-only, encrypted, never sent back -------------------------------------------


def test_key_is_stored_encrypted_and_never_rendered(dummy_event: Any, manager: Any, login: Any, csrf: Any) -> None:
    client = login(manager)
    url = f'/event/{dummy_event.id}/manage/taskwire/service'
    response = client.post(
        url,
        data={
            'csrf_token': csrf(),
            'server_url': 'https://tasks.example.org/',
            'api_key': 'twk_secret_value_1234',
            'timeout_s': '7',
        },
    )
    assert response.status_code == 302
    raw = _stored(dummy_event, 'api_key')
    assert raw.startswith('fernet:')
    assert 'twk_secret_value_1234' not in json.dumps(raw)
    assert keystore.decrypt(raw) == 'twk_secret_value_1234'
    assert TaskwirePlugin.event_settings.get(dummy_event, 'timeout_s') == 7
    page = client.get(url).get_data(as_text=True)
    assert 'twk_secret_value_1234' not in page
    assert raw not in page
    assert 'An API key is stored for this event' in page
    # An empty key field keeps the key; "remove" forgets it.
    client.post(url, data={'csrf_token': csrf(), 'server_url': 'https://tasks.example.org/', 'api_key': ''})
    assert keystore.decrypt(_stored(dummy_event, 'api_key')) == 'twk_secret_value_1234'
    client.post(url, data={'csrf_token': csrf(), 'server_url': 'https://tasks.example.org/', 'clear_key': 'y'})
    assert TaskwirePlugin.event_settings.get(dummy_event, 'api_key') == ''


def test_admin_form_stores_the_key_encrypted() -> None:
    from indico_taskwire.forms import AdminSettingsForm

    form = AdminSettingsForm(formdata=None, data={'server_url': ' https://tasks.example.org ', 'timeout_s': 5})
    form.api_key.data = 'twk_admin_key'
    data = form.data
    assert data['server_url'] == 'https://tasks.example.org'
    assert data['api_key'].startswith('fernet:')
    assert keystore.decrypt(data['api_key']) == 'twk_admin_key'
    assert set(data) <= set(TaskwirePlugin.default_settings)


def test_a_changed_secret_makes_the_key_unreadable_with_a_clear_message(dummy_event: Any, mocker: Any) -> None:
    configure_event(dummy_event, 'https://tasks.example.org/', 'twk_k')
    mocker.patch.object(keystore, '_secret', return_value=b'another secret')
    with pytest.raises(service.NotConfigured, match='enter the key again'):
        service.service_for(dummy_event)


def test_event_url_never_gets_the_admin_key(dummy_event: Any) -> None:
    TaskwirePlugin.settings.set_multi({'server_url': 'https://admin.example.org/', 'api_key': keystore.encrypt('k1')})
    assert service.service_for(dummy_event).key == 'k1'
    assert service.service_for(dummy_event).url == 'https://admin.example.org/'
    TaskwirePlugin.event_settings.set(dummy_event, 'server_url', 'https://elsewhere.example.org/')
    with pytest.raises(service.NotConfigured, match='No API key'):
        service.service_for(dummy_event)


def test_service_repr_hides_the_key() -> None:
    assert 'secret' not in repr(service.Service(url='http://x/', key='secret'))


# --- test connection (a real taskwire server) ------------------------------------------------------


def test_probe_reports_version_and_the_booklet(taskwire: Any) -> None:
    found = service.probe(service.Service(url=taskwire.url, key=taskwire.key))
    assert found.version
    assert found.booklet


def test_probe_wrong_key(taskwire: Any) -> None:
    with pytest.raises(service.KeyRefused, match='refused the API key'):
        service.probe(service.Service(url=taskwire.url, key='twk_wrong'))


def test_probe_server_down(dead_url: str) -> None:
    with pytest.raises(service.Unreachable, match='down, or the URL is wrong'):
        service.probe(service.Service(url=dead_url, key='k', timeout_s=2))


def test_probe_wrong_url(taskwire: Any) -> None:
    with pytest.raises(service.NotTaskwire, match='check the URL'):
        service.probe(service.Service(url=taskwire.url + 'not/here/', key=taskwire.key))


def test_test_connection_button_flashes_what_it_found(
    dummy_event: Any, manager: Any, login: Any, csrf: Any, taskwire: Any
) -> None:
    client = login(manager)
    configure_event(dummy_event, taskwire.url, taskwire.key)
    url = f'/event/{dummy_event.id}/manage/taskwire/service'
    assert client.post(url + '/test', data={'csrf_token': csrf()}).status_code == 302
    page = client.get(url).get_data(as_text=True)
    assert 'Connected to taskwire' in page
    assert 'offers the abstract booklet' in page
    configure_event(dummy_event, taskwire.url, 'twk_wrong')
    client.post(url + '/test', data={'csrf_token': csrf()})
    assert 'refused the API key' in client.get(url).get_data(as_text=True)


# --- the token --------------------------------------------------------------------------------


def test_token_is_minted_for_the_booklet_and_indico_origin(
    dummy_event: Any, manager: Any, login: Any, taskwire: Any
) -> None:
    configure_event(dummy_event, taskwire.url, taskwire.key)
    response = login(manager).get(f'/event/{dummy_event.id}/manage/taskwire/token')
    assert response.status_code == 200
    assert response.headers['Cache-Control'] == 'no-store'
    token = response.get_json()['token']
    assert token.startswith('twt_')
    assert taskwire.key not in response.get_data(as_text=True)
    # Bound to Indico's origin (http://localhost in tests) ...
    own = requests.get(
        taskwire.url + 'v1/tasks/t_x',
        headers={'Authorization': f'Bearer {token}', 'Origin': 'http://localhost'},
        timeout=5,
    )
    assert own.status_code == 404  # accepted as a credential; no such task
    other = requests.get(taskwire.url + 'v1/tasks/t_x', headers={'Authorization': f'Bearer {token}'}, timeout=5)
    assert other.status_code == 401
    # ... and to the booklet task.
    submit = requests.post(
        taskwire.url + 'v1/tasks',
        json={'task': 'echo', 'input': {}},
        timeout=5,
        headers={'Authorization': f'Bearer {token}', 'Origin': 'http://localhost'},
    )
    assert submit.status_code == 401


def test_token_with_a_wrong_key_says_so(dummy_event: Any, manager: Any, login: Any, taskwire: Any) -> None:
    configure_event(dummy_event, taskwire.url, 'twk_wrong')
    response = login(manager).get(f'/event/{dummy_event.id}/manage/taskwire/token')
    assert response.status_code == 502
    assert response.get_json()['error']['code'] == 'unauthorized'
    assert 'refused' in response.get_json()['error']['message']


def test_token_with_the_server_down_says_so(dummy_event: Any, manager: Any, login: Any, dead_url: str) -> None:
    configure_event(dummy_event, dead_url, 'twk_k', timeout_s=2)
    response = login(manager).get(f'/event/{dummy_event.id}/manage/taskwire/token')
    assert response.status_code == 503
    assert response.get_json()['error']['code'] == 'connection_failed'


def test_token_without_configuration_says_so(dummy_event: Any, manager: Any, login: Any) -> None:
    response = login(manager).get(f'/event/{dummy_event.id}/manage/taskwire/token')
    assert response.status_code == 409
    assert response.get_json()['error']['code'] == 'not_configured'


# --- the event as the booklet's input ------------------------------------------------------------


def test_event_input_holds_every_block_and_contribution(seeded_event: Any) -> None:
    data = event_input(seeded_event.event)['event']
    blocks = data['sessions']
    assert len(blocks) == 3
    in_blocks = [c['title'] for b in blocks for c in b['contributions']]
    outside = [c['title'] for c in data['contributions']]
    assert sorted(in_blocks + outside) == sorted(seeded_event.titles)
    assert seeded_event.outside_title in outside
    assert seeded_event.unscheduled_in_session_title in outside
    poster = next(b for b in blocks if b['code'] == 'MOPB')
    assert poster['session']['is_poster'] is True
    first = next(c for b in blocks for c in b['contributions'] if c['code'] == 'MOA01')
    assert first['start_dt']['tz'] == seeded_event.event.timezone
    assert [p['last_name'] for p in first['primary_authors']] == ['Silva', 'Wu']
    assert first['primary_authors'][0]['affiliation'] == 'Lab A, Dept. of Physics'
    assert [p['last_name'] for p in first['coauthors']] == ['Martin']
    assert {p['last_name'] for p in first['speakers']} == {'Silva', 'Wei'}
    assert first['description'].startswith('Abstract of Status')
    assert first['track']['title'] == 'Beam Dynamics'
    assert first['board_number']
    assert first['field_values'] == [
        {'id': str(seeded_event.field.id), 'name': 'Funding Agency', 'value': 'Agency for MOA01'}
    ]


def _contributions(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    listed = [c for b in data['sessions'] for c in b['contributions']] + data['contributions']
    return {c['id']: c for c in listed}


def test_event_input_gives_what_indicos_models_give(seeded_event: Any, db: Any) -> None:
    """The serialiser reads plain rows; each contribution must read as its Indico model does: a
    person link's own name and affiliation over its person's, the display order, the contribution's
    URL, each active field's friendly value in the fields' order, the abstract, the times."""
    from indico.modules.events.contributions.models.fields import ContributionField

    event = seeded_event.event
    choice = ContributionField(
        event=event,
        title='Prize',
        field_type='single_choice',
        field_data={'options': [{'id': 'opt-1', 'option': 'Shortlisted'}], 'item_type': 'dropdown'},
        is_active=True,
    )
    retired = ContributionField(event=event, title='Retired', field_type='text', is_active=False)
    db.session.add_all([choice, retired])
    db.session.flush()
    some = sorted(event.contributions, key=lambda c: c.id)
    some[0].set_custom_field(choice.id, 'opt-1')
    some[0].set_custom_field(retired.id, 'not printed')
    link = next(link for link in some[0].person_links if link.last_name == 'Wu')
    link.first_name, link.affiliation = 'Benjamin', 'Own Lab'  # the link's own, over its person's
    link.display_order = -1  # first, whatever the names
    some[1].description = ''
    db.session.flush()
    db.session.expire_all()

    got = _contributions(event_input(event)['event'])
    assert len(got) == len(event.contributions)
    tz = event.tzinfo

    def person(link: Any) -> dict[str, str]:
        return {
            'id': str(link.person_id),
            'first_name': link.first_name or '',
            'last_name': link.last_name or '',
            'affiliation': link.affiliation or '',
        }

    for c in event.contributions:
        out = got[str(c.id)]
        links = sorted(c.person_links, key=lambda k: (k.display_order, k.last_name, k.first_name, k.id))
        assert out['speakers'] == [person(k) for k in links if k.is_speaker]
        assert out['primary_authors'] == [person(k) for k in links if k.author_type.name == 'primary']
        assert out['coauthors'] == [person(k) for k in links if k.author_type.name == 'secondary']
        values = sorted(
            (v for v in c.field_values if v.contribution_field.is_active), key=lambda v: v.contribution_field.position
        )
        assert out['field_values'] == [
            {'id': str(v.contribution_field_id), 'name': v.contribution_field.title, 'value': str(v.friendly_data)}
            for v in values
        ]
        assert out['url'] == c.external_url
        assert out['title'] == c.title
        assert out['description'] == (c.description or (c.abstract.description if c.abstract else ''))
        start = c.timetable_entry.start_dt.astimezone(tz) if c.timetable_entry else None
        assert out['start_dt'] == (start and {'date': f'{start:%Y-%m-%d}', 'time': f'{start:%H:%M:%S}', 'tz': str(tz)})
        assert out['duration'] == c.duration.total_seconds() // 60
        assert out['track'] == {'id': c.track.id, 'code': c.track.code, 'title': c.track.title}
        assert out['board_number'] == c.board_number
    first = got[str(some[0].id)]
    assert first['primary_authors'][0] == {
        'id': str(link.person_id),
        'first_name': 'Benjamin',
        'last_name': 'Wu',
        'affiliation': 'Own Lab',
    }
    assert [v['name'] for v in first['field_values']] == ['Funding Agency', 'Prize']
    assert first['field_values'][1]['value'] == 'Shortlisted'


def test_event_input_queries_do_not_grow_with_the_contributions(
    seeded_event: Any, db: Any, create_contribution: Any, create_timetable_entry: Any, count_queries: Any
) -> None:
    """No query per contribution, person or field value (a big event has thousands of each)."""
    from indico.modules.events.contributions.models.persons import AuthorType, ContributionPersonLink
    from indico.modules.events.models.persons import EventPerson

    event = seeded_event.event

    def queries() -> int:
        db.session.expire_all()
        with count_queries() as count:
            event_input(event)
        return count()

    event_input(event)  # caches that fill once (settings, the URL map)
    before = queries()
    for n in range(20):
        c = create_contribution(event, f'More {n}', description='More.')
        create_timetable_entry(event, c, event.start_dt + timedelta(hours=1, minutes=n))
        people = [EventPerson(event=event, first_name=f'P{n}', last_name=f'Q{i}', affiliation='Lab') for i in range(3)]
        db.session.add_all(people)
        for p in people:  # the contribution first: it takes the link into the session
            ContributionPersonLink(contribution=c, person=p, author_type=AuthorType.primary, is_speaker=True)
        c.set_custom_field(seeded_event.field.id, f'Agency {n}')
    db.session.flush()
    assert queries() == before
    assert len(_contributions(event_input(event)['event'])) == len(seeded_event.titles) + 20


def test_booklet_input_is_gzipped_when_the_browser_accepts_it(seeded_event: Any, manager: Any, login: Any) -> None:
    url = f'/event/{seeded_event.event.id}/manage/taskwire/booklet-input.json'
    client = login(manager)
    plain = client.get(url)
    assert 'Content-Encoding' not in plain.headers
    packed = client.get(url, headers={'Accept-Encoding': 'gzip, deflate, br'})
    assert packed.headers['Content-Encoding'] == 'gzip'
    assert 'Accept-Encoding' in packed.headers['Vary']
    assert json.loads(gzip.decompress(packed.data)) == plain.get_json()
    assert {m.split(';')[0] for m in packed.headers['Server-Timing'].split(', ')} == {'gather', 'encode', 'compress'}


def test_booklet_input_endpoint_builds_a_booklet_on_a_real_server(
    seeded_event: Any, manager: Any, login: Any, taskwire: Any
) -> None:
    """The JSON the widget fetches is accepted by the real task, which prints every contribution."""
    event = seeded_event.event
    TaskwirePlugin.event_settings.set(event, 'custom_fields', [seeded_event.field.id])
    response = login(manager).get(f'/event/{event.id}/manage/taskwire/booklet-input.json')
    assert response.status_code == 200
    assert response.headers['Cache-Control'] == 'no-store'
    body = response.get_json()
    assert body['settings']['custom_fields'] == [{'id': str(seeded_event.field.id), 'name': 'Funding Agency'}]
    auth = {'Authorization': f'Bearer {taskwire.key}'}
    submit = requests.post(
        taskwire.url + 'v1/tasks', json={'task': 'abstract_booklet', 'input': body}, headers=auth, timeout=10
    )
    assert submit.status_code == 202, submit.text
    task_id = submit.json()['task_id']
    deadline = time.monotonic() + 30
    while True:  # poll the task's status with a deadline
        snapshot = requests.get(taskwire.url + f'v1/tasks/{task_id}', headers=auth, timeout=5).json()
        if snapshot.get('state') in ('completed', 'failed', 'cancelled') or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert snapshot['state'] == 'completed', snapshot
    result = snapshot['result']
    assert result['contributions'] == len(seeded_event.titles)
    assert result['contributions_outside_sessions'] == 2
    assert result['sessions'] == 3
    assert result['warnings'] == []
