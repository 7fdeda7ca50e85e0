"""`python -m shared serve` end to end: refuses to run on missing or unannounced synthetic weights; on a fresh
clone trains a demo model, starts all four, says when they are ready, answers curl, stops on Ctrl-C."""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from shared import repository
from tests.integration.conftest import REPO, SERVICES, free_port

DATASETS = Path(os.environ.get("DATASETS_DIR", REPO.parent / "shared" / "datasets"))
PER_CLASS = 12


def run_serve(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "shared", "serve", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def serve_env(tmp_path: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN_", "PROMETHEUS_"))}
    env.update(SERVICE_PORTS=",".join(f"{n}={p}" for n, p in ports.items()), OMP_NUM_THREADS="1",
               TORCH_THREADS="1", HISTORY_DB=str(tmp_path / "history.sqlite3"), DRAIN_SECONDS="1",
               FEATURE_CACHE_DIR=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def demo_data(tmp_path: Path) -> Path:
    """A few screenshots/camera images per class (copied into tmp; the dataset stays read-only)."""
    source = DATASETS / "screenshots"
    if not source.is_dir():
        pytest.skip(f"no dataset at {source}")
    out = tmp_path / "demo"
    for label in sorted(p.name for p in source.iterdir() if p.is_dir()):
        (out / label).mkdir(parents=True)
        for path in sorted((source / label).glob("*.jpg"))[:PER_CLASS]:
            shutil.copy(path, out / label / path.name)
    return out


def test_missing_weights_stop_with_the_offline_option(tmp_path):
    proc = run_serve("--models", str(tmp_path / "models"), "--weights", str(tmp_path / "no-weights"))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "make serve SYNTHETIC=1" in out and "--synthetic" in out and "make weights" in out


def test_synthetic_weights_are_never_served_silently(tmp_path, tiny_weights):
    proc = run_serve("--models", str(tmp_path / "models"), "--weights", str(tiny_weights))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "SYNTHETIC" in out and "--synthetic" in out and "clip SYNTHETIC, ocr real" in out  # any synthetic part


def test_serve_trains_a_demo_model_starts_all_four_and_stops_on_ctrl_c(tmp_path, tiny_weights, demo_data):
    ports = {name: free_port() for name in SERVICES}
    models = tmp_path / "models"
    proc = run_serve("--models", str(models), "--weights", str(tiny_weights), "--synthetic",
                     "--demo-data", str(demo_data), env=serve_env(tmp_path, ports), start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        curl_line = wait_for_line(lines, seen, "curl --data-binary", timeout=600)
        text = "".join(seen)
        assert "SYNTHETIC WEIGHTS" in text and "weights: ocr real, clip SYNTHETIC" in text  # part by part
        assert f"training a demo model on {demo_data} ({2 * PER_CLASS} of its {2 * PER_CLASS} images" in text
        assert f"Demo model trained on {demo_data}" in text and re.search(r"took \d+\.\d min\.", text)
        assert (repository.active_dir(models) / "manifest.json").is_file()  # the demo model: the first version
        url = curl_line.split()[-1]
        assert url == f"http://127.0.0.1:{ports['stacking']}/"
        for name, port in ports.items():
            assert requests.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5).status_code == 200, name
        photo = next(demo_data.rglob("*.jpg"))
        curl = shutil.which("curl")
        if curl:
            done = subprocess.run([curl, "-s", "--data-binary", f"@{photo}", url], capture_output=True, text=True,
                                  timeout=60)
            answer = done.stdout
        else:
            answer = requests.post(url, data=photo.read_bytes(), timeout=60).text
        assert '"class_id"' in answer and '"synthetic_weights":true' in answer.replace(" ", "")
        assert json.loads(answer)["weights"] == {"ocr": "real", "clip": "synthetic"}
        pids = [int(p) for p in re.findall(r"started \(pid=(\d+)\)", "".join(seen))]
        assert len(pids) == 4

        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
        assert proc.wait(timeout=60) == 0
        for port in ports.values():
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=2)
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        rest = drain(lines)
        assert all(re.search(rf"{name} exited \(pid=\d+, rc=0\)", rest) for name in SERVICES), rest
        gateway_stop, member_stops = rest.index("stacking exited"), [rest.index(f"{n} exited") for n in SERVICES
                                                                      if n != "stacking"]
        assert gateway_stop < min(member_stops)  # the gateway stops first: its last fan-outs find the members
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_for_line(lines: queue.Queue, seen: list[str], needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        if needle in line:
            return line
    pytest.fail(f"no {needle!r} within {timeout} s; output:\n{''.join(seen)[-4000:]}")


def drain(lines: queue.Queue) -> str:
    out = []
    while True:
        try:
            out.append(lines.get(timeout=0.5))
        except queue.Empty:
            return "".join(out)


def test_tampered_models_stop_before_anything_starts(tmp_path, tiny_weights, trained_models):
    models = tmp_path / "models"
    shutil.copytree(trained_models, models)
    learner = models / "learners" / "clip_svm.skops"
    learner.write_bytes(learner.read_bytes() + b"tampered")
    proc = run_serve("--models", str(models), "--weights", str(tiny_weights), "--synthetic")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "clip_svm.skops" in out and "started (pid=" not in out


def test_services_stop_when_serve_is_killed_outright(tmp_path, tiny_weights, trained_models):
    """SIGKILL (or the OOM killer) gives serve no chance to stop its services: each gunicorn master asked the
    kernel for a SIGTERM when its parent dies, so none lives on, orphaned, holding its port."""
    ports = {name: free_port() for name in SERVICES}
    proc = run_serve("--models", str(trained_models), "--weights", str(tiny_weights), "--synthetic",
                     env=serve_env(tmp_path, ports), start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        wait_for_line(lines, seen, "curl --data-binary", timeout=300)
        pids = [int(p) for p in re.findall(r"started \(pid=(\d+)\)", "".join(seen))]
        assert len(pids) == 4
        proc.kill()  # serve only, not its process group
        proc.wait(10)
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not [pid for pid in pids if _alive(pid)], "gunicorn masters outlived serve"
        for port in ports.values():
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in [int(p) for p in re.findall(r"started \(pid=(\d+)\)", "".join(seen))]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False
