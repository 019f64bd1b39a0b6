-- Revokes a key; revoking it again keeps the first revoked_at (no row: unknown id). Returns
-- every column but key_hash.
-- $1 key
UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1
RETURNING id, name, scopes, created_at, revoked_at, expires_at, last_used_at, worker_queues,
    max_workers, team
