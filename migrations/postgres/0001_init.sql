-- Users, their custodial keys, contacts, pricing and mailboxes.
-- Times are Unix seconds. Kept in step with migrations/sqlite/0001_init.sql.

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    pubkey        TEXT NOT NULL UNIQUE,
    sealed_seed   BYTEA NOT NULL,
    forward_to    TEXT,
    created_at    BIGINT NOT NULL
);

CREATE TABLE contacts (
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    address    TEXT NOT NULL,
    level      TEXT NOT NULL CHECK (level IN ('friend', 'acquaintance')),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, address)
);

CREATE TABLE pricing (
    user_id          BIGINT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    stranger         BIGINT,
    acquaintance     BIGINT,
    friend           BIGINT,
    priority         BIGINT,
    surge_multiplier BIGINT,
    surge_threshold  BIGINT
);

CREATE TABLE free_passes (
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind    TEXT NOT NULL CHECK (kind IN ('dkim-domain', 'list-id')),
    value   TEXT NOT NULL,
    PRIMARY KEY (user_id, kind, value)
);

CREATE TABLE mailboxes (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    special_use   TEXT,
    uidvalidity   BIGINT NOT NULL,
    uidnext       BIGINT NOT NULL DEFAULT 1,
    highestmodseq BIGINT NOT NULL DEFAULT 1,
    subscribed    BIGINT NOT NULL DEFAULT 1,
    UNIQUE (user_id, name)
);
