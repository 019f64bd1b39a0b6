-- The worker a token belongs to: its current token, or its previous one (tokens are unique;
-- the caller checks expiry and grace).
-- $1 token hash
SELECT * FROM workers WHERE token_hash = $1 OR prev_token_hash = $1 LIMIT 1
