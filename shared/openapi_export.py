"""`python -m shared openapi --out docs/api`: each service's OpenAPI document, as its own app serves it.

The docs site renders these files; a test fails when the committed ones differ from what the code serves now.
"""
from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Iterator

from shared.members import ServiceSpec, services

COMMAND = "python -m shared openapi --out docs/api"


def served_document(spec: ServiceSpec, scratch: Path) -> dict:
    """The JSON a service answers on GET /openapi.json (its app built by its own factory, without models)."""
    app = spec.create_app({
        # An empty models folder: the load fails at once (no model is needed for the document) and nothing
        # the service writes at start (the gateway's history database) lands in the working tree.
        "MODELS_DIR": scratch / "models", "WEIGHTS_DIR": scratch / "weights", "HISTORY_DB": scratch / "history.sqlite3",
        "LOAD_IN_BACKGROUND": False,
    })
    response = app.test_client().get("/openapi.json")
    if response.status_code != 200:
        raise RuntimeError(f"{spec.name}: GET /openapi.json answered {response.status_code}")
    return response.get_json()


def render(document: dict) -> str:
    """The file's text: sorted keys and a final newline, so that a changed document shows as a small diff."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_documents(out: Path) -> list[Path]:
    """Write `<service>.json` for every service of the member table into `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with _quiet(), tempfile.TemporaryDirectory(prefix="openapi-") as scratch:
        # Members first: the gateway's factory keeps torch out of the whole process from then on.
        for spec in services():
            path = out / f"{spec.name}.json"
            path.write_text(render(served_document(spec, Path(scratch) / spec.name)), encoding="utf-8")
            written.append(path)
    return written


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No log lines meanwhile: the failed model loads' tracebacks and the request lines are expected here."""
    before = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(before)
