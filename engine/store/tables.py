"""The store's tables, on SQLAlchemy Core: one schema for SQLite and PostgreSQL.

- ``messages``: what a ``store`` step accepted and a processor has not delivered yet.  ``seq``
  orders them; ``next_at`` is when the next attempt may start; ``locked_until`` is the lease of
  the processor working on it (0 when free), so a crashed processor's messages come back.
- ``dead_letters``: messages that ran out of attempts (or were refused), with the last error.
- ``idempotency_keys``: a key a caller sent once, and the message it produced.
- ``firings``: one row per schedule firing, inserted by the replica that runs it.
- ``file_claims``: one row per file a poller took, so no file is processed twice.
- ``attempts``: how many attempts a source began on one message (a polled file, an MQTT message
  by its packet id) and did not settle yet, so that a message whose flow kills the engine is
  counted across restarts and dead-lettered once its attempts are used up.

Times are seconds since the epoch (floats): the engine's clock, compared only with itself.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

metadata = MetaData()

# SQLite only makes INTEGER PRIMARY KEY an alias of its rowid (and so auto-incrementing)
SEQ = BigInteger().with_variant(Integer(), "sqlite")

messages = Table(
    "interlace_messages", metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("queue", String(200), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("content_type", String(200)),
    Column("headers", Text, nullable=False),  # JSON object
    Column("vars", Text, nullable=False),  # JSON object
    Column("order_key", String(500)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_at", Float, nullable=False),
    Column("locked_until", Float, nullable=False, default=0.0),
    Column("owner", String(64)),
    Column("created", Float, nullable=False),
    Column("last_error", Text),  # JSON object
    Index("interlace_messages_due", "queue", "next_at"),
    Index("interlace_messages_key", "queue", "order_key", "seq"),
)

dead_letters = Table(
    "interlace_dead_letters", metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("store", String(200), nullable=False),  # the dead-letter store's name
    Column("queue", String(200), nullable=False),  # where it came from
    Column("flow", String(200)),
    Column("body", LargeBinary, nullable=False),
    Column("content_type", String(200)),
    Column("headers", Text, nullable=False),
    Column("vars", Text, nullable=False),
    Column("order_key", String(500)),
    Column("attempts", Integer, nullable=False),
    Column("created", Float, nullable=False),
    Column("failed_at", Float, nullable=False),
    Column("error", Text, nullable=False),  # JSON object
    Index("interlace_dead_letters_store", "store", "seq"),
)

idempotency_keys = Table(
    "interlace_idempotency_keys", metadata,
    Column("scope", String(200), nullable=False),
    Column("key", String(500), nullable=False),
    Column("message_id", String(64), nullable=False),
    Column("created", Float, nullable=False),
    PrimaryKeyConstraint("scope", "key"),
)

firings = Table(
    "interlace_firings", metadata,
    Column("name", String(200), nullable=False),
    Column("at", Float, nullable=False),  # the firing's scheduled time
    Column("owner", String(64), nullable=False),
    Column("started", Float, nullable=False),
    PrimaryKeyConstraint("name", "at"),
)

file_claims = Table(
    "interlace_file_claims", metadata,
    Column("source", String(200), nullable=False),
    Column("key", String(1000), nullable=False),  # name, size and mtime: a new file of the same name is new
    Column("owner", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # claimed | done | failed
    Column("lease_until", Float, nullable=False),
    Column("updated", Float, nullable=False),
    PrimaryKeyConstraint("source", "key"),
)

attempts = Table(
    "interlace_attempts", metadata,
    Column("source", String(200), nullable=False),  # e.g. file:FLOW, mqtt:CLIENT-ID
    Column("key", String(1000), nullable=False),  # what names the message on redelivery (a claim, a packet id)
    Column("fingerprint", String(200), nullable=False),  # what tells a reused key from the same message
    Column("attempts", Integer, nullable=False),
    Column("updated", Float, nullable=False),
    PrimaryKeyConstraint("source", "key"),
)
