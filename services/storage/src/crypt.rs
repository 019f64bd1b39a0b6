//! Signing credentials (`certs`) are stored encrypted: XChaCha20-Poly1305 in the STREAM
//! construction (RustCrypto's `chacha20poly1305`), 64 KiB segments, the object key as associated
//! data. Encryption streams, so an upload holds one segment whatever the size. Decryption opens
//! a whole object at once: every segment is authenticated before a byte is handed out, so a
//! truncated, reordered, swapped or wrongly keyed object is an error before any response is
//! sent, never a body that breaks off. Certs are small (`FREEAGENT_CERTS_LIMIT`, 10 MiB by
//! default), so holding one in memory is fine; this is for certs only.
//!
//! Stored layout: `FAE1` · key id (8 bytes) · nonce (19 bytes) · segments (plaintext + 16-byte tag).
//! The key id lets a rotated key still open what it wrote.

use bytes::{Bytes, BytesMut};
use chacha20poly1305::aead::Payload;
use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 4] = b"FAE1";
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 19;
const HEADER_LEN: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN;
const SEGMENT: usize = 64 * 1024;
const TAG: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    #[error("encrypting the object failed")]
    Encrypt,
    #[error(
        "the stored object cannot be decrypted: it was altered, truncated, or written with a key this service no longer has"
    )]
    Decrypt,
}

type KeyId = [u8; KEY_ID_LEN];

/// The current key (used to encrypt) and earlier ones (still used to decrypt).
#[derive(Clone)]
pub struct CertsCipher {
    keys: Vec<(KeyId, [u8; 32])>,
}

impl std::fmt::Debug for CertsCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertsCipher(<redacted>)")
    }
}

fn key_id(key: &[u8; 32]) -> KeyId {
    let digest = Sha256::new()
        .chain_update(b"freeagent-certs-key-id")
        .chain_update(key)
        .finalize();
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    id
}

impl CertsCipher {
    /// `current` encrypts; it and every key in `previous` decrypt what they wrote (the key id
    /// in each object picks the key, so extra keys cost nothing).
    pub fn new(current: [u8; 32], previous: impl IntoIterator<Item = [u8; 32]>) -> Self {
        let mut keys = vec![(key_id(&current), current)];
        for k in previous {
            let id = key_id(&k);
            if !keys.iter().any(|(known, _)| *known == id) {
                keys.push((id, k));
            }
        }
        Self { keys }
    }

    /// Starts encrypting one object; `aad` binds the ciphertext to its object key.
    pub fn encryptor(&self, aad: String) -> Encrypting {
        let (id, key) = self.keys[0];
        let nonce: [u8; NONCE_LEN] = rand::random();
        let cipher = XChaCha20Poly1305::new(&key.into());
        let mut header = BytesMut::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&id);
        header.extend_from_slice(&nonce);
        Encrypting {
            enc: EncryptorBE32::from_aead(cipher, nonce.as_slice().into()),
            header: Some(header.freeze()),
            pending: BytesMut::new(),
            aad,
        }
    }

    /// The plaintext length of a stored object of `stored` bytes, if the length is possible.
    pub fn plaintext_len(stored: u64) -> Option<u64> {
        let body = stored.checked_sub(HEADER_LEN as u64)?;
        let seg = (SEGMENT + TAG) as u64;
        let segments = body.div_ceil(seg).max(1);
        body.checked_sub(segments * TAG as u64)
    }

    /// Decrypts a whole stored object, written for the object key `aad`. Every segment is
    /// checked before anything is returned: altered, truncated, reordered or swapped bytes, or a
    /// key this cipher does not hold, are an error, never wrong or partial plaintext.
    pub fn open(&self, aad: &str, stored: &[u8]) -> Result<Vec<u8>, CryptError> {
        if stored.len() < HEADER_LEN || &stored[..MAGIC.len()] != MAGIC {
            return Err(CryptError::Decrypt);
        }
        let id = &stored[MAGIC.len()..MAGIC.len() + KEY_ID_LEN];
        let nonce = &stored[MAGIC.len() + KEY_ID_LEN..HEADER_LEN];
        let (_, key) = self
            .keys
            .iter()
            .find(|(k, _)| k.as_slice() == id)
            .ok_or(CryptError::Decrypt)?;
        let mut dec =
            DecryptorBE32::from_aead(XChaCha20Poly1305::new(&(*key).into()), nonce.into());
        let mut plain =
            Vec::with_capacity(Self::plaintext_len(stored.len() as u64).unwrap_or(0) as usize);
        let mut rest = &stored[HEADER_LEN..];
        // A full segment with more bytes behind it is not the last one.
        while rest.len() > SEGMENT + TAG {
            let (seg, tail) = rest.split_at(SEGMENT + TAG);
            let pt = dec
                .decrypt_next(Payload {
                    msg: seg,
                    aad: aad.as_bytes(),
                })
                .map_err(|_| CryptError::Decrypt)?;
            plain.extend_from_slice(&pt);
            rest = tail;
        }
        let pt = dec
            .decrypt_last(Payload {
                msg: rest,
                aad: aad.as_bytes(),
            })
            .map_err(|_| CryptError::Decrypt)?;
        plain.extend_from_slice(&pt);
        Ok(plain)
    }
}

