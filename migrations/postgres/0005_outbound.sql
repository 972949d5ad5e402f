-- Mail leaving for the email world: what the queue needs to report failures, the
-- work of turning LNMP messages into email (forwards and messages to email senders'
-- derived keys), and the reply addresses that route answers back. Kept in step
-- with migrations/sqlite/0005_outbound.sql.

-- Why a message is in the queue, which decides who hears of a failure:
-- 'submission' and 'forward' tell the local user (a DSN in their INBOX), 'lnmp' tells
-- the LNMP sender over LNMP, 'report' (our own DSNs) tells nobody.
ALTER TABLE outbound_messages ADD COLUMN origin TEXT NOT NULL DEFAULT 'submission';
-- For origin 'lnmp': the sender's key, the LNMP message id and its relays.
ALTER TABLE outbound_messages ADD COLUMN lnmp_sender TEXT;
ALTER TABLE outbound_messages ADD COLUMN lnmp_id TEXT;
ALTER TABLE outbound_messages ADD COLUMN lnmp_relays TEXT NOT NULL DEFAULT '';

-- The last answer (or connection error) and the host that gave it, for the report.
ALTER TABLE outbound_recipients ADD COLUMN remote_mta TEXT;
ALTER TABLE outbound_recipients ADD COLUMN settled_at BIGINT;
-- 'none', 'pending' (a failure to report) or 'done'; the report is committed in the
-- same transaction that sets 'done', so it is made once.
ALTER TABLE outbound_recipients ADD COLUMN report_state TEXT NOT NULL DEFAULT 'none';
CREATE INDEX outbound_recipients_reports ON outbound_recipients (report_state);

-- Who is told when an LNMP message that came in as email cannot be published:
-- 'user:<id>' (a submission: a DSN in their INBOX) or 'email:<address>' (an email
-- sender's answer through a reply address: a DSN by email); NULL for nobody. The
-- recipients as they were addressed and the email's header section go into the DSN.
ALTER TABLE relay_outbox ADD COLUMN report_to TEXT;
ALTER TABLE relay_outbox ADD COLUMN report_rcpts TEXT NOT NULL DEFAULT '';
ALTER TABLE relay_outbox ADD COLUMN report_headers BYTEA;
ALTER TABLE relay_outbox ADD COLUMN report_state TEXT NOT NULL DEFAULT 'none';

-- LNMP messages to turn into email: 'forward' (a copy of what reached user_id's INBOX
-- for their forward address) or 'legacy' (a message to the derived key target of an
-- email sender). target is the user id as text or the key, for uniqueness.
CREATE TABLE bridge_out (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('forward', 'legacy')),
    user_id         BIGINT REFERENCES users(id) ON DELETE CASCADE,
    target          TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'done', 'skipped', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_until    BIGINT NOT NULL DEFAULT 0,
    detail          TEXT,
    UNIQUE (kind, target, message_id)
);
CREATE INDEX bridge_out_due ON bridge_out (state, next_attempt_at);

-- Reply addresses (reply+<token>@domain) and where an answer to one goes. 'forward':
-- the user replies from their forward address to peer_key, as themselves. 'legacy':
-- the email sender legacy_address answers an LNMP sender (peer_key) who wrote to them.
CREATE TABLE reply_routes (
    token          TEXT PRIMARY KEY,
    kind           TEXT NOT NULL CHECK (kind IN ('forward', 'legacy')),
    user_id        BIGINT REFERENCES users(id) ON DELETE CASCADE,
    legacy_address TEXT,
    peer_key       TEXT NOT NULL,
    peer_address   TEXT NOT NULL DEFAULT '',
    peer_relays    TEXT NOT NULL DEFAULT '',
    created_at     BIGINT NOT NULL
);
