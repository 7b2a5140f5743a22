-- Pay-per-use usage (merchant-api.md §6). Quantities are exact fixed-point integers of
-- 1/10000 (KooGallery's usage_value has 4 decimals); times are Unix milliseconds.

-- Every usage record the merchant's app sent, once: the primary key is the dedupe key,
-- written in the same transaction as the window total it adds to.
CREATE TABLE usage_records (
    instance_id      TEXT NOT NULL,
    record_id        TEXT NOT NULL,
    quantity         BIGINT NOT NULL,
    occurred_ms      BIGINT NOT NULL,
    -- The window the record belongs to by its time, and the one it was counted in: they
    -- differ when the first had been pushed already (late usage is carried forward).
    origin_begin_ms  BIGINT NOT NULL,
    window_begin_ms  BIGINT NOT NULL,
    received_ms      BIGINT NOT NULL,
    PRIMARY KEY (instance_id, record_id)
);
CREATE INDEX usage_records_carried ON usage_records (instance_id, window_begin_ms)
    WHERE window_begin_ms <> origin_begin_ms;

-- One row per instance and window with usage: `open` while it takes usage, `closed` once
-- its push record is fixed (metering_sn, clipped times), then `pushed` or `parked`.
CREATE TABLE usage_windows (
    instance_id   TEXT NOT NULL,
    begin_ms      BIGINT NOT NULL,
    end_ms        BIGINT NOT NULL,
    total         BIGINT NOT NULL,
    records       BIGINT NOT NULL,
    state         TEXT NOT NULL,
    metering_sn   TEXT,
    -- The record as pushed: the window clipped to the instance's life, and when it was made.
    push_begin_ms BIGINT,
    push_end_ms   BIGINT,
    record_ms     BIGINT,
    pushed_ms     BIGINT,
    -- KooGallery's record-level code (001–013) or call error, and why a window is parked.
    code          TEXT,
    reason        TEXT,
    updated_ms    BIGINT NOT NULL,
    PRIMARY KEY (instance_id, begin_ms)
);
CREATE INDEX usage_windows_state ON usage_windows (state, begin_ms);
