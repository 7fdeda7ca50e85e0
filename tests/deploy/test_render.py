"""The checked-in deploy files are the member table's render; `deploy render --check` names what differs."""
from __future__ import annotations

from pathlib import Path

import pytest

from shared import deploy
from shared.cli import main
from shared.deploy.render import HEADER, REPO


def test_the_checked_in_files_are_the_render_of_the_member_table() -> None:
    differing = deploy.differences(REPO)
    assert not differing, (f"{', '.join(differing)} differ from the member table (shared/members.py): "
                           f"regenerate them with `{deploy.COMMAND}` and commit the result")


def test_every_generated_file_says_so_and_by_which_command() -> None:
    for path, text in deploy.render().items():
        assert text.splitlines()[0] == HEADER and deploy.COMMAND in HEADER, path


def test_check_lists_a_changed_a_missing_and_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["deploy", "render", "--root", str(tmp_path)]) == 0
    assert main(["deploy", "render", "--check", "--root", str(tmp_path)]) == 0
    (tmp_path / "docker-compose.yml").write_text("services: {}\n")
    (tmp_path / "deploy/k8s/clip-svm.yaml").unlink()
    gone = tmp_path / "services/gone/wsgi.py"  # a member since removed from the table
    gone.parent.mkdir()
    gone.write_text(HEADER + "\n")
    capsys.readouterr()
    assert main(["deploy", "render", "--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    for path in ("docker-compose.yml", "deploy/k8s/clip-svm.yaml", "services/gone/wsgi.py"):
        assert f"differs from the member table: {path}\n" in err
    assert f"`{deploy.COMMAND}`" in err
    assert main(["deploy", "render", "--root", str(tmp_path)]) == 0
    assert deploy.differences(tmp_path) == [] and not gone.exists()


def test_hand_written_files_are_left_alone(tmp_path: Path) -> None:
    own = tmp_path / "deploy/k8s/models-pvc.yaml"
    own.parent.mkdir(parents=True)
    own.write_text("# hand-written\n")
    deploy.write(tmp_path)
    assert own.read_text() == "# hand-written\n" and deploy.differences(tmp_path) == []
