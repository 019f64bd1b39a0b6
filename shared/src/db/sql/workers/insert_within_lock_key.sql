-- Locks the registering key's row until the transaction ends, so that registrations racing on
-- one key count its live workers (insert_within_count_live.sql) one at a time.
-- $1 API key
SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE
