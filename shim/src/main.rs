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

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
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
