//! `clusterplex-worker run`: one job, in-process, like `ffmpeg` would (and, given Plex's
//! `-progressurl`, with Plex's callbacks and PMS's throttling, like Plex's transcoder).
//!
//! Exit codes: 0 success, 1 the job failed, 2 bad or unsupported arguments, 130 interrupted
//! (SIGINT cancels the job cleanly: trailers are written and finished segments stay valid).

use std::{
    io::IsTerminal,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use clusterplex_core::{CancelToken, JobEvent, Progress, parse::parse_args};
use clusterplex_ffmpeg::{Error, engine::Engine};

use crate::plex::{PlexReporter, callback_token};
use indicatif::{ProgressBar, ProgressStyle};

const USAGE: &str = "usage: clusterplex-worker run [--] <ffmpeg-style arguments>

Runs one transcode job locally, in-process (libav), like the ffmpeg CLI.
Environment:
  CLUSTERPLEX_PROGRESS  auto | bar | plain | none   progress display (default: auto = a bar on a
                                                    terminal, plain lines otherwise)
  CLUSTERPLEX_AV_LOG    quiet | error | warning | info | debug   libav log level (default: quiet)
  X_PLEX_TOKEN          token for Plex callbacks (-progressurl, manifest URLs), as PMS sets it
With -progressurl the run reports to Plex like Plex's transcoder, and PMS's canThrottle paces it.
Exit codes: 0 ok, 1 job failed, 2 bad/unsupported arguments, 130 interrupted.";

/// Entry point for `clusterplex-worker run [--] <ffmpeg arguments>`.
pub fn main(args: &[String]) -> ExitCode {
    let args: Vec<String> = match args.first().map(String::as_str) {
        Some("--") => args[1..].to_vec(),
        _ => args.to_vec(),
    };
    if args.is_empty() || matches!(args[0].as_str(), "-h" | "--help" | "help") {
        eprintln!("{USAGE}");
        return ExitCode::from(if args.is_empty() { 2 } else { 0 });
    }
    let parsed = match parse_args(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("clusterplex-worker run: bad arguments: {e}");
            return ExitCode::from(2);
        }
    };
    if !parsed.unsupported.is_empty() {
        eprintln!(
            "clusterplex-worker run: unsupported options (run the original ffmpeg for these): {}",
            parsed.unsupported.join(" ")
        );
        return ExitCode::from(2);
    }
    let job = parsed.job;
    let cancel = CancelToken::new();
    let interrupted = Arc::new(AtomicBool::new(false));
    watch_sigint(cancel.clone(), interrupted.clone());

    let mode = std::env::var("CLUSTERPLEX_PROGRESS").unwrap_or_else(|_| "auto".into());
    let mut display = Display::new(&mode);
    let mut segments = 0u64;
    // Plex callbacks, as Plex's transcoder makes them; PMS's `canThrottle` paces the job.
    let reporter = PlexReporter::new(&job, callback_token(&job));
    if let Some(r) = &reporter {
        r.drive(&cancel);
    }
    let res = Engine::new().run(&job, &cancel, &mut |ev| {
        if let Some(r) = &reporter {
            r.on_event(&ev);
        }
        match ev {
            JobEvent::Started { duration, .. } => display.start(duration),
            JobEvent::Progress(p) => display.progress(&p),
            JobEvent::SegmentWritten(_) => segments += 1,
            JobEvent::Log { level, message } => {
                display.log(&format!("{level:?}: {message}").to_lowercase())
            }
            JobEvent::Manifest { .. } => {}
        }
    });
    display.finish();
    if let Some(r) = reporter {
        let stats = r.finish_blocking(res.is_ok());
        if stats.failed > 0 || stats.abandoned > 0 {
            eprintln!(
                "clusterplex-worker run: {} Plex callbacks failed, {} given up",
                stats.failed, stats.abandoned
            );
        }
    }
    match res {
        Ok(sum) => {
            let p = &sum.progress;
            let mut extra = String::new();
            if segments > 0 {
                extra += &format!(", {segments} segments");
            }
            if sum.throttled_packets > 0 {
                extra += &format!(", {} packets throttled", sum.throttled_packets);
            }
            if sum.paused_ms > 0 {
                extra += &format!(", paused {:.1}s", sum.paused_ms as f64 / 1000.0);
            }
            eprintln!(
                "done: {} frames in {:.2}s ({:.1} fps, {:.2}x), {:.1} MiB written{extra}",
                p.frames,
                sum.elapsed,
                p.fps,
                p.speed,
                p.bytes as f64 / 1_048_576.0,
            );
            ExitCode::SUCCESS
        }
        Err(Error::Cancelled) if interrupted.load(Ordering::Acquire) => {
            eprintln!("clusterplex-worker run: interrupted; output finalised");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("clusterplex-worker run: job failed at {}: {e}", e.stage());
            ExitCode::from(1)
        }
    }
}

/// Cancels the job on the first SIGINT (a second one exits at once, like ffmpeg).
fn watch_sigint(cancel: CancelToken, interrupted: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("sigint".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    interrupted.store(true, Ordering::Release);
                    cancel.cancel();
                }
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            });
        });
    if let Err(e) = spawned {
        eprintln!("clusterplex-worker run: cannot watch SIGINT: {e}");
    }
}

enum Display {
    Bar(ProgressBar),
    Plain { last: Option<Instant> },
    None,
}

impl Display {
    fn new(mode: &str) -> Self {
        let tty = std::io::stderr().is_terminal();
        match mode {
            "none" => Display::None,
            "plain" => Display::Plain { last: None },
            "bar" => Display::Bar(ProgressBar::new(0)),
            _ if tty => Display::Bar(ProgressBar::new(0)),
            _ => Display::Plain { last: None },
        }
    }

    fn start(&mut self, duration: Option<f64>) {
        if let Display::Bar(b) = self {
            match duration {
                Some(d) if d > 0.0 => {
                    b.set_length((d * 1000.0) as u64);
                    b.set_style(
                        ProgressStyle::with_template("{bar:40} {percent:>3}% {msg} eta {eta}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                }
                _ => {
                    b.set_style(ProgressStyle::default_spinner());
                    b.enable_steady_tick(Duration::from_millis(200));
                }
            }
        }
    }

    fn progress(&mut self, p: &Progress) {
        let line = format!(
            "frames={} fps={:.1} time={:.2}s speed={:.2}x size={}kB",
            p.frames,
            p.fps,
            p.out_time,
            p.speed,
            p.bytes / 1024
        );
        match self {
            Display::Bar(b) => {
                if let Some(d) = p.duration.filter(|d| *d > 0.0) {
                    b.set_position(((p.out_time.min(d)) * 1000.0) as u64);
                }
                b.set_message(line);
            }
            Display::Plain { last } => {
                // Plain output: at most one line every 2 s, plus the final one.
                if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
                    *last = Some(Instant::now());
                    eprintln!("{line}");
                }
            }
            Display::None => {}
        }
    }

    fn log(&mut self, line: &str) {
        match self {
            Display::Bar(b) => b.println(line),
            Display::Plain { .. } => eprintln!("{line}"),
            Display::None => {}
        }
    }

    fn finish(&mut self) {
        if let Display::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}
