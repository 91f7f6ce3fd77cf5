//! Soak: many short Plex DASH jobs through the shim and three workers while a chaos task
//! SIGKILLs and restarts workers at random (seeded; the seed is printed, and
//! `CLUSTERPLEX_SOAK_SEED` replays it). Every job must end either with complete output or
//! with a reason the shim acted on (a fallback to the original transcoder, or a non-zero exit
//! with a message); at the end no job is left in the orchestrator, its counters add up and no
//! worker reports a running job.
//!
//! Bounded: `CLUSTERPLEX_SOAK_SECS` (default 45) of submitting, then the drain.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use clusterplex_e2e::{
    Cluster, ClusterOpts, Install, Pms, check_dash, finish, plex_base, plex_dash_args,
};
use clusterplex_testkit::av_clip;

/// What `both` mode may hand the original transcoder for Plex's `args`, given what it did
/// hand it (`got`): `args` unchanged, or, when the remote session failed after writing some
/// segments, `args` carried on from the first missing one (`rewrite::resume_argv` with the
/// segment and seek `got` names).
fn fallback_argv(args: &[String], got: &[String]) -> Vec<String> {
    fn value<'a>(v: &'a [String], opt: &str) -> Option<&'a str> {
        v.iter()
            .position(|a| a == opt)
            .and_then(|i| v.get(i + 1))
            .map(String::as_str)
    }
    let ss = |v: &[String]| value(v, "-ss").map_or(0.0, |s| s.parse::<f64>().unwrap());
    if got == args {
        return args.to_vec();
    }
    let next: u64 = value(got, "-skip_to_segment")
        .expect("a changed fallback argv resumes a segment")
        .parse()
        .unwrap();
    clusterplex_core::parse::rewrite::resume_argv(args, next, ss(got) - ss(args)).unwrap()
}

