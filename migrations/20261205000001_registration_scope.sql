-- Registration keys scoped (security round 2): a key may register workers only for the queues in
-- `worker_queues` (NULL: any) and at most `max_workers` live workers at once (NULL: any number).
-- A worker is live while it is not revoked and has been seen within the offline window.
ALTER TABLE api_keys
    ADD COLUMN worker_queues text[],
    ADD COLUMN max_workers   integer CHECK (max_workers > 0);
