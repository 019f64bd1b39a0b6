-- Inserts a new build (pending, attempt 0) and returns it as a `Build`; it has no worker yet,
-- so `worker_name` comes back NULL.
-- $1 id  $2 platform  $3 queue  $4 priority  $5 max attempts  $6 metadata  $7 source key
-- $8 source size  $9 source SHA-256  $10 certs key  $11 certs size  $12 certs SHA-256
-- $13 token hash  $14 original build  $15 timeout (s)  $16 retry on failure  $17 team
-- $18 submitted by (API key)
WITH b AS (
    INSERT INTO builds (id, platform, queue, priority, max_attempts, metadata, source_key,
        source_size, source_sha256, certs_key, certs_size, certs_sha256, token_hash,
        original_build_id, timeout_secs, retry_on_failure, team, submitted_by)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
    RETURNING *)
SELECT b.*, w.name AS worker_name FROM b LEFT JOIN workers w ON w.id = b.worker_id
