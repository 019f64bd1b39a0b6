-- Takes one of the retries the build tokens of a chain share, counted on the chain's root
-- (found by following original_build_id up; bounded, as a chain made with API keys may be
-- long). Guard: fewer than $2 taken (no row: refused).
-- $1 build  $2 retries per chain
WITH RECURSIVE chain AS (
    SELECT id, original_build_id, 0 AS depth FROM builds WHERE id = $1
    UNION ALL
    SELECT b.id, b.original_build_id, c.depth + 1 FROM builds b
    JOIN chain c ON b.id = c.original_build_id WHERE c.depth < 10000),
root AS (SELECT id FROM chain ORDER BY depth DESC LIMIT 1)
UPDATE builds b SET chain_token_retries = b.chain_token_retries + 1
FROM root WHERE b.id = root.id AND b.chain_token_retries < $2
RETURNING b.chain_token_retries
