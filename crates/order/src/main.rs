//! `foodmesh-order`: the order service binary.
//!
//! - `foodmesh-order [--config FILE]` runs the service.
//! - `foodmesh-order [--config FILE] rebuild-view [--check]` rebuilds the
//!   status view from the event streams (or, with `--check`, only compares),
//!   with the service's settings, beside a running service.

#![allow(clippy::print_stdout, reason = "rebuild-view is a command whose report is its output")]

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "rebuild-view") {
        return foodmesh_platform::lifecycle::main("order", foodmesh_order::Settings::load(), foodmesh_order::start).await;
    }
    let _telemetry = foodmesh_platform::telemetry::init("order-rebuild-view");
    let check_only = args.iter().any(|a| a == "--check");
    let outcome = match foodmesh_order::Settings::load() {
        Ok(settings) => foodmesh_order::startup::rebuild_view(settings, check_only).await,
        Err(err) => Err(err.into()),
    };
    match outcome {
        Ok(report) => {
            println!("{}", report.summary(check_only));
            // Like `diff`: a check that found differences fails.
            if check_only && report.differing > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
        Err(err) => {
            eprintln!("rebuild-view failed: {err}");
            ExitCode::FAILURE
        }
    }
}
