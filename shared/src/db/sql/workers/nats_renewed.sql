-- Records issued NATS credentials: their expiry and whether they may pull. Guard: the worker
-- still has the key they were issued for and is not revoked.
-- $1 worker  $2 NATS public key  $3 JWT expires at  $4 may pull
UPDATE workers SET nats_jwt_expires_at = $3, nats_jwt_pulls = $4
WHERE id = $1 AND nats_public_key = $2 AND revoked_at IS NULL
