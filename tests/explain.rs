//! `upstream-discovery explain -f`, offline, against golden outputs written by hand from
//! docs/behaviour.md (`tests/explain/NAME.txt`, never produced by running the code): each case is a
//! YAML file of Services (`NAME.yaml`, its comment says which rules it exercises) and the flags it
//! runs with (`NAME.args`, one argument a line).

use std::path::{Path, PathBuf};
use std::process::Command;

fn case_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/explain")
}

fn explain(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_upstream-discovery"))
        .arg("explain")
        .args(args)
        .env_remove("POD_NAMESPACE")
        .output()
        .expect("the binary runs")
}

fn golden(name: &str) {
    let dir = case_dir();
    let input = dir.join(format!("{name}.yaml"));
    let mut args = vec!["-f".to_string(), input.to_string_lossy().into_owned()];
    if let Ok(extra) = std::fs::read_to_string(dir.join(format!("{name}.args"))) {
        args.extend(extra.lines().filter(|l| !l.is_empty()).map(str::to_string));
    }
    let expected = std::fs::read_to_string(dir.join(format!("{name}.txt"))).expect("golden file");
    let output = explain(&args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name}: {stderr}");
    if stdout != expected {
        let mut report = String::new();
        for (i, (got, want)) in stdout.lines().zip(expected.lines()).enumerate() {
            if got != want {
                report.push_str(&format!("line {}:\n  got:  {got}\n  want: {want}\n", i + 1));
            }
        }
        panic!(
            "{name}: output differs from tests/explain/{name}.txt ({} lines vs {})\n{report}\nfull output:\n{stdout}",
            stdout.lines().count(),
            expected.lines().count()
        );
    }
}

#[test]
fn basic_fields_come_from_the_service() {
    golden("basic");
}

#[test]
fn http2_first_match_wins() {
    golden("http2");
}

#[test]
fn tls_annotations_per_port() {
    golden("tls");
}

#[test]
fn upstream_config_global_then_service_shallow_deep_and_oneof() {
    golden("override");
}

#[test]
fn hashed_names_warnings_and_the_service_selector() {
    golden("names");
}

#[test]
fn service_mode_owner_reference() {
    golden("service-mode");
}

#[test]
fn one_service_of_the_file() {
    let input = case_dir().join("http2.yaml");
    let output = explain(&[
        "shop/api".to_string(),
        "-f".to_string(),
        input.to_string_lossy().into_owned(),
        "--write-namespace".to_string(),
        "gloo-system".to_string(),
    ]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("Service shop/api\n"), "{stdout}");
    assert!(!stdout.contains("Service shop/web"), "{stdout}");
}

#[test]
fn bad_input_is_exit_code_2() {
    let input = case_dir().join("http2.yaml");
    let path = input.to_string_lossy().into_owned();
    for args in [
        vec!["shop/missing".to_string(), "-f".to_string(), path.clone()],
        vec!["no-slash".to_string(), "-f".to_string(), path],
        vec![],
        vec!["-f".to_string(), "/nonexistent/services.yaml".to_string()],
    ] {
        let output = explain(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
}
