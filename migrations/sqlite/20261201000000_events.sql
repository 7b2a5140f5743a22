-- Domain events (merchant-api.md §2): written in the transaction of the change they
-- report, read by the webhook delivery and the pull feed. Times are Unix milliseconds.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The public id: the `webhook-id` of every delivery attempt, the app's dedupe key.
    event_id    TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL,
    -- `instance:ID`, `license-code:CODE`, `order:ORDER/LINE`; `sequence` counts 1, 2, 3 …
    -- per subject, in commit order.
    subject     TEXT NOT NULL,
    sequence    INTEGER NOT NULL,
    test        INTEGER NOT NULL,
    -- The subject after the change, as JSON.
    snapshot    TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    -- SQLite has one writer, so ids are already in commit order: txid stays 0 and the
    -- feed reads (txid, id) as PostgreSQL does.
    txid        INTEGER NOT NULL DEFAULT 0,
    UNIQUE (subject, sequence)
);
CREATE INDEX events_feed ON events (txid, id);
CREATE INDEX events_created ON events (created_ms);

-- Every delivery attempt of an event to the merchant's webhook endpoint.
CREATE TABLE event_attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      TEXT NOT NULL,
    attempted_ms  INTEGER NOT NULL,
    -- The HTTP status, NULL when no answer came (refused, timed out).
    status        INTEGER,
    duration_ms   INTEGER NOT NULL,
    -- The first 4 KiB of the answer's body.
    response      TEXT,
    error         TEXT
);
CREATE INDEX event_attempts_event ON event_attempts (event_id, id);

-- The webhook endpoint's pause (a `410 Gone`), one row at most.
CREATE TABLE webhook_pause (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    paused_ms  INTEGER NOT NULL,
    reason     TEXT NOT NULL
);

-- Jobs in one lane run one at a time, in id order: the events of one subject are
-- delivered in sequence, and a retried or parked one holds back only its own subject.
ALTER TABLE jobs ADD COLUMN lane TEXT;
CREATE INDEX jobs_lane ON jobs (lane, id) WHERE state <> 'done';

-- Provisioning that the merchant's app reported as failed (merchant-api.md §3), as JSON
-- {resultCode, message}; NULL otherwise.
ALTER TABLE instances ADD COLUMN provisioning_error TEXT;
