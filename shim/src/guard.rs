//! The local transcoder dies with the shim, even when PMS SIGKILLs the shim (no signal handler
//! runs then, and an orphaned transcoder keeps writing into a dead session).
//!
//! How: the shim starts itself again in a hidden guard mode; the guard arms Linux's
//! `PR_SET_PDEATHSIG` (SIGKILL) through rustix's safe API and then `exec`s the original
//! transcoder. The death signal survives `exec`, so the transcoder itself (same pid) is
//! killed by the kernel the moment the shim goes. Doing it in a separate process avoids a
//! `pre_exec` hook (unsafe, and this crate has no unsafe).

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
};

/// First argument that selects guard mode (never a real transcoder argument).
pub const GUARD_ARG: &str = "__clusterplex-exec-guard";
/// The pid the guard must have as parent; also proves the guard was started by the shim.
const GUARD_ENV: &str = "CLUSTERPLEX_SHIM_GUARD_PARENT";

/// The command that runs `program args` as a child that dies with this process. Falls back to
/// running `program` directly (without the guard) when the shim's own path is unknown.
pub fn guarded_command(program: &Path, args: &[String]) -> tokio::process::Command {
    match std::env::current_exe() {
        Ok(me) => {
            let mut c = tokio::process::Command::new(me);
            c.arg(GUARD_ARG)
                .arg(program)
                .args(args)
                .env(GUARD_ENV, std::process::id().to_string());
            c
        }
        Err(e) => {
            tracing::warn!(
                "cannot find the shim's own path ({e}); the local transcoder will not be tied to the shim's lifetime"
            );
            let mut c = tokio::process::Command::new(program);
            c.args(args);
            c
        }
    }
}

/// In guard mode (argv[1] is [`GUARD_ARG`] and the parent set the marker), arms the death
/// signal and `exec`s the transcoder; returns the exit code only when that fails.
pub fn run_guard_if_asked(argv: &[String]) -> Option<i32> {
    if argv.get(1).map(String::as_str) != Some(GUARD_ARG) {
        return None;
    }
    let parent: i32 = std::env::var(GUARD_ENV).ok()?.parse().ok()?;
    let Some(program) = argv.get(2).map(PathBuf::from) else {
        eprintln!("clusterplex-shim: guard mode without a program");
        return Some(1);
    };
    if let Err(e) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
    {
        eprintln!("clusterplex-shim: cannot tie the transcoder to the shim: {e}");
    }
    // The shim may have died between fork and prctl: then nobody will signal us.
    if rustix::process::getppid().map(|p| p.as_raw_pid()) != Some(parent) {
        return Some(1);
    }
    let err = std::process::Command::new(&program)
        .args(&argv[3..])
        .env_remove(GUARD_ENV)
        .exec();
    eprintln!(
        "clusterplex-shim: cannot start the original transcoder {}: {err}",
        program.display()
    );
    Some(127)
}
