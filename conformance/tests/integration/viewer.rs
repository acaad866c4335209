//! The SEG in the viewer people use: segnode delivers by STOW-RS to Orthanc's DICOMweb plugin, and
//! OHIF v3 in headless Chromium (Playwright) opens the study, loads the SEG and shows a labelmap that
//! equals the SEG voxel for voxel and sits on the FLAIR lesion. A deliberately shifted copy of the
//! SEG, loaded the same way, must fail the lesion check: the check can fail.
//!
//! The work is done by conformance/tools/ohif_check.py inside a private network namespace
//! (`unshare -n`: Orthanc 1.10 always listens on 0.0.0.0). Screenshots, the browser console and the
//! node's and Orthanc's logs are kept in `target/artifacts/ohif/`.

use std::process::Command;

use testkit::{python, require_tool, segnode_bin, target_dir, workspace_root};

#[test]
fn ohif_shows_the_seg_on_the_flair_lesion_and_a_shifted_seg_fails() {
    let ohif = workspace_root().join(".cache/ohif/3.13.2/dist");
    assert!(
        ohif.join("index.html").is_file(),
        "the OHIF dist is missing in {}: run scripts/install-test-deps.sh",
        ohif.display()
    );
    for tool in [
        "unshare",
        "ip",
        "Orthanc",
        "dcmsend",
        "chromium-headless-shell",
    ] {
        require_tool(tool);
    }
    let out = target_dir().join("artifacts/ohif");
    let _ = std::fs::remove_dir_all(&out);
    let study = workspace_root().join("testdata/studies/synth-007-axial-rle");
    let output = Command::new(require_tool("unshare"))
        .args([
            "-n",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(python())
        .arg(workspace_root().join("conformance/tools/ohif_check.py"))
        .arg("--segnode")
        .arg(segnode_bin())
        .arg("--study")
        .arg(&study)
        .arg("--ohif")
        .arg(&ohif)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run ohif_check.py");
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stderr}");
    assert!(output.status.success(), "ohif_check.py failed:\n{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "ohif_check.py printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    eprintln!("ohif_check.py: {r:#}");

    let d = &r["delivered"];
    assert_eq!(d["error"], serde_json::Value::Null, "{d}");
    assert_eq!(
        d["label_images"], d["flair_slices"],
        "one label image per FLAIR slice: {d}"
    );
    assert_eq!(
        d["mismatched_voxels"], 0,
        "the viewer's labelmap differs from the SEG: {d}"
    );
    assert_eq!(d["voxel_equal"], true, "{d}");
    assert!(
        d["voxels_set_seg"].as_u64().unwrap() > 1000,
        "the SEG has a tumour: {d}"
    );
    assert_eq!(
        d["on_flair_lesion"], true,
        "the labelmap is not on the lesion: {d}"
    );
    assert_eq!(
        d["segment_names"],
        serde_json::json!({"1": "Necrotic core", "2": "Oedema", "3": "Enhancing tumour"}),
        "{d}"
    );
    assert_eq!(d["colours_ok"], true, "segment colours: {d}");
    assert_eq!(d["passed"], true, "{d}");

    // The shifted SEG is shown as it is (the viewer is faithful) and is off the lesion: it fails.
    let s = &r["shifted"];
    assert_eq!(s["error"], serde_json::Value::Null, "{s}");
    assert_eq!(s["voxel_equal"], true, "{s}");
    assert_eq!(
        s["on_flair_lesion"], false,
        "a shifted SEG passed the lesion check: {s}"
    );
    assert_eq!(s["passed"], false, "{s}");
    assert!(out.join("ohif-delivered.png").is_file());
}
