-- Takes the NATS set-up lock for the caller's transaction, if no other session holds it (false:
-- another service is setting up).
-- $1 lock key
SELECT pg_try_advisory_xact_lock($1)
