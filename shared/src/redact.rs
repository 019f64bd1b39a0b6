//! Secrets never reach text: capability signatures, farm tokens and keys, NATS seeds and JWTs,
//! and passwords in URLs are masked in every error message, build `error_message` and log line
//! that passes through here. Masking keeps the shape ("sig=…", "faw_…") so a reader still sees
//! what was there.

use regex::Regex;
use std::borrow::Cow;
use std::sync::LazyLock;

const MASK: &str = "[redacted]";

/// (pattern, what to keep of the match: the capture group `keep`, then the mask)
static PATTERNS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        // Capability signatures and expiries in storage URLs.
        r"(?i)(?P<keep>[?&]sig=)[0-9a-f]+",
        // API keys, build tokens, worker tokens.
        r"(?P<keep>\bfa[kbw]_)[A-Za-z0-9_\-]{8,}",
        // NATS seeds (user, account, operator): S + type + base32.
        r"(?P<keep>\bS)[UAON][A-Z2-7]{54,}",
        // JWTs.
        r"(?P<keep>\beyJ)[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+",
        // Passwords in URLs: scheme://user:password@host.
        r"(?P<keep>[a-z][a-z0-9+.\-]*://[^/\s:@]+:)[^@\s/]+@",
    ]
    .iter()
    .filter_map(|p| Regex::new(p).ok())
    .collect()
});

/// `text` with every secret masked; borrowed when there was nothing to mask.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    for re in PATTERNS.iter() {
        if re.is_match(&out) {
            let replaced = re
                .replace_all(&out, |c: &regex::Captures| {
                    let keep = c.name("keep").map(|m| m.as_str()).unwrap_or_default();
                    // A URL password keeps its '@' so the host stays readable.
                    let at = if c[0].ends_with('@') { "@" } else { "" };
                    format!("{keep}{MASK}{at}")
                })
                .into_owned();
            out = Cow::Owned(replaced);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_urls_keep_their_shape_but_not_their_signature() {
        let t = "error sending request for url (http://127.0.0.1:8081/objects/builds/x/source?exp=1&max=0&sig=0123abcdef)";
        let r = redact(t);
        assert!(!r.contains("0123abcdef"), "{r}");
        assert!(r.contains("sig=[redacted]"), "{r}");
        assert!(r.contains("/objects/builds/x/source"));
    }

    #[test]
    fn tokens_seeds_jwts_and_url_passwords_are_masked() {
        let t = "key fak_abcdefghijklmnop token faw_ZZZZZZZZZZZZZZZZ seed SUAM3ZQ7K6N6YPZ5FJJYXNRGBM2EB7W7CN3TQQ3ZMXD7PRTZOQ7LJHLYEQ \
                 jwt eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl db postgres://postgres:hunter2@db:5432/freeagent";
        let r = redact(t);
        for secret in [
            "abcdefghijklmnop",
            "ZZZZZZZZZZZZZZZZ",
            "M3ZQ7K6N6YPZ",
            "eyJzdWIiOi",
            "hunter2",
        ] {
            assert!(!r.contains(secret), "{secret} survived: {r}");
        }
        assert!(r.contains("postgres://postgres:[redacted]@db:5432"), "{r}");
    }

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(
            redact("the build failed: exit 1"),
            Cow::Borrowed(_)
        ));
    }
}
