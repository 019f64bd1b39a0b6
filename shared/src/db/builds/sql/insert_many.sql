-- Inserts many new builds in one statement (one array per column, element i of each is build
-- i) and returns them as `Build`s, in no particular order. A new build has no worker: no join
-- to plan, `worker_name` is NULL.
-- $1 ids  $2 platforms  $3 queues  $4 priorities  $5 max attempts  $6 metadata  $7 source keys
-- $8 source sizes  $9 source SHA-256s  $10 certs keys  $11 certs sizes  $12 certs SHA-256s
-- $13 token hashes  $14 original builds  $15 timeouts (s)  $16 retry on failure  $17 teams
-- $18 submitted by (API keys)
WITH b AS (
    INSERT INTO builds (id, platform, queue, priority, max_attempts, metadata, source_key,
        source_size, source_sha256, certs_key, certs_size, certs_sha256, token_hash,
        original_build_id, timeout_secs, retry_on_failure, team, submitted_by)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::int[], $6::jsonb[],
        $7::text[], $8::bigint[], $9::text[], $10::text[], $11::bigint[], $12::text[],
        $13::bytea[], $14::uuid[], $15::int[], $16::bool[], $17::text[], $18::uuid[])
    RETURNING *)
SELECT b.*, w.name AS worker_name FROM b, (SELECT NULL::text AS name) w
