//! Signing credentials (`certs`) are stored encrypted: XChaCha20-Poly1305 in the STREAM
//! construction (RustCrypto's `chacha20poly1305`), 64 KiB segments, the object key as associated
//! data. Encryption and decryption stream, so memory stays one segment whatever the size; a
//! truncated, reordered or swapped object fails to decrypt instead of yielding wrong bytes.
//!
//! Stored layout: `FAE1` · key id (8 bytes) · nonce (19 bytes) · segments (plaintext + 16-byte tag).
//! The key id lets a rotated key still open what it wrote.

use bytes::{Bytes, BytesMut};
use chacha20poly1305::aead::Payload;
use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use futures::{Stream, StreamExt};
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

/// The current key (used to encrypt) and an optional previous one (still used to decrypt).
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
    pub fn new(current: [u8; 32], previous: Option<[u8; 32]>) -> Self {
        let mut keys = vec![(key_id(&current), current)];
        keys.extend(previous.map(|k| (key_id(&k), k)));
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

    /// Decrypts a stored object as it streams; the stream ends in an error (never in wrong
    /// bytes) if anything was altered or cut off.
    pub fn decrypt<S, E>(
        &self,
        aad: String,
        stored: S,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let state = Decrypting {
            keys: self.keys.clone(),
            stored,
            buf: BytesMut::new(),
            dec: None,
            aad,
            done: false,
        };
        futures::stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            match st.next_plaintext().await {
                Ok(Some(b)) => Some((Ok(b), st)),
                Ok(None) => None,
                Err(e) => {
                    st.done = true;
                    Some((Err(e), st))
                }
            }
        })
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

struct Decrypting<S> {
    keys: Vec<(KeyId, [u8; 32])>,
    stored: S,
    buf: BytesMut,
    dec: Option<DecryptorBE32<XChaCha20Poly1305>>,
    aad: String,
    done: bool,
}

fn broken() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, CryptError::Decrypt)
}

impl<S, E> Decrypting<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    async fn next_plaintext(&mut self) -> Result<Option<Bytes>, std::io::Error> {
        loop {
            if self.dec.is_none() && self.buf.len() >= HEADER_LEN {
                let header = self.buf.split_to(HEADER_LEN);
                if &header[..MAGIC.len()] != MAGIC {
                    return Err(broken());
                }
                let id = &header[MAGIC.len()..MAGIC.len() + KEY_ID_LEN];
                let nonce = &header[MAGIC.len() + KEY_ID_LEN..];
                let Some((_, key)) = self.keys.iter().find(|(k, _)| k.as_slice() == id) else {
                    return Err(broken());
                };
                let cipher = XChaCha20Poly1305::new(&(*key).into());
                self.dec = Some(DecryptorBE32::from_aead(cipher, nonce.into()));
            }
            // A full segment with more bytes behind it is not the last one.
            if let Some(dec) = self.dec.as_mut()
                && self.buf.len() > SEGMENT + TAG
            {
                let seg = self.buf.split_to(SEGMENT + TAG);
                let pt = dec
                    .decrypt_next(Payload {
                        msg: &seg,
                        aad: self.aad.as_bytes(),
                    })
                    .map_err(|_| broken())?;
                return Ok(Some(Bytes::from(pt)));
            }
            match self.stored.next().await {
                Some(Ok(b)) => self.buf.extend_from_slice(&b),
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => {
                    self.done = true;
                    let dec = self.dec.take().ok_or_else(broken)?;
                    let pt = dec
                        .decrypt_last(Payload {
                            msg: &self.buf,
                            aad: self.aad.as_bytes(),
                        })
                        .map_err(|_| broken())?;
                    return Ok(Some(Bytes::from(pt)));
                }
            }
        }
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

    async fn roundtrip(c: &CertsCipher, plain: &[u8], feed: usize) -> (Bytes, Bytes) {
        let mut e = c.encryptor("builds/x/certs".into());
        let mut stored = BytesMut::new();
        for chunk in plain.chunks(feed.max(1)) {
            stored.extend_from_slice(&e.update(chunk).unwrap());
        }
        stored.extend_from_slice(&e.finish().unwrap());
        let stored = stored.freeze();
        let pieces: Vec<Result<Bytes, std::io::Error>> = stored
            .chunks(7000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut out = BytesMut::new();
        let mut s = Box::pin(c.decrypt("builds/x/certs".into(), futures::stream::iter(pieces)));
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b.unwrap());
        }
        (stored, out.freeze())
    }

    #[tokio::test]
    async fn round_trips_any_size_and_reports_the_plaintext_length() {
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
            let (stored, back) = roundtrip(&c, &plain, 10_000).await;
            assert_eq!(back.as_ref(), plain.as_slice(), "size {n}");
            assert_eq!(
                CertsCipher::plaintext_len(stored.len() as u64),
                Some(n as u64)
            );
            if n > 16 {
                assert!(!stored.windows(16).any(|w| w == &plain[..16]));
            }
        }
    }

    #[tokio::test]
    async fn tampering_truncation_and_wrong_keys_fail() {
        let c = CertsCipher::new([7; 32], None);
        let plain = vec![42u8; 3 * SEGMENT + 10];
        let (stored, _) = roundtrip(&c, &plain, 4096).await;
        let decrypt = |c: CertsCipher, bytes: Bytes, aad: &str| {
            let aad = aad.to_owned();
            async move {
                let mut s = Box::pin(
                    c.decrypt(aad, futures::stream::iter([Ok::<_, std::io::Error>(bytes)])),
                );
                let mut ok = true;
                while let Some(b) = s.next().await {
                    ok &= b.is_ok();
                }
                ok
            }
        };
        let mut flipped = BytesMut::from(stored.as_ref());
        flipped[HEADER_LEN + 5] ^= 1;
        assert!(!decrypt(c.clone(), flipped.freeze(), "builds/x/certs").await);
        let cut = stored.slice(..HEADER_LEN + SEGMENT + TAG);
        assert!(!decrypt(c.clone(), cut, "builds/x/certs").await);
        assert!(!decrypt(c.clone(), stored.clone(), "builds/y/certs").await);
        let other = CertsCipher::new([8; 32], None);
        assert!(!decrypt(other, stored.clone(), "builds/x/certs").await);
        let rotated = CertsCipher::new([8; 32], Some([7; 32]));
        assert!(decrypt(rotated, stored, "builds/x/certs").await);
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
