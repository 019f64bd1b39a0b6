-- Whether this server accepts writes, as libpq's target_session_attrs=read-write asks: not a
-- standby in recovery, and not read-only by default.
-- (no parameters)
SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'
