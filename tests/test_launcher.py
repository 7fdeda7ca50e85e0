"""The local launcher: one gunicorn per service of the member table, each with its own gunicorn config."""
from __future__ import annotations

import pytest

from shared import launcher, members, weights
from shared.supervisor import gunicorn_command, stop_grace_s
from shared.weights import offline
from shared.config import Settings
from shared.errors import WeightsMissing


def test_the_launcher_runs_every_service_of_the_table() -> None:
    assert launcher.service_names() == tuple(spec.name for spec in members.services())
    assert launcher.service_ports(Settings()) == {spec.name: spec.port for spec in members.services()}


def test_each_service_runs_its_gunicorn_config_on_the_socket_circus_keeps() -> None:
    for name in launcher.service_names():
        command = gunicorn_command(name)
        assert f"services/{name}/gunicorn.conf.py" in command and f"fd://$(circus.sockets.{name})" in command
        assert (launcher.REPO / "services" / name / "gunicorn.conf.py").is_file()


def test_circus_waits_past_each_services_drain_and_longest_request() -> None:
    settings = Settings()
    assert stop_grace_s(settings) > settings.drain_seconds + max(settings.deadline_s, settings.member_timeout_s)


def test_a_folder_with_any_synthetic_part_is_served_only_on_purpose(tiny_weights) -> None:
    with pytest.raises(WeightsMissing, match=r"SYNTHETIC in part \(clip SYNTHETIC, ocr real\)"):
        launcher.prepare_weights(tiny_weights, Settings(), synthetic_ok=False)
    note = launcher.prepare_weights(tiny_weights, Settings(), synthetic_ok=True)
    assert note == "weights: ocr real, clip SYNTHETIC (random init: not CLIP's accuracy)"


def test_missing_weights_with_synthetic_become_the_offline_ones(tmp_path, monkeypatch, capsys) -> None:
    calls, write = [], offline.write_offline_weights

    def tiny_offline(out, settings, tiny=False):  # the real writer, with the tiny CLIP so the test stays quick
        calls.append(out)
        return write(out, settings, tiny=True)

    monkeypatch.setattr(offline, "write_offline_weights", tiny_offline)
    note = launcher.prepare_weights(tmp_path / "w", Settings(), synthetic_ok=True)
    assert calls == [tmp_path / "w"] and weights.read_weights_info(tmp_path / "w")["parts"] == {
        "clip": "synthetic", "ocr": "real"}
    out = capsys.readouterr().out
    assert "Wrote " in out and "clip SYNTHETIC, ocr real" in out and "SYNTHETIC WEIGHTS, in part:" in out
    assert note.startswith("weights: ocr real, clip SYNTHETIC")
