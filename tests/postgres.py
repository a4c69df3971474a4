"""PostgreSQL for tests: a real server, or a clear skip.

`postgres_server` (session): the server named by $SATSANG_TEST_PG_URL, else a throwaway
one started from Debian's binaries (`/usr/lib/postgresql/*/bin/initdb` and `pg_ctl`)
in a temp directory, listening only on a unix socket there, run as an unprivileged
user when the tests run as root (PostgreSQL refuses to run as root). Where neither
works the tests that need it skip with "no PostgreSQL server could be started: why";
with SATSANG_TEST_PG_REQUIRED=1 (CI, where the server is installed) they fail instead.

`database` (per test, parametrised over "sqlite" and "postgresql"): somewhere to open
a ResponseStore. Each PostgreSQL test gets a fresh schema (its URL sets search_path),
so tests never see each other's rows and an external server needs no CREATEDB right.

Use from a test module: `from postgres import database, postgres_server  # noqa: F401`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pytest

PG_URL_ENV = "SATSANG_TEST_PG_URL"
PG_REQUIRED_ENV = "SATSANG_TEST_PG_REQUIRED"
BACKENDS = ("sqlite", "postgresql")

# Unprivileged accounts to run the server as when the tests run as root, first found wins.
_SERVER_USERS = ("postgres", "nobody")
_PORT = 5432  # only names the socket file, in a directory of our own: no clash with other servers


class PostgresUnavailable(Exception):
    pass


@dataclass
class PostgresServer:
    url: str  # an admin URL: may create and drop schemas

    def new_schema_url(self) -> str:
        """Create an empty schema and return a URL whose search_path is it."""
        import psycopg

        schema = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {schema}")
        return with_search_path(self.url, schema)

    def drop_schema(self, url: str) -> None:
        import psycopg

        schema = dict(parse_qsl(urlsplit(url).query))["options"].removeprefix("-c search_path=")
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def with_search_path(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-c search_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


@dataclass(frozen=True)
class Database:
    """Where one test's ResponseStore lives: a workspace directory, and a URL for PostgreSQL."""

    backend: str
    root: Path
    url: str | None

    def open(self):
        from curation.responses import ResponseStore

        return ResponseStore.open(self.root, url=self.url)

    def connect(self):
        """A raw DB-API connection to the same database, for tests that go behind the store's back."""
        if self.backend == "sqlite":
            import sqlite3

            return sqlite3.connect(self.root / "reviews.db", isolation_level=None)
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    def placeholder(self, sql: str) -> str:
        return sql if self.backend == "sqlite" else sql.replace("?", "%s")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    given = os.environ.get(PG_URL_ENV)
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'psycopg[binary]')")
    if given:
        problem = None
        try:
            psycopg.connect(given, connect_timeout=5).close()
        except psycopg.Error as error:
            problem = f"${PG_URL_ENV} does not answer: {' '.join(str(error).split())}"
        if problem:
            _unavailable(problem)
        yield PostgresServer(given)
        return
    try:
        server, stop = _start_throwaway_server()
    except PostgresUnavailable as why:
        problem = str(why)
    else:
        problem = None
    if problem:
        _unavailable(problem)
    try:
        yield server
    finally:
        stop()


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    # The store reads $SATSANG_DB_URL: a developer's own setting must not redirect the sqlite runs.
    monkeypatch.delenv("SATSANG_DB_URL", raising=False)
    if request.param == "sqlite":
        yield Database("sqlite", tmp_path, None)
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.new_schema_url()
    yield Database("postgresql", tmp_path, url)
    server.drop_schema(url)


def _unavailable(why: str):
    message = f"no PostgreSQL server could be started: {why}"
    if os.environ.get(PG_REQUIRED_ENV) == "1":
        pytest.fail(f"{message} (and ${PG_REQUIRED_ENV}=1)", pytrace=False)
    pytest.skip(message)


def _find_bindir() -> Path:
    def major_version(bindir: str) -> int:
        name = Path(bindir).parent.name
        return int(name) if name.isdigit() else 0

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major_version)
    for bindir in reversed(candidates):
        if (Path(bindir) / "initdb").exists() and (Path(bindir) / "pg_ctl").exists():
            return Path(bindir)
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    raise PostgresUnavailable(
        "initdb and pg_ctl not found (install Debian's postgresql package, or set"
        f" ${PG_URL_ENV} to a server's URL)"
    )


def _server_account() -> tuple[int, int] | None:
    """(uid, gid) to run the server as, or None to run it as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in _SERVER_USERS:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise PostgresUnavailable(f"running as root and none of the users {list(_SERVER_USERS)} exists to run the server")


def _start_throwaway_server() -> tuple[PostgresServer, object]:
    bindir = _find_bindir()
    account = _server_account()
    base = Path(tempfile.mkdtemp(prefix="satsang-pg-"))
    if account is not None:
        os.chown(base, *account)
    data, log = base / "data", base / "server.log"

    def run(*command: str, timeout: float = 60) -> None:
        as_user = {"user": account[0], "group": account[1], "extra_groups": []} if account else {}
        try:
            result = subprocess.run(
                command, cwd=base, capture_output=True, text=True, timeout=timeout, **as_user
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise PostgresUnavailable(f"{Path(command[0]).name} failed: {error}") from None
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()[-5:]
            if log.exists():
                output += log.read_text(errors="replace").strip().splitlines()[-5:]
            raise PostgresUnavailable(f"{Path(command[0]).name} exited {result.returncode}: {' | '.join(output)}")

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "satsang", "--auth=trust", "-E", "UTF8",
            "--locale=C", "--no-sync", "--no-instructions")
        with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
            # Socket only, in our own directory: nothing else can reach it, no port can clash.
            conf.write(
                f"\nlisten_addresses = ''\nunix_socket_directories = '{base}'\nport = {_PORT}\n"
                "max_connections = 40\nshared_buffers = 16MB\n"
            )
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start", timeout=90)
    except PostgresUnavailable:
        shutil.rmtree(base, ignore_errors=True)
        raise

    def stop() -> None:
        try:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        except PostgresUnavailable:
            pass
        shutil.rmtree(base, ignore_errors=True)

    url = f"postgresql://satsang@/postgres?host={quote(str(base), safe='')}&port={_PORT}"
    return PostgresServer(url), stop
