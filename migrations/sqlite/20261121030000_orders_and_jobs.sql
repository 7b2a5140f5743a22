-- The order lines koogate has heard of, with what 查询订单 answered for them, and the
-- durable background work (jobs) that callbacks cause. Times are Unix milliseconds.

CREATE TABLE order_lines (
    order_id       TEXT NOT NULL,
    order_line_id  TEXT NOT NULL,
    test           INTEGER NOT NULL,
    -- The activity that first named the line (orderNotify, newInstance, …).
    source         TEXT NOT NULL,
    created_ms     INTEGER NOT NULL,
    -- The answer's orderInfo, as JSON; NULL until it has been fetched.
    order_info     TEXT,
    fetched_ms     INTEGER,
    PRIMARY KEY (order_id, order_line_id)
);

CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    -- Enqueueing a job whose (kind, dedup_key) exists does nothing; NULL never collides.
    dedup_key       TEXT,
    -- What the job is about (an order id), for operators' lookups.
    subject         TEXT,
    -- pending → running → done, or back to pending for a retry, or failed (parked).
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    run_at_ms       INTEGER NOT NULL,
    -- Who holds a running job, and until when: past it, any replica may take it again.
    lease_token     TEXT,
    lease_until_ms  INTEGER,
    last_error      TEXT,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL,
    UNIQUE (kind, dedup_key)
);
CREATE INDEX jobs_due ON jobs (state, run_at_ms);
CREATE INDEX jobs_subject ON jobs (subject);
