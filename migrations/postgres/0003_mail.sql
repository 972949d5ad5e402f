-- Mail as the SMTP and IMAP servers see it: messages filed in mailboxes, the email
-- senders that have an LNMP identity of their own, and the queue of mail leaving for
-- the email world. Kept in step with migrations/sqlite/0003_mail.sql.

-- One row per message per mailbox. The body is the LNMP message sealed to the user,
-- kept in `inbox` under the same message id, so nothing here is readable without the
-- user's key.
CREATE TABLE mail (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mailbox_id    BIGINT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid           BIGINT NOT NULL,
    modseq        BIGINT NOT NULL,
    message_id    TEXT NOT NULL,
    internal_date BIGINT NOT NULL,
    size          BIGINT NOT NULL,
    flags         TEXT NOT NULL DEFAULT '',
    UNIQUE (mailbox_id, uid)
);
CREATE INDEX mail_by_message ON mail (message_id);

-- Email senders seen by the MX, by the LNMP key derived for them from the master key.
-- An LNMP message to one of these keys goes out as email to `address`.
CREATE TABLE legacy_senders (
    pubkey     TEXT PRIMARY KEY,
    address    TEXT NOT NULL UNIQUE,
    first_seen BIGINT NOT NULL
);

-- Mail submitted for addresses outside LNMP: the message once, and a row per recipient
-- that the delivery worker settles.
CREATE TABLE outbound_messages (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    BIGINT REFERENCES users(id) ON DELETE SET NULL,
    mail_from  TEXT NOT NULL,
    raw        BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE outbound_recipients (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id      BIGINT NOT NULL REFERENCES outbound_messages(id) ON DELETE CASCADE,
    recipient       TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sent', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_until    BIGINT NOT NULL DEFAULT 0,
    expires_at      BIGINT NOT NULL,
    last_error      TEXT
);
CREATE INDEX outbound_recipients_due ON outbound_recipients (state, next_attempt_at);
