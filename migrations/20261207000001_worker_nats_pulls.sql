-- Whether a worker's current NATS credentials may pull from its queues: credentials minted
-- while it awaits approval may not, and are renewed at once when it is approved (ADR-0015).
ALTER TABLE workers ADD COLUMN nats_jwt_pulls boolean NOT NULL DEFAULT true;
