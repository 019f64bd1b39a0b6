-- Retries made with build tokens, counted on the root of a chain of retries (the build the first
-- retry was made from): each token may still retry its own build once, and all the tokens of one
-- chain together at most a few times, so a leaked token cannot queue an endless chain of builds
-- that each reuse the original's certs.
ALTER TABLE builds ADD COLUMN chain_token_retries integer NOT NULL DEFAULT 0;
