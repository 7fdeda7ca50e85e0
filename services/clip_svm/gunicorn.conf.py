"""gunicorn config of the clip_svm member: the shared settings and hooks, its app and its port."""
from shared.serving.gunicorn_conf import *  # noqa: F401,F403 - gthread workers, graceful drain, multi-process metrics

wsgi_app = "services.clip_svm.wsgi:app"
bind = bind_for("clip_svm")  # noqa: F405
