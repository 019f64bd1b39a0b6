-- Rotates a worker's token: the current one becomes the previous token for $6 seconds. Guard:
-- the presented token is the current one and expires before $5, so concurrent requests rotate
-- once. Returns the new expiry (no row: not rotated).
-- $1 worker  $2 presented token hash  $3 new token hash  $4 new expires at  $5 renew before
-- $6 grace (s)
UPDATE workers SET prev_token_hash = token_hash,
    prev_token_expires_at = now() + make_interval(secs => $6),
    token_hash = $3, token_expires_at = $4
WHERE id = $1 AND token_hash = $2 AND token_expires_at < $5
RETURNING token_expires_at
