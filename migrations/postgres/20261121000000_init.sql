-- Instances, the idempotent answers that created them, the shared nonce store (D2)
-- and the audit record of every callback. Times are Unix milliseconds.

CREATE TABLE instances (
    instance_id    TEXT PRIMARY KEY,
    family         TEXT NOT NULL,
    order_id       TEXT NOT NULL,
    order_line_id  TEXT,
    product_id     TEXT,
    sku_code       TEXT,
    charging_mode  TEXT,
    period_type    TEXT,
    period_number  BIGINT,
    linear_value   TEXT,
    customer_id    TEXT,
    customer_name  TEXT,
    details        TEXT NOT NULL DEFAULT '{}',
    test           BOOLEAN NOT NULL,
    state          TEXT NOT NULL,
    app_info       TEXT,
    expire_ms      BIGINT,
    last_order_id  TEXT,
    created_ms     BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL,
    released_ms    BIGINT
);
CREATE INDEX instances_order ON instances (order_id);

CREATE TABLE idempotency (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    result_code  TEXT,
    instance_id  TEXT,
    body         BYTEA,
    created_ms   BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE nonces (
    nonce       TEXT PRIMARY KEY,
    expires_ms  BIGINT NOT NULL
);
CREATE INDEX nonces_expiry ON nonces (expires_ms);

CREATE TABLE callbacks (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id     TEXT NOT NULL,
    received_ms    BIGINT NOT NULL,
    interface      TEXT NOT NULL,
    activity       TEXT,
    method         TEXT NOT NULL,
    raw_query      TEXT NOT NULL,
    raw_body       BYTEA NOT NULL,
    verdict        TEXT NOT NULL,
    result_code    TEXT,
    http_status    BIGINT NOT NULL,
    response_body  BYTEA NOT NULL,
    duration_us    BIGINT NOT NULL,
    test           BOOLEAN NOT NULL,
    order_id       TEXT,
    instance_id    TEXT
);
CREATE INDEX callbacks_order ON callbacks (order_id);
CREATE INDEX callbacks_received ON callbacks (received_ms);
