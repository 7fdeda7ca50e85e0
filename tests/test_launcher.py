"""The local launcher: one gunicorn per service of the member table, each with its own gunicorn config."""
from __future__ import annotations

import pytest

from shared import launcher, members, weights
from shared.weights import offline
from shared.config import Settings
from shared.errors import WeightsMissing


def test_the_launcher_runs_every_service_of_the_table() -> None:
    assert launcher.service_names() == tuple(spec.name for spec in members.services())
    assert launcher.service_ports(Settings()) == {spec.name: spec.port for spec in members.services()}


def test_each_service_command_names_an_existing_gunicorn_config() -> None:
    for name in launcher.service_names():
        command = launcher.service_command(name)
        assert command.startswith("exec ") and f"services/{name}/gunicorn.conf.py" in command
        assert (launcher.REPO / "services" / name / "gunicorn.conf.py").is_file()


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
