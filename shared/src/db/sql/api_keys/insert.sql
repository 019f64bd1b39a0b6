-- Stores a new key (a hash already stored violates the unique key). Returns every column but
-- key_hash.
-- $1 id  $2 name  $3 key hash  $4 scopes  $5 expires at  $6 worker queues  $7 max workers
-- $8 team
INSERT INTO api_keys (id, name, key_hash, scopes, expires_at, worker_queues, max_workers, team)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING id, name, scopes, created_at, revoked_at, expires_at, last_used_at, worker_queues,
    max_workers, team
