-- Inserts a new worker, approved now when $13 (the farm requires no approval), else awaiting
-- approval (a taken id violates the primary key).
-- $1 id  $2 name  $3 platforms  $4 capabilities  $5 token hash  $6 token expires at
-- $7 registered by (API key)  $8 queues  $9 max concurrent  $10 NATS public key
-- $11 NATS JWT expires at  $12 polls over HTTP  $13 approved
INSERT INTO workers (id, name, platforms, capabilities, token_hash, token_expires_at,
    registered_by, queues, max_concurrent, nats_public_key, nats_jwt_expires_at, polls_over_http,
    approved_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, CASE WHEN $13 THEN now() END)
RETURNING *
