"""The history's database: a SQLAlchemy engine over a SQLite file or a PostgreSQL URL, migrated by Alembic.

One code path for both: the store writes SQLAlchemy Core; what differs (SQLite's pragmas and write lock,
PostgreSQL's pool and timeouts, the lock a migration holds) is set here.
"""
from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from shared.config import HISTORY_URL_SCHEMES, Settings
from shared.errors import SettingsError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# A fixed key for pg_advisory_xact_lock: gateways starting together migrate one at a time.
MIGRATION_LOCK_KEY = 0x48495354  # "HIST"
# PostgreSQL: how long a connect or a statement may take before the store calls the database unavailable.
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 10_000
POOL_SIZE = 4  # per gateway worker: the writer thread, a label call and reads


def database_target(settings: Settings) -> str:
    """HISTORY_DB, or the contents of HISTORY_DB_FILE when that is set (a secret mounted as a file)."""
    if not settings.history_db_file:
        return settings.history_db
    try:
        return Path(settings.history_db_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsError(f"HISTORY_DB_FILE={settings.history_db_file!r} cannot be read: {exc.strerror}") from None


def is_url(target: str | os.PathLike) -> bool:
    """True for a database URL (postgresql://...), False for a SQLite file path."""
    return "://" in str(target)


class Database:
    """Where the history lives. Engines are made lazily and again after a fork (a pool never crosses processes);
    the schema is brought to the newest revision this code knows, once per process, before the first use."""

    def __init__(self, target: str | os.PathLike):
        if is_url(target):
            url = make_url(str(target))
            if url.drivername not in HISTORY_URL_SCHEMES:
                raise ValueError(f"HISTORY_DB: expected a SQLite path or a postgresql:// URL, not {url.drivername}://")
            if "@" in (url.host or ""):
                raise ValueError("HISTORY_DB: the URL's host holds an '@': percent-encode the password (@ is %40)")
            self.url = url.set(drivername="postgresql+psycopg")
            self.path: Path | None = None
        else:
            self.path = Path(target)
            self.url = make_url(f"sqlite:///{self.path}")
        self.backend = self.url.get_backend_name()  # "sqlite" or "postgresql"
        self._engine: Engine | None = None
        self._engine_pid = 0
        self._engine_lock = threading.Lock()
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    def __str__(self) -> str:
        """What logs and messages name: the file, or the URL without its password."""
        return str(self.path) if self.path is not None else self.url.render_as_string(hide_password=True)

    def exists(self) -> bool:
        """False only for a SQLite file not created yet (reading it is an empty history, not an error)."""
        return self.path is None or self.path.exists()

    @contextmanager
    def begin(self, *, write_lock: bool = False) -> Iterator[Connection]:
        """A connection in a transaction, committed on leaving. write_lock: SQLite takes its write lock at BEGIN
        (BEGIN IMMEDIATE), so a read-then-update is one step against every other writer; PostgreSQL callers lock
        rows with SELECT ... FOR UPDATE."""
        if not self._schema_ready:
            self._ensure_schema()
        with self.engine().connect() as conn:
            conn.execution_options(history_write_lock=write_lock)
            with conn.begin():
                yield conn

    def engine(self) -> Engine:
        if self._engine is not None and self._engine_pid == os.getpid():
            return self._engine
        with self._engine_lock:
            if self._engine is not None and self._engine_pid == os.getpid():
                return self._engine
            if self._engine is not None:
                self._engine.dispose(close=False)  # the parent's connections stay the parent's
            self._engine = self._make_engine()
            self._engine_pid = os.getpid()
            return self._engine

    def dispose(self) -> None:
        if self._engine is not None and self._engine_pid == os.getpid():
            self._engine.dispose()
        self._engine = None

    def _make_engine(self) -> Engine:
        if self.path is None:
            return create_engine(
                self.url, pool_size=POOL_SIZE, max_overflow=POOL_SIZE, pool_pre_ping=True, pool_timeout=CONNECT_TIMEOUT_S,
                connect_args={"connect_timeout": CONNECT_TIMEOUT_S,
                              "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                              "application_name": "classifier-history",
                              # A server gone without a reset (a killed task, a partition) is noticed in ~15 s,
                              # not after the kernel's retransmissions (~15 min).
                              "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
                              "tcp_user_timeout": 15_000})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(self.url, connect_args={"timeout": 10.0, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine

    def _ensure_schema(self) -> None:
        # Once per process, one thread at a time: a reader racing the writer's first schema got "database is locked".
        with self._schema_lock:
            if self._schema_ready:
                return
            try:
                self._migrate()
            except SQLAlchemyError:
                raise
            except Exception as exc:  # the driver's own (the WAL pragma) or Alembic's: unavailable, not a bug
                raise OperationalError("migrating the history's schema", None, exc) from exc
            self._schema_ready = True

    def _migrate(self) -> None:
        with self.engine().connect() as conn:
            if self.backend == "sqlite":  # outside any transaction, and kept in the file
                conn.connection.driver_connection.execute("PRAGMA journal_mode=WAL")
            conn.execution_options(history_write_lock=True)  # SQLite: one migrating process at a time
            with conn.begin():
                if self.backend == "postgresql":  # PostgreSQL: the same, by an advisory lock
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                    conn.execute(text("SET LOCAL statement_timeout = 0"))  # an index on a big table takes long
                migrate(conn)


def migrate(conn: Connection) -> None:
    """Bring the schema to the newest revision this code has; a database at a revision it does not know (a newer
    gateway migrated it during a rolling update) is used as it is, since every revision is additive."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    script = ScriptDirectory.from_config(config)
    current = MigrationContext.configure(conn).get_current_heads()
    known = {rev.revision for rev in script.walk_revisions()}
    newer = [head for head in current if head not in known]
    if newer:
        log.warning("history: the database is at revision %s, newer than this release's %s; using it as it is "
                    "(revisions are additive)", ", ".join(newer), script.get_current_head())
        return
    if set(current) == {script.get_current_head()}:
        return
    command.upgrade(config, "head")


def _sqlite_connect(dbapi_connection, _record) -> None:
    # SQLAlchemy issues BEGIN itself (_sqlite_begin): pysqlite's own implicit transactions are off.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes, one fsync per checkpoint
    cursor.execute("PRAGMA foreign_keys=ON")  # images go with their record
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("history_write_lock") else "BEGIN")
