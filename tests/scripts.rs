//! The scripts that run tests (`scripts/test`, `scripts/sam-build`, `scripts/sam-local`)
//! install what those tests need through one setup step, `scripts/setup-test-tools`,
//! before they build or test anything: on a fresh clone each works on its own.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Lines of a shell script without comments.
fn code_lines(script: &str) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(root().join(script)).unwrap();
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split('#').next().unwrap().trim().to_string()))
        .filter(|(_, l)| !l.is_empty())
        .collect()
}

fn first_line(lines: &[(usize, String)], what: impl Fn(&str) -> bool) -> Option<usize> {
    lines.iter().find(|(_, l)| what(l)).map(|(n, _)| *n)
}

#[test]
fn every_script_that_runs_tests_sets_up_their_tools_first() {
    for (script, option) in [
        ("scripts/test", ""),
        ("scripts/sam-build", "--cargo-lambda"),
        ("scripts/sam-local", ""),
    ] {
        let lines = code_lines(script);
        let sourced = first_line(&lines, |l| l == "source scripts/setup-test-tools")
            .unwrap_or_else(|| panic!("{script} does not source scripts/setup-test-tools"));
        let setup = first_line(&lines, |l| {
            l.split_whitespace().next() == Some("afterpush_setup_test_tools") && l.contains(option)
        })
        .unwrap_or_else(|| panic!("{script} does not run afterpush_setup_test_tools {option}"));
        assert!(sourced < setup, "{script}");
        // Before anything that builds or tests, and before any venv is used directly.
        for (what, found) in [
            ("cargo", first_line(&lines, |l| l.contains("cargo "))),
            ("sam", first_line(&lines, |l| l.contains("/bin/sam"))),
            ("a venv", first_line(&lines, |l| l.contains("venv/bin"))),
        ] {
            if let Some(line) = found {
                assert!(
                    setup < line,
                    "{script}:{line} uses {what} before the setup step (line {setup})"
                );
            }
        }
    }
}

/// Run with the tools already given, the setup step installs nothing and hands them on
/// (CI machines and worktrees share venvs this way); the exports it prints are the
/// ones the scripts get.
#[test]
fn the_setup_step_keeps_tools_already_given_and_exports_all_three() {
    let given = [
        ("AFTERPUSH_PYTHON", "/opt/given/python"),
        ("AFTERPUSH_SAM", "/opt/given/sam"),
        ("AFTERPUSH_CHECKOV", "/opt/given/checkov"),
    ];
    // The apt packages must be there already: this test installs nothing.
    let installed = Command::new("dpkg-query")
        .args(["-W", "docker-registry", "skopeo", "pigz", "time"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!(
            "skipped: the setup step's apt packages are not all installed here (run scripts/test)"
        );
        return;
    }
    let out = Command::new("bash")
        .arg(root().join("scripts/setup-test-tools"))
        .envs(given)
        .output()
        .expect("run scripts/setup-test-tools");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!stderr.contains("installing"), "{stderr}");
    for (name, value) in given {
        assert!(
            stdout
                .lines()
                .any(|l| l == format!("export {name}={value}")),
            "{name}: {stdout}"
        );
    }
}
