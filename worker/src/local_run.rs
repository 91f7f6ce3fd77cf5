//! `clusterplex-worker run`: one job, in-process, like `ffmpeg` would.

use std::process::ExitCode;

/// Entry point for `clusterplex-worker run [--] <ffmpeg arguments>`.
pub fn main(_args: &[String]) -> ExitCode {
    eprintln!("clusterplex-worker run: not implemented yet");
    ExitCode::from(2)
}
