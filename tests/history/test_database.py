"""Where the history lives: HISTORY_DB or the file HISTORY_DB_FILE names, and what messages show of a URL."""
from __future__ import annotations

import pytest

from shared.config import Settings
from shared.errors import SettingsError
from shared.history.database import Database, database_target


def test_the_url_comes_from_the_file_when_one_is_named(tmp_path) -> None:
    secret = tmp_path / "history-db"
    secret.write_text("postgresql://app:s3cret@db:5432/history\n")
    settings = Settings.from_env({"HISTORY_DB": "ignored.sqlite3", "HISTORY_DB_FILE": str(secret)})
    assert database_target(settings) == "postgresql://app:s3cret@db:5432/history"
    assert database_target(Settings.from_env({"HISTORY_DB": "h.sqlite3"})) == "h.sqlite3"


def test_an_unreadable_file_is_refused_naming_the_variable(tmp_path) -> None:
    with pytest.raises(SettingsError, match="HISTORY_DB_FILE="):
        database_target(Settings.from_env({"HISTORY_DB_FILE": str(tmp_path / "missing")}))


def test_a_database_is_named_without_its_password(tmp_path) -> None:
    db = Database("postgresql://app:s3cret@db:5432/history")
    assert str(db) == "postgresql+psycopg://app:***@db:5432/history" and db.backend == "postgresql"
    assert str(Database(tmp_path / "h.sqlite3")) == str(tmp_path / "h.sqlite3")
