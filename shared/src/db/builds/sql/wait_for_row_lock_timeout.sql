-- Bounds how long this transaction waits for a lock (SET cannot take a parameter; set_config
-- can, and `true` scopes it to the transaction).
-- $1 lock timeout (text, e.g. '500ms')
SELECT set_config('lock_timeout', $1, true)
