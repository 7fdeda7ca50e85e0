"""classify-batch and train's `--engine ray` on a real Ray: a local one in-process (2 actors), a job killed with
SIGKILL and resumed through the CLI, and a second Ray node on loopback. Real OCR, tiny synthetic CLIP."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests

from shared.bulk.job import JOB_FILE, PART_GLOB, classify_batch, read_output
from shared.config import Settings
from shared.features.cache import FeatureCache
from shared.features.extract import extract_features
from shared.learning.data import load_dataset
from tests.bulk.test_work import write_bad_photos
from tests.integration.conftest import REPO, free_port

RAY = Path(sys.executable).with_name("ray")


@pytest.fixture(scope="module")
def photos(trained_models: Path) -> list[Path]:
    return load_dataset(trained_models.parent / "screenshots30.csv").paths


@pytest.fixture(scope="module")
def job_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One torch thread per actor; no feature cache unless a test names one."""
    return Settings.from_env().replace(torch_threads=1, cache_dir=tmp_path_factory.mktemp("unused-cache"))


@pytest.fixture(scope="module")
def twelve(photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    listing = tmp_path_factory.mktemp("twelve") / "list.csv"
    listing.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in photos[::5]))
    return listing


@pytest.fixture(scope="module")
def local_run(twelve: Path, trained_models: Path, tiny_weights: Path, job_settings: Settings,
              tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("local") / "out"
    summary = classify_batch(twelve, out, trained_models, tiny_weights, job_settings, actors=2, batch_size=4,
                             progress=False)
    return summary, read_output(out)


def test_answers_equal_the_gateway_and_each_member(local_run, stack) -> None:
    summary, table = local_run
    assert summary.written == summary.total == 12 and summary.errors == 0 and summary.resumed == 0
    assert summary.synthetic_parts == ["clip"] and "SYNTHETIC clip weights" in summary.line()
    classes = json.loads(table.schema.metadata[b"classes"])
    for row in table.to_pylist():
        data = Path(row["path"]).read_bytes()
        gateway = requests.post(stack.gateway_url, data=data, timeout=30).json()
        assert row["class_id"] == gateway["class_id"][0] and row["class_label"] == gateway["label"]
        assert row["proba"] == pytest.approx(gateway["proba"], abs=1e-9)
        assert row["proba_stack"] == pytest.approx([gateway["probas"][c] for c in classes], abs=1e-9)
        assert row["model_version"] == gateway["model_version"]
        assert json.loads(row["weights"]) == gateway["weights"] and row["synthetic_weights"] is True
        for member in ("ocr_nb", "clip_svm", "clip_logreg"):
            answer = requests.post(stack.urls[member], data=data, timeout=30).json()
            # the CLIP members embed a batch here and one photo there: float noise, not another answer
            assert row[f"proba_{member}"] == pytest.approx([answer["probas"][c] for c in classes], abs=1e-6)
        assert row["label"] == Path(row["path"]).parent.name  # the input's label travels


def run_cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TORCH_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "shared", "classify-batch", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kwargs)


