-- Jobs held back behind an unfinished earlier job of their lane are 'waiting' and so
-- outside jobs_pending_due: a claim no longer steps over every one of them. This index
-- finds the next of a lane when a job is done, and the ones the minute's sweep releases.
CREATE INDEX jobs_waiting ON jobs (lane, id) WHERE state = 'waiting';
