"""ModelRuntime: load once (in the background or not), readiness as a flag, a load failure shown and kept."""
from __future__ import annotations

import threading

import pytest

from shared.config import Settings
from shared.errors import NotReady
from shared.serving.runtime import ModelRuntime


class DoubleRuntime(ModelRuntime):
    """Test double: 'loads' a dict, or fails in load or warm-up when told to; counts its calls."""

    def __init__(self, fail_in: str = "", gate: threading.Event | None = None):
        super().__init__("double", Settings())
        self.fail_in = fail_in
        self.gate = gate
        self.calls: list[str] = []

    def load(self) -> dict:
        self.calls.append("load")
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail_in == "load":
            raise FileNotFoundError("no manifest.json here")
        return {"version": "v1"}

    def warm_up(self) -> None:
        self.calls.append("warm_up")
        if self.fail_in == "warm_up":
            raise RuntimeError("warm-up crashed")

    def predict(self, x: float) -> float:
        self.require_loaded()
        return 2 * x

    def metadata(self) -> dict:
        return {"name": self.name, "ready": self.ready}

    @property
    def model_version(self) -> str:
        return self.require_loaded()["version"]


def test_start_loads_then_warms_up_once_and_is_ready():
    runtime = DoubleRuntime()
    runtime.start(background=False)
    assert runtime.calls == ["load", "warm_up"]
    assert runtime.ready and runtime.require_loaded() == {"version": "v1"} and runtime.predict(2) == 4


def test_background_start_answers_at_once_and_is_not_ready_until_loaded():
    gate = threading.Event()
    runtime = DoubleRuntime(gate=gate)
    runtime.start()
    assert not runtime.ready
    with pytest.raises(NotReady, match="double is still loading its model; retry shortly.$"):
        runtime.require_loaded()
    gate.set()
    for thread in [t for t in threading.enumerate() if t.name == "load-double"]:
        thread.join(5)
    assert runtime.ready


def test_a_failed_load_keeps_it_not_ready_with_the_error_shown():
    runtime = DoubleRuntime(fail_in="load")
    runtime.start(background=False)
    assert not runtime.ready and runtime.health.status()["error"] == "FileNotFoundError: no manifest.json here"
    with pytest.raises(NotReady, match="Loading failed: FileNotFoundError: no manifest.json here"):
        runtime.require_loaded()


def test_a_failed_warm_up_is_loaded_but_not_ready():
    runtime = DoubleRuntime(fail_in="warm_up")
    runtime.start(background=False)
    status = runtime.health.status()
    assert (status["loaded"], status["warmed_up"], status["ready"]) == (True, False, False)
    assert status["error"] == "RuntimeError: warm-up crashed"


def test_a_subclass_must_define_the_whole_interface():
    class Partial(ModelRuntime):
        def load(self) -> None:
            return None

    with pytest.raises(TypeError, match="abstract"):
        Partial("partial", Settings())
