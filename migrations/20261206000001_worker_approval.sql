-- Optional approval of new workers (FREEAGENT_WORKER_APPROVAL=required): a worker registered
-- while it is required gets no build until an operator approves it. Workers registered before
-- this release were let in by the farm of their day: they count as approved.
-- The default also covers workers an older gateway registers during a rolling upgrade; the new
-- gateway always writes the column itself.
ALTER TABLE workers ADD COLUMN approved_at timestamptz DEFAULT now();
UPDATE workers SET approved_at = registered_at;
