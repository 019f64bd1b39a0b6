-- Records that these keys were used at $2 (one statement for a batch). Guard: never moves
-- last_used_at backwards.
-- $1 keys  $2 used at
UPDATE api_keys SET last_used_at = $2
WHERE id = ANY($1) AND (last_used_at IS NULL OR last_used_at < $2)
