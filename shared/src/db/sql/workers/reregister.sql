-- Re-registration of an existing worker: new name, capabilities, token and NATS key; a revoked
-- worker is reinstated (idle, seen now). Approval: with $12 it is approved if it was not; else
-- it keeps its approval, unless its registration had ended (revoked), which must be approved
-- again. No row: unknown id.
-- $1 id  $2 name  $3 platforms  $4 capabilities  $5 token hash  $6 token expires at  $7 queues
-- $8 max concurrent  $9 NATS public key  $10 NATS JWT expires at  $11 polls over HTTP
-- $12 approved
UPDATE workers SET name = $2, platforms = $3, capabilities = $4, token_hash = $5,
    token_expires_at = $6, queues = $7, max_concurrent = $8, nats_public_key = $9,
    nats_jwt_expires_at = $10, polls_over_http = $11, revoked_at = NULL,
    approved_at = CASE WHEN $12 THEN COALESCE(approved_at, now())
                       WHEN revoked_at IS NOT NULL THEN NULL ELSE approved_at END,
    status = 'idle', last_seen_at = now()
WHERE id = $1
RETURNING *
