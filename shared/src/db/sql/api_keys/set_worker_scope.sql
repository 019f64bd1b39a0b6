-- Sets what workers a key registers: the queues they may serve and how many may be live at once
-- (no row: unknown id). Returns every column but key_hash.
-- $1 key  $2 worker queues  $3 max workers
UPDATE api_keys SET worker_queues = $2, max_workers = $3 WHERE id = $1
RETURNING id, name, scopes, created_at, revoked_at, expires_at, last_used_at, worker_queues,
    max_workers, team
