"""A fourth member is one `register_member` line: rendered into every deploy file, trained, and served by
`python -m shared serve` next to the other three, the gateway stacking it with them.

A member registered in this process would be unknown to the subprocesses, so the test works on a copy of shared/ and
services/ whose members.py gains the line, as a user's checkout would.
"""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import requests
import yaml

from tests.integration.conftest import REPO, SERVICES, free_port, jpeg_bytes
from tests.integration.test_serve import serve_env, wait_for_line

NEW = "clip_logreg_b"
REGISTRATION = f'''
register_member(MemberSpec("{NEW}", 5004, "172.16.238.14", extractor="clip",
                           learner="shared.learning.learners:logreg_on_embeddings",
                           summary="CLIP image embedding -> LogisticRegression, a second one"))
'''


def checkout_with_a_fourth_member(root: Path) -> Path:
    """shared/ and services/ copied under root, the new member appended to the copy's table."""
    for part in ("shared", "services"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    with (root / "shared" / "members.py").open("a") as table:
        table.write(REGISTRATION)
    return root


def run(root: Path, env: dict[str, str], *args: str) -> str:
    """`python -m shared ARGS` in the copy; its output, or a failure showing it."""
    done = subprocess.run([sys.executable, "-m", "shared", *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def assert_rendered(root: Path) -> None:
    """The new member is a service of compose and Swarm, a k8s manifest, and in each MEMBER_URLS."""
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]
    swarm = yaml.safe_load((root / "deploy/swarm/stack.yml").read_text())["services"]
    assert NEW in compose and NEW in compose["stacking"]["depends_on"] and NEW in swarm
    assert f"{NEW}=http://clip-logreg-b:5004" in compose["stacking"]["environment"]["MEMBER_URLS"]
    assert f"{NEW}=http://{NEW}:5004" in swarm["stacking"]["environment"]["MEMBER_URLS"]
    assert "clip-logreg-b.yaml" in yaml.safe_load((root / "deploy/k8s/kustomization.yaml").read_text())["resources"]
    assert f"{NEW}=http://clip-logreg-b:5004" in (root / "deploy/k8s/stacking.yaml").read_text()
    assert f"{NEW}=http://clip-logreg-b:5004" in (root / "docker/Dockerfile").read_text()
    assert (root / "services" / NEW / "gunicorn.conf.py").is_file()


def test_a_fourth_member_is_rendered_trained_and_served(tmp_path, tiny_weights, trained_models):
    root = checkout_with_a_fourth_member(tmp_path / "checkout")
    cache = tmp_path / "cache"  # trained_models' features: the same images and weights, so no extraction
    shutil.copytree(trained_models.parent / "cache", cache)
    ports = {name: free_port() for name in (*SERVICES, NEW)}
    env = {k: v for k, v in serve_env(tmp_path, ports).items() if k != "PYTHONPATH"}
    env["FEATURE_CACHE_DIR"] = str(cache)

    run(root, env, "deploy", "render")
    assert_rendered(root)
    models = tmp_path / "models"
    run(root, env, "train", "--data", str(trained_models.parent / "screenshots30.csv"), "--out", str(models),
        "--weights", str(tiny_weights), "--folds", "3", "--seed", "0")

    proc = subprocess.Popen([sys.executable, "-m", "shared", "serve", "--models", str(models), "--weights",
                             str(tiny_weights), "--synthetic"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        wait_for_line(lines, [], "curl --data-binary", timeout=300)
        body = requests.post(f"http://127.0.0.1:{ports['stacking']}/", data=jpeg_bytes(), timeout=60).json()
        assert set(body["members"]) == {"ocr_nb", "clip_svm", "clip_logreg", NEW}, body
        assert body["members"][NEW]["ok"] is True and body["degraded"] is False, body
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
