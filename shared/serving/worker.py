"""ServiceWorker: gunicorn's gthread worker, plus when each request arrived and a drain that closes connections.

- Arrival: the time a connection was handed to the thread pool is put in the WSGI environ (ARRIVED_AT), so
  deadlines count the time a request queued for a thread, not only the handler's.
- Drain: SIGTERM first reports not-ready for DRAIN_SECONDS while still answering, each answer with
  `Connection: close` so keep-alive clients reconnect (to another replica, or to this socket's next owner); then
  gthread's own graceful stop: no new connections (the listener let go at once), in-flight requests finished,
  kept-alive ones closed.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from flask import Flask
from gunicorn.workers.gthread import ThreadWorker

from shared.config import Settings

ARRIVED_AT = "classifier.arrived_at"  # environ key: time.monotonic() when the request reached this worker
CLOSE_CONNECTION = "classifier.close_connection"  # environ key an app sets: answer with Connection: close


class ServiceWorker(ThreadWorker):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.draining = False
        self.flask_app: Any = None
        self._arrival = threading.local()

    def enqueue_req(self, conn: Any) -> None:
        conn.enqueued_at = time.monotonic()
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        self._arrival.at = getattr(conn, "enqueued_at", None)
        return super().handle(conn)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.flask_app = app = self.wsgi

        def wsgi(environ: dict, start_response: Any) -> Any:
            environ[ARRIVED_AT] = getattr(self._arrival, "at", None) or time.monotonic()
            if self.draining:  # gunicorn drops an app's own Connection header; its response object is told
                start_response.__self__.force_close()
            body = app(environ, start_response)
            if environ.get(CLOSE_CONNECTION):  # headers are sent with the first body write, after this
                start_response.__self__.force_close()
            return body

        self.wsgi = wsgi

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            # Stopping for good: let go of the listener now, not after the in-flight requests. Where the master and
            # the supervisor have closed theirs (Ctrl-C), connects are refused at once instead of queueing on a
            # socket nobody accepts from, then reset; on a restart the supervisor's copy keeps them queued.
            for listener in self.sockets:
                listener.close()

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM: not ready (answers closing their connections) for DRAIN_SECONDS, then gthread's graceful stop."""
        if self.draining:
            return
        self.draining = True
        seconds = Settings.from_env().drain_seconds
        self._mark_draining()
        self.log.info("SIGTERM: not ready, answering with Connection: close for %.1f s, then stopping", seconds)
        timer = threading.Timer(seconds, super().handle_exit, args=(sig, None))
        timer.daemon = True
        timer.start()

    def _mark_draining(self) -> None:
        """The app's readiness says draining from now on."""
        # Imported here: gunicorn's master imports this module and must not import prometheus_client (gunicorn_conf).
        from shared.serving.observability import current_health

        if isinstance(self.flask_app, Flask):
            with self.flask_app.app_context():
                current_health().start_draining()
