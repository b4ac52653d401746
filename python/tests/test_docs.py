"""The README's first example runs as written against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .support import DEADLINE, Server

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_starts_with_a_runnable_client(server: Server, tmp_path: Path) -> None:
    text = README.read_text()
    first = re.search(r"```python\n(.*?)```", text, re.S)
    assert first is not None
    code = first.group(1).replace("http://127.0.0.1:8080", server.url)
    script = tmp_path / "client.py"
    script.write_text(code)
    env = {**os.environ, "TASKWIRE_API_KEY": server.key}
    out = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=True,
    ).stdout
    shown = re.search(r"```text\n(.*?)```", text, re.S)
    assert shown is not None
    assert out.split() == shown.group(1).split()
