//! Plex seeks with real processes: a new job of the same transcode session supersedes the old
//! one at once and goes back to the worker that ran the session.

mod common;

use std::time::{Duration, Instant};

use clusterplex_core::rpc::{self, Event};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_cancels_the_old_job_and_keeps_the_session_on_its_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().canonicalize().unwrap();
    let long = make_clip(&media, "long.mp4", 30);
    let (port, http) = (free_port(), free_port());
    // Round-robin would send each new job to the other worker: affinity must override it.
    let _orch = orchestrator(port, http, &[("WORKER_SELECTION_STRATEGY", "RR")]);
    let _w = [worker(port, "k1", &media), worker(port, "k2", &media)];
    let mut c = client(port, TOKEN).await;
    wait_workers(&mut c, 2).await;
    let session_job = |out: &str, seek: f64| {
        let mut j = transcode_job(&long, &media, out, true);
        j.inputs[0].seek = Some(seek);
        j.plex.session_id = Some("f168tc".into());
        j
    };

    let mut first = submit(&mut c, &session_job("a.mp4", 0.0)).await;
    let a = accepted(&mut first).await;
    until(&mut first, 20, |e| matches!(e, Event::Progress(_))).await;
    let home = a.worker_id.clone();

    // The seek: Plex starts a new transcoder for the same session while the old job runs.
    let mut second = submit(&mut c, &session_job("b.mp4", 10.0)).await;
    let end = until(&mut first, 10, rpc::is_terminal).await;
    let Event::Cancelled(cx) = end else {
        panic!("{end:?}")
    };
    assert!(cx.reason.contains("superseded"), "{}", cx.reason);
    let b = accepted(&mut second).await;
    assert_eq!(b.worker_id, home, "the seek left the session's worker");
    until(&mut second, 20, |e| matches!(e, Event::Progress(_))).await;
    // The old job really stopped: only the new one is left on the worker.
    let jobs = list_jobs(&mut c).await;
    assert_eq!(jobs.len(), 1);
    let new_id = jobs[0].job_id.clone();
    wait_worker(&mut c, &home, "the old job still runs", |w| {
        w.job_ids == [new_id.clone()]
    })
    .await;

    // Plex usually kills the old transcoder first: the session's worker is remembered.
    drop(second);
    let mut third = submit(&mut c, &session_job("c.mp4", 20.0)).await;
    let t = accepted(&mut third).await;
    assert_eq!(t.worker_id, home);
    // Another session is placed by the strategy as usual (RR: the other worker).
    let mut other = transcode_job(&long, &media, "d.mp4", true);
    other.plex.session_id = Some("zzz".into());
    let mut fourth = submit(&mut c, &other).await;
    let f = accepted(&mut fourth).await;
    assert_ne!(f.worker_id, home);
    drop((third, fourth));
    // Superseded, then three dropped calls: all counted as killed once the drops are seen.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&http_get(http, "/metrics").await, "jobs_killed") != 4.0 {
        assert!(Instant::now() < deadline, "jobs_killed never reached 4");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
