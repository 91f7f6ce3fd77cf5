//! A session through the real cluster while things happen to it: a seek (PMS kills the
//! transcoder and starts a new one with `-ss` and `-skip_to_segment` for the same session),
//! and a worker SIGKILLed mid-job (the session must still complete, every segment once).

use std::time::{Duration, Instant};

use clusterplex_e2e::{
    Cluster, ClusterOpts, Install, Pms, check_dash, contract_violations, finish,
    joined_packet_times, plex_base, plex_dash_args, wait_file,
};
use clusterplex_pms_contract::ManifestBody;
use clusterplex_testkit::av_clip;

fn clip(secs: f64) -> std::path::PathBuf {
    av_clip(
        "mkv",
        secs,
        25,
        &["-c:v", "libx264", "-preset", "ultrafast"],
        &[("aac", 2)],
        false,
    )
}

/// The largest `size` PMS got in a progress PUT (0 without any).
fn max_size(rec: &clusterplex_pms_contract::Recording) -> f64 {
    rec.requests
        .iter()
        .filter(|r| r.query.starts_with("progress="))
        .filter_map(|r| r.num("size"))
        .fold(0.0, f64::max)
}

/// The one job the orchestrator lists (waits up to 10 s for it to be placed).
async fn running_job(cluster: &Cluster) -> clusterplex_core::rpc::pb::JobInfo {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let jobs = cluster.list_jobs().await;
        if let Some(j) = jobs.iter().find(|j| !j.worker_id.is_empty()) {
            return j.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no placed job in {jobs:?}\n{}",
            cluster.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the shim for `session` in `mode` on `args`, waits until the session's second chunk
/// is written, and returns the shim and the one job the orchestrator placed for it.
async fn shim_until_second_chunk(
    cluster: &Cluster,
    install: &Install,
    pms: &Pms,
    session: &std::path::Path,
    mode: &str,
    args: &[String],
) -> (tokio::process::Child, clusterplex_core::rpc::pb::JobInfo) {
    let child = install
        .shim(&cluster.url(), pms.port, session, mode, args)
        .spawn()
        .unwrap();
    assert!(
        wait_file(
            &session.join("chunk-stream0-00002.m4s"),
            Duration::from_secs(30)
        )
        .await,
        "no second segment\n{}",
        cluster.log_tails()
    );
    (child, running_job(cluster).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_cancels_the_old_job_and_resumes_on_the_same_worker() {
    let cluster = Cluster::start(ClusterOpts::default()).await;
    let input = cluster.media_file(&clip(12.0), "Seek Movie (2026).mkv");
    let session = cluster.session_dir("seek1");
    let base = plex_base("seek1");
    let install = Install::new();

    // Playback from the start, in real time so that it is still running when the user seeks.
    let pms1 = Pms::start(&session);
    let (first, old) = shim_until_second_chunk(
        &cluster,
        &install,
        &pms1,
        &session,
        "remote",
        &plex_dash_args(&input, &base, 1, None, true),
    )
    .await;

    // The seek: PMS kills its transcoder and starts another for the same session at segment 4
    // (`-ss (N-1) x seg_duration`).
    clusterplex_testkit::process::signal(first.id().unwrap(), "TERM");
    let killed = finish(first, Duration::from_secs(10)).await;
    assert_eq!(killed.code, 143, "{}", killed.stderr);
    let pms2 = Pms::start(&session);
    let second = install
        .shim(
            &cluster.url(),
            pms2.port,
            &session,
            "remote",
            &plex_dash_args(&input, &base, 4, Some(6.0), false),
        )
        .spawn()
        .unwrap();

    // The old job is cancelled at once: gone from ListJobs and counted as killed.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let jobs = cluster.list_jobs().await;
        if !jobs.iter().any(|j| j.job_id == old.job_id) && cluster.metric("jobs_killed") >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old job {} still listed or not counted as killed: {jobs:?}\n{}",
            old.job_id,
            cluster.metrics()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let done = finish(second, Duration::from_secs(60)).await;
    assert_eq!(done.code, 0, "{}\n{}", done.stderr, cluster.log_tails());
    assert!(install.original_ran_with().is_none());

    // Segments 4.. are there, decodable, on the source timeline (tfdt about 6 s).
    let dash = check_dash(&session, 2, 4);
    assert!(dash.violations.is_empty(), "{:#?}", dash.violations);
    assert_eq!(dash.chunks[&0].first(), Some(&4), "{:?}", dash.chunks);
    // `-noaccurate_seek` with copied video starts at the keyframe at or before 6 s (one a
    // second in the clip), and the session runs to the end of the 12 s clip from there.
    for (r, start) in &dash.starts {
        assert!(
            (4.9..=6.1).contains(start),
            "stream {r} starts at {start} s, expected the keyframe at or before 6 s ({dash:?})"
        );
        let d = dash.durations[r];
        assert!(
            (start + d - 12.0).abs() <= 0.6,
            "stream {r} covers {start}..{} s, expected it to run to 12 s ({dash:?})",
            start + d
        );
    }
    let rec = pms2.recording();
    let v = contract_violations(&rec, 4);
    assert!(v.is_empty(), "{v:#?}");
    assert_eq!(cluster.metric("jobs_succeeded"), 1.0);

    // Session affinity: the new job went where the old one ran.
    let old_worker = format!("node-{}", old.worker_id);
    assert_eq!(
        done.worker().as_deref(),
        Some(old_worker.as_str()),
        "the seek's job ran on another worker than the session's previous job ({old_worker}); \
         the orchestrator should prefer the same worker for the same Plex session id \
         (session affinity, issue #6)\n{}",
        done.stderr
    );
}

/// The worker running a real-time session is SIGKILLed after segment 2: the orchestrator
/// resumes the job on another worker from the end of the last segment written (the keyframe
/// that starts segment 3, with copied video), and PMS sees one session: every segment once,
/// playing back continuously (the video packets of one uninterrupted run, audio without a gap
/// over one frame), one announcement, progress that never goes back, MPDs listing the whole
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_completes_when_its_worker_is_killed_mid_job() {
    failover_session("failover1", false).await;
}

/// The same with the video encoded (libx264) instead of copied: the continuation's encoder
/// starts on the resume point with a keyframe, against the session's kept init segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_with_encoded_video_completes_when_its_worker_is_killed_mid_job() {
    failover_session("failover2", true).await;
}

async fn failover_session(key: &str, encode_video: bool) {
    let mut cluster = Cluster::start(ClusterOpts::default()).await;
    let secs = 10.0;
    let input = cluster.media_file(&clip(secs), "Failover Movie (2026).mkv");
    let session = cluster.session_dir(key);
    let base = plex_base(key);
    let install = Install::new();
    let pms = Pms::start(&session);
    let mut args = plex_dash_args(&input, &base, 1, None, true);
    if encode_video {
        let at = args
            .windows(2)
            .rposition(|w| w[0] == "-codec:0" && w[1] == "copy")
            .expect("-codec:0 copy");
        args.splice(
            at..at + 2,
            ["-codec:0", "libx264", "-preset:0", "ultrafast"].map(String::from),
        );
    }
    // `remote` mode: a local fallback must not be what completes the session.
    let (child, job) =
        shim_until_second_chunk(&cluster, &install, &pms, &session, "remote", &args).await;
    // What PMS had heard before the kill, and when the kill came.
    let size_before = max_size(&pms.recording());
    let killed_at = std::time::SystemTime::now();
    assert!(cluster.kill_worker(&job.worker_id), "{job:?}");
    let done = finish(child, Duration::from_secs(90)).await;
    assert_eq!(
        done.code,
        0,
        "the session failed when worker {} was SIGKILLed mid-job; it should resume on another \
         worker from the first unwritten segment (Job::resume_at, issue #6)\n{}\n{}",
        job.worker_id,
        done.stderr,
        cluster.log_tails()
    );
    assert!(install.original_ran_with().is_none());

    // Every segment 1..=5 exactly once on disk, and together they play the whole clip once:
    // no gap, no overlap from a restart at the beginning.
    let dash = check_dash(&session, 2, 1);
    assert!(
        dash.violations.is_empty(),
        "{:#?}\n{}",
        dash.violations,
        cluster.log_tails()
    );
    assert_eq!(dash.chunks[&0], vec![1, 2, 3, 4, 5]);
    for (r, d) in &dash.durations {
        assert!(
            (d - secs).abs() <= 0.6,
            "stream {r} lasts {d} s, not {secs}"
        );
    }
    // Played back continuously: the video is every frame of the clip once, 40 ms apart (25 fps,
    // keyframes at x.021 s); the re-encoded audio has no overlap and no gap over one AAC frame.
    let nums: Vec<u64> = (1..=5).collect();
    let video = joined_packet_times(&session, 0, &nums);
    assert_eq!(video.len(), 250, "{video:?}");
    for w in video.windows(2) {
        assert!(
            (w[1] - w[0] - 0.04).abs() < 0.0015,
            "video jumps from {} to {} s",
            w[0],
            w[1]
        );
    }
    let audio = joined_packet_times(&session, 1, &nums);
    let frame = 1024.0 / 48000.0;
    for w in audio.windows(2) {
        assert!(
            w[1] > w[0] && w[1] - w[0] < 2.0 * frame + 0.001,
            "audio jumps from {} to {} s",
            w[0],
            w[1]
        );
    }
    let rec = pms.recording();
    // check_order (one startup, streams and duration before progress), token, listed chunks
    // on disk when announced, startNumber 1, static last, progress and size never going back.
    let v = contract_violations(&rec, 1);
    assert!(v.is_empty(), "{v:#?}");
    let startups = rec
        .requests
        .iter()
        .filter(|r| r.query.contains("status=startup"))
        .count();
    assert_eq!(startups, 1, "PMS was told twice that the session started");
    // The continuation's progress counted on from the lost worker's: PMS's final size is at
    // least what it had heard before the kill plus the chunks written after it.
    let after: u64 = std::fs::read_dir(&session)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("chunk-"))
        .map(|e| e.metadata().unwrap())
        .filter(|m| m.modified().unwrap() > killed_at)
        .map(|m| m.len())
        .sum();
    let last = max_size(&rec);
    assert!(
        after > 0 && last >= size_before + after as f64 * 0.95,
        "PMS heard {size_before} bytes before the kill and {last} at the end; {after} bytes of \
         chunks were written after it"
    );
    // The final MPD lists each segment once.
    let last = rec
        .requests
        .iter()
        .rev()
        .find_map(|r| match &r.manifest {
            Some(ManifestBody::Mpd(m)) => Some(m.clone()),
            _ => None,
        })
        .expect("an MPD");
    let mut files = last.listed_files();
    let n = files.len();
    files.sort();
    files.dedup();
    assert_eq!(files.len(), n, "a segment listed twice: {files:?}");
    assert!(
        files.contains(&"chunk-stream0-00001.m4s".to_string())
            && files.contains(&"chunk-stream1-00005.m4s".to_string()),
        "the last MPD does not list the whole session: {files:?}"
    );
}

/// `both` mode with no worker left: the only worker is SIGKILLed after segment 2, nothing can
/// take the job over within the queue timeout, so the orchestrator fails it with the resume
/// point and the shim carries the session on locally (the original transcoder, here the
/// engine's `clusterplex-worker run`) from the first missing segment: every segment exactly
/// once, the local run seeking to the end of segment 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_mode_continues_locally_when_no_worker_is_left() {
    let mut cluster = Cluster::start(ClusterOpts {
        workers: 1,
        ..ClusterOpts::default()
    })
    .await;
    let secs = 10.0;
    let input = cluster.media_file(&clip(secs), "Fallback Movie (2026).mkv");
    let session = cluster.session_dir("fallback1");
    let base = plex_base("fallback1");
    let install = Install::with_engine();
    let pms = Pms::start(&session);
    let args = plex_dash_args(&input, &base, 1, None, true);
    let (child, job) =
        shim_until_second_chunk(&cluster, &install, &pms, &session, "both", &args).await;
    assert!(cluster.kill_worker(&job.worker_id), "{job:?}");
    let done = finish(child, Duration::from_secs(90)).await;
    assert_eq!(done.code, 0, "{}\n{}", done.stderr, cluster.log_tails());

    // The local transcoder carried on from the first segment not written remotely.
    let argv = install
        .original_ran_with()
        .unwrap_or_else(|| panic!("no local continuation\n{}", done.stderr));
    let value = |opt: &str| {
        argv.iter()
            .position(|a| a == opt)
            .map(|i| argv[i + 1].clone())
    };
    let next: u64 = value("-skip_to_segment").unwrap().parse().unwrap();
    assert!(next >= 3, "resumed at segment {next}: {argv:?}");
    let ss: f64 = value("-ss").unwrap().parse().unwrap();
    assert!(
        ((next - 1) as f64 * 2.0 - ss).abs() < 0.1,
        "segment {next} resumed at {ss} s: {argv:?}"
    );
    assert!(
        done.stderr.contains(&format!("resuming at segment {next}")),
        "{}",
        done.stderr
    );

    // Every segment exactly once, from 1 to the end of the clip.
    let chunks = clusterplex_e2e::dash_chunks(&session);
    for (r, nums) in &chunks {
        assert_eq!(*nums, vec![1, 2, 3, 4, 5], "representation {r}: {chunks:?}");
    }
    assert_eq!(chunks.len(), 2, "{chunks:?}");
    // The local part plays (with its own init segments) and reaches the end of the clip.
    let tail: Vec<u64> = (next..=5).collect();
    let video = joined_packet_times(&session, 0, &tail);
    assert!(
        (video.first().copied().unwrap_or(f64::NAN) - ss).abs() < 0.05,
        "the local part starts at {:?}, not at {ss} s",
        video.first()
    );
    assert!(
        (video.last().copied().unwrap_or_default() - (secs - 0.04)).abs() < 0.05,
        "the local part ends at {:?}",
        video.last()
    );
}
