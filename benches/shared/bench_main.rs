//! The `main` every benchmark shares: the work on a tokio runtime, its report printed, and exit
//! 1 only when the benchmark itself broke (a missed target is reported, not failed).

use std::future::Future;
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
