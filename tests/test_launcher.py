"""The local launcher: one gunicorn per service of the member table, each with its own gunicorn config."""
from __future__ import annotations


from shared import launcher, members
from shared.config import Settings


def test_the_launcher_runs_every_service_of_the_table() -> None:
    assert launcher.service_names() == tuple(spec.name for spec in members.services())
    assert launcher.service_ports(Settings()) == {spec.name: spec.port for spec in members.services()}


def test_each_service_command_names_an_existing_gunicorn_config() -> None:
    for name in launcher.service_names():
        command = launcher.service_command(name)
        assert command.startswith("exec ") and f"services/{name}/gunicorn.conf.py" in command
        assert (launcher.REPO / "services" / name / "gunicorn.conf.py").is_file()
