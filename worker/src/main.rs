//! `clusterplex-worker`: `run` executes one ffmpeg-style job locally; `agent` (the default in a
//! cluster) connects to the orchestrator and runs the jobs it is given.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => clusterplex_worker::local_run::main(&args[1..]),
        _ => clusterplex_worker::agent::main(),
    }
}
