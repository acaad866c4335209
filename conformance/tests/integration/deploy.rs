//! deploy/: the CloudFormation template passes cfn-lint without errors, and every `SEGNODE_*`
//! variable it gives a container is one the binary reads for that role (so the template cannot
//! drift from the flags).

use std::collections::BTreeSet;
use std::process::Command;

const TEMPLATE: &str = "deploy/cloudformation.yaml";

#[test]
fn cloudformation_template_has_no_cfn_lint_errors() {
    let root = testkit::workspace_root();
    let out = Command::new(testkit::require_venv_tool("cfn-lint"))
        .arg("--")
        .arg(root.join(TEMPLATE))
        .output()
        .expect("cfn-lint runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // cfn-lint's exit code is a bit set: 2 errors, 4 warnings, 8 informational; other bits
    // (1 and anything above 15) mean it did not run properly.
    let code = out.status.code().expect("cfn-lint exited");
    assert!(
        code & !(4 | 8) == 0,
        "cfn-lint found errors (exit {code}) in {TEMPLATE}:\n{text}"
    );
    if code & 4 != 0 {
        eprintln!("cfn-lint warnings on {TEMPLATE} (not errors):\n{text}");
    }
}

/// `SEGNODE_*` names in `text`.
fn segnode_vars(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("SEGNODE_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_variable_the_template_sets_is_read_by_the_role_it_runs() {
    let template = std::fs::read_to_string(testkit::workspace_root().join(TEMPLATE)).unwrap();
    for (command, args) in [
        ("Command: [scp]", vec!["scp"]),
        ("Command: [worker]", vec!["worker"]),
        ("Command: [scaler, run]", vec!["scaler", "run"]),
    ] {
        let start = template
            .find(command)
            .unwrap_or_else(|| panic!("{TEMPLATE} has no container with {command}"));
        let block = &template[start..];
        let block = &block[..block.find("LogConfiguration:").unwrap()];
        let set = segnode_vars(block);
        assert!(set.contains("SEGNODE_QUEUE_URL"), "{command}: {set:?}");
        let help = Command::new(testkit::segnode_bin())
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(help.status.success());
        let read = segnode_vars(&String::from_utf8_lossy(&help.stdout));
        let unknown: Vec<&String> = set.difference(&read).collect();
        assert!(
            unknown.is_empty(),
            "`segnode {}` does not read {unknown:?} (it reads {read:?})",
            args.join(" ")
        );
    }
}
