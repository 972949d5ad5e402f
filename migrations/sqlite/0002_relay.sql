-- The relay's message store, the relay client's outbox, and the LNMP inbox of the
-- domain's users. Kept in step with migrations/postgres/0002_relay.sql.

CREATE TABLE relay_messages (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    sender      TEXT NOT NULL,
    kind        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX relay_messages_sender ON relay_messages (sender, created_at);
CREATE INDEX relay_messages_expires ON relay_messages (expires_at);

CREATE TABLE relay_recipients (
    pubkey     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    seq        INTEGER NOT NULL REFERENCES relay_messages (seq) ON DELETE CASCADE,
    PRIMARY KEY (pubkey, created_at, seq)
);
CREATE INDEX relay_recipients_seq ON relay_recipients (seq);

CREATE TABLE relay_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT NOT NULL UNIQUE,
    relays          TEXT NOT NULL,
    body            TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed', 'payment')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    locked_until    INTEGER NOT NULL DEFAULT 0,
    expires_at      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    accepted_by     TEXT,
    last_error      TEXT
);
CREATE INDEX relay_outbox_due ON relay_outbox (state, next_attempt_at);

CREATE TABLE inbox (
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    message_id  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (user_id, message_id)
);
CREATE INDEX inbox_by_time ON inbox (user_id, created_at);
