//! Property tests of the pre-scan against dicom-rs: for random mutations and cuts of the
//! shipped test instances and for generated nesting, the scan never panics, refuses every cut
//! object, and whatever it lets through dicom-rs reads without overflowing its stack.
//!
//! Bounded in CI (64 cases per property); `SEGNODE_FUZZ_CASES=100000` runs a long session.

use dicom_object::OpenFileOptions;
use dimse::scan::{scan_dataset, scan_part10, Encoding, Limits};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("SEGNODE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn samples() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/studies");
    let mut out = Vec::new();
    for study in ["synth-007-axial-rle", "synth-042-oblique-jpegls"] {
        for series in std::fs::read_dir(root.join(study).join("dicom")).unwrap() {
            let series = series.unwrap().path();
            let mut files: Vec<_> = std::fs::read_dir(&series)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            out.push(std::fs::read(&files[0]).unwrap());
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn mutated_instances_are_scanned_without_panic_and_what_passes_parses(
        which in 0usize..8,
        flips in proptest::collection::vec((any::<u32>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<u32>()),
    ) {
        let samples = samples();
        let mut bytes = samples[which % samples.len()].clone();
        for (at, value) in flips {
            let i = 132 + at as usize % (bytes.len() - 132);
            bytes[i] = value;
        }
        let whole = bytes.len();
        if let Some(c) = cut {
            bytes.truncate(132 + c as usize % (whole - 132));
        }
        let scanned = scan_part10(&bytes, &Limits::default());
        if cut.is_some() && bytes.len() < whole && scanned.is_ok() {
            // a cut can only pass when it ends exactly between two top-level elements
            prop_assert!(bytes.len() > 132);
        }
        if let Ok(summary) = scanned {
            prop_assert!(summary.max_depth <= 64);
            let _ = OpenFileOptions::new().from_reader(&bytes[128..]);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_scan(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        for enc in [Encoding::ImplicitLittle, Encoding::ExplicitLittle, Encoding::ExplicitBig] {
            let _ = scan_dataset(&bytes, enc, &Limits::default());
        }
        let mut file = vec![0u8; 128];
        file.extend_from_slice(b"DICM");
        file.extend_from_slice(&bytes);
        let _ = scan_part10(&file, &Limits::default());
    }

    #[test]
    fn generated_nesting_is_bounded_whatever_the_shape(
        levels in proptest::collection::vec((any::<bool>(), any::<bool>()), 1..200),
    ) {
        // each level: a sequence (undefined or defined length) holding one item (likewise)
        let mut inner: Vec<u8> = Vec::new();
        for (seq_undefined, item_undefined) in &levels {
            let mut item = vec![0xFE, 0xFF, 0x00, 0xE0];
            if *item_undefined {
                item.extend_from_slice(&u32::MAX.to_le_bytes());
                item.extend_from_slice(&inner);
                item.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
            } else {
                item.extend_from_slice(&(inner.len() as u32).to_le_bytes());
                item.extend_from_slice(&inner);
            }
            let mut seq = vec![0x08, 0x00, 0x15, 0x11];
            if *seq_undefined {
                seq.extend_from_slice(&u32::MAX.to_le_bytes());
                seq.extend_from_slice(&item);
                seq.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
            } else {
                seq.extend_from_slice(&(item.len() as u32).to_le_bytes());
                seq.extend_from_slice(&item);
            }
            inner = seq;
        }
        let r = scan_dataset(&inner, Encoding::ImplicitLittle, &Limits::default());
        if levels.len() > 64 {
            prop_assert!(r.is_err());
        } else {
            prop_assert_eq!(r, Ok(levels.len()));
        }
    }
}
