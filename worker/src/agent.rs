//! The cluster agent: registers with the orchestrator and runs assigned jobs.

use std::process::ExitCode;

/// Entry point for `clusterplex-worker [agent] [flags]`.
pub fn main() -> ExitCode {
    eprintln!("clusterplex-worker agent: not implemented yet");
    ExitCode::from(2)
}
