"""The PostgreSQL store's schema: versioned migrations, applied by the package itself.

``copilot_schema`` holds one row per applied migration. :func:`migrate` takes a transaction-level
advisory lock (so clients starting together migrate once), applies what is missing in one
transaction, and raises :class:`~copilot.errors.StoreSchemaError` when the database is newer
than this package (a newer copilot-jupyter migrated it: upgrade this one).

Rules every migration keeps (``tests/test_store_postgres.py::test_schema_keys_*`` checks the
live catalog):

- every data table's primary key starts with ``(owner, session_id)``, except
  ``copilot_blobs`` (attachment bytes shared by an owner's sessions), keyed ``(owner, sha256)``:
  owner first, so on Citus it distributes by ``owner`` (or is co-located by it);
- no sequence, identity column or foreign key: nothing else spans sessions, so each table
  distributes unchanged on Citus by ``session_id`` (``copilot_schema`` is a reference table there);
- JSON is ``jsonb``.
"""

from __future__ import annotations

from typing import Any

from .errors import StoreSchemaError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "schema_version"]

#: a fixed key for pg_advisory_xact_lock: "copilot" in ASCII
_MIGRATION_LOCK = 0x636F70696C6F74

MIGRATIONS: tuple[str, ...] = (
    # 1: sessions (the metadata index and each log's head) and events.
    """
    CREATE TABLE copilot_sessions (
        owner       text   NOT NULL,
        session_id  text   NOT NULL,
        meta        jsonb  NOT NULL,
        modified    text   GENERATED ALWAYS AS (meta ->> 'modifiedTime') STORED,
        seq         bigint NOT NULL DEFAULT 0,      -- the newest event's seq: the log's head
        last_id     text,                           -- the newest event's id (next parentId)
        open_turns  jsonb  NOT NULL DEFAULT '{}',   -- messageId -> seq of unfinished turns
        -- a new random value on every change (and for a session created again under the
        -- same id): what an optimistic append checks that the head is still as it saw it
        rev         bigint NOT NULL DEFAULT (random() * 4e18)::bigint,
        PRIMARY KEY (owner, session_id)
    );
    CREATE INDEX copilot_sessions_by_modified ON copilot_sessions (owner, modified DESC);
    CREATE TABLE copilot_events (
        owner       text   NOT NULL,
        session_id  text   NOT NULL,
        seq         bigint NOT NULL,
        event       jsonb  NOT NULL,
        PRIMARY KEY (owner, session_id, seq)
    );
    """,
    # 2: full-text search (copilot._pg_search). One row per indexed prompt or reply, keyed like
    # its event; ``doc`` is built by the package (words folded in Python: no unaccent needed).
    # Sessions stored before this migration are marked ``unindexed`` and indexed by the first
    # search of their owner.
    """
    CREATE TABLE copilot_search (
        owner       text     NOT NULL,
        session_id  text     NOT NULL,
        seq         bigint   NOT NULL,
        event_id    text     NOT NULL,
        message_id  text,
        type        text     NOT NULL,
        ts          text     NOT NULL,     -- ISO 8601 UTC, microseconds: compares as text
        model       text,
        replaced    boolean  NOT NULL DEFAULT false,
        body        text     NOT NULL,
        doc         tsvector NOT NULL,
        PRIMARY KEY (owner, session_id, seq)
    );
    CREATE INDEX copilot_search_doc ON copilot_search USING gin (doc);
    CREATE INDEX copilot_search_message ON copilot_search (owner, session_id, message_id);
    ALTER TABLE copilot_sessions ADD COLUMN unindexed boolean NOT NULL DEFAULT false;
    UPDATE copilot_sessions SET unindexed = true WHERE seq > 0;
    CREATE INDEX copilot_sessions_unindexed ON copilot_sessions (owner) WHERE unindexed;
    -- a database already under row-level security (store_postgres.ROW_LEVEL_SECURITY) gets
    -- the same policy on the new table, or its roles' appends would be refused
    DO $$ BEGIN
        IF (SELECT relrowsecurity FROM pg_class WHERE oid = 'copilot_sessions'::regclass) THEN
            ALTER TABLE copilot_search ENABLE ROW LEVEL SECURITY;
            CREATE POLICY copilot_owner ON copilot_search
                USING (owner = current_user) WITH CHECK (owner = current_user);
            GRANT SELECT, INSERT, UPDATE, DELETE ON copilot_search TO PUBLIC;
        END IF;
    END $$;
    """,
    # 3: attachments (issue 14). The bytes once per owner and content; one reference row per
    # session that holds them (the reference count is the number of rows). A delete removes
    # the session's references and the bytes no reference is left for, in its transaction.
    """
    CREATE TABLE copilot_blobs (
        owner       text   NOT NULL,
        sha256      text   NOT NULL,
        mime_type   text   NOT NULL,
        size        bigint NOT NULL,
        data        bytea  NOT NULL,
        PRIMARY KEY (owner, sha256)
    );
    CREATE TABLE copilot_blob_refs (
        owner       text   NOT NULL,
        session_id  text   NOT NULL,
        sha256      text   NOT NULL,
        PRIMARY KEY (owner, session_id, sha256)
    );
    CREATE INDEX copilot_blob_refs_by_blob ON copilot_blob_refs (owner, sha256);
    DO $$ BEGIN
        IF (SELECT relrowsecurity FROM pg_class WHERE oid = 'copilot_sessions'::regclass) THEN
            ALTER TABLE copilot_blobs ENABLE ROW LEVEL SECURITY;
            ALTER TABLE copilot_blob_refs ENABLE ROW LEVEL SECURITY;
            CREATE POLICY copilot_owner ON copilot_blobs
                USING (owner = current_user) WITH CHECK (owner = current_user);
            CREATE POLICY copilot_owner ON copilot_blob_refs
                USING (owner = current_user) WITH CHECK (owner = current_user);
            GRANT SELECT, INSERT, UPDATE, DELETE ON copilot_blobs, copilot_blob_refs TO PUBLIC;
        END IF;
    END $$;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(cursor: Any) -> int | None:
    """The database's schema version, or None if the package's tables are not there."""
    # pg_class read through a snapshot, not to_regclass: the catalog cache may not yet show a
    # table that a concurrent migration committed while this one waited for the lock.
    cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE relname = 'copilot_schema' "
        "AND relnamespace = current_schema()::regnamespace)"
    )
    if not cursor.fetchone()[0]:
        return None
    cursor.execute("SELECT coalesce(max(version), 0) FROM copilot_schema")
    return cursor.fetchone()[0]


def _check(version: int | None) -> bool:
    """True if migrations are needed; StoreSchemaError if the database is newer."""
    if version is not None and version > SCHEMA_VERSION:
        raise StoreSchemaError(
            f"the database's copilot schema is version {version}, newer than this package's "
            f"{SCHEMA_VERSION}: a newer copilot-jupyter migrated it; upgrade copilot-jupyter "
            "here (pip install -U 'copilot-jupyter[postgres]')"
        )
    return version is None or version < SCHEMA_VERSION


def migrate(connection: Any) -> int:
    """Bring the schema up to :data:`SCHEMA_VERSION`; return the version found before.

    ``connection`` is a psycopg connection in autocommit mode. A database already current is
    only read (a role without CREATE rights can use it).
    """
    with connection.cursor() as cursor:
        found = schema_version(cursor)
        if not _check(found):
            return found or 0
        with connection.transaction():
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            found = schema_version(cursor)  # another client may have migrated meanwhile
            if not _check(found):
                return found or 0
            if found is None:
                cursor.execute(
                    "CREATE TABLE copilot_schema (version integer PRIMARY KEY, "
                    "applied_at timestamptz NOT NULL DEFAULT now())"
                )
            for version in range((found or 0) + 1, SCHEMA_VERSION + 1):
                cursor.execute(MIGRATIONS[version - 1])
                cursor.execute("INSERT INTO copilot_schema (version) VALUES (%s)", (version,))
    return found or 0
