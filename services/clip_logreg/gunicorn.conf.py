"""gunicorn config of the clip_logreg member: the shared settings and hooks, its app and its port."""
from shared.serving.gunicorn_conf import *  # noqa: F401,F403 - gthread workers, graceful drain, multi-process metrics

wsgi_app = "services.clip_logreg.wsgi:app"
bind = bind_for("clip_logreg")  # noqa: F405
