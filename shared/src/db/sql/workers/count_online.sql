-- Workers seen within $1 seconds that are not offline.
-- $1 within (s)
SELECT count(*) FROM workers
WHERE status <> 'offline' AND last_seen_at > now() - make_interval(secs => $1)
