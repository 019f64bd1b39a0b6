-- A key's name (revoked or expired keys included), for showing who submitted a build.
-- $1 key
SELECT name FROM api_keys WHERE id = $1
