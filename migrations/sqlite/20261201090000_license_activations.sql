-- License-code activations koogate has begun (spec §6.3): written before the open API
-- is called and completed after the code is stored, so that a crash between the two
-- leaves a trace of a code KooGallery may have activated. Times are Unix milliseconds.
CREATE TABLE license_activations (
    license       TEXT PRIMARY KEY,
    started_ms    INTEGER NOT NULL,
    completed_ms  INTEGER
);
