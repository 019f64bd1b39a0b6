-- Waits until no other transaction holds the build's row for update: FOR SHARE conflicts with
-- a dispatch's row lock, so this returns once that dispatch commits.
-- $1 build
SELECT 1 FROM builds WHERE id = $1 FOR SHARE
