-- Revokes a NATS user key (idempotent: a key revoked already keeps its first record).
-- $1 public key  $2 worker  $3 expires at (when its JWT would have expired anyway)
INSERT INTO nats_revocations (public_key, worker_id, expires_at) VALUES ($1, $2, $3)
ON CONFLICT (public_key) DO NOTHING
