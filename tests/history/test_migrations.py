"""The history's schema under Alembic, on both backends: a new database gets exactly schema.py's tables, files from
earlier releases open and keep their rows, and two gateway versions overlap during a rolling update."""
from __future__ import annotations

import logging
import os
import sqlite3
import threading

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.autogenerate import compare_metadata
from sqlalchemy import create_engine, inspect

from shared.history import HistoryStore
from shared.history.database import MIGRATIONS, Database
from shared.history.schema import metadata
from tests.history.conftest import record
from tests.history.test_labels import answered

# The tables as the first release made them: no column added since.
FIRST_RELEASE = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, request_id TEXT, sha256 TEXT, size_bytes INTEGER,
    class_id INTEGER, label TEXT, proba REAL, latency_ms REAL, degraded INTEGER NOT NULL DEFAULT 0, source TEXT,
    synthetic INTEGER NOT NULL DEFAULT 0, members TEXT);
CREATE INDEX IF NOT EXISTS ix_predictions_ts ON predictions (ts, id);
CREATE INDEX IF NOT EXISTS ix_predictions_label_ts ON predictions (label, ts, id);
CREATE INDEX IF NOT EXISTS ix_predictions_degraded_ts ON predictions (degraded, ts, id);
CREATE INDEX IF NOT EXISTS ix_predictions_request ON predictions (request_id);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY REFERENCES predictions (id) ON DELETE CASCADE, thumbnail BLOB, image BLOB);
"""
# What the release before Alembic added on open (ADDED_COLUMNS, ADDED_INDEXES), in a WAL file.
PREVIOUS_RELEASE = FIRST_RELEASE + """
ALTER TABLE predictions ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;
ALTER TABLE predictions ADD COLUMN model_version TEXT;
ALTER TABLE predictions ADD COLUMN probas TEXT;
ALTER TABLE predictions ADD COLUMN priority REAL;
ALTER TABLE predictions ADD COLUMN in_training INTEGER NOT NULL DEFAULT 0;
ALTER TABLE predictions ADD COLUMN true_label TEXT;
ALTER TABLE predictions ADD COLUMN labelled_by TEXT;
ALTER TABLE predictions ADD COLUMN labelled_at REAL;
ALTER TABLE predictions ADD COLUMN label_changes INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS ix_predictions_review ON predictions (priority, id) WHERE true_label IS NULL;
CREATE INDEX IF NOT EXISTS ix_predictions_labelled ON predictions (ts, id) WHERE true_label IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_predictions_version_ts ON predictions (model_version, ts, id);
"""
HEAD, REVISIONS = "0002", 2  # the newest revision in shared/history/migrations/versions/, and how many there are
# A later release's revision: additive, as every revision must be (docs/history.md).
NEXT_REVISION = '''
import sqlalchemy as sa
from alembic import op

revision = "9999_test"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("predictions", sa.Column("reviewer_note", sa.String))
    op.create_index("ix_predictions_sha256", "predictions", ["sha256"])
'''


def _revision(store: HistoryStore) -> set[str]:
    with store.db.begin() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def _schema_differences(store: HistoryStore) -> list:
    with store.db.begin() as conn:
        return compare_metadata(MigrationContext.configure(conn), metadata)


def test_a_new_database_is_at_the_newest_revision_with_exactly_the_code_s_schema(new_db) -> None:
    s = HistoryStore(new_db("fresh"))
    s.record(answered(1))
    assert s.flush() and s.count() == 1
    assert _revision(s) == {HEAD}
    assert _schema_differences(s) == []  # the revisions make what schema.py reads and writes, indexes included
    s.close()


def _lacks(store: HistoryStore) -> set[str]:
    """Columns and indexes schema.py has that the database lacks (an old file's own types, TEXT or REAL, stay)."""
    with store.db.begin() as conn:
        found = inspect(conn)
        have = {f"{t}.{c['name']}" for t in metadata.tables for c in found.get_columns(t)}
        have |= {i["name"] for t in metadata.tables for i in found.get_indexes(t)}
    want = {f"{t.name}.{c.name}" for t in metadata.tables.values() for c in t.columns}
    want |= {i.name for t in metadata.tables.values() for i in t.indexes}
    return want - have


def _sqlite_file(path, script: str) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(script)
    conn.execute("INSERT INTO predictions (ts, request_id, label, proba, members) VALUES (1.0, 'old', 'milk', 0.5, '{}')")
    conn.commit()
    conn.close()


def test_a_sqlite_file_of_the_first_release_opens_and_keeps_its_rows(tmp_path) -> None:
    path = tmp_path / "old.sqlite3"
    _sqlite_file(path, FIRST_RELEASE)
    s = HistoryStore(path)
    old = s.query().items[0]
    assert (old["request_id"], old["model_version"], old["probas"], old["true_label"]) == ("old", None, None, None)
    assert s.set_label(old["id"], "apple", "a")["correct"] is False
    assert s.review_queue().items == []  # no probabilities, no priority: not queued
    s.record(answered(1))
    assert s.flush() and s.count() == 2
    assert _revision(s) == {HEAD} and _lacks(s) == set()
    s.close()


def test_a_sqlite_file_of_the_previous_release_is_stamped_and_keeps_rows_and_labels(tmp_path) -> None:
    path = tmp_path / "previous.sqlite3"
    _sqlite_file(path, PREVIOUS_RELEASE)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("UPDATE predictions SET true_label = 'apple', labelled_by = 'key:abc', label_changes = 2")
    conn.commit()
    conn.close()
    s = HistoryStore(path)
    old = s.query().items[0]
    assert (old["true_label"], old["labelled_by"], old["label_changes"]) == ("apple", "key:abc", 2)
    assert _revision(s) == {HEAD} and _lacks(s) == set()
    s.close()


def _newer_config(tmp_path, url: str) -> Config:
    """Alembic as a later release would run it: our revisions plus NEXT_REVISION."""
    versions = tmp_path / "next_versions"
    versions.mkdir()
    (versions / "9999_test.py").write_text(NEXT_REVISION)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", os.pathsep.join((str(MIGRATIONS / "versions"), str(versions))))
    config.attributes["url"] = url
    return config


def test_during_a_rolling_update_this_release_works_on_the_next_release_s_schema(new_db, tmp_path, caplog) -> None:
    target = new_db("rolling")
    current = HistoryStore(target)  # this release's gateway, still serving
    current.record(answered(1))
    assert current.flush()
    stop = threading.Event()

    def keep_recording() -> None:
        i = 2
        while not stop.is_set():
            current.record(answered(i))
            i += 1
            stop.wait(0.01)

    writer = threading.Thread(target=keep_recording)
    writer.start()
    # The next release's gateway starts and migrates the shared database while this one writes.
    engine = create_engine(Database(target).url)
    with engine.begin() as conn:
        config = _newer_config(tmp_path, str(target))
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    engine.dispose()
    stop.set()
    writer.join()
    assert current.flush()
    assert "reviewer_note" in {c["name"] for c in inspect(create_engine(Database(target).url)).get_columns("predictions")}
    # This release keeps writing, reading and labelling, and a fresh process of it opens the newer database as is.
    with caplog.at_level(logging.WARNING, logger="shared.history.database"):
        restarted = HistoryStore(target)
        restarted.record(answered(10_000))
        assert restarted.flush()
        items = restarted.query(limit=500).items
    assert "newer than this release" in caplog.text
    assert current.last_error is None and restarted.last_error is None
    assert len(items) == current.count() and items[0]["request_id"] == "req-10000"
    assert restarted.set_label(items[-1]["id"], "milk", "a")["label_outcome"] == "new"
    current.close()
    restarted.close()


def test_gateways_starting_together_migrate_once(new_db, caplog) -> None:
    target = new_db("together")
    stores = [HistoryStore(target) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    errors: list[Exception] = []

    def first_write(store: HistoryStore) -> None:
        barrier.wait()
        try:
            store.record(record(id(store) % 1000))
            assert store.flush()
            store.count()
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=first_write, args=(s,)) for s in stores]
    with caplog.at_level(logging.INFO, logger="alembic.runtime.migration"):
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    # One process upgraded (one line per revision); the others found it done.
    assert sum("Running upgrade" in r.getMessage() for r in caplog.records) == REVISIONS
    assert not errors and all(s.last_error is None for s in stores)
    assert stores[0].count() == 4 and _revision(stores[0]) == {HEAD}
    for s in stores:
        s.close()
