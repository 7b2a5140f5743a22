-- The metrics read when a test callback (the dial test) last succeeded, per family, at
-- every scrape: a partial index keeps that to the few test rows. The evidence of an
-- order also looks for the callbacks that name only one of its instances or codes.
CREATE INDEX callbacks_test_success ON callbacks (interface, received_ms)
    WHERE test = TRUE AND result_code = '000000';
CREATE INDEX callbacks_instance ON callbacks (instance_id);
