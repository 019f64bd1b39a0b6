-- A build token may retry its own build once (the new build has its own token); API keys are
-- not limited. The count lives on the original build and is taken by one guarded UPDATE.
ALTER TABLE builds ADD COLUMN token_retries integer NOT NULL DEFAULT 0;
