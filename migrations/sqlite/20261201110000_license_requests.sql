-- Online License applications (getLicenseAsync, merchant-api.md §5), one per KooGallery
-- eventId, with the License issued for it and where its upload stands. Times are Unix
-- milliseconds.
CREATE TABLE license_requests (
    event_id            TEXT PRIMARY KEY,
    instance_id         TEXT NOT NULL,
    -- Part of the idempotency key: a repeat with another fingerprint is refused.
    device_fingerprint  TEXT,
    effective_ms        INTEGER NOT NULL,
    expire_ms           INTEGER,
    test                INTEGER NOT NULL,
    -- awaiting_license (app mode, no License yet), uploading, delivered, failed.
    state               TEXT NOT NULL,
    -- The License: CHARACTERS or FILE, its name (FILE), its exact bytes and their hex
    -- SHA-256, and who made it (signed, app). NULL until there is one.
    license_type        TEXT,
    file_name           TEXT,
    content             BLOB,
    sha256              TEXT,
    source              TEXT,
    -- Why the upload was parked.
    error               TEXT,
    created_ms          INTEGER NOT NULL,
    updated_ms          INTEGER NOT NULL,
    delivered_ms        INTEGER
);
CREATE INDEX license_requests_instance ON license_requests (instance_id, created_ms);

-- Every attempt at 字符串/文件流上传 for a request: the HTTP status and error_code answered,
-- or why no answer came.
CREATE TABLE license_uploads (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      TEXT NOT NULL,
    attempted_ms  INTEGER NOT NULL,
    status        INTEGER,
    code          TEXT,
    message       TEXT,
    error         TEXT,
    duration_ms   INTEGER NOT NULL
);
CREATE INDEX license_uploads_event ON license_uploads (event_id, id);
