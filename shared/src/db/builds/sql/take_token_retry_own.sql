-- Takes a build token's own retry: each token may retry its build once. Guard: none taken yet
-- (no row: refused).
-- $1 build
UPDATE builds SET token_retries = token_retries + 1
WHERE id = $1 AND token_retries < 1 RETURNING token_retries
