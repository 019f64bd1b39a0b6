-- The live (unexpired) session with this hash, with the row of the key it speaks for (revoked
-- and expired keys included; all NULL for a build's session).
-- $1 id hash
SELECT s.build_id, s.csrf_token, s.expires_at, k.id AS key_id, k.name AS key_name,
    k.scopes AS key_scopes, k.created_at AS key_created_at, k.revoked_at AS key_revoked_at,
    k.expires_at AS key_expires_at, k.last_used_at AS key_last_used_at,
    k.worker_queues AS key_worker_queues, k.max_workers AS key_max_workers,
    k.team AS key_team
FROM ui_sessions s LEFT JOIN api_keys k ON k.id = s.api_key_id
WHERE s.id_hash = $1 AND s.expires_at > now()
