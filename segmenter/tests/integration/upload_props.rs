//! Property tests of the worker's parsers of received bytes: queue messages (a job, an S3
//! event, an SNS envelope, or garbage), S3 keys, and Part-10 instances (mutated and cut
//! copies of the shipped test instances). Each gives a value or an error, never a panic or a
//! stack overflow.
//!
//! Bounded in CI (64 cases per property); `SEGNODE_FUZZ_CASES=100000` runs a long session.

use proptest::prelude::*;
use segmenter::study::parse_instance;
use segmenter::upload::{decode_s3_key, parse_message};

fn cases() -> u32 {
    std::env::var("SEGNODE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn any_message_body_parses_or_says_why(body in "\\PC{0,400}") {
        let _ = parse_message(&body);
    }

    #[test]
    fn deeply_nested_json_is_an_error(depth in 1usize..20_000) {
        let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        prop_assert!(parse_message(&body).is_err());
        let body = format!("{}{}", "{\"Message\":".repeat(depth), "1}".repeat(depth));
        let _ = parse_message(&body);
    }

    #[test]
    fn s3_keys_decode_or_error(raw in "[a-zA-Z0-9%+/._-]{0,200}") {
        let _ = decode_s3_key(&raw);
    }

    #[test]
    fn mutated_and_cut_instances_parse_or_error(
        flips in proptest::collection::vec((any::<u32>(), any::<u8>()), 0..8),
        cut in any::<u32>(),
    ) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/studies/synth-042-oblique-jpegls/dicom/02_T1CE/IM_0005.dcm");
        let mut bytes = std::fs::read(path).unwrap();
        for (at, v) in flips {
            let i = 132 + at as usize % (bytes.len() - 132);
            bytes[i] = v;
        }
        let _ = parse_instance(&bytes, "flipped");
        bytes.truncate(132 + cut as usize % (bytes.len() - 132));
        let _ = parse_instance(&bytes, "cut");
    }
}
