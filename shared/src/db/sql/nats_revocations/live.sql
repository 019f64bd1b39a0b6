-- Keys still worth revoking (their JWT has not expired, a minute's slack), with when each was
-- revoked; expired entries are deleted on the way.
-- (no parameters)
WITH gone AS (DELETE FROM nats_revocations WHERE expires_at < now() - interval '1 minute')
SELECT public_key, revoked_at FROM nats_revocations
WHERE expires_at IS NULL OR expires_at >= now() - interval '1 minute'
ORDER BY public_key
