-- Mail as the SMTP and IMAP servers see it: messages filed in mailboxes, the email
-- senders that have an LNMP identity of their own, and the queue of mail leaving for
-- the email world. Kept in step with migrations/postgres/0003_mail.sql.

-- One row per message per mailbox. The body is the LNMP message sealed to the user,
-- kept in `inbox` under the same message id, so nothing here is readable without the
-- user's key.
CREATE TABLE mail (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    mailbox_id    INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid           INTEGER NOT NULL,
    modseq        INTEGER NOT NULL,
    message_id    TEXT NOT NULL,
    internal_date INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    flags         TEXT NOT NULL DEFAULT '',
    UNIQUE (mailbox_id, uid)
);
CREATE INDEX mail_by_message ON mail (message_id);

-- Email senders seen by the MX, by the LNMP key derived for them from the master key.
-- An LNMP message to one of these keys goes out as email to `address`.
CREATE TABLE legacy_senders (
    pubkey     TEXT PRIMARY KEY,
    address    TEXT NOT NULL UNIQUE,
    first_seen INTEGER NOT NULL
);

-- Mail submitted for addresses outside LNMP: the message once, and a row per recipient
-- that the delivery worker settles.
CREATE TABLE outbound_messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER REFERENCES users(id) ON DELETE SET NULL,
    mail_from  TEXT NOT NULL,
    raw        BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE outbound_recipients (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      INTEGER NOT NULL REFERENCES outbound_messages(id) ON DELETE CASCADE,
    recipient       TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    locked_until    INTEGER NOT NULL DEFAULT 0,
    expires_at      INTEGER NOT NULL,
    last_error      TEXT
);
CREATE INDEX outbound_recipients_due ON outbound_recipients (state, next_attempt_at);
