"""create_app: the one Flask app factory of all four services; SERVICE_NAME picks the runtime and its routes."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from flask import Flask

from shared.config import Settings
from shared.members import GATEWAY, member_names
from shared.serving import admission, api, auth, observability, oip, openapi
from shared.serving.runtime import ModelRuntime


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """A service; `config` overrides settings by upper-case field name (SERVICE_NAME picks which service)."""
    settings = api.settings_from_config(config)
    build = _builder(settings.service_name)
    app = Flask(__name__)
    app.config.from_mapping(SETTINGS=settings, MAX_CONTENT_LENGTH=settings.max_image_bytes, LOAD_IN_BACKGROUND=True)
    app.config.update(config or {})
    runtime = build(app, settings)
    runtime.start(background=app.config["LOAD_IN_BACKGROUND"])
    return app


def _builder(name: str) -> Callable[[Flask, Settings], ModelRuntime]:
    if name == GATEWAY:
        return _build_gateway
    if name in member_names():
        return _build_member
    raise ValueError(f"SERVICE_NAME must be one of {', '.join((*member_names(), GATEWAY))}, got {name!r}")


def _build_member(app: Flask, settings: Settings) -> ModelRuntime:
    """A member: its learner's runtime, then the predict routes and the inference protocol's."""
    from shared.serving import member  # imported here: the gateway process never loads the member side

    runtime = member.MemberRuntime(settings.service_name, settings)
    _init_runtime(app, runtime)
    app.register_blueprint(member.bp)
    oip.init_app(app, member.classify)
    return runtime


def _build_gateway(app: Flask, settings: Settings) -> ModelRuntime:
    """The gateway: the meta-models' runtime, the fan-out and inference protocol routes, the history, the pages."""
    # Imported here: a member process never imports the gateway (nor its history and pages).
    from shared import history, ui
    from shared.gateway import cache, routes
    from shared.gateway.runtime import GatewayRuntime

    runtime = GatewayRuntime(settings)
    _init_runtime(app, runtime)
    routes.init_app(app, settings).session.headers.update(auth.outgoing_headers(settings))
    oip.init_app(app, routes.classify)
    cache.init_app(app, settings)
    history.init_app(app, settings)
    ui.init_app(app)
    return runtime


def _init_runtime(app: Flask, runtime: ModelRuntime) -> None:
    """What every service has: its runtime, health and metrics endpoints, its OpenAPI document and docs page,
    request logs, bounded admission, errors as JSON."""
    app.extensions["runtime"] = runtime
    observability.init_app(app, runtime.name, runtime.health)
    openapi.init_app(app, runtime.name)
    auth.init_app(app, runtime.settings)
    # After auth: a request without a key never takes a slot.
    admission.init_app(app, runtime.settings, runtime.running_slots())
    api.install_error_handlers(app)
