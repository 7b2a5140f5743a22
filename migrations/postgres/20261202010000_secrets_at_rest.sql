-- Secrets and buyer personal data at rest. Credentials (app_info), stored answers
-- (idempotency.body) and the buyer's personal data are kept encrypted under the data key
-- (`kg1.<key id>.<base64url>` text); the personal entries that instances.details and
-- order_lines.order_info held in plain text move into columns of their own, which the
-- retention clears. Rows of older releases are encrypted by the start-up pass.
ALTER TABLE instances ADD COLUMN buyer_data TEXT;
ALTER TABLE order_lines ADD COLUMN buyer_info TEXT;
-- The SHA-256 (hex) of the exact answer sent: response_body is now a copy with its
-- passwords redacted. NULL in records of older releases until the pass redacts them.
ALTER TABLE callbacks ADD COLUMN response_sha256 TEXT;
-- The retention finds released instances that still hold buyer data.
CREATE INDEX instances_buyer_data ON instances (released_ms) WHERE buyer_data IS NOT NULL;
CREATE INDEX callbacks_unhashed ON callbacks (id) WHERE response_sha256 IS NULL;
-- The data key whose start-up pass last completed, one row at most: the pass is skipped
-- while the key stays the same.
CREATE TABLE at_rest (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    key_id     TEXT NOT NULL,
    sealed_ms  BIGINT NOT NULL
);
