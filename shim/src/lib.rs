//! clusterplex-shim: stands in for "Plex Transcoder" (or ffmpeg). It plans each invocation,
//! sends it to the orchestrator when it may run remotely, and otherwise (or as a fallback) runs
//! the original transcoder with the original arguments. It exits with the exit code of whichever
//! transcoder ran, and with 143 / 130 after SIGTERM / SIGINT (cancelling the remote job or
//! killing the local child first).

pub mod guard;
pub mod probe;
pub mod remote;
pub mod settings;

use std::{
    path::{Path, PathBuf},
    process::ExitStatus,
};

use clusterplex_core::plan::{OperatingMode, Placement, Plan, plan_args};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

pub use remote::{GrpcRunner, RemoteOutcome, RemoteRunner, Resume};
pub use settings::Settings;

/// Exit status for a shim that could not do anything useful (no transcoder ran).
pub const EXIT_SHIM_FAILURE: i32 = 1;

/// Why the shim stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupted {
    Term,
    Int,
}

impl Interrupted {
    /// 128 + signal number, as shells and ClusterPlex report it.
    pub fn exit_code(self) -> i32 {
        match self {
            Interrupted::Term => 143,
            Interrupted::Int => 130,
        }
    }
}

/// Waits for SIGTERM or SIGINT.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
    async fn recv(&mut self) -> Interrupted {
        tokio::select! {
            _ = self.term.recv() => Interrupted::Term,
            _ = self.int.recv() => Interrupted::Int,
        }
    }
}

/// The exit code that reports `status` to the parent (128 + signal for a killed child).
pub fn exit_code_of(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => EXIT_SHIM_FAILURE,
    }
}

/// Runs the original transcoder and returns its exit code; a signal kills it first. The
/// transcoder inherits the shim's stdin, or, when the shim already reads it (`relay`, after a
/// remote attempt), gets what arrives there copied to its own.
async fn run_local(
    program: &Path,
    args: &[String],
    signals: &mut Signals,
    relay: Option<&mut probe::StdinRelay>,
) -> Result<i32, Interrupted> {
    let stdin = || {
        if relay.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::inherit()
        }
    };
    let spawned = guard::guarded_command(program, args)
        .stdin(stdin())
        .kill_on_drop(true)
        .spawn()
        .or_else(|e| {
            // The shim's own binary may be gone (replaced during an upgrade): run unguarded.
            warn!("cannot start the transcoder guard ({e}); starting the transcoder directly");
            tokio::process::Command::new(program)
                .args(args)
                .stdin(stdin())
                .kill_on_drop(true)
                .spawn()
        });
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            error!(program = %program.display(), "cannot start the original transcoder: {e}");
            return Ok(EXIT_SHIM_FAILURE);
        }
    };
    // Jellyfin's keys (`q`, `p`/`c`, `u`) reach the local transcoder as they would ffmpeg.
    let child_stdin = child.stdin.take();
    let forward = async {
        if let (Some(r), Some(to)) = (relay, child_stdin) {
            r.forward(to).await;
        }
        std::future::pending::<std::convert::Infallible>().await
    };
    tokio::select! {
        never = forward => match never {},
        status = child.wait() => match status {
            Ok(s) => {
                let code = exit_code_of(s);
                info!(code, "local transcoder exited");
                Ok(code)
            }
            Err(e) => {
                error!("waiting for the local transcoder failed: {e}");
                Ok(EXIT_SHIM_FAILURE)
            }
        },
        sig = signals.recv() => {
            // PMS stops sessions by killing us; the transcoder must not outlive the session.
            if let Err(e) = child.start_kill() {
                warn!("cannot kill the local transcoder: {e}");
            }
            let _ = child.wait().await;
            info!(signal = ?sig, "stopped: killed the local transcoder");
            Err(sig)
        }
    }
}

/// What the shim decided to do before running anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Local(String),
    Remote,
    /// `remote` mode but the job cannot go remote.
    Refuse(String),
}

/// Applies the operating mode to a plan (or a parse failure).
pub fn decide(mode: OperatingMode, plan: &Result<Plan, String>) -> Decision {
    let local_reason = match plan {
        Err(e) => Some(format!("the arguments cannot be planned ({e})")),
        Ok(p) => match &p.placement {
            Placement::Local { reason } => Some(reason.clone()),
            Placement::Remote => None,
        },
    };
    match (mode, local_reason) {
        (OperatingMode::Local, _) => Decision::Local("TRANSCODE_OPERATING_MODE=local".into()),
        (OperatingMode::Remote, Some(r)) => Decision::Refuse(r),
        (_, Some(r)) => Decision::Local(r),
        (_, None) => Decision::Remote,
    }
}

