//! Property tests of what the listener parses from the network before anything is stored:
//! DIMSE command sets and the Part-10 header check (the pre-scan plus dicom-rs). Random bytes,
//! random cuts and byte flips of valid command sets, and generated nesting must give a
//! command or an error, never a panic or a stack overflow.
//!
//! Bounded in CI (64 cases per property); `SEGNODE_FUZZ_CASES=100000` runs a long session.

use dimse::command::{parse_command, store_response, Command, Status, C_STORE_RQ};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("SEGNODE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn valid_command() -> Vec<u8> {
    // a response encodes like a request: a well-formed command set to mutate
    store_response(
        &Command {
            command_field: C_STORE_RQ,
            message_id: 1,
            affected_sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
            affected_sop_instance_uid: "1.2.826.0.1.3680043.8.498.1".into(),
            has_data_set: true,
        },
        Status::CannotUnderstand,
        Some("a comment"),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_give_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_command(&bytes);
    }

    #[test]
    fn mutated_command_sets_give_a_command_or_an_error(
        flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<u16>()),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = valid_command();
        for (at, v) in flips {
            let i = at as usize % bytes.len();
            bytes[i] = v;
        }
        if let Some(c) = cut {
            bytes.truncate(c as usize % (bytes.len() + 1));
        }
        bytes.extend(tail);
        let _ = parse_command(&bytes);
    }

    #[test]
    fn nesting_of_any_depth_in_a_command_is_bounded(depth in 0usize..4000) {
        let mut bytes = valid_command();
        for _ in 0..depth {
            bytes.extend_from_slice(&[0x08, 0, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]);
            bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let r = parse_command(&bytes);
        if depth > 64 {
            prop_assert!(r.is_err());
        }
    }

    #[test]
    fn the_header_check_refuses_every_cut_inside_pixel_data(cut in any::<u32>()) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/studies/synth-007-axial-rle/dicom/01_T1/IM_0001.dcm");
        let bytes = std::fs::read(path).unwrap();
        let limits = scp::guard::instance_limits(1 << 30);
        prop_assert!(scp::guard::scan_instance(&bytes, &limits).is_ok());
        let pixel_data = bytes
            .windows(4)
            .rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00])
            .expect("Pixel Data tag");
        let span = bytes.len() - pixel_data - 1;
        let cut_at = pixel_data + 1 + cut as usize % span;
        let r = scp::guard::scan_instance(&bytes[..cut_at], &limits);
        prop_assert!(r.is_err(), "cut at {} of {} passed", cut_at, bytes.len());
    }
}
