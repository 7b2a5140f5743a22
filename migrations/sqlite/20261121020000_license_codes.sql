-- License codes (spec §6.3) that koogate activated through the open API, and what
-- KooGallery's License-code callbacks did to them since. Times are Unix milliseconds.
CREATE TABLE license_codes (
    license           TEXT PRIMARY KEY,
    order_id          TEXT,
    order_line_id     TEXT,
    product_id        TEXT,
    state             TEXT NOT NULL,
    expire_ms         INTEGER,
    last_order_id     TEXT,
    released_by_test  INTEGER NOT NULL,
    activated_ms      INTEGER NOT NULL,
    updated_ms        INTEGER NOT NULL,
    released_ms       INTEGER
);
CREATE INDEX license_codes_order ON license_codes (order_id);
