-- Refreshes the planner's statistics of builds (after a bulk load, as autovacuum would later).
-- (no parameters)
ANALYZE builds
