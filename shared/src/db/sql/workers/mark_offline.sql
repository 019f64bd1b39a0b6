-- idle | building → offline for workers silent for longer than $1 seconds (a draining worker
-- keeps draining). Returns each one's id and name.
-- $1 silent for (s)
UPDATE workers SET status = 'offline'
WHERE status IN ('idle', 'building') AND last_seen_at < now() - make_interval(secs => $1)
RETURNING id, name
