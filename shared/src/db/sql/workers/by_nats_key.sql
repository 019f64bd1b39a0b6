-- The workers, not revoked, whose NATS key is among the keys.
-- $1 NATS public keys
SELECT * FROM workers WHERE nats_public_key = ANY($1) AND revoked_at IS NULL
