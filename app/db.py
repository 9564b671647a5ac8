"""The database: an engine and sessions from ``WBC_DATABASE_URL``, and its migrations.

Default: an SQLite file in ``WBC_STORE_DIR`` (``data/wbc.sqlite3``), migrated at start, so
``make serve`` needs nothing else; SQLite runs in WAL mode with ``synchronous=FULL``, so an
acknowledged change survives a ``kill -9`` and a power cut. Production: PostgreSQL
(``postgresql+psycopg://...``), migrated by ``python -m app db upgrade`` before the
replicas start (compose's ``migrate`` service, the Kubernetes Job).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The newest migration's revision (a test checks it is alembic's head): a worker checks the
# schema against it without importing alembic, which costs about 20 MiB and 0.2 s
HEAD = "0002"


def database_url(url: str | None, store_dir: Path) -> str:
    if url:
        return url
    Path(store_dir).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(store_dir).resolve() / 'wbc.sqlite3'}"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record):  # type: ignore[no-untyped-def]
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Run every migration not yet applied (``alembic upgrade head``)."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, read from alembic's table without alembic."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def migrate_embedded(url: str) -> None:
    """The embedded SQLite default is migrated wherever it is opened; one process at a time
    (the workers of one server start together), and alembic is imported only when a
    migration is due."""
    if not url.startswith("sqlite"):
        return
    import fcntl

    path = make_url(url).database
    if path in (None, "", ":memory:"):  # nothing shared: no lock needed
        upgrade(url)
        return
    with open(Path(path).with_suffix(".migrate-lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        database = Database(url)
        try:
            if not database.is_current():
                upgrade(url)
        finally:
            database.dispose()


def head_revision(url: str) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on an exception."""
        with self.sessions() as session, session.begin():
            yield session

    def is_current(self) -> bool:
        return current_revision(self.engine) == HEAD

    def dispose(self) -> None:
        self.engine.dispose()
