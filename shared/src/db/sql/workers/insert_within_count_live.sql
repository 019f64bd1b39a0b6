-- How many live workers a key registered: not revoked, not offline, seen within $2 seconds.
-- $1 API key  $2 offline after (s)
SELECT count(*) FROM workers
WHERE registered_by = $1 AND revoked_at IS NULL
  AND status <> 'offline' AND last_seen_at > now() - make_interval(secs => $2)
