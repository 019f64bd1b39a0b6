-- Stores a key unless one with the same hash exists, and returns the stored row either way; an
-- existing row is left as it is (a key revoked through the API stays revoked). Returns every
-- column but key_hash.
-- $1 id  $2 name  $3 key hash  $4 scopes
WITH ins AS (
    INSERT INTO api_keys (id, name, key_hash, scopes) VALUES ($1, $2, $3, $4)
    ON CONFLICT (key_hash) DO NOTHING
    RETURNING id, name, scopes, created_at, revoked_at, expires_at, last_used_at, worker_queues,
        max_workers, team)
SELECT * FROM ins
UNION ALL
SELECT id, name, scopes, created_at, revoked_at, expires_at, last_used_at, worker_queues,
    max_workers, team
FROM api_keys WHERE key_hash = $3
LIMIT 1
