"""create_app: the stacking gateway's app factory (torch kept out of the process first)."""
from __future__ import annotations

from typing import Any, Mapping

from shared.gateway.torch_guard import keep_torch_out

keep_torch_out()  # first: anything imported after it (sklearn via skops) must not pull torch in

from flask import Flask  # noqa: E402 - after the guard, on purpose

from shared.serving.app import create_app as _create_service_app  # noqa: E402


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The gateway: meta-models, fan-out, history, pages."""
    return _create_service_app({**(config or {}), "SERVICE_NAME": "stacking"})
