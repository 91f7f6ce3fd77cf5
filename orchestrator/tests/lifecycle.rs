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

/// Reads events until a terminal one (returned).
async fn terminal(ev: &mut Events, secs: u64) -> Event {
    let fut = async {
        while let Some(m) = ev.next().await {
            let e = m.unwrap().event.unwrap();
            if rpc::is_terminal(&e) {
                return e;
            }
        }
        panic!("stream ended without a terminal event");
    };
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("no terminal event")
}

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
async fn a_drained_worker_gets_no_new_jobs_and_cancel_stops_its_running_job() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().canonicalize().unwrap();
    let short = make_clip(&media, "short.mp4", 1);
    let long = make_clip(&media, "long.mp4", 30);
    let (port, http) = (free_port(), free_port());
    let _orch = orchestrator(port, http, &[("QUEUE_TIMEOUT_MS", "1000")]);
    let _w = [
        worker_with(port, "d1", &media, &[("MAX_JOBS", "2")]),
        worker_with(port, "d2", &media, &[("MAX_JOBS", "2")]),
    ];
    let mut c = client(port, TOKEN).await;
    wait_workers(&mut c, 2).await;

    let mut slow = submit(&mut c, &transcode_job(&long, &media, "slow.mp4", true)).await;
    let acc = accepted(&mut slow).await;
    until(&mut slow, 20, |e| matches!(e, Event::Progress(_))).await;
    let busy = acc.worker_id.clone();
    let idle = if busy == "d1" { "d2" } else { "d1" };

    // Drain the idle worker: new jobs all go to the busy one (its second slot), not to it.
    let r = c
        .drain_worker(pb::DrainWorkerRequest {
            worker_id: idle.into(),
            cancel_running: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.found);
    assert_eq!(r.running_jobs, 0);
    let ws = c
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    let w = ws.iter().find(|w| w.id == idle).unwrap();
    assert_eq!(w.state, pb::WorkerState::Draining as i32);
    for n in 0..3 {
        let mut ev = submit(
            &mut c,
            &transcode_job(&short, &media, &format!("s{n}.mp4"), false),
        )
        .await;
        let a = accepted(&mut ev).await;
        assert_eq!(a.worker_id, busy, "job {n} went to the drained worker");
        let end = until(&mut ev, 60, rpc::is_terminal).await;
        assert!(matches!(end, Event::Finished(_)), "{end:?}");
    }

    // Drain the busy one with cancel: its job ends for the submitter and stops on the worker.
    let r = c
        .drain_worker(pb::DrainWorkerRequest {
            worker_id: busy.clone(),
            cancel_running: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.running_jobs, 1);
    let end = terminal(&mut slow, 10).await;
    let Event::Failed(f) = end else {
        panic!("{end:?}")
    };
    assert_eq!(f.code, pb::FailureCode::WorkerLost as i32);
    assert!(f.reason.contains("drained"), "{}", f.reason);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ws = c
            .list_workers(pb::ListWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
            .workers;
        if ws.iter().find(|w| w.id == busy).unwrap().job_ids.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the job still runs on {busy}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nobody accepts work now: a new job waits, then fails with NO_WORKER.
    let mut ev = submit(&mut c, &transcode_job(&short, &media, "none.mp4", false)).await;
    let end = terminal(&mut ev, 20).await;
    assert!(
        matches!(&end, Event::Failed(f) if f.code == pb::FailureCode::NoWorker as i32
            && f.reason.contains("draining")),
        "{end:?}"
    );
    // Unknown workers are reported as such.
    let e = c
        .drain_worker(pb::DrainWorkerRequest {
            worker_id: "nope".into(),
            cancel_running: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
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
