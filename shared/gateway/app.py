"""The stacking gateway's app factory: meta-models, fan-out and inference-protocol routes, cache, history, pages.

Built from serving's generic pieces (base_app, init_service, start); `create_app` is the gateway process's entry
(members.GATEWAY_SPEC.factory) and keeps torch out of that process first; `build_app` is the same app without
that process-wide guard, for building a gateway inside another process (tests).
"""
from __future__ import annotations

from typing import Any, Mapping

from flask import Flask

from shared import feedback, history, ui
from shared.gateway import cache, client, routes, shadow, versions
from shared.gateway.runtime import GatewayRuntime
from shared.gateway.torch_guard import keep_torch_out
from shared.members import GATEWAY
from shared.serving import auth, oip
from shared.serving.app import base_app, init_service, start


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The gateway process's app: torch made unimportable first, then build_app."""
    # Before any model is loaded: skops would pull torch in through sklearn's array-API shim.
    keep_torch_out()
    return build_app(config)


def build_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The gateway; `config` overrides settings by upper-case field name, as for every service."""
    app, settings = base_app({**(config or {}), "SERVICE_NAME": GATEWAY})
    model = GatewayRuntime(settings)
    init_service(app, model)
    members = client.init_app(app, settings)
    members.session.headers.update(auth.outgoing_headers(settings))
    routes.init_app(app)
    versions.init_app(app, model, members)
    oip.init_app(app, routes.classify)
    cache.init_app(app, settings)
    store = history.init_app(app, settings)
    shadow.init_app(app, model, store.record_shadow)
    feedback.init_app(app, settings)
    ui.init_app(app)
    return start(app, model)
