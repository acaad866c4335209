//! The model manifest (models/<name>/model.toml) deserializes into typed structs with no unknown fields, and its
//! contents are consistent (channels, shapes, classes, segments, regexes usable by a Rust matcher).
//! The structs are the segmenter's own (`segmenter::manifest`), so this checks what the worker reads.

use std::collections::BTreeSet;
use std::path::Path;

use segmenter::manifest::ManifestFile as Manifest;

/// The regex subset the manifest may use: no look-around, no back-references (the Rust `regex` crate's syntax).
fn regex_is_portable(p: &str) -> bool {
    !(p.contains("(?=")
        || p.contains("(?!")
        || p.contains("(?<=")
        || p.contains("(?<!")
        || p.contains("\\1"))
}

#[test]
fn shipped_manifest_deserializes_and_is_consistent() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/brats-synth-unet2d");
    let text = std::fs::read_to_string(dir.join("model.toml")).unwrap();
    let m: Manifest = toml::from_str(&text).expect("model.toml matches the schema");
    assert_eq!(m.schema_version, 1);
    assert!(dir.join(&m.model.onnx).is_file(), "onnx file present");
    assert_eq!(m.model.onnx_sha256.len(), 64);
    assert!(m
        .model
        .onnx_sha256
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));

    // channels 0..n in order, names unique, match_order a permutation of them
    let n = m.inputs.len();
    for (i, inp) in m.inputs.iter().enumerate() {
        assert_eq!(inp.channel, i, "inputs listed in channel order");
        assert!(!inp.series_description.is_empty());
        for p in inp.series_description.iter().chain(&inp.exclude) {
            assert!(regex_is_portable(p), "regex {p:?} uses look-around");
        }
    }
    let names: BTreeSet<_> = m.inputs.iter().map(|i| i.name.clone()).collect();
    assert_eq!(names.len(), n);
    assert_eq!(
        m.selection
            .match_order
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        names
    );
    assert!(names.contains(&m.geometry.reference_input));
    assert!(m.selection.min_slices >= 1);

    // shapes
    assert_eq!(m.geometry.kind, "slice2d");
    assert_eq!(
        m.model.input_shape,
        vec![1, n, m.geometry.size[0], m.geometry.size[1]]
    );
    assert_eq!(
        m.model.output_shape,
        vec![
            1,
            m.output.classes.len(),
            m.geometry.size[0],
            m.geometry.size[1]
        ]
    );
    assert!(m.geometry.spacing_mm.iter().all(|s| *s > 0.0));
    assert_eq!(m.normalisation.method, "zscore_above_mean");
    assert_eq!(m.output.kind, "logits");

    // classes: 0 is background, every other class has exactly one segment
    assert_eq!(m.output.classes[0], 0);
    let seg_labels: Vec<u8> = m.segments.iter().map(|s| s.label).collect();
    let non_bg: Vec<u8> = m
        .output
        .classes
        .iter()
        .copied()
        .filter(|c| *c != 0)
        .collect();
    assert_eq!(seg_labels, non_bg);
    // regions are unions of known labels
    for r in &m.regions {
        assert!(
            r.labels.iter().all(|l| non_bg.contains(l)),
            "region {}",
            r.name
        );
    }
    assert!(m.postprocess.min_component_ml >= 0.0);
    for s in &m.segments {
        assert_eq!(s.category.scheme, "SCT");
        assert_eq!(s.category.value, "49755003");
        assert!(["SCT", "NCIt"].contains(&s.type_.scheme.as_str()));
    }
    let types: Vec<(&str, &str)> = m
        .segments
        .iter()
        .map(|s| (s.type_.scheme.as_str(), s.type_.value.as_str()))
        .collect();
    assert_eq!(
        types,
        vec![("SCT", "6574001"), ("SCT", "79654002"), ("NCIt", "C113842")]
    );
}
