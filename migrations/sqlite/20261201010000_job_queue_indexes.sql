-- The claim looks for due pending jobs and for running jobs whose lease has ended as two
-- ordered index scans of their own, instead of one OR over (state, run_at_ms) that made
-- the database sort every due row; finished jobs, which nothing claims, are in neither,
-- and have an index of their own for their deletion after the retention.
DROP INDEX jobs_due;
CREATE INDEX jobs_pending_due ON jobs (run_at_ms, id) WHERE state = 'pending';
CREATE INDEX jobs_running_lease ON jobs (lease_until_ms, id) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs (updated_ms) WHERE state = 'done';
