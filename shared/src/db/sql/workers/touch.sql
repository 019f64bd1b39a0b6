-- Marks workers seen (their heartbeats prove it).
-- $1 workers
UPDATE workers SET last_seen_at = now() WHERE id = ANY($1)