/// Acts as the transcoder for `args`; returns the process exit code.
pub async fn run_transcoder(
    settings: &Settings,
    args: &[String],
    runner: &dyn RemoteRunner,
) -> i32 {
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return EXIT_SHIM_FAILURE;
        }
    };
    let original = settings.original_transcoder();
    if probe::is_capability_probe(args) {
        // Jellyfin/Emby read the transcoder's capabilities from these: the local binary's own
        // text is the truth (stdout untouched, exit code passed through).
        info!(decision = "local", reason = "capability probe", program = %original.display(), "running the original transcoder");
        if !original.exists()
            && let Some(code) = probe::answer_without_transcoder(args)
        {
            return code;
        }
        return match run_local(&original, args, &mut signals, None).await {
            Ok(code) => code,
            Err(sig) => sig.exit_code(),
        };
    }
    let cwd = std::env::current_dir().ok();
    let config = settings.plan_config(cwd.clone());
    let plan = plan_args(args, &config).map_err(|e| e.to_string());
    let session = plan
        .as_ref()
        .ok()
        .and_then(|p| p.job.plex.session_id.clone());
    let decision = decide(settings.mode, &plan);
    let log_local = |reason: &str| {
        info!(decision = "local", reason = %reason, session = ?session, program = %original.display(), "running the original transcoder");
    };
    let result = match decision {
        Decision::Refuse(reason) => {
            error!(decision = "refused", reason = %reason, "TRANSCODE_OPERATING_MODE=remote and the job cannot run remotely; not running it locally");
            return EXIT_SHIM_FAILURE;
        }
        Decision::Local(reason) => {
            log_local(&reason);
            run_local(&original, args, &mut signals, None).await
        }
        Decision::Remote => {
            let Ok(plan) = plan else {
                return EXIT_SHIM_FAILURE;
            };
            let watch_stdin = !plan.job.cli_flags.contains_key("nostdin");
            // Jellyfin's pause/resume keys steer the remote job through this.
            let (paused_tx, paused_rx) = tokio::sync::watch::channel(false);
            let mut relay = watch_stdin.then(probe::StdinRelay::start);
            let keys = async {
                match relay.as_mut() {
                    Some(r) => r.keys(paused_tx).await,
                    None => std::future::pending().await,
                }
            };
            let outcome = tokio::select! {
                o = runner.run(&plan, paused_rx) => o,
                sig = signals.recv() => {
                    info!(signal = ?sig, "stopped: cancelled the remote job");
                    return sig.exit_code();
                }
                () = keys => {
                    // The protocol has no graceful stop: cancelling makes the worker's engine
                    // write every trailer/playlist and stop, which is what `q` asks for.
                    info!("stopped: `q` on stdin, cancelled the remote job");
                    return 0;
                }
            };
            let fallback = match outcome {
                RemoteOutcome::Finished { exit_code, worker } => {
                    info!(decision = "remote", worker = %worker, exit_code, session = ?session, "remote job finished");
                    return exit_code;
                }
                RemoteOutcome::Unreachable(why) => format!("orchestrator unreachable: {why}"),
                RemoteOutcome::Rejected(why) => format!("orchestrator rejected the job: {why}"),
                RemoteOutcome::Failed {
                    reason,
                    exit_code,
                    resume,
                } => {
                    if settings.mode == OperatingMode::Remote {
                        error!(decision = "remote", reason = %reason, exit_code, "remote job failed");
                        return if exit_code == 0 {
                            EXIT_SHIM_FAILURE
                        } else {
                            exit_code
                        };
                    }
                    if let Some(r) = resume {
                        match clusterplex_core::parse::rewrite::resume_argv(
                            args, r.segment, r.elapsed,
                        ) {
                            Ok(resumed) => {
                                log_local(&format!(
                                    "fallback: remote job failed: {reason}; resuming at segment {} ({:.3} s in)",
                                    r.segment, r.elapsed
                                ));
                                return match run_local(
                                    &original,
                                    &resumed,
                                    &mut signals,
                                    relay.as_mut(),
                                )
                                .await
                                {
                                    Ok(code) => code,
                                    Err(sig) => sig.exit_code(),
                                };
                            }
                            Err(e) => warn!("cannot resume locally ({e}); starting over"),
                        }
                    }
                    format!("remote job failed: {reason}")
                }
            };
            if settings.mode == OperatingMode::Remote {
                error!(decision = "refused", reason = %fallback, "TRANSCODE_OPERATING_MODE=remote: not falling back to local");
                return EXIT_SHIM_FAILURE;
            }
            log_local(&format!("fallback: {fallback}"));
            run_local(&original, args, &mut signals, relay.as_mut()).await
        }
    };
    match result {
        Ok(code) => code,
        Err(sig) => sig.exit_code(),
    }
}

/// True when the binary was invoked under the transcoder's name (installed in its place).
pub fn invoked_as_transcoder(argv0: &str) -> bool {
    let name = PathBuf::from(argv0);
    name.file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with("Plex Transcoder"))
}
