"""gunicorn config of the stacking gateway: the shared settings and hooks, its app and its port."""
from shared.serving.gunicorn_conf import *  # noqa: F401,F403 - gthread workers, graceful drain, multi-process metrics

wsgi_app = "services.stacking.wsgi:app"
bind = bind_for("stacking")  # noqa: F405
