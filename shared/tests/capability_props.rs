//! Property tests for capability URLs, read the way the storage service reads them: the object
//! key from the path (`ObjectKey::parse`), the parameters from the query string (serde_urlencoded,
//! as axum's `Query` does), then `Signer::verify`. Nothing a client sends panics; a URL we signed
//! verifies until it expires; any change to it that still parses either fails verification or
//! means exactly the same thing (hex is case-insensitive).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_shared::capability::{
    CapabilityError, CapabilityParams, Method, PreviousSecret, Signer,
};
use freeagent_shared::ids::{Attempt, BuildId};
use freeagent_shared::object_key::ObjectKey;
use proptest::prelude::*;

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![Just(Method::Get), Just(Method::Put), Just(Method::Delete)]
}

fn object_key() -> impl Strategy<Value = ObjectKey> {
    (any::<u128>(), 0u8..4, 0i32..=1_000_000).prop_map(|(id, kind, n)| {
        let b: BuildId = uuid::Uuid::from_u128(id).to_string().parse().unwrap();
        match kind {
            0 => ObjectKey::Source(b),
            1 => ObjectKey::Certs(b),
            2 => ObjectKey::Logs(b),
            _ => ObjectKey::Result(b, Attempt::new(n).unwrap()),
        }
    })
}

/// What the storage service would make of `/objects/<path>?<query>`.
fn read(path_and_query: &str) -> Option<(ObjectKey, CapabilityParams)> {
    let (path, query) = path_and_query.split_once('?')?;
    let key = ObjectKey::parse(path).ok()?;
    let params = serde_urlencoded::from_str::<CapabilityParams>(query).ok()?;
    Some((key, params))
}

/// Key-like text: mostly the pieces real keys are made of, so parsing gets deep.
fn key_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("builds".to_owned()),
        Just("source".to_owned()),
        Just("certs".to_owned()),
        Just("logs".to_owned()),
        Just("attempts".to_owned()),
        Just("result".to_owned()),
        Just("..".to_owned()),
        Just(String::new()),
        Just(BuildId::new().to_string()),
        "[0-9]{0,12}",
        "-?[0-9]{1,11}",
        ".{0,16}",
    ];
    prop::collection::vec(piece, 0..7).prop_map(|p| p.join("/"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn key_parsing_never_panics_and_is_canonical(s in prop_oneof![key_text(), ".{0,80}"]) {
        if let Ok(k) = ObjectKey::parse(&s) {
            // One object, one spelling: whatever parses is exactly what we would print.
            prop_assert_eq!(k.to_string(), s);
        }
    }

    #[test]
    fn arbitrary_queries_never_verify(
        query in prop_oneof![
            ".{0,120}",
            ("-?[0-9]{1,20}", "-?[0-9]{1,21}", "[0-9a-fA-F]{0,70}")
                .prop_map(|(e, m, s)| format!("exp={e}&max={m}&sig={s}")),
        ],
        secret in prop::collection::vec(any::<u8>(), 0..40),
        key in object_key(),
        m in method(),
        now in any::<i64>(),
    ) {
        if let Ok(p) = serde_urlencoded::from_str::<CapabilityParams>(&query) {
            // A signature no one computed never matches.
            prop_assert!(Signer::new(&secret).verify(m, &key, &p, now).is_err());
        }
    }

    #[test]
    fn signed_urls_verify_until_they_expire(
        secret in prop::collection::vec(any::<u8>(), 0..40),
        base in "https?://[a-z0-9.]{1,20}(:[0-9]{1,5})?/?",
        key in object_key(),
        m in method(),
        other in method(),
        exp in any::<i64>(),
        max in any::<u64>(),
        now in any::<i64>(),
    ) {
        let s = Signer::new(&secret);
        let url = s.url(&base, m, &key, exp, max);
        let (_, rest) = url.split_once("/objects/").unwrap();
        let (k, p) = read(rest).expect("our own URL reads back");
        prop_assert_eq!(k, key);
        prop_assert_eq!((p.exp, p.max), (exp, max));
        let expected = if now > exp { Err(CapabilityError::Expired) } else { Ok(()) };
        prop_assert_eq!(s.verify(m, &k, &p, now), expected);
        if other != m {
            prop_assert_eq!(s.verify(other, &k, &p, now), Err(CapabilityError::BadSignature));
        }
    }

    #[test]
    fn a_changed_url_fails_or_means_the_same(
        secret in "[a-z]{1,20}",
        key in object_key(),
        m in method(),
        exp in 0i64..i64::MAX,
        max in any::<u64>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let s = Signer::new(&secret);
        let url = s.url("http://storage", m, &key, exp, max);
        let (_, rest) = url.split_once("/objects/").unwrap();
        let mut bytes = rest.as_bytes().to_vec();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let Ok(changed) = String::from_utf8(bytes) else { return Ok(()) };
        if let Some((k, p)) = read(&changed)
            && s.verify(m, &k, &p, 0).is_ok()
        {
            let original = s.sign(m, &key, exp, max);
            prop_assert_eq!(k, key);
            prop_assert_eq!((p.exp, p.max), (exp, max));
            prop_assert_eq!(hex::decode(&p.sig).unwrap(), hex::decode(&original.sig).unwrap());
        }
    }

    #[test]
    fn a_rotated_secret_verifies_only_in_its_grace_period(
        old in "[a-z]{1,20}",
        new in "[A-Z]{1,20}",
        key in object_key(),
        m in method(),
        exp in 0i64..i64::MAX,
        max in any::<u64>(),
    ) {
        let p = Signer::new(&old).sign(m, &key, exp, max);
        let open = Signer::new(&new).with_previous(Some(PreviousSecret { secret: old.clone(), until: None }));
        prop_assert_eq!(open.verify(m, &key, &p, 0), Ok(()));
        let closed = Signer::new(&new).with_previous(Some(PreviousSecret { secret: old, until: Some(1) }));
        prop_assert_eq!(closed.verify(m, &key, &p, 0), Err(CapabilityError::BadSignature));
        prop_assert_eq!(Signer::new(&new).verify(m, &key, &p, 0), Err(CapabilityError::BadSignature));
    }

    #[test]
    fn receipts_check_every_fact(
        secret in "[a-z]{1,20}",
        key in object_key(),
        size in any::<u64>(),
        sha in "[0-9a-f]{64}",
        receipt in ".{0,80}",
        other_size in any::<u64>(),
    ) {
        let s = Signer::new(&secret);
        let good = s.receipt(&key, size, &sha);
        prop_assert!(s.verify_receipt(&key, size, &sha, &good));
        prop_assert!(s.verify_receipt(&key, size, &sha, &good.to_uppercase()));
        if other_size != size {
            prop_assert!(!s.verify_receipt(&key, other_size, &sha, &good));
        }
        if receipt.to_lowercase() != good {
            prop_assert!(!s.verify_receipt(&key, size, &sha, &receipt));
        }
    }
}
