-- Each worker has its own NATS identity (ADR-0009): the public nkey it registered with, the
-- expiry of the user JWT the farm signed for it, and when its registration was revoked.
ALTER TABLE workers
    ADD COLUMN nats_public_key      text,
    ADD COLUMN nats_jwt_expires_at  timestamptz,
    ADD COLUMN revoked_at           timestamptz;

-- NATS user keys the farm no longer accepts. The scheduler re-signs the farm's account with
-- these in its `revocations` and pushes it to the servers; an entry is dropped once the JWT
-- it revokes has expired anyway.
CREATE TABLE nats_revocations (
    public_key  text PRIMARY KEY,
    worker_id   uuid NOT NULL,
    revoked_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz
);
CREATE INDEX nats_revocations_expires ON nats_revocations (expires_at);
