//! Jellyfin's TranscodingThrottler through the cluster: a Jellyfin-shaped HLS job runs on a
//! worker via the shim; `p` on the shim's stdin pauses it there (no segment is written while
//! paused), `u` resumes it to the full frame count, and `q` on a paused job stops it with
//! exit 0, as Jellyfin expects of ffmpeg. Real processes on loopback; time bounds are hang
//! guards, except the 2 s the test watches a paused job stand still.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use clusterplex_e2e::{Cluster, ClusterOpts, Install, finish, wait_file};
use clusterplex_testkit as tk;
use tokio::io::AsyncWriteExt;

const HANG_GUARD: Duration = Duration::from_secs(60);

/// Jellyfin's HLS argv shape, read at realtime (`-re`) so the 4 s job is still running when
/// the test pauses it.
fn jellyfin_hls(input: &Path, dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = ["-re", "-i"].iter().map(|s| s.to_string()).collect();
    v.push(input.to_string_lossy().into_owned());
    v.extend(
        [
            "-map",
            "0:v:0",
            "-map",
            "0:a:0",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-f",
            "hls",
            "-hls_time",
            "1",
            "-hls_segment_type",
            "mpegts",
            "-start_number",
            "0",
            "-hls_list_size",
            "0",
            "-hls_segment_filename",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    v.push(dir.join("x%d.ts").to_string_lossy().into_owned());
    v.push("-y".into());
    v.push(dir.join("x.m3u8").to_string_lossy().into_owned());
    v
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ts"))
                .count()
        })
        .unwrap_or(0)
}

/// Starts the shim on a Jellyfin HLS job with a piped stdin and waits for its first segment.
async fn start(
    cluster: &Cluster,
    name: &str,
) -> (
    tokio::process::Child,
    tokio::process::ChildStdin,
    PathBuf,
    Install,
) {
    let input = cluster.media_file(&tk::h264_aac(320, 180, 4.0), &format!("{name}.mp4"));
    let dir = cluster.session_dir(name);
    let install = Install::new();
    // No Plex URLs in a Jellyfin argv: the relay port is never used.
    let mut child = install
        .shim(
            &cluster.url(),
            9,
            &dir,
            "remote",
            &jellyfin_hls(&input, &dir),
        )
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    assert!(
        wait_file(&dir.join("x0.ts"), HANG_GUARD).await,
        "no first segment\n{}",
        cluster.log_tails()
    );
    (child, stdin, dir, install)
}

async fn key(stdin: &mut tokio::process::ChildStdin, k: &[u8]) {
    stdin.write_all(k).await.unwrap();
    stdin.flush().await.unwrap();
}

/// Waits until the orchestrator lists the (only) job as paused or not.
async fn wait_paused(cluster: &Cluster, paused: bool) {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let jobs = cluster.list_jobs().await;
        if jobs.len() == 1 && jobs[0].paused == paused {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job never {}: {jobs:?}\n{}",
            if paused { "paused" } else { "resumed" },
            cluster.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_keys_hold_a_remote_hls_job_and_resume_it() {
    let cluster = Cluster::start(ClusterOpts {
        workers: 1,
        ..ClusterOpts::default()
    })
    .await;
    let (child, mut stdin, dir, install) = start(&cluster, "pause").await;
    key(&mut stdin, b"p").await;
    wait_paused(&cluster, true).await;
    // Let the worker's engine reach its next packet (it then stops reading).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = segments(&dir);
    let playlist = std::fs::read_to_string(dir.join("x.m3u8")).unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(segments(&dir), held, "segments written while paused");
    assert_eq!(
        std::fs::read_to_string(dir.join("x.m3u8")).unwrap_or_default(),
        playlist,
        "the playlist changed while paused"
    );
    assert!(
        !playlist.contains("#EXT-X-ENDLIST"),
        "finished before the pause: {playlist}"
    );
    // Jellyfin resumes with `u` (jellyfin-ffmpeg) or a newline.
    key(&mut stdin, b"u").await;
    let done = finish(child, HANG_GUARD).await;
    assert_eq!(done.code, 0, "{}\n{}", done.stderr, cluster.log_tails());
    assert!(install.original_ran_with().is_none(), "ran locally");
    assert!(
        done.stderr.contains("paused the remote job")
            && done.stderr.contains("resumed the remote job"),
        "{}",
        done.stderr
    );
    let playlist = std::fs::read_to_string(dir.join("x.m3u8")).unwrap();
    assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    assert_eq!(tk::count_frames(&dir.join("x.m3u8"), "v:0"), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q_stops_a_paused_remote_job_and_the_shim_exits_0() {
    let cluster = Cluster::start(ClusterOpts {
        workers: 1,
        ..ClusterOpts::default()
    })
    .await;
    let (child, mut stdin, dir, _install) = start(&cluster, "pause-q").await;
    key(&mut stdin, b"c").await;
    wait_paused(&cluster, true).await;
    // Jellyfin's stop: `q` and a newline, then a kill after 5 s if ffmpeg is still there.
    key(&mut stdin, b"q\n").await;
    let done = finish(child, Duration::from_secs(15)).await;
    assert_eq!(done.code, 0, "{}\n{}", done.stderr, cluster.log_tails());
    // The worker stopped the job and gave its slot back.
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let w = cluster.list_workers().await;
        if cluster.list_jobs().await.is_empty() && w.iter().all(|w| w.job_ids.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job kept running: {w:?}\n{}",
            cluster.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What was written stays valid (the worker wrote the trailer and playlist on cancel).
    let n = tk::count_frames(&dir.join("x.m3u8"), "v:0");
    assert!(n > 0 && n < 100, "{n} frames");
}
