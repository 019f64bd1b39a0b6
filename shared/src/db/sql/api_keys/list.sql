-- Every key, oldest first, revoked ones included. Every column but key_hash.
-- (no parameters)
SELECT id, name, scopes, created_at, revoked_at, expires_at, last_used_at, worker_queues,
    max_workers, team
FROM api_keys ORDER BY created_at, id
