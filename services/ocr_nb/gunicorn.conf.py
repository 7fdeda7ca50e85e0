"""gunicorn config of the ocr_nb member: the shared settings and hooks, its app and its port."""
from shared.serving.gunicorn_conf import *  # noqa: F401,F403 - gthread workers, graceful drain, multi-process metrics

wsgi_app = "services.ocr_nb.wsgi:app"
bind = bind_for("ocr_nb")  # noqa: F405
