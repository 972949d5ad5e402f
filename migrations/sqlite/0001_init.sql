-- Users, their custodial keys, contacts, pricing and mailboxes.
-- Times are Unix seconds. Kept in step with migrations/postgres/0001_init.sql.

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    pubkey        TEXT NOT NULL UNIQUE,
    sealed_seed   BLOB NOT NULL,
    forward_to    TEXT,
    created_at    INTEGER NOT NULL
);

CREATE TABLE contacts (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    address    TEXT NOT NULL,
    level      TEXT NOT NULL CHECK (level IN ('friend', 'acquaintance')),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, address)
);

CREATE TABLE pricing (
    user_id          INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    stranger         INTEGER,
    acquaintance     INTEGER,
    friend           INTEGER,
    priority         INTEGER,
    surge_multiplier INTEGER,
    surge_threshold  INTEGER
);

CREATE TABLE free_passes (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind    TEXT NOT NULL CHECK (kind IN ('dkim-domain', 'list-id')),
    value   TEXT NOT NULL,
    PRIMARY KEY (user_id, kind, value)
);

CREATE TABLE mailboxes (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    special_use   TEXT,
    uidvalidity   INTEGER NOT NULL,
    uidnext       INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 1,
    subscribed    INTEGER NOT NULL DEFAULT 1,
    UNIQUE (user_id, name)
);
