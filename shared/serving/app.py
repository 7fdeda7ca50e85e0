"""The members' app factory, and the pieces every service's factory is built from (the gateway's too).

`base_app` makes the Flask app and its Settings, `init_service` installs what every service has, `start` begins
loading the model. This module knows no service built on it: the gateway has its own factory (gateway/app.py).
"""
from __future__ import annotations

from typing import Any, Mapping

from flask import Flask

from shared.config import Settings
from shared.members import GATEWAY, GATEWAY_SPEC, member_names
from shared.serving import admission, api, auth, model_repository, observability, oip, openapi, runtime
from shared.serving.runtime import ModelRuntime


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """A member's app; `config` overrides settings by upper-case field name (SERVICE_NAME picks the member)."""
    from shared.serving import learner  # imported here: importing serving never loads the learner side

    app, settings = base_app(config)
    _require_member(settings.service_name)
    model = learner.LearnerRuntime(settings.service_name, settings)
    init_service(app, model)
    app.register_blueprint(learner.bp)
    oip.init_app(app, learner.classify)
    return start(app, model)


def base_app(config: Mapping[str, Any] | None = None) -> tuple[Flask, Settings]:
    """A Flask app configured from `config` (over the environment's settings), and those settings."""
    settings = api.settings_from_config(config)
    app = Flask(__name__)
    app.config.from_mapping(SETTINGS=settings, MAX_CONTENT_LENGTH=settings.max_image_bytes, LOAD_IN_BACKGROUND=True)
    app.config.update(config or {})
    return app, settings


def init_service(app: Flask, model: ModelRuntime) -> None:
    """What every service has: its runtime, health and metrics endpoints, its OpenAPI document and docs page,
    request logs, bounded admission, errors as JSON."""
    runtime.init_app(app, model)
    model_repository.init_app(app)
    observability.init_app(app, model.name, model.health)
    openapi.init_app(app, model.name)
    auth.init_app(app, model.settings)
    # After auth: a request without a key never takes a slot.
    admission.init_app(app, model.settings, model.running_slots())
    api.install_error_handlers(app)


def start(app: Flask, model: ModelRuntime) -> Flask:
    """Begin loading the model (in a background thread unless LOAD_IN_BACKGROUND is False); the app."""
    model.start(background=app.config["LOAD_IN_BACKGROUND"])
    return app


def _require_member(name: str) -> None:
    """A member's name; the gateway's is an error naming its own factory, any other names the known ones."""
    if name == GATEWAY:
        raise ValueError(f"SERVICE_NAME={GATEWAY!r} is the gateway: build it with its own factory, "
                         f"{GATEWAY_SPEC.factory} (members.service({GATEWAY!r}).create_app()); "
                         f"this one builds the members {', '.join(member_names())}")
    if name not in member_names():
        raise ValueError(f"SERVICE_NAME must be one of {', '.join((*member_names(), GATEWAY))}, got {name!r}")
