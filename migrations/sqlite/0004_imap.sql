-- What the IMAP server keeps beyond the mail rows: expunged messages as tombstones (so
-- CONDSTORE clients learn what went away since a MODSEQ), the mail users store
-- themselves (APPEND to Sent and Drafts), and the last UIDVALIDITY handed out, so a
-- mailbox deleted and created again never reuses one. Kept in step with
-- migrations/postgres/0004_imap.sql.

CREATE TABLE mail_expunged (
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid        INTEGER NOT NULL,
    modseq     INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX mail_expunged_by_modseq ON mail_expunged (mailbox_id, modseq);
CREATE INDEX mail_by_modseq ON mail (mailbox_id, modseq);

-- Messages a user stored with APPEND, sealed under a key derived from the user's own
-- seed. `message_id` is a keyed digest of the plaintext, so storing the same message
-- twice keeps one body.
CREATE TABLE stored_mail (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    message_id TEXT NOT NULL,
    sealed     BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, message_id)
);

-- The first UID no session has seen yet: messages from it on are \Recent to the
-- next session that selects the mailbox (RFC 3501 2.3.2).
ALTER TABLE mailboxes ADD COLUMN recent_from INTEGER NOT NULL DEFAULT 1;

-- Size -1 marks a row whose rendered size is not known yet (LNMP messages filed by the
-- relay); the IMAP server renders the message once and records it.
