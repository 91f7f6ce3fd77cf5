//! Orchestrator life-cycle with real processes: graceful shutdown on SIGTERM, DrainWorker, and
//! the watchdog that marks a silent worker lost.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use clusterplex_core::rpc::{self, Event, WorkerServiceClient, pb};
use common::*;
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_running_job_refuses_new_ones_and_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().canonicalize().unwrap();
    let clip = make_clip(&media, "clip.mp4", 3);
    let (port, http) = (free_port(), free_port());
    let mut orch = orchestrator(port, http, &[("SHUTDOWN_GRACE_MS", "60000")]);
    let _w = worker(port, "g1", &media);
    let mut c = client(port, TOKEN).await;
    wait_workers(&mut c, 1).await;

    let mut ev = submit(&mut c, &transcode_job(&clip, &media, "drained.mp4", true)).await;
    until(&mut ev, 20, |e| matches!(e, Event::Progress(_))).await;
    let st = Command::new("kill")
        .args(["-TERM", &orch.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());

    // New submissions are refused. One sent before the signal is handled is queued (the only
    // worker is busy) and then failed with SHUTDOWN; keep trying until the refusal shows.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "submissions never refused");
        let req = rpc::submit_request(&transcode_job(&clip, &media, "late.mp4", false), "p", "h")
            .unwrap();
        match c.submit(req).await {
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                break;
            }
            Ok(s) => {
                let mut s = s.into_inner();
                let end = terminal(&mut s, 20).await;
                assert!(
                    matches!(&end, Event::Failed(f) if f.code == pb::FailureCode::Shutdown as i32),
                    "{end:?}"
                );
            }
        }
    }
    // The running job still finishes, completely.
    let end = terminal(&mut ev, 60).await;
    assert!(
        matches!(end, Event::Finished(ref f) if f.exit_status == 0),
        "{end:?}"
    );
    assert_eq!(frames(&media.join("drained.mp4")), 75);
    assert!(!media.join("late.mp4").exists());
    // Then the orchestrator exits cleanly.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = orch.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "orchestrator did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_drain_lets_running_jobs_finish_and_sends_new_ones_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().canonicalize().unwrap();
    let short = make_clip(&media, "short.mp4", 1);
    let clip = make_clip(&media, "clip.mp4", 3);
    let (port, http) = (free_port(), free_port());
    let _orch = orchestrator(port, http, &[("QUEUE_TIMEOUT_MS", "1000")]);
    let _w = [
        worker_with(port, "d1", &media, &[("MAX_JOBS", "2")]),
        worker_with(port, "d2", &media, &[("MAX_JOBS", "2")]),
    ];
    let mut c = client(port, TOKEN).await;
    wait_workers(&mut c, 2).await;

    let mut running = submit(&mut c, &transcode_job(&clip, &media, "kept.mp4", true)).await;
    let busy = accepted(&mut running).await.worker_id;
    until(&mut running, 20, |e| matches!(e, Event::Progress(_))).await;
    let other = if busy == "d1" { "d2" } else { "d1" };

    // Drain the busy worker: it keeps its job, takes no new one (though it has a free slot).
    let r = drain(&mut c, &busy, false).await;
    assert!(r.found);
    assert_eq!(r.running_jobs, 1);
    let w = worker_info(&mut c, &busy).await;
    assert_eq!(w.state, pb::WorkerState::Draining as i32);
    assert_eq!(w.job_ids.len(), 1);
    for n in 0..2 {
        let job = transcode_job(&short, &media, &format!("s{n}.mp4"), false);
        let (a, end) = run_job(&mut c, &job, 60).await;
        assert_eq!(a.worker_id, other, "job {n} went to the drained worker");
        assert!(matches!(end, Event::Finished(_)), "{end:?}");
    }
    // The running job finishes there, completely.
    finished(&mut running, 60).await;
    assert_eq!(frames(&media.join("kept.mp4")), 75);
    wait_worker_idle(&mut c, &busy).await;
    assert_eq!(
        worker_info(&mut c, &busy).await.state,
        pb::WorkerState::Draining as i32
    );

    // Nobody accepts work now: a new job waits, then fails with NO_WORKER.
    assert_eq!(drain(&mut c, other, false).await.running_jobs, 0);
    let mut ev = submit(&mut c, &transcode_job(&short, &media, "none.mp4", false)).await;
    let f = failed(&mut ev, 20, pb::FailureCode::NoWorker).await;
    assert!(f.reason.contains("draining"), "{}", f.reason);
    assert!(!media.join("none.mp4").exists());
    // Unknown workers are reported as such.
    let e = c
        .drain_worker(pb::DrainWorkerRequest {
            worker_id: "nope".into(),
            cancel_running: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let m = http_get(http, "/metrics").await;
    assert_eq!(metric(&m, "jobs_succeeded"), 3.0);
    assert_eq!(metric(&m, "jobs_failed_over"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_with_cancel_moves_running_jobs_to_another_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().canonicalize().unwrap();
    let dash_clip = make_clip(&media, "dash.mp4", 6);
    let clip = make_clip(&media, "clip.mp4", 6);
    let out = media.join("session");
    std::fs::create_dir(&out).unwrap();
    let (port, http) = (free_port(), free_port());
    let _orch = orchestrator(port, http, &[("QUEUE_TIMEOUT_MS", "20000")]);
    let mut c = client(port, TOKEN).await;
    // Both jobs start on the only worker; a second worker joins before the drain.
    let _a = worker_with(port, "m1", &media, &[("MAX_JOBS", "2")]);
    wait_workers(&mut c, 1).await;
    let mut dash = submit(&mut c, &dash_job(&dash_clip, &out)).await;
    let mut single = submit(&mut c, &transcode_job(&clip, &media, "single.mp4", true)).await;
    assert_eq!(accepted(&mut single).await.worker_id, "m1");
    let _b = worker_with(port, "m2", &media, &[("MAX_JOBS", "2")]);
    wait_workers(&mut c, 2).await;
    let mut seen = Vec::new();
    loop {
        let e = until(&mut dash, 30, |_| true).await;
        let stop = matches!(&e, Event::Segment(s) if s.number >= 2);
        seen.push(e);
        if stop {
            break;
        }
    }

    let r = drain(&mut c, "m1", true).await;
    assert_eq!(r.running_jobs, 2);
    // Both carry on on m2, invisibly to their submitters; m1 stopped them.
    seen.extend(all_events(&mut dash, 60).await);
    assert!(
        matches!(&seen[0], Event::Accepted(a) if a.worker_id == "m1"),
        "{seen:#?}"
    );
    assert_whole_dash_session(&seen, &out, 5);
    // The one-file job restarted from the start there: the whole clip, once.
    finished(&mut single, 60).await;
    assert_eq!(frames(&media.join("single.mp4")), 150);
    wait_worker_idle(&mut c, "m1").await;
    let m = http_get(http, "/metrics").await;
    assert_eq!(metric(&m, "jobs_failed_over"), 2.0);
    assert_eq!(metric(&m, "jobs_succeeded"), 2.0);
    assert_eq!(metric(&m, "jobs_failed"), 0.0);
    // m1 stays drained: a new job goes to m2.
    let (a, _) = run_job(
        &mut c,
        &transcode_job(&clip, &media, "after.mp4", false),
        60,
    )
    .await;
    assert_eq!(a.worker_id, "m2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_reports_stop_is_marked_lost_and_its_job_moves_on() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().canonicalize().unwrap();
    let clip = make_clip(&media, "clip.mp4", 1);
    // Build the worker binary now, not while the moved job waits in the queue.
    worker_bin();
    let (port, http) = (free_port(), free_port());
    let _orch = orchestrator(
        port,
        http,
        &[
            ("LOST_WORKER_TIMEOUT_MS", "1500"),
            ("QUEUE_TIMEOUT_MS", "120000"),
        ],
    );
    let mut c = client(port, TOKEN).await;

    // A hand-written worker: registers, then keeps its stream open and says nothing.
    let ch = rpc::connect_channel(&format!("http://127.0.0.1:{port}"), Duration::from_secs(5))
        .await
        .unwrap();
    let mut wc =
        WorkerServiceClient::with_interceptor(ch, rpc::TokenInterceptor::new(Some(TOKEN)).unwrap());
    let (up, up_rx) = tokio::sync::mpsc::channel::<pb::WorkerMessage>(4);
    up.send(pb::WorkerMessage {
        msg: Some(pb::worker_message::Msg::Register(pb::Register {
            worker_id: "silent".into(),
            name: "silent".into(),
            protocol_version: rpc::PROTOCOL_VERSION,
            capabilities: Some(pb::Capabilities {
                encoders: vec!["libx264".into()],
                ..Default::default()
            }),
            benchmark_score: 1000.0,
            max_jobs: 1,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut down = wc
        .attach(tokio_stream::wrappers::ReceiverStream::new(up_rx))
        .await
        .unwrap()
        .into_inner();
    let first = down.next().await.unwrap().unwrap();
    assert!(matches!(
        first.msg,
        Some(pb::orchestrator_message::Msg::Registered(_))
    ));
    wait_workers(&mut c, 1).await;

    // It is given a job (the only worker), which it never runs.
    let mut ev = submit(&mut c, &transcode_job(&clip, &media, "moved.mp4", false)).await;
    let a = accepted(&mut ev).await;
    assert_eq!(a.worker_id, "silent");
    let m = down.next().await.unwrap().unwrap();
    assert!(matches!(
        m.msg,
        Some(pb::orchestrator_message::Msg::Assign(_))
    ));

    // Its stream stays open (`up` is alive) but no report comes: the orchestrator ends the
    // stream, saying why, and forgets the worker.
    let end = tokio::time::timeout(Duration::from_secs(30), down.next())
        .await
        .expect("the silent worker was never marked lost");
    let status = match end {
        Some(Err(s)) => s,
        other => panic!("{other:?}"),
    };
    assert!(status.message().contains("no report"), "{status:?}");
    assert!(wait_workers(&mut c, 0).await.is_empty());
    // A real worker arriving later picks the job up; the submitter only sees it finish.
    let _w = worker(port, "real", &media);
    let end = until(&mut ev, 60, rpc::is_terminal).await;
    assert!(matches!(end, Event::Finished(_)), "{end:?}");
    assert_eq!(frames(&media.join("moved.mp4")), 25);
    drop(up);
    let m = http_get(http, "/metrics").await;
    assert_eq!(metric(&m, "jobs_failed_over"), 1.0);
}
