-- Test and operator helper: backdates a build's submission so retention sees it as old.
-- $1 build  $2 by (s)
UPDATE builds SET submitted_at = submitted_at - make_interval(secs => $2) WHERE id = $1
