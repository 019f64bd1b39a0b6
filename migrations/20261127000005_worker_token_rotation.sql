-- Worker tokens rotate: the previous token stays valid for a short grace period, so requests
-- in flight while a new token is minted do not fail.
ALTER TABLE workers
    ADD COLUMN prev_token_hash        bytea,
    ADD COLUMN prev_token_expires_at  timestamptz;
CREATE INDEX workers_prev_token_hash ON workers (prev_token_hash) WHERE prev_token_hash IS NOT NULL;
