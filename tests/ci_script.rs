//! `.ci/run` sets `CI=true` itself: the guards that turn "external program missing" into a failure
//! (instead of a skip) must not depend on the caller remembering to set it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn ci_run_exports_ci_true_before_any_cargo_command() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/run");
    let text = std::fs::read_to_string(&path).unwrap();
    let code: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.starts_with('#') && !l.is_empty())
        .collect();
    let export = code
        .iter()
        .find(|(_, l)| *l == "export CI=true")
        .map(|(n, _)| *n)
        .unwrap_or_else(|| panic!("{} does not `export CI=true`", path.display()));
    let first_cargo = code
        .iter()
        .find(|(_, l)| l.split_whitespace().any(|w| w == "cargo"))
        .map(|(n, _)| *n)
        .unwrap();
    assert!(
        export < first_cargo,
        "`export CI=true` (line {export}) comes after the first cargo command (line {first_cargo})"
    );
}
