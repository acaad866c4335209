//! `segnode model check DIR`, black box: the shipped models (2D, 3D) and the parity model pass and
//! print what a team needs (opset, operators, shapes, time and memory per study); a tampered ONNX, a
//! shape the graph does not have and a graph with a symbolic dimension are refused with the reason.

use std::path::Path;
use std::process::{Command, Output};

use testkit::{segnode_bin, workspace_root};

fn check(dir: &Path) -> Output {
    Command::new(segnode_bin())
        .args(["model", "check"])
        .arg(dir)
        .args(["--runs", "2"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run segnode")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn shipped_models_pass_and_report_time_and_memory() {
    for (model, opset_line, input) in [
        ("parity-patch3d", "opset 17", "[1, 4, 32, 24, 16]"),
        ("brats-synth-segresnet3d", "opset 17", "[1, 4, 96, 112, 96]"),
        ("brats-synth-unet2d", "opset ", "[1, 4, 128, 128]"),
    ] {
        let o = check(&workspace_root().join("models").join(model));
        let t = text(&o);
        println!("{t}");
        assert!(o.status.success(), "{model}: {t}");
        assert!(t.contains(opset_line) && t.contains(input), "{model}: {t}");
        assert!(t.contains("ms per network run"), "{t}");
        assert!(t.contains("per study") && t.contains("peak RSS"), "{t}");
    }
}

/// The parity model in a temporary folder, its manifest edited.
fn copy_with(dir: &Path, edit: impl Fn(String) -> String, onnx: Option<Vec<u8>>) {
    let src = workspace_root().join("models/parity-patch3d");
    let text = std::fs::read_to_string(src.join("model.toml")).unwrap();
    std::fs::write(dir.join("model.toml"), edit(text)).unwrap();
    let bytes = onnx.unwrap_or_else(|| std::fs::read(src.join("parity_patch3d.onnx")).unwrap());
    std::fs::write(dir.join("parity_patch3d.onnx"), bytes).unwrap();
}

#[test]
fn a_bad_model_is_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    // A different file than the manifest's checksum.
    let mut onnx =
        std::fs::read(workspace_root().join("models/parity-patch3d/parity_patch3d.onnx")).unwrap();
    *onnx.last_mut().unwrap() ^= 1;
    copy_with(tmp.path(), |t| t, Some(onnx));
    let o = check(tmp.path());
    assert!(!o.status.success());
    assert!(text(&o).contains("does not match"), "{}", text(&o));

    // A manifest whose (self-consistent) patch is not the graph's.
    copy_with(
        tmp.path(),
        |t| {
            t.replace("patch_size = [32, 24, 16]", "patch_size = [32, 24, 8]")
                .replace("[1, 4, 32, 24, 16]", "[1, 4, 32, 24, 8]")
                .replace("[1, 3, 32, 24, 16]", "[1, 3, 32, 24, 8]")
        },
        None,
    );
    let o = check(tmp.path());
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("shape mismatch") && t.contains("[1, 4, 32, 24, 16]"),
        "{t}"
    );
}
