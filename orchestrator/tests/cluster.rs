//! A real cluster on loopback: the orchestrator binary, worker binaries running the real engine
//! on clips made with the ffmpeg CLI, and jobs submitted through the job service.

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use clusterplex_core::rpc::{self, Event, WorkerServiceClient, pb};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_failover_cancel_auth_and_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().canonicalize().unwrap();
    let short = make_clip(&media, "short.mp4", 2);
    let long = make_clip(&media, "long.mp4", 30);
    let (port, http) = (free_port(), free_port());
    let _orch = orchestrator(port, http, &[("WORKER_SELECTION_STRATEGY", "LOAD_RANK")]);
    let mut workers: Vec<(String, Proc)> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| (id.to_string(), worker(port, id, &media)))
        .collect();
    let mut c = client(port, TOKEN).await;
    wait_workers(&mut c, 3).await;
    assert_eq!(
        http_get(http, "/health").await.lines().last(),
        Some("Healthy")
    );

    // A wrong token is refused on every RPC.
    let mut bad = client(port, "wrong").await;
    let e = bad
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = bad
        .submit(
            rpc::submit_request(&transcode_job(&short, &media, "x.mp4", false), "p", "h").unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    // A worker speaking another protocol version is refused with a clear status.
    let ch = rpc::connect_channel(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2))
        .await
        .unwrap();
    let mut wc =
        WorkerServiceClient::with_interceptor(ch, rpc::TokenInterceptor::new(Some(TOKEN)).unwrap());
    let reg = pb::WorkerMessage {
        msg: Some(pb::worker_message::Msg::Register(pb::Register {
            worker_id: "old".into(),
            protocol_version: rpc::PROTOCOL_VERSION + 1,
            max_jobs: 1,
            ..Default::default()
        })),
    };
    let e = wc.attach(tokio_stream::iter(vec![reg])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().contains("protocol version mismatch"),
        "{}",
        e.message()
    );

    // 1. A real transcode through the cluster.
    let mut ev = submit(&mut c, &transcode_job(&short, &media, "out1.mp4", false)).await;
    let acc = accepted(&mut ev).await;
    assert!(acc.worker_id.starts_with('w') && acc.worker_name == format!("node-{}", acc.worker_id));
    finished(&mut ev, 60).await;
    assert_eq!(frames(&media.join("out1.mp4")), 50);

    // 2. SIGKILL the worker running a slow one-file job: the orchestrator notices (its stream
    //    drops), moves the job to a surviving worker from the start (a single file cannot
    //    resume), and the submitter's stream carries on without a failure.
    let mut ev = submit(&mut c, &transcode_job(&long, &media, "slow1.mp4", true)).await;
    let acc = accepted(&mut ev).await;
    until(&mut ev, 10, |e| {
        matches!(e, Event::Progress(_) | Event::Started(_))
    })
    .await;
    let victim = acc.worker_id.clone();
    let idx = workers.iter().position(|(id, _)| *id == victim).unwrap();
    let (_, mut p) = workers.remove(idx);
    p.0.kill().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let moved_to = loop {
        assert!(Instant::now() < deadline, "the job was not moved");
        let jobs = list_jobs(&mut c).await;
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        if jobs[0].state == "running" && jobs[0].worker_id != victim {
            break jobs[0].worker_id.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(workers.iter().any(|(id, _)| *id == moved_to));
    // Progress keeps coming on the same stream (`until` fails on any terminal event).
    until(&mut ev, 20, |e| matches!(e, Event::Progress(_))).await;
    let m = http_get(http, "/metrics").await;
    assert_eq!(metric(&m, "jobs_failed_over"), 1.0);
    assert_eq!(metric(&m, "workers_active"), 2.0);
    drop(ev);
    // Later jobs go elsewhere.
    for n in 0..2 {
        let job = transcode_job(&short, &media, &format!("after{n}.mp4"), false);
        let (acc, end) = run_job(&mut c, &job, 60).await;
        assert_ne!(acc.worker_id, victim);
        assert!(matches!(end, Event::Finished(_)), "{end:?}");
    }

    // 3. The shim cancels its call: the job stops on the worker and its slot frees.
    let mut ev = submit(&mut c, &transcode_job(&long, &media, "slow2.mp4", true)).await;
    let acc = accepted(&mut ev).await;
    until(&mut ev, 10, |e| matches!(e, Event::Progress(_))).await;
    drop(ev);
    wait_worker_idle(&mut c, &acc.worker_id).await;
    let size = std::fs::metadata(media.join("slow2.mp4"))
        .map(|m| m.len())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        std::fs::metadata(media.join("slow2.mp4"))
            .map(|m| m.len())
            .unwrap_or(0),
        size,
        "output still growing"
    );

    // 4. A job no worker can run fails with NO_WORKER after the queue timeout.
    let mut req =
        rpc::submit_request(&transcode_job(&short, &media, "x.mp4", false), "p2", "h").unwrap();
    req.needs_json = br#"{"encoders":["h264_nvmpi"]}"#.to_vec();
    let mut ev = c.submit(req).await.unwrap().into_inner();
    let f = failed(&mut ev, 10, pb::FailureCode::NoWorker).await;
    assert!(!f.retryable);
    assert!(f.reason.contains("encoder:h264_nvmpi"), "{}", f.reason);

    // 5. A path outside MEDIA_ROOTS is refused by the worker.
    let mut ev = submit(
        &mut c,
        &transcode_job(Path::new("/etc/hostname"), &media, "x.mp4", false),
    )
    .await;
    let f = failed(&mut ev, 10, pb::FailureCode::Refused).await;
    assert!(f.reason.contains("MEDIA_ROOTS"), "{}", f.reason);

    // 6. /metrics counted all of it.
    let m = http_get(http, "/metrics").await;
    assert_eq!(metric(&m, "jobs_posted"), 7.0);
    assert_eq!(metric(&m, "jobs_succeeded"), 3.0);
    assert_eq!(metric(&m, "jobs_failed"), 2.0);
    assert_eq!(metric(&m, "jobs_killed"), 2.0);
    assert_eq!(metric(&m, "jobs_completed"), 7.0);
    assert_eq!(metric(&m, "workers_active"), 2.0);
    assert_eq!(metric(&m, "job_posters_active"), 0.0);
    assert_eq!(metric(&m, "worker_protocol_mismatches"), 1.0);
    assert!(m.contains("worker_load_cpu{"), "{m}");
    assert!(m.contains("worker_load_tasks{"), "{m}");
    assert!(m.contains("queue_wait_seconds_bucket"), "{m}");
    assert!(m.contains("job_duration_seconds_count 6"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_reregister_after_an_orchestrator_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().canonicalize().unwrap();
    let (port, http) = (free_port(), free_port());
    let orch = orchestrator(port, http, &[]);
    let _w = [worker(port, "r1", &media), worker(port, "r2", &media)];
    let mut c = client(port, TOKEN).await;
    wait_workers(&mut c, 2).await;
    drop(orch); // SIGKILL
    let _orch = orchestrator(port, http, &[]);
    let mut c = client(port, TOKEN).await;
    let ws = wait_workers(&mut c, 2).await;
    let mut ids: Vec<_> = ws.iter().map(|w| w.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["r1", "r2"]);
    let m = http_get(http, "/metrics").await;
    assert_eq!(metric(&m, "workers_active"), 2.0);
}
