-- Benchmarks and load tests: inserts $1 pending builds on one queue, each with a placeholder
-- source (the SHA-256 of nothing) and token hash.
-- $1 count  $2 platform  $3 queue
INSERT INTO builds (id, platform, queue, source_key, source_size, source_sha256, token_hash)
SELECT u, $2, $3, 'builds/' || u || '/source', 0,
       'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', '\x00'::bytea
FROM (SELECT gen_random_uuid() AS u FROM generate_series(1, $1)) g