def test_a_job_killed_midway_resumes_without_duplicates_or_gaps(
        photos: list[Path], local_run, trained_models: Path, tiny_weights: Path, tmp_path: Path) -> None:
    listing = tmp_path / "all.csv"
    bad = write_bad_photos(tmp_path / "bad")
    listing.write_text("path\n" + "".join(f"{p}\n" for p in [*photos[:30], *bad]))
    out = tmp_path / "out"
    args = ("--data", str(listing), "--out", str(out), "--models", str(trained_models), "--weights",
            str(tiny_weights), "--actors", "2", "--batch-size", "4", "--part-rows", "4", "--quiet")
    first = run_cli(*args)
    deadline = time.monotonic() + 240
    while len(list(out.glob(PART_GLOB))) < 3 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    written = sum(pq.read_metadata(p).num_rows for p in out.glob(PART_GLOB))
    total = 30 + len(bad)
    assert 0 < written < total, f"the kill came at {written} of {total} rows; the test wants it midway"

    second = run_cli(*args)
    stdout, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr[-3000:]
    assert f"{total} of {total} rows ({total - written} now, {written} from an earlier run), {len(bad)} with an error" \
        in stdout
    table = read_output(out)
    assert table.column("row").to_pylist() == list(range(total))  # each row once
    assert not list(out.glob("*.tmp"))
    errors = dict(zip(table.column("path").to_pylist(), table.column("error").to_pylist()))
    assert all(expected in errors[path] for path, expected in bad.items())
    # The rows the local run also classified have the same answers.
    earlier = {r["path"]: r for r in local_run[1].to_pylist()}
    for row in (r for r in table.to_pylist() if r["path"] in earlier):
        assert row["proba_stack"] == pytest.approx(earlier[row["path"]]["proba_stack"], abs=1e-9)

    other = tmp_path / "other.csv"
    other.write_text("path\n" + "".join(f"{p}\n" for p in photos[:3]))
    refused = run_cli(*args[:1], str(other), *args[2:])
    _, stderr = refused.communicate(timeout=120)
    assert refused.returncode == 2 and "holds a job with input" in stderr and "new --out" in stderr


def test_an_empty_folder_is_refused_before_ray_starts(trained_models: Path, tiny_weights: Path,
                                                      tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = run_cli("--data", str(tmp_path / "empty"), "--out", str(tmp_path / "out"), "--models",
                   str(trained_models), "--weights", str(tiny_weights))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "holds no images" in stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture
def two_nodes(monkeypatch: pytest.MonkeyPatch):
    """A Ray head and a second node on 127.0.0.1, one CPU each (`ray start`, as on two machines)."""
    port = free_port()
    # `ray start --head` turns Ray's token auth on; a joining node and the driver (this process) must say so too.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    try:
        subprocess.run([str(RAY), "start", "--head", "--port", str(port), "--include-dashboard", "false",
                        *common], check=True, env=env, capture_output=True, timeout=120)
        subprocess.run([str(RAY), "start", "--address", f"127.0.0.1:{port}", *common], check=True, env=env,
                       capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_two_ray_nodes_share_the_job_and_give_the_same_rows(
        two_nodes: str, local_run, twelve: Path, trained_models: Path, tiny_weights: Path, job_settings: Settings,
        tmp_path: Path) -> None:
    summary = classify_batch(twelve, tmp_path / "out", trained_models, tiny_weights,
                             job_settings.replace(ray_address=two_nodes), batch_size=2, progress=False)
    assert len(summary.nodes) == 2 and sum(summary.nodes.values()) == 12, summary.nodes
    table, local = read_output(tmp_path / "out"), local_run[1]
    assert table.column("class_id").to_pylist() == local.column("class_id").to_pylist()
    assert np.allclose(table.column("proba_stack").to_pylist(), local.column("proba_stack").to_pylist(), atol=1e-6)
    assert json.loads((tmp_path / "out" / JOB_FILE).read_text())["rows"] == 12


def test_train_features_on_ray_equal_the_serial_ones(photos: list[Path], tiny_weights: Path,
                                                     job_settings: Settings, tmp_path: Path) -> None:
    paths = [*photos[:6], tmp_path / "missing.png"]
    tables = {}
    for engine in ("serial", "ray"):
        settings = job_settings.replace(feature_engine=engine, cache_dir=tmp_path / engine, bulk_actors=1)
        tables[engine] = extract_features(paths, settings, tiny_weights, cache=FeatureCache.default(settings),
                                          progress=False)
    serial, ray = tables["serial"], tables["ray"]
    assert ray.rows == serial.rows == list(range(6)) and ray.hashes == serial.hashes
    assert set(ray.errors) == set(serial.errors) == {6}
    assert ray.values["ocr"] == serial.values["ocr"]
    assert np.allclose(ray.values["clip"], serial.values["clip"], atol=1e-6)
    assert FeatureCache.default(job_settings.replace(cache_dir=tmp_path / "ray")).count() == 12
