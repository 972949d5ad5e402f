-- Payments: the invoices the bridge issued, mail held until it is paid for, the users'
-- balances in a double-entry ledger, and the embedded dev wallet's own invoices. Kept
-- in step with migrations/postgres/0006_payments.sql. Amounts are millisatoshis.

-- Every invoice the bridge issued, on whatever backend: what settling it does.
-- purpose 'held' releases held_id; 'relay' lets message_id through the relay (its
-- preimage is accepted once: used_at); 'deposit' credits user_id's balance.
CREATE TABLE invoices (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    payment_hash TEXT NOT NULL UNIQUE,
    bolt11       TEXT NOT NULL,
    amount_msat  INTEGER NOT NULL,
    purpose      TEXT NOT NULL CHECK (purpose IN ('held', 'relay', 'deposit')),
    user_id      INTEGER REFERENCES users(id) ON DELETE CASCADE,
    held_id      INTEGER,
    message_id   TEXT,
    -- For 'relay': the local recipients (user ids, comma-separated) and what each is owed.
    recipients   TEXT NOT NULL DEFAULT '',
    state        TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'settled', 'expired')),
    preimage     TEXT,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    settled_at   INTEGER,
    used_at      INTEGER
);
CREATE INDEX invoices_open ON invoices (state, expires_at);
CREATE INDEX invoices_by_message ON invoices (message_id);
CREATE INDEX invoices_by_held ON invoices (held_id);

-- Mail from the email world waiting to be paid for, filed in the user's Requests
-- folder. A payment is keyed to (user, sender, body hash), not to one invoice, so a
-- retry of the same message finds it. state: 'held', 'paid' (delivered with its
-- payment), 'accepted' (the user let it in for free), 'refused' (the user deleted it),
-- 'expired' (the hold window ended unpaid; the copy is gone).
CREATE TABLE held_messages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    message_id   TEXT NOT NULL,
    sender       TEXT NOT NULL,
    body_hash    TEXT NOT NULL,
    amount_msat  INTEGER NOT NULL,
    token        TEXT NOT NULL UNIQUE,
    state        TEXT NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'paid', 'accepted', 'refused', 'expired')),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    settled_at   INTEGER,
    UNIQUE (user_id, sender, body_hash)
);
CREATE INDEX held_by_state ON held_messages (state, expires_at);
CREATE INDEX held_by_message ON held_messages (user_id, message_id);

-- When a sender was last sent a payment request by email (one per window).
CREATE TABLE payment_requests (
    sender  TEXT PRIMARY KEY,
    sent_at INTEGER NOT NULL
);

-- The ledger: each transaction's entries sum to zero. Accounts: 'user:<id>', 'fees'
-- (the operator's cut), 'lightning' (the world outside). key makes a transaction
-- idempotent (e.g. 'settle:<payment hash>').
CREATE TABLE ledger_transactions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    key        TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    memo       TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
);
CREATE TABLE ledger_entries (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id INTEGER NOT NULL REFERENCES ledger_transactions(id),
    account        TEXT NOT NULL,
    amount_msat    INTEGER NOT NULL
);
CREATE INDEX ledger_entries_by_account ON ledger_entries (account, id);
-- Each account's sum, kept with the entries; a user's never goes below zero.
CREATE TABLE balances (
    account TEXT PRIMARY KEY,
    msat    INTEGER NOT NULL,
    CHECK (msat >= 0 OR account NOT LIKE 'user:%')
);

-- A user's own cap on what the relay client pays without asking (NULL: the default).
ALTER TABLE pricing ADD COLUMN autopay_cap INTEGER;

-- The relay outbox's payment state: the INVOICE a recipient's relay sent (bolt11 and
-- sats), and the token of the link that confirms paying it above the auto-pay cap.
ALTER TABLE relay_outbox ADD COLUMN invoice_bolt11 TEXT;
ALTER TABLE relay_outbox ADD COLUMN invoice_sats INTEGER;
ALTER TABLE relay_outbox ADD COLUMN sender_user INTEGER;
ALTER TABLE relay_outbox ADD COLUMN confirm_token TEXT;

-- The embedded dev wallet: the invoices it issued as its own node. preimage is NULL
-- for a hold invoice until the daemon settles it. state: 'open', 'accepted' (a hold
-- invoice paid and waiting), 'settled', 'canceled'.
CREATE TABLE dev_invoices (
    payment_hash TEXT PRIMARY KEY,
    preimage     TEXT,
    bolt11       TEXT NOT NULL,
    amount_msat  INTEGER NOT NULL,
    hold         INTEGER NOT NULL DEFAULT 0,
    state        TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'accepted', 'settled', 'canceled')),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    settled_at   INTEGER
);

-- Whom users wrote to and the Message-IDs they sent: mail from those people, and
-- answers to those messages, pass the paywall for free.
CREATE TABLE correspondents (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    last_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, address)
);
CREATE TABLE sent_message_ids (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    message_id TEXT NOT NULL,
    sent_at    INTEGER NOT NULL,
    PRIMARY KEY (user_id, message_id)
);
