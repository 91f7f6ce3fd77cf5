//! `clusterplex-shim`: installed as "Plex Transcoder"; also `clusterplex-shim plan -- <argv>`.

use std::{fs::OpenOptions, process::ExitCode, sync::Mutex};

use clap::{Parser, Subcommand};
use clusterplex_core::plan::plan_args;
use clusterplex_shim::{GrpcRunner, Settings, invoked_as_transcoder, run_transcoder};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[derive(Parser)]
#[command(
    name = "clusterplex-shim",
    version,
    about = "Plex Transcoder / ffmpeg stand-in that runs jobs on ClusterPlex workers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the plan for a transcoder argv as JSON (exit 0), or why it cannot be planned (exit 2).
    Plan {
        #[command(flatten)]
        settings: Settings,
        /// The transcoder's arguments (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Act as the transcoder for the given arguments (what the "Plex Transcoder" name does).
    Run {
        #[command(flatten)]
        settings: Settings,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn init_logging(settings: &Settings) {
    let level = if settings.verbose { "debug" } else { "info" };
    let filter =
        EnvFilter::try_from_env("CLUSTERPLEX_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let stderr = fmt::layer().with_writer(std::io::stderr).with_ansi(false);
    let file = settings.log_file.as_ref().and_then(|p| {
        match OpenOptions::new().create(true).append(true).open(p) {
            Ok(f) => Some(fmt::layer().with_writer(Mutex::new(f)).with_ansi(false)),
            Err(e) => {
                eprintln!(
                    "clusterplex-shim: cannot open log file {}: {e}",
                    p.display()
                );
                None
            }
        }
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file)
        .try_init();
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn transcoder(settings: Settings, args: Vec<String>) -> ExitCode {
    init_logging(&settings);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("clusterplex-shim: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let runner = GrpcRunner {
        settings: settings.clone(),
    };
    let code = rt.block_on(run_transcoder(&settings, &args, &runner));
    // Do not wait for stray blocking tasks: the exit code is decided.
    rt.shutdown_background();
    exit(code)
}

/// An argv that is not valid UTF-8 (a file name with stray bytes) cannot become a `Job`; the
/// original transcoder gets it byte for byte, by exec so that it inherits the shim's pid,
/// signals and exit status. `remote` mode has nowhere to send it.
fn run_raw_locally(raw: Vec<std::ffi::OsString>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("clusterplex-shim: bad setting: {e}");
            return ExitCode::from(1);
        }
    };
    if settings.mode == clusterplex_core::plan::OperatingMode::Remote {
        eprintln!(
            "clusterplex-shim: the arguments are not valid UTF-8, so the job cannot be sent to \
             the cluster, and TRANSCODE_OPERATING_MODE=remote forbids running it locally"
        );
        return ExitCode::from(1);
    }
    let program = settings.original_transcoder();
    eprintln!(
        "clusterplex-shim: the arguments are not valid UTF-8; running {} locally",
        program.display()
    );
    let err = std::process::Command::new(&program)
        .args(raw.into_iter().skip(1))
        .exec();
    eprintln!("clusterplex-shim: cannot run {}: {err}", program.display());
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let argv: Vec<String> = match raw.iter().map(|a| a.clone().into_string()).collect() {
        Ok(v) => v,
        Err(_) => return run_raw_locally(raw),
    };
    if let Some(code) = clusterplex_shim::guard::run_guard_if_asked(&argv) {
        return exit(code);
    }
    let argv0 = argv.first().cloned().unwrap_or_default();
    let first = argv.get(1).map(String::as_str);
    let shim_cli = !invoked_as_transcoder(&argv0)
        && matches!(
            first,
            Some("plan" | "run" | "help" | "-h" | "--help" | "-V" | "--version")
        );
    if !shim_cli {
        // Plex's argv: settings only from the environment.
        let settings = match Settings::from_env() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("clusterplex-shim: bad setting: {e}");
                return ExitCode::from(1);
            }
        };
        return transcoder(settings, argv[1..].to_vec());
    }
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Plan { settings, args } => {
            let cwd = std::env::current_dir().ok();
            match plan_args(&args, &settings.plan_config(cwd)) {
                Ok(plan) => match serde_json::to_string_pretty(&plan) {
                    Ok(json) => {
                        println!("{json}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("clusterplex-shim: cannot print the plan: {e}");
                        ExitCode::from(2)
                    }
                },
                Err(e) => {
                    eprintln!("clusterplex-shim: cannot plan these arguments: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Run { settings, args } => transcoder(settings, args),
    }
}
