"""docs/api/: the committed OpenAPI documents are what each service's own app serves now."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from shared.openapi_export import COMMAND

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "docs" / "api"


def test_committed_documents_are_what_the_services_serve(tmp_path: Path) -> None:
    # A subprocess, as a user runs it: the gateway's factory keeps torch out of its whole process.
    done = subprocess.run([sys.executable, "-m", "shared", "openapi", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    fresh = {path.name: path.read_text(encoding="utf-8") for path in tmp_path.glob("*.json")}
    committed = {path.name: path.read_text(encoding="utf-8") for path in COMMITTED.glob("*.json")}
    assert sorted(fresh) == sorted(committed), f"docs/api/ lists other services than the code: run `{COMMAND}`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"docs/api/{', '.join(stale)} differ from what the services serve: run `{COMMAND}`"


def test_every_service_documents_its_predict_route() -> None:
    for path in COMMITTED.glob("*.json"):
        document = json.loads(path.read_text(encoding="utf-8"))
        assert document["openapi"].startswith("3."), path
        assert "/predict" in document["paths"], path