/// xorshift64*: small, seedable, good enough to pick victims.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug)]
enum Outcome {
    /// Ran remotely; the session directory holds every segment.
    Complete,
    /// The shim ran the original transcoder with Plex's argv and said why.
    FellBack(String),
    /// Non-zero exit with an error line.
    Failed(i32),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_workers_being_killed_and_restarted() {
    let secs: u64 = std::env::var("CLUSTERPLEX_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    let seed: u64 = std::env::var("CLUSTERPLEX_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    eprintln!("soak: seed {seed} (CLUSTERPLEX_SOAK_SEED={seed} replays it), {secs} s");
    let cluster = Arc::new(tokio::sync::Mutex::new(
        Cluster::start(ClusterOpts {
            lost_ms: 1500,
            ..ClusterOpts::default()
        })
        .await,
    ));
    let (url, input) = {
        let c = cluster.lock().await;
        // 1.5 s: one 2 s chunk per stream. A clip of exactly one chunk would make AAC's
        // trailing padding spill into an audio-only second chunk (as with ffmpeg's dashenc).
        let clip = av_clip(
            "mkv",
            1.5,
            25,
            &["-c:v", "libx264", "-preset", "ultrafast"],
            &[("aac", 2)],
            false,
        );
        (c.url(), c.media_file(&clip, "Soak.mkv"))
    };

    // Chaos: every 1-4 s SIGKILL a random running worker (keeping at least one), and bring
    // dead ones back after 0.5-2.5 s.
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(Mutex::new(Vec::<String>::new()));
    let chaos = {
        let (cluster, stop, kills) = (cluster.clone(), stop.clone(), kills.clone());
        tokio::spawn(async move {
            let mut rng = Rng(seed);
            let mut dead: Vec<(String, Instant)> = Vec::new();
            let mut next_kill = Instant::now() + Duration::from_millis(1000 + rng.below(3000));
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut c = cluster.lock().await;
                let now = Instant::now();
                dead.retain(|(id, back)| {
                    if *back <= now {
                        c.start_worker(id);
                        false
                    } else {
                        true
                    }
                });
                let alive = c.running_workers();
                if now >= next_kill && alive.len() > 1 {
                    let victim = alive[rng.below(alive.len() as u64) as usize].clone();
                    c.kill_worker(&victim);
                    kills.lock().unwrap().push(victim.clone());
                    dead.push((victim, now + Duration::from_millis(500 + rng.below(2000))));
                    next_kill = now + Duration::from_millis(1000 + rng.below(3000));
                }
            }
            let mut c = cluster.lock().await;
            for (id, _) in dead {
                c.start_worker(&id);
            }
        })
    };

    // Three shims at a time, each a new Plex session, in real time (about 2 s a job).
    let sessions_root = cluster.lock().await.sessions.clone();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for lane in 0..3 {
        let (url, input, root) = (url.clone(), input.clone(), sessions_root.clone());
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            let mut n = 0;
            while Instant::now() < deadline {
                n += 1;
                let key = format!("soak{lane}x{n}");
                let session = root.join(format!("plex-transcode-{key}"));
                std::fs::create_dir_all(&session).unwrap();
                let pms = Pms::start(&session);
                let install = Install::new();
                let args = plex_dash_args(&input, &plex_base(&key), 1, None, true);
                let child = install
                    .shim(&url, pms.port, &session, "both", &args)
                    .spawn()
                    .unwrap();
                let done = finish(child, Duration::from_secs(60)).await;
                let outcome = match install.original_ran_with() {
                    Some(a) => {
                        assert_eq!(
                            a,
                            fallback_argv(&args, &a),
                            "{key}: the fallback got neither Plex's argv nor its resume"
                        );
                        let why = done
                            .stderr
                            .lines()
                            .find(|l| l.contains("fallback"))
                            .unwrap_or_else(|| {
                                panic!("{key}: fell back without a reason:\n{}", done.stderr)
                            });
                        assert_eq!(done.code, 0, "{key}: {}", done.stderr);
                        Outcome::FellBack(why.to_string())
                    }
                    None if done.code == 0 => {
                        let dash = check_dash(&session, 2, 1);
                        assert!(
                            dash.violations.is_empty() && dash.chunks[&0] == [1],
                            "{key}: exit 0 but the output is incomplete: {dash:?}\n{}",
                            done.stderr
                        );
                        Outcome::Complete
                    }
                    None => {
                        assert!(
                            done.stderr.contains("ERROR"),
                            "{key}: exit {} without a message:\n{}",
                            done.code,
                            done.stderr
                        );
                        Outcome::Failed(done.code)
                    }
                };
                results.push((key, outcome));
            }
            results
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    chaos.await.unwrap();

    let complete = results
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Complete))
        .count();
    let fell_back: Vec<&String> = results
        .iter()
        .filter_map(|(_, o)| match o {
            Outcome::FellBack(why) => Some(why),
            _ => None,
        })
        .collect();
    let failed: Vec<i32> = results
        .iter()
        .filter_map(|(_, o)| match o {
            Outcome::Failed(code) => Some(*code),
            _ => None,
        })
        .collect();
    let kills = kills.lock().unwrap().clone();
    eprintln!(
        "soak: seed {seed}: {} jobs: {complete} complete, {} fell back, {} failed {failed:?}; \
         {} worker kills {kills:?}",
        results.len(),
        fell_back.len(),
        failed.len(),
        kills.len()
    );
    for why in &fell_back {
        eprintln!("  fallback: {why}");
    }
    assert!(results.len() >= 10, "only {} jobs ran", results.len());
    assert!(complete > 0, "no job completed remotely");

    // Drained: every worker back, nothing running anywhere, counters consistent.
    let c = cluster.lock().await;
    c.wait_workers(3).await;
    let settle = Instant::now() + Duration::from_secs(10);
    loop {
        let jobs = c.list_jobs().await;
        let workers = c.list_workers().await;
        let busy: Vec<_> = workers
            .iter()
            .filter(|w| w.running_jobs != 0 || !w.job_ids.is_empty())
            .map(|w| (&w.id, w.running_jobs, &w.job_ids))
            .collect();
        if jobs.is_empty() && busy.is_empty() {
            break;
        }
        assert!(
            Instant::now() < settle,
            "stuck after the soak: jobs {jobs:?}, busy workers {busy:?}\n{}",
            c.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = c.metrics();
    let get = |n: &str| {
        clusterplex_testkit::process::metric(&m, n).unwrap_or_else(|| panic!("{n} missing:\n{m}"))
    };
    let posted = get("jobs_posted");
    assert_eq!(
        posted,
        results.len() as f64,
        "every shim submitted exactly once (the orchestrator never went away)"
    );
    assert_eq!(
        posted,
        get("jobs_succeeded") + get("jobs_failed") + get("jobs_killed"),
        "posted = succeeded + failed + killed:\n{m}"
    );
    assert_eq!(get("jobs_completed"), posted, "{m}");
    assert_eq!(
        get("jobs_succeeded"),
        complete as f64,
        "a job the orchestrator counts as succeeded must have completed in its session:\n{m}"
    );
    assert_eq!(get("job_posters_active"), 0.0, "{m}");
}
