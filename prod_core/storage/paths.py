"""Pre-flight checks of a database path: one clear line instead of a SQLite traceback.

``check_db_path`` looks at the path the way SQLite will use it, before anything is
created: a directory, a parent that is a regular file, a file that is not SQLite, a
missing or empty file where an existing database is required (``create=False``, the
operator CLI), and a file or directory that cannot be written (WAL keeps ``-wal`` and
``-shm`` files beside the database, so the directory must be writable too). Each
refusal is a ``StorageError`` whose message names the path, what is wrong and the fix.

``settings_db_hint`` tells an operator which database the settings point at (and where
that value came from), for messages that say "this is not the runner's database".
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from prod_core.storage.migrations import StorageError, current_version

__all__ = ["SQLITE_HEADER", "check_db_path", "require_crupto_schema", "settings_db_hint"]

SQLITE_HEADER = b"SQLite format 3\x00"


def _resolve(path_or_url: str) -> str:
    # Imported here: sqlite.py imports this module for Storage.__init__.
    from prod_core.storage.sqlite import resolve_sqlite_path

    return resolve_sqlite_path(path_or_url)


def _show(path: Path) -> str:
    """The path as given, plus its absolute form when it is relative (the cwd matters)."""
    if path.is_absolute():
        return str(path)
    return f"{path} (= {Path(os.path.abspath(path))})"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _settings_db() -> tuple[str, str, Path | None]:
    """``(DB_PATH value for display, where it came from, absolute file or None)``."""
    from prod_core.configs import ConfigError, load_settings
    from prod_core.configs.settings import parse_env_file
    from prod_core.storage.sqlite import _redact

    env_path = Path(os.environ.get("ENV_FILE", ".env"))
    if "DB_PATH" in os.environ:
        origin = "environment DB_PATH"
    else:
        try:
            origin = f"{env_path} DB_PATH" if "DB_PATH" in parse_env_file(env_path) else "default"
        except (ConfigError, OSError, UnicodeDecodeError):
            origin = "default"
    value = load_settings().db_path  # ConfigError handled by the caller
    try:
        resolved = _resolve(value)
    except StorageError:
        return _redact(value), origin, None
    if resolved == ":memory:":
        return value, origin, None
    return value, origin, Path(os.path.abspath(Path(resolved).expanduser()))


def settings_db_hint(path: str | None = None) -> str:
    """Which database the settings point at (and why), e.g. for "not the runner's database".

    Origin follows the settings precedence: environment variable > ``.env`` (``ENV_FILE``)
    > default. ``path``, when given, is the path that was refused: if the settings point at
    that same file, the hint says so. Never raises: unreadable settings are reported.
    """
    from prod_core.configs import ConfigError

    try:
        value, origin, target = _settings_db()
    except ConfigError as exc:
        return f"the settings cannot be read ({_one_line(exc)}); pass --db with the database the runner uses"
    where = f"{origin}, i.e. {target}" if target is not None and str(target) != value else origin
    if path is not None and target is not None and Path(os.path.abspath(Path(path).expanduser())) == target:
        return (
            f"it is the settings' DB_PATH ({where}) and no runner has made a database there: "
            f"pass --db with the database the runner uses, or start the runner first"
        )
    return f"the settings give DB_PATH={value} ({where}); pass --db with the database the runner uses"


def _read_only_reason(target: Path) -> str:
    try:
        if os.statvfs(target).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
    except (OSError, AttributeError):  # no statvfs on Windows
        pass
    return "no write permission for this user"


def _check_writable(path: Path, shown: str) -> None:
    """The file (if it exists) and its directory must be writable: SQLite writes -wal/-shm beside it."""
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StorageError(
            f"database {shown} is read-only ({_read_only_reason(path)}); the runner and the CLI write to it: "
            f"make it writable for this user (chmod u+rw, or remount read-write) or copy it to a writable location"
        )
    parent = Path(os.path.abspath(path)).parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StorageError(
            f"database {shown}: its directory {parent} is read-only ({_read_only_reason(parent)}); SQLite must "
            f"create the -wal and -shm files beside the database: make the directory writable for this user "
            f"or point --db/DB_PATH at a writable location"
        )


def check_db_path(path_or_url: str, *, create: bool) -> str:
    """Check a DB path or ``sqlite:///`` URL before SQLite touches it; return the file path.

    ``create=True`` (the runner): a missing file (and missing parent directories) may be
    created. ``create=False`` (the CLI): the file must already exist and be an SQLite
    file; whether it holds crupto's schema is checked by ``Storage``. Either way the
    database must be writable (WAL). ``:memory:`` is accepted as is. Nothing is created.
    """
    from prod_core.storage.postgres import is_postgres_url

    if is_postgres_url(path_or_url):  # a server, not a file: Storage checks it when it connects
        return str(path_or_url).strip()
    resolved = _resolve(path_or_url)
    if resolved == ":memory:":
        return resolved
    path = Path(resolved).expanduser()
    shown = _show(path)

    if path.is_symlink() and not path.exists():
        raise StorageError(
            f"database {shown} is a symlink to a missing target ({os.readlink(path)}); fix the link "
            f"or point --db/DB_PATH at the database file"
        )
    if not path.exists():
        # Find the nearest existing ancestor: it must be a directory.
        ancestor = Path(os.path.abspath(path)).parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir() and not create:
            raise StorageError(
                f"database {shown} cannot exist: {ancestor} is a regular file, not a directory; "
                f"{settings_db_hint()}"
            )
        if not ancestor.is_dir():
            raise StorageError(
                f"cannot create the directory {Path(os.path.abspath(path)).parent} for database {shown}: "
                f"{ancestor} is a regular file, not a directory; point --db/DB_PATH at a writable location "
                f"inside a directory"
            )
        if not create:
            raise StorageError(f"database {shown} does not exist (nothing was created); {settings_db_hint(resolved)}")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise StorageError(
                f"cannot create database {shown}: directory {ancestor} is read-only "
                f"({_read_only_reason(ancestor)}); make it writable for this user or point --db/DB_PATH "
                f"at a writable location"
            )
        return resolved

    if path.is_dir():
        hint = f"; {settings_db_hint()}" if not create else ""
        raise StorageError(
            f"database path {shown} is a directory, not a database file; pass the file inside it, "
            f"e.g. --db {path / 'crupto.db'}{hint}"
        )
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        raise StorageError(
            f"database path {shown} is not a regular file (a device, socket or pipe); "
            f"point --db/DB_PATH at a database file such as storage/crupto.db"
        )
    try:
        with path.open("rb") as fh:
            header = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StorageError(
            f"cannot read database {shown}: {exc.strerror or exc}; give this user read and write "
            f"permission or point --db/DB_PATH elsewhere"
        ) from exc
    if not header:
        if not create:
            raise StorageError(
                f"database {shown} is an empty file, not a crupto database (nothing was changed); "
                f"{settings_db_hint(resolved)}"
            )
        # An empty file is a valid empty SQLite database once it can be written.
    elif header != SQLITE_HEADER and not create:
        raise StorageError(
            f"{shown} is not an SQLite database (its first bytes are not 'SQLite format 3'), so it is not "
            f"the runner's database (nothing was changed); {settings_db_hint()}"
        )
    elif header != SQLITE_HEADER:
        raise StorageError(
            f"{shown} is not a usable SQLite database (its first bytes are not 'SQLite format 3'); "
            f"move it away (or restore a backup), or point --db/DB_PATH at another file"
        )
    _check_writable(path, shown)
    return resolved


def require_crupto_schema(path: str) -> None:
    """Refuse a database without crupto's schema, reading it without creating anything.

    With no -wal file beside it, the main file holds every committed page, so it is read
    ``immutable`` (no locks, no -shm/-wal created). With a -wal (a runner may be writing),
    a plain read-only connection sees the latest commits.
    """
    if path == ":memory:":
        raise StorageError(
            f"database :memory: is a private, empty in-memory database, not a crupto database; {settings_db_hint()}"
        )
    file = Path(path).expanduser().resolve()
    shown = _show(Path(path).expanduser())
    has_journal = any(Path(f"{file}{suffix}").exists() for suffix in ("-wal", "-journal"))
    uri = file.as_uri() + ("?mode=ro" if has_journal else "?mode=ro&immutable=1")
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open database {shown}: {exc}; check the path and its permissions") from exc
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = current_version(conn) if "schema_migrations" in tables else 0
    except sqlite3.DatabaseError as exc:
        raise StorageError(
            f"{shown} is not a usable SQLite database ({exc}); move it away (or restore a backup), "
            f"or check --db: {settings_db_hint()}"
        ) from exc
    finally:
        conn.close()
    if version < 1 or "runs" not in tables:
        what = "holds no tables" if not tables else f"has no crupto schema (tables: {', '.join(sorted(tables)[:5])})"
        raise StorageError(
            f"database {shown} is an SQLite file but {what}, so it is not a crupto database "
            f"(nothing was changed); {settings_db_hint(path)}"
        )
