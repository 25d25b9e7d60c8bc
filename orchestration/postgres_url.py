"""PostgreSQL URLs and connections, shared by the database source and the PostgreSQL serving target.

A URL is ``postgresql://user@host:5432/database?schema=name`` plus libpq's own parameters (``sslmode=...``).
The password never appears in it (a URL is recorded with the run's parameters): it comes from an environment
variable of ours (``CRM_SOURCE_PASSWORD``, ``CRM_SERVING_PASSWORD``) or libpq's ``PGPASSWORD`` / ``~/.pgpass``.
``PostgresUrl.display`` is the URL without it; ``scrub`` takes it out of a driver's error message.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

SCHEMES = ("postgresql://", "postgres://")
NAME = re.compile(r"[a-z_][a-z0-9_]{0,29}")  # short enough for our suffixes within PostgreSQL's 63 characters


class DatabaseError(RuntimeError):
    """A database cannot be used; the message says why in one line, without the password."""


def is_database_url(text: str | None) -> bool:
    return bool(text) and str(text).strip().lower().startswith(SCHEMES)


def has_password(url: str) -> bool:
    return bool(urlsplit(url.strip()).password)


@dataclass(frozen=True)
class PostgresUrl:
    uri: str = field(repr=False)  # what libpq gets: our own parameters removed, the password added
    schema: str
    options: dict  # our own parameters other than the schema (e.g. reader_role)
    display: str  # the URL as given, without a password

    @classmethod
    def parse(cls, url: str, *, what: str, password_env: str, default_schema: str,
              own: tuple[str, ...] = ()) -> "PostgresUrl":
        """``what`` names the URL in messages ("serving", "source"); ``own`` lists our parameters besides schema."""
        parts = urlsplit(url.strip())
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        schema = params.pop("schema", default_schema) or default_schema
        options = {name: params.pop(name) for name in own if params.get(name)}
        for name, value in (("schema", schema), *options.items()):
            if not NAME.fullmatch(value):
                raise DatabaseError(f"the {what} URL's {name}={value!r} must be a lower-case name of letters, digits "
                                    "and _ (at most 30 characters)")
        if not parts.hostname and not params.get("host"):
            raise DatabaseError(f"the {what} URL names no host: postgresql://user@host:5432/database?schema=...")
        user = unquote(parts.username or "") or params.pop("user", "")
        params.pop("user", None)
        host = parts.netloc.rsplit("@", 1)[-1]
        password = unquote(parts.password or "") or os.environ.get(password_env) or None
        auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
        uri = urlunsplit(("postgresql", f"{auth}@{host}" if auth else host, parts.path, urlencode(params), ""))
        # the user as a parameter, not user@host: that reads as an e-mail address to the scrub of stored messages
        display = urlunsplit(("postgresql", host, parts.path,
                              urlencode({**({"user": user} if user else {}), "schema": schema, **options, **params}), ""))
        return cls(uri=uri, schema=schema, options=options, display=display)

    def scrub(self, message) -> str:
        """A driver's error in one line, without the password."""
        line = next((s.strip() for s in str(message).splitlines() if s.strip()), "")
        password = unquote(urlsplit(self.uri).password or "")
        for form in {password, quote(password, safe="")} - {""}:
            line = line.replace(form, "***")
        return line

    def connect(self, what: str):
        """An ADBC (DB-API) connection; a failure is a ``DatabaseError`` naming ``what`` and the URL."""
        import adbc_driver_postgresql.dbapi as pg

        try:
            con = pg.connect(self.uri)
        except Exception as exc:
            raise DatabaseError(f"cannot connect to the {what} {self.display}: {self.scrub(exc)}") from None
        with con.cursor() as cur:
            cur.execute("set standard_conforming_strings = on")
            cur.execute("set time zone 'UTC'")
        return con


@contextmanager
def failing_as(con, url: PostgresUrl, what: str):
    """Inside, any error rolls the transaction back; a driver error becomes one ``DatabaseError`` line, ``<what>
    failed: <reason>`` (our own ``DatabaseError`` passes through as it is)."""
    try:
        yield
    except BaseException as exc:
        try:
            con.rollback()
        except Exception:
            pass  # the connection itself may be what broke; it is closed by the caller
        if isinstance(exc, DatabaseError) or not isinstance(exc, Exception):
            raise
        raise DatabaseError(f"{what} failed: {url.scrub(exc)}") from None


def ident(*parts: str) -> str:
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


def literal(text: str | None) -> str:
    return "NULL" if text is None else "'" + str(text).replace("'", "''") + "'"


def starting_with(prefix: str) -> str:
    """A LIKE pattern for names starting with ``prefix`` (its ``_`` and ``%`` taken literally)."""
    return literal(re.sub(r"([_%\\])", r"\\\1", prefix) + "%")


def rows(con, sql: str) -> list[tuple]:
    with con.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def execute(con, *statements: str) -> None:
    with con.cursor() as cur:
        for sql in statements:
            cur.execute(sql)
