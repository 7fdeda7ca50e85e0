"""The supervisor (circus in this process) for real: a service that keeps exiting is restarted with throttling,
then given up on, and the stack stops non-zero with a line naming it; a restarted service keeps its socket."""
from __future__ import annotations

import socket
import sys
import threading

from shared import supervisor
from shared.config import Settings
from shared.supervisor import Service, Supervisor


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_service_that_keeps_exiting_is_given_up_with_its_name(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(supervisor.FLAPPING, "retry_in", 1)
    monkeypatch.setitem(supervisor.GIVE_UP, "exits", 5)
    crash = Service("ocr_nb", "127.0.0.1", free_port(), f"{sys.executable} -c 'raise SystemExit(3)'")
    sup = Supervisor([crash], {"PATH": "/usr/bin:/bin"}, tmp_path, Settings())
    guard = threading.Timer(90, sup.stop, args=(99, "the test's guard ran out"))
    guard.start()
    try:
        code = sup.run()
    finally:
        guard.cancel()
    out = capsys.readouterr().out
    assert code == 1 and sup.cause.startswith("ocr_nb exited 5 times within 300 s (last exit code 3)"), sup.cause
    assert out.count("ocr_nb exited") >= 5 and "rc=3); restarting it on the same socket" in out
