-- The key with this hash, revoked or expired ones included (the caller decides). Every column
-- but key_hash.
-- $1 key hash
SELECT id, name, scopes, created_at, revoked_at, expires_at, last_used_at, worker_queues,
    max_workers, team
FROM api_keys WHERE key_hash = $1
