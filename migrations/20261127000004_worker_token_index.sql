-- HTTP workers are found by their token.
CREATE INDEX workers_token_hash ON workers (token_hash);
