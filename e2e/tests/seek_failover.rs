//! A session through the real cluster while things happen to it: a seek (PMS kills the
//! transcoder and starts a new one with `-ss` and `-skip_to_segment` for the same session),
//! and a worker SIGKILLed mid-job (the session must still complete, every segment once).

use std::time::{Duration, Instant};

use clusterplex_e2e::{
    Cluster, ClusterOpts, Install, Pms, check_dash, contract_violations, finish, plex_base,
    plex_dash_args, wait_file,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_cancels_the_old_job_and_resumes_on_the_same_worker() {
    let cluster = Cluster::start(ClusterOpts::default()).await;
    let input = cluster.media_file(&clip(12.0), "Seek Movie (2026).mkv");
    let session = cluster.session_dir("seek1");
    let base = plex_base("seek1");
    let install = Install::new();

    // Playback from the start, in real time so that it is still running when the user seeks.
    let pms1 = Pms::start(&session);
    let first = install
        .shim(
            &cluster.url(),
            pms1.port,
            &session,
            "remote",
            &plex_dash_args(&input, &base, 1, None, true),
        )
        .spawn()
        .unwrap();
    assert!(
        wait_file(
            &session.join("chunk-stream0-00002.m4s"),
            Duration::from_secs(30)
        )
        .await,
        "the first job wrote no second segment\n{}",
        cluster.log_tails()
    );
    let old = running_job(&cluster).await;

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

// Known failure, tracked on issue #6: the job moves and finishes (exit 0, segments 1..=5 each
// once), but with stream-copied video the continuation's first chunk starts at an earlier
// keyframe than the resume point (resume at 4.06 s, chunk 3 starts at 2 s), so chunks overlap.
#[ignore = "copied-video resume overlaps by a GOP (issue #6)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_completes_when_its_worker_is_killed_mid_job() {
    let mut cluster = Cluster::start(ClusterOpts::default()).await;
    let secs = 10.0;
    let input = cluster.media_file(&clip(secs), "Failover Movie (2026).mkv");
    let session = cluster.session_dir("failover1");
    let base = plex_base("failover1");
    let install = Install::new();
    let pms = Pms::start(&session);
    // `remote` mode: a local fallback must not be what completes the session.
    let child = install
        .shim(
            &cluster.url(),
            pms.port,
            &session,
            "remote",
            &plex_dash_args(&input, &base, 1, None, true),
        )
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
    let job = running_job(&cluster).await;
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
    let rec = pms.recording();
    let v = [
        rec.check_token(clusterplex_e2e::PLEX_TOKEN),
        rec.check_manifests_list_existing_chunks(),
        rec.check_static_only_last(),
    ]
    .concat();
    assert!(v.is_empty(), "{v:#?}");
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
