//! A worker proves it is the worker it was: it keeps its NATS key on disk and, registering again
//! under its id, signs that id and the time with the key the farm has on record. A restart then
//! keeps the worker's id and its approval, with no secret shared by the fleet (the registration
//! key) standing for one machine.

use crate::ids::WorkerId;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// How far a proof's time may be from the gateway's clock, either way (a replayed proof is
/// useless past it; clocks of a fleet agree within this).
pub const PROOF_WINDOW_SECS: i64 = 300;

/// What is signed: the purpose, the worker id and the time, so a signature made for anything
/// else (another id, another time, another protocol's message) proves nothing here.
fn message(id: WorkerId, at: i64) -> String {
    format!("freeagent-worker-identity:{id}:{at}")
}

/// The signature of `id` at `at` (unix seconds) by the worker's key.
pub fn sign(key: &nkeys::KeyPair, id: WorkerId, at: i64) -> Result<String, nkeys::error::Error> {
    Ok(URL_SAFE_NO_PAD.encode(key.sign(message(id, at).as_bytes())?))
}

/// Whether `sig` is `public_key`'s signature of `id` at `at`, and `at` is within the window of
/// `now`.
pub fn verify(public_key: &str, id: WorkerId, at: i64, sig: &str, now: i64) -> bool {
    if (now - at).abs() > PROOF_WINDOW_SECS {
        return false;
    }
    let (Ok(key), Ok(sig)) = (
        nkeys::KeyPair::from_public_key(public_key),
        URL_SAFE_NO_PAD.decode(sig),
    ) else {
        return false;
    };
    key.verify(message(id, at).as_bytes(), &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_holds_for_its_key_id_and_time_only() {
        let key = nkeys::KeyPair::new_user();
        let other = nkeys::KeyPair::new_user();
        let (id, now) = (WorkerId::new(), 1_800_000_000);
        let sig = sign(&key, id, now).unwrap();
        assert!(verify(&key.public_key(), id, now, &sig, now));
        assert!(verify(
            &key.public_key(),
            id,
            now,
            &sig,
            now + PROOF_WINDOW_SECS
        ));
        assert!(!verify(&other.public_key(), id, now, &sig, now));
        assert!(!verify(&key.public_key(), WorkerId::new(), now, &sig, now));
        assert!(!verify(&key.public_key(), id, now + 1, &sig, now));
        assert!(!verify(
            &key.public_key(),
            id,
            now,
            &sig,
            now + PROOF_WINDOW_SECS + 1
        ));
        assert!(!verify(&key.public_key(), id, now, "not base64!", now));
        assert!(!verify("not a key", id, now, &sig, now));
    }
}