/// One object being encrypted: feed plaintext, store what comes out, then `finish`.
pub struct Encrypting {
    enc: EncryptorBE32<XChaCha20Poly1305>,
    header: Option<Bytes>,
    pending: BytesMut,
    aad: String,
}

impl Encrypting {
    /// Takes plaintext; returns the ciphertext that is ready (whole segments, the last segment
    /// is held back so `finish` can mark it as last).
    pub fn update(&mut self, plain: &[u8]) -> Result<Bytes, CryptError> {
        self.pending.extend_from_slice(plain);
        let mut out = BytesMut::new();
        if let Some(h) = self.header.take() {
            out.extend_from_slice(&h);
        }
        while self.pending.len() > SEGMENT {
            let seg = self.pending.split_to(SEGMENT);
            let ct = self
                .enc
                .encrypt_next(Payload {
                    msg: &seg,
                    aad: self.aad.as_bytes(),
                })
                .map_err(|_| CryptError::Encrypt)?;
            out.extend_from_slice(&ct);
        }
        Ok(out.freeze())
    }

    pub fn finish(self) -> Result<Bytes, CryptError> {
        let mut out = BytesMut::new();
        if let Some(h) = self.header {
            out.extend_from_slice(&h);
        }
        let ct = self
            .enc
            .encrypt_last(Payload {
                msg: &self.pending,
                aad: self.aad.as_bytes(),
            })
            .map_err(|_| CryptError::Encrypt)?;
        out.extend_from_slice(&ct);
        Ok(out.freeze())
    }
}

/// A 32-byte key from 64 hex characters or base64.
pub fn parse_key(text: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let text = text.trim();
    let bytes = hex::decode(text)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())?;
    bytes.try_into().ok()
}

/// The key used when none is configured: derived from the signing secret, so a development
/// setup encrypts too. Production sets `FREEAGENT_CERTS_KEY` on its own.
pub fn derive_key(signing_secret: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"freeagent-certs-key-v1")
        .chain_update(signing_secret.as_bytes())
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(c: &CertsCipher, aad: &str, plain: &[u8], feed: usize) -> Bytes {
        let mut e = c.encryptor(aad.into());
        let mut stored = BytesMut::new();
        for chunk in plain.chunks(feed.max(1)) {
            stored.extend_from_slice(&e.update(chunk).unwrap());
        }
        stored.extend_from_slice(&e.finish().unwrap());
        stored.freeze()
    }

    #[test]
    fn round_trips_any_size_and_reports_the_plaintext_length() {
        let c = CertsCipher::new([7; 32], None);
        for n in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            3 * SEGMENT,
            200_001,
        ] {
            let plain: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let stored = seal(&c, "builds/x/certs", &plain, 10_000);
            let back = c.open("builds/x/certs", &stored).unwrap();
            assert_eq!(back.as_slice(), plain.as_slice(), "size {n}");
            assert_eq!(
                CertsCipher::plaintext_len(stored.len() as u64),
                Some(n as u64)
            );
            if n > 16 {
                assert!(!stored.windows(16).any(|w| w == &plain[..16]));
            }
        }
    }

    #[test]
    fn tampering_truncation_and_wrong_keys_fail() {
        let c = CertsCipher::new([7; 32], None);
        let plain = vec![42u8; 3 * SEGMENT + 10];
        let stored = seal(&c, "builds/x/certs", &plain, 4096);
        let aad = "builds/x/certs";
        let mut flipped = stored.to_vec();
        flipped[HEADER_LEN + 5] ^= 1;
        assert!(c.open(aad, &flipped).is_err());
        // Cut at a segment boundary: the last segment left was not written as the last.
        assert!(c.open(aad, &stored[..HEADER_LEN + SEGMENT + TAG]).is_err());
        assert!(c.open(aad, &stored[..stored.len() - 1]).is_err());
        assert!(c.open(aad, &stored[..HEADER_LEN]).is_err());
        assert!(c.open(aad, b"FAE1").is_err());
        assert!(c.open("builds/y/certs", &stored).is_err());
        let other = CertsCipher::new([8; 32], None);
        assert!(other.open(aad, &stored).is_err());
        let rotated = CertsCipher::new([8; 32], Some([7; 32]));
        assert_eq!(rotated.open(aad, &stored).unwrap(), plain);
        // Any number of earlier keys; the object's key id picks one.
        let many = CertsCipher::new([9; 32], [[8; 32], [7; 32], [7; 32]]);
        assert_eq!(many.keys.len(), 3);
        assert_eq!(many.open(aad, &stored).unwrap(), plain);
    }

    #[test]
    fn keys_parse_from_hex_or_base64() {
        assert_eq!(parse_key(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(
            parse_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Some([0; 32])
        );
        assert_eq!(parse_key("short"), None);
    }
}
