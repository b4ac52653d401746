"""Times the booklet input of the seeded big event as the input request makes it, in one process.

Run by ``scripts/test-indico.sh bench`` (INDICO_CONFIG points at the seeded end-to-end Indico).
Each run starts from an empty SQLAlchemy session, as a request does, and is split into gather
(the event read from the database into dicts), encode (JSON) and compress (gzip level 1); the
median of ``--runs`` is printed. With ``--against REV`` the serialiser of that git revision is
timed too, in the same process on the same database, and both must give the same booklet input
(``multiple_affiliations`` and the order of field values aside, which that one may differ in).
``--profile`` prints the top of a cProfile of one gather.

Usage: ``bench_serialize.py SEED.json [--runs N] [--against REV] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import json
import pstats
import statistics
import subprocess
import time
import types
from pathlib import Path
from typing import Any

from indico.core.db import db
from indico.modules.events.models.events import Event
from indico.web.flask.app import make_app

SERIALIZE = 'integrations/indico/indico_taskwire/serialize.py'


def _module_at(rev: str) -> types.ModuleType:
    root = Path(__file__).resolve().parents[4]
    source = subprocess.run(  # noqa: S603
        ['git', '-C', str(root), 'show', f'{rev}:{SERIALIZE}'],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType(f'serialize_at_{rev}')
    exec(compile(source, f'{rev}:{SERIALIZE}', 'exec'), module.__dict__)  # noqa: S102
    return module


def _one_run(module: Any, event_id: int) -> tuple[dict[str, float], Any]:
    db.session.expunge_all()
    event = Event.get(event_id)
    t0 = time.perf_counter()
    data = module.event_input(event, module.booklet_settings(event))
    t1 = time.perf_counter()
    body = json.dumps(data, ensure_ascii=False, separators=(',', ':')).encode()
    t2 = time.perf_counter()
    packed = gzip.compress(body, compresslevel=1)
    t3 = time.perf_counter()
    ms = {'gather': t1 - t0, 'encode': t2 - t1, 'compress': t3 - t2, 'total': t3 - t0}
    ms = {k: v * 1000 for k, v in ms.items()}
    ms['MB'], ms['gzip MB'] = len(body) / 1e6, len(packed) / 1e6
    return ms, data


def _comparable(data: Any) -> Any:
    """The input without what two correct serialisers may differ in."""
    if isinstance(data, dict):
        out = {k: _comparable(v) for k, v in data.items() if k != 'multiple_affiliations'}
        if isinstance(out.get('field_values'), list):
            out['field_values'] = sorted(out['field_values'], key=lambda v: v['id'])
        return out
    if isinstance(data, list):
        return [_comparable(v) for v in data]
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('seed_json')
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--against', metavar='REV')
    parser.add_argument('--profile', action='store_true')
    args = parser.parse_args()
    seed = json.loads(Path(args.seed_json).read_text(encoding='utf-8'))
    event_id = seed['big']['id']
    app = make_app()
    with app.test_request_context():
        from indico_taskwire import serialize

        modules: dict[str, Any] = {'this tree': serialize}
        if args.against:
            modules[args.against] = _module_at(args.against)
        outputs = {}
        for name, module in modules.items():
            _ms, outputs[name] = _one_run(module, event_id)  # warm: imports, caches, the URL map
            runs = [_one_run(module, event_id)[0] for _ in range(args.runs)]
            line = ', '.join(
                f'{k} {statistics.median(r[k] for r in runs):.{2 if "MB" in k else 0}f}{"" if "MB" in k else " ms"}'
                for k in runs[0]
            )
            print(f'{name}: {seed["big"]["contributions"]} contributions, median of {args.runs}: {line}', flush=True)
        if args.against:
            same = _comparable(outputs['this tree']) == _comparable(outputs[args.against])
            print(f'same booklet input as {args.against}: {"yes" if same else "NO"}', flush=True)
            if not same:
                raise SystemExit(1)
        if args.profile:
            db.session.expunge_all()
            event = Event.get(event_id)
            profile = cProfile.Profile()
            profile.runcall(serialize.event_input, event, serialize.booklet_settings(event))
            pstats.Stats(profile).sort_stats('cumulative').print_stats(25)


if __name__ == '__main__':
    main()
