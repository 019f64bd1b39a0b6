//! Secrets handed to clients: API keys, build tokens and worker tokens. 256 random bits each,
//! stored only as SHA-256 hashes (the tokens are high-entropy, so no slow KDF is needed), compared
//! in constant time.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The kinds of token, each with a readable prefix so a leaked one is recognisable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    ApiKey,
    Build,
    Worker,
    /// A dashboard session that speaks for an API key (its cookie).
    SessionForKey,
    /// A dashboard session opened with a build token: that build only.
    SessionForBuild,
    /// A dashboard session's CSRF token.
    Csrf,
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::ApiKey => "fak_",
            TokenKind::Build => "fab_",
            TokenKind::Worker => "faw_",
            TokenKind::SessionForKey => "fsk_",
            TokenKind::SessionForBuild => "fsb_",
            TokenKind::Csrf => "fcs_",
        }
    }
}

/// Generates a new 256-bit token of a kind.
pub fn generate(kind: TokenKind) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{}{}",
        kind.prefix(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a token.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Constant-time check of a presented token against a stored hash.
pub fn verify(presented: &str, stored_hash: &[u8]) -> bool {
    let h = hash(presented);
    h.len() == stored_hash.len() && bool::from(h.as_slice().ct_eq(stored_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_verify_against_their_hash() {
        let a = generate(TokenKind::Build);
        let b = generate(TokenKind::Build);
        assert_ne!(a, b);
        assert!(a.starts_with("fab_") && a.len() == 4 + 43);
        assert!(verify(&a, &hash(&a)));
        assert!(!verify(&b, &hash(&a)));
        assert!(!verify(&a, &[]));
    }
}
