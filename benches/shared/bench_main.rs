//! What every benchmark shares: its `main` (the work on a tokio runtime, its report printed,
//! exit 1 only when the benchmark itself broke; a missed target is reported, not failed) and
//! the report files it leaves.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

/// Runs `work`; prints its report (when it has one) or why the benchmark failed.
pub fn report_main(work: impl Future<Output = Result<String, String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("benchmark failed: no tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(report) => {
            if !report.is_empty() {
                println!("{report}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("benchmark failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the report as `<base>.json` and `<base>.md`.
#[allow(dead_code)] // Not every benchmark writes report files.
pub fn write_reports(
    base: &Path,
    report: &impl serde::Serialize,
    markdown: &str,
) -> Result<(), String> {
    let json = serde_json::to_string_pretty(report).map_err(|e| format!("JSON report: {e}"))?;
    for (path, text) in [
        (base.with_extension("json"), json),
        (base.with_extension("md"), markdown.to_string()),
    ] {
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
