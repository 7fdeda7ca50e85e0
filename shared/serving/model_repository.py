"""The model repository's index on every service (Triton's model repository extension): which versions this worker
holds, and in what state. Members load and drop versions by following serving.json (serving/versions.py); the
gateway adds load, unload, canary and shadow (gateway/versions.py)."""
from __future__ import annotations

from flask import Blueprint, Flask, Response, jsonify

from shared.serving.runtime import current_runtime
from shared.serving.versions import VersionedRuntime

bp = Blueprint("repository", __name__)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


@bp.route("/v2/repository/index", methods=["GET", "POST"])
def index() -> Response:
    """This service's model versions: READY, LOADING or UNAVAILABLE (with the reason), and which one is active.
    ---
    get:
      summary: The versions this service holds (Triton's repository index)
      tags: [model repository]
      responses:
        "200": {description: One entry per version, content: {application/json: {schema: RepositoryIndex}}}
    post:
      summary: The same (Triton sends the index request as a POST)
      tags: [model repository]
      responses:
        "200": {description: One entry per version, content: {application/json: {schema: RepositoryIndex}}}
    """
    return jsonify(current_runtime(VersionedRuntime).index())
