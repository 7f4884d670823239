//! The conformance corpus run offline (docs/development.md): each case of
//! `tests/conformance/cases/` that only adds Services goes through the real binary's `render`, and
//! what it prints must be exactly the Upstreams the case expects. The same cases run through the
//! daemon on the API server in `tests/e2e/conformance.rs`. One trial per case, named after its
//! file.

#[path = "conformance/compare.rs"]
mod compare;
// Shared with the daemon's runners, which use more of it.
#[allow(dead_code)]
#[path = "conformance/corpus.rs"]
mod corpus;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{json, Value};

use corpus::Case;

fn main() {
    let args = Arguments::from_args();
    let mut trials = vec![Trial::test(
        "corpus::namespaces_are_unique_across_cases",
        || namespaces_are_unique_across_cases(&corpus::load_all()?),
    )];
    match corpus::load_all() {
        Ok(cases) => trials.extend(cases.into_iter().filter(Case::runs_offline).map(|case| {
            Trial::test(format!("render::{}", case.name), move || {
                render_matches(&case)
            })
        })),
        Err(error) => trials.push(Trial::test("corpus::every_case_reads", move || {
            Err(error.into())
        })),
    }
    libtest_mimic::run(&args, trials).exit();
}

/// The daemon runner creates each case's namespaces under these fixed names while other cases
/// run beside it, so no two cases may share one; and none may look like the end-to-end tests'
/// own fresh namespaces (`e2e-…`).
fn namespaces_are_unique_across_cases(cases: &[Case]) -> Result<(), Failed> {
    let mut users: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for case in cases {
        for namespace in case.namespaces() {
            users.entry(namespace).or_default().push(&case.name);
        }
    }
    let mut problems: Vec<String> = users
        .iter()
        .filter(|(_, cases)| cases.len() > 1)
        .map(|(namespace, cases)| format!("namespace {namespace} is used by {cases:?}"))
        .collect();
    problems.extend(
        users
            .keys()
            .filter(|namespace| {
                namespace.starts_with("e2e-") || namespace.as_str() == "kube-system"
            })
            .map(|namespace| format!("namespace {namespace} belongs to the test environment")),
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

fn render_matches(case: &Case) -> Result<(), Failed> {
    let step = &case.steps[0];
    let input = json!({"apiVersion": "v1", "kind": "List", "items": step.apply});
    let mut args = vec![
        "render".to_string(),
        "-f".into(),
        "-".into(),
        "--write-namespace".into(),
        case.write_namespace.clone(),
    ];
    for (key, value) in &case.global_annotations {
        args.push("--global-annotations".into());
        args.push(format!("{key}={value}"));
    }
    args.extend(case.daemon_args.iter().cloned());

    let mut child = Command::new(env!("CARGO_BIN_EXE_upstream-discovery"))
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the binary: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(input.to_string().as_bytes())
        .map_err(|e| format!("cannot write to render: {e}"))?;
    let output = child
        .wait_with_output()
        .map_err(|e| format!("render did not end: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("render {args:?} failed ({}):\n{stderr}", output.status).into());
    }
    let upstreams: Vec<Value> = serde_saphyr::from_multiple(&stdout)
        .map_err(|e| format!("render printed what is not YAML ({e}):\n{stdout}"))?;
    for upstream in &upstreams {
        let namespace = upstream
            .pointer("/metadata/namespace")
            .and_then(Value::as_str);
        if namespace != Some(case.write_namespace.as_str()) {
            return Err(format!(
                "an Upstream outside the write namespace {}: {upstream}",
                case.write_namespace
            )
            .into());
        }
    }
    compare::compare_upstreams(&upstreams, &step.expect).map_err(|difference| {
        format!(
            "rule: {}\nrender {args:?} gave other Upstreams than the case expects:\n{difference}\nrender's stderr:\n{stderr}",
            case.rule
        )
        .into()
    })
}
