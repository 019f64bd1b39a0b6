//! Property tests for `Range` headers (`routes::parse_range`): any header value, against any
//! object size, is a range inside the object, "send it whole", or 416; never a panic, an empty
//! range or one past the end. Well-formed single ranges resolve as RFC 9110 says.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_storage::routes::parse_range;
use proptest::prelude::*;

/// Sizes at the edges as well as ordinary ones.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        0u64..10_000,
        any::<u64>(),
    ]
}

/// A number as a client might spell it: plain, padded, signed, huge, or not a number.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..20_000).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just(u64::MAX.to_string()),
        Just("18446744073709551616".to_owned()),
        "[0-9]{20,40}",
        "[ +-]?[0-9]{1,5}[ ]?",
        Just(String::new()),
        ".{0,4}",
    ]
}

fn header() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        (number(), number()).prop_map(|(a, b)| format!("bytes={a}-{b}")),
        (number(), number(), number(), number())
            .prop_map(|(a, b, c, d)| format!("bytes={a}-{b},{c}-{d}")),
        (".{0,3}", number(), ".{0,2}", number())
            .prop_map(|(p, a, s, b)| format!("{p}bytes={a}{s}{b}")),
        number().prop_map(|n| format!("bytes=-{n}")),
        number().prop_map(|n| format!("bytes={n}-")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_header_is_a_range_inside_the_object_or_refused(h in header(), size in size()) {
        if let Ok(Some(r)) = parse_range(&h, size) {
            prop_assert!(r.start < r.end, "empty range {r:?} from {h:?}");
            prop_assert!(r.end <= size, "{r:?} ends past {size} for {h:?}");
        }
    }

    #[test]
    fn first_last_ranges_resolve_as_the_rfc_says(a in any::<u64>(), b in any::<u64>(), size in size()) {
        let got = parse_range(&format!("bytes={a}-{b}"), size);
        if a <= b && a < size {
            prop_assert_eq!(got.unwrap(), Some(a..b.min(size - 1) + 1));
        } else {
            prop_assert!(got.is_err());
        }
    }

    #[test]
    fn open_ended_ranges_run_to_the_end(a in any::<u64>(), size in size()) {
        let got = parse_range(&format!("bytes={a}-"), size);
        if a < size {
            prop_assert_eq!(got.unwrap(), Some(a..size));
        } else {
            prop_assert!(got.is_err());
        }
    }

    #[test]
    fn suffix_ranges_take_the_last_bytes(n in any::<u64>(), size in size()) {
        let got = parse_range(&format!("bytes=-{n}"), size);
        if n > 0 && size > 0 {
            prop_assert_eq!(got.unwrap(), Some(size - n.min(size)..size));
        } else {
            prop_assert!(got.is_err());
        }
    }

    #[test]
    fn other_units_and_several_ranges_send_the_whole_object(
        unit in "[a-z]{1,8}",
        h in header(),
        size in size(),
    ) {
        // RFC 9110: a server may ignore a Range it does not support and send everything.
        if unit != "bytes" {
            prop_assert_eq!(parse_range(&format!("{unit}=0-1"), size).unwrap(), None);
        }
        if let Some(spec) = h.trim().strip_prefix("bytes=")
            && spec.contains(',')
        {
            prop_assert_eq!(parse_range(&h, size).unwrap(), None);
        }
    }
}
