-- A build's attempt records (who ran each attempt, when, and how it ended), in order.
-- $1 build
SELECT * FROM build_attempts WHERE build_id = $1 ORDER BY attempt
