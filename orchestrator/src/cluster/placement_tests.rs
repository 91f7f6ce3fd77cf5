//! `Cluster` with workers whose streams are channels: drain (plain and with `cancel_running`)
//! and the capable-worker cache across registrations, losses, reconnects and drains.

use super::*;
use clusterplex_core::{ByStream, CodecChoice, Input, Output, StreamSettings, StreamSpecifier};

type WorkerRx = mpsc::UnboundedReceiver<Result<pb::OrchestratorMessage, Status>>;

fn worker(c: &Arc<Cluster>, id: &str, encoders: &[&str], slots: u32) -> (u64, WorkerRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let reg = pb::Register {
        worker_id: id.into(),
        name: id.into(),
        protocol_version: rpc::PROTOCOL_VERSION,
        capabilities: Some(pb::Capabilities {
            encoders: encoders.iter().map(|e| e.to_string()).collect(),
            ..Default::default()
        }),
        max_jobs: slots,
        benchmark_score: 100.0,
        ..Default::default()
    };
    (c.register(&reg, tx).unwrap(), rx)
}

/// A DASH job (1 s segments from number 1) encoding with `encoder`.
fn job(encoder: &str) -> Job {
    let mut o = Output::new("/t/s.mpd", Some("dash"));
    o.segmenting = Some(Segmenting::dash(1.0, 1));
    o.streams.push(ByStream::new(
        StreamSpecifier::all(),
        StreamSettings {
            codec: Some(CodecChoice::Encoder(encoder.into())),
            ..Default::default()
        },
    ));
    Job {
        inputs: vec![Input::new("/m/a.mkv")],
        outputs: vec![o],
        ..Default::default()
    }
}

fn submit(c: &Arc<Cluster>, encoder: &str) -> (String, EventRx) {
    let job = job(encoder);
    c.submit(Submission {
        job_json: rpc::encode_json(&job).unwrap(),
        needs: placement::needs_of(&job),
        job: Some(job),
        poster_id: "p".into(),
        ..Default::default()
    })
    .unwrap()
}

/// The next event the submitter got, if any.
fn next_event(rx: &mut EventRx) -> Option<Event> {
    rx.try_recv().ok().map(|m| m.unwrap().event.unwrap())
}

/// Everything sent to a worker so far.
fn sent(rx: &mut WorkerRx) -> Vec<pb::orchestrator_message::Msg> {
    let mut v = Vec::new();
    while let Ok(Ok(m)) = rx.try_recv() {
        v.extend(m.msg);
    }
    v
}

fn assigned(rx: &mut WorkerRx) -> Vec<pb::AssignJob> {
    sent(rx)
        .into_iter()
        .filter_map(|m| match m {
            pb::orchestrator_message::Msg::Assign(a) => Some(a),
            _ => None,
        })
        .collect()
}

fn event(c: &Arc<Cluster>, worker: &str, session: u64, job: &str, ev: Event) {
    c.worker_message(
        worker,
        session,
        pb::worker_message::Msg::JobEvent(rpc::job_event(job, ev)),
    );
}

fn segment(n: u64) -> Event {
    Event::Segment(pb::SegmentWritten {
        number: n,
        start: (n - 1) as f64,
        end: n as f64,
        ..Default::default()
    })
}

#[tokio::test]
async fn drain_with_cancel_moves_running_jobs_once_the_worker_confirms() {
    let c = Cluster::new(ClusterConfig {
        strategy: Strategy::RoundRobin,
        ..Default::default()
    });
    let (s1, mut w1) = worker(&c, "w1", &["libx264"], 2);
    let (id, mut rx) = submit(&c, "libx264");
    assert!(matches!(next_event(&mut rx), Some(Event::Accepted(a)) if a.worker_id == "w1"));
    assert_eq!(assigned(&mut w1).len(), 1);
    let (s2, mut w2) = worker(&c, "w2", &["libx264"], 2);
    for n in 1..=2 {
        event(&c, "w1", s1, &id, segment(n));
        assert!(matches!(next_event(&mut rx), Some(Event::Segment(_))));
    }

    assert_eq!(c.drain("w1", true), (true, 1));
    let to_w1 = sent(&mut w1);
    assert!(
        to_w1
            .iter()
            .any(|m| matches!(m, pb::orchestrator_message::Msg::Drain(_))),
        "{to_w1:?}"
    );
    assert!(
        to_w1
            .iter()
            .any(|m| matches!(m, pb::orchestrator_message::Msg::Cancel(x) if x.job_id == id)),
        "{to_w1:?}"
    );
    // Not moved before w1 confirms (it may still be writing segment 3).
    assert!(assigned(&mut w2).is_empty());
    event(&c, "w1", s1, &id, segment(3));
    assert!(matches!(next_event(&mut rx), Some(Event::Segment(_))));
    event(
        &c,
        "w1",
        s1,
        &id,
        Event::Cancelled(pb::Cancelled {
            reason: "drained".into(),
        }),
    );
    // Now it carries on on w2 from the first segment w1 did not write.
    let a = assigned(&mut w2);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].job_id, id);
    let cont = rpc::decode_job(&a[0].job_json).unwrap();
    assert_eq!(cont.inputs[0].seek, Some(3.0));
    assert!(matches!(
        cont.outputs[0].segmenting,
        Some(Segmenting::Dash {
            start_number: 4,
            ..
        })
    ));
    // The submitter saw nothing of the move, then the end with every segment.
    assert!(next_event(&mut rx).is_none());
    event(&c, "w2", s2, &id, segment(4));
    event(
        &c,
        "w2",
        s2,
        &id,
        Event::Finished(pb::Finished {
            segments: vec![4],
            ..Default::default()
        }),
    );
    assert!(matches!(next_event(&mut rx), Some(Event::Segment(_))));
    match next_event(&mut rx) {
        Some(Event::Finished(f)) => assert_eq!(f.segments, [1, 2, 3, 4]),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.metrics.jobs_failed_over.get(), 1);
    assert_eq!(c.metrics.jobs_failed.get(), 0);
    // Drained means no new work, even with free slots.
    let (_, mut rx) = submit(&c, "libx264");
    assert!(matches!(next_event(&mut rx), Some(Event::Accepted(a)) if a.worker_id == "w2"));
}

#[tokio::test]
async fn a_drained_job_that_finished_before_the_cancel_is_not_run_again() {
    let c = Cluster::new(ClusterConfig::default());
    let (s1, _w1) = worker(&c, "w1", &["libx264"], 1);
    let (_, mut w2) = worker(&c, "w2", &["libx264"], 1);
    let (id, mut rx) = submit(&c, "libx264");
    let Some(Event::Accepted(a)) = next_event(&mut rx) else {
        panic!()
    };
    assert_eq!(a.worker_id, "w1"); // LOAD_RANK tie: the smaller id
    c.drain("w1", true);
    // The job's own end crossed the cancel on the wire.
    event(&c, "w1", s1, &id, Event::Finished(pb::Finished::default()));
    assert!(matches!(next_event(&mut rx), Some(Event::Finished(_))));
    assert!(assigned(&mut w2).is_empty());
    assert_eq!(c.metrics.jobs_failed_over.get(), 0);
}

#[tokio::test]
async fn plain_drain_lets_running_jobs_finish_and_places_nothing_new() {
    let c = Cluster::new(ClusterConfig {
        queue_timeout: Duration::from_secs(60),
        ..Default::default()
    });
    let (s1, mut w1) = worker(&c, "w1", &["libx264"], 4);
    let (id, mut rx) = submit(&c, "libx264");
    assert!(matches!(next_event(&mut rx), Some(Event::Accepted(_))));
    assert_eq!(assigned(&mut w1).len(), 1);
    assert_eq!(c.drain("w1", false), (true, 1));
    let to_w1 = sent(&mut w1);
    assert!(
        !to_w1
            .iter()
            .any(|m| matches!(m, pb::orchestrator_message::Msg::Cancel(_))),
        "{to_w1:?}"
    );
    // w1 has 3 free slots but takes nothing new: the next job waits.
    let (_, mut queued) = submit(&c, "libx264");
    assert!(matches!(next_event(&mut queued), Some(Event::Queued(_))));
    // The running job finishes normally.
    event(&c, "w1", s1, &id, segment(1));
    event(&c, "w1", s1, &id, Event::Finished(pb::Finished::default()));
    assert!(matches!(next_event(&mut rx), Some(Event::Segment(_))));
    assert!(matches!(next_event(&mut rx), Some(Event::Finished(_))));
    assert!(assigned(&mut w1).is_empty());
    // Reconnecting does not undo a drain.
    let (_, mut w1) = worker(&c, "w1", &["libx264"], 4);
    assert!(assigned(&mut w1).is_empty());
    assert!(next_event(&mut queued).is_none());
    // Another worker takes the waiting job.
    let (_, mut w2) = worker(&c, "w2", &["libx264"], 1);
    assert_eq!(assigned(&mut w2).len(), 1);
    assert!(matches!(next_event(&mut queued), Some(Event::Accepted(a)) if a.worker_id == "w2"));
}

#[tokio::test]
async fn capable_workers_follow_registrations_losses_reconnects_and_drains() {
    let c = Cluster::new(ClusterConfig {
        queue_timeout: Duration::from_secs(60),
        ..Default::default()
    });
    let (_, cpu) = worker(&c, "cpu", &["libx264"], 4);
    // Nobody has NVENC: the job waits (and the cache now knows "nobody" for these needs).
    let (_, mut a) = submit(&c, "h264_nvenc");
    assert!(matches!(next_event(&mut a), Some(Event::Queued(_))));
    // Registers: a GPU worker joins and takes it.
    let (gpu_s, mut gpu) = worker(&c, "gpu", &["libx264", "h264_nvenc"], 4);
    assert_eq!(assigned(&mut gpu).len(), 1);
    assert!(matches!(next_event(&mut a), Some(Event::Accepted(x)) if x.worker_id == "gpu"));
    // Lost: it is no longer a candidate.
    c.worker_lost("gpu", gpu_s, "test");
    let (_, mut b) = submit(&c, "h264_nvenc");
    assert!(matches!(next_event(&mut b), Some(Event::Queued(_))));
    // Reconnects with other capabilities: the CPU worker comes back with NVENC.
    let (_, mut cpu2) = worker(&c, "cpu", &["libx264", "h264_nvenc"], 4);
    drop(cpu);
    let got = assigned(&mut cpu2);
    assert_eq!(got.len(), 2, "the moved job and the waiting one");
    assert!(matches!(next_event(&mut b), Some(Event::Accepted(x)) if x.worker_id == "cpu"));
    // ... and back without it: an NVENC job waits again, a libx264 one is placed.
    let (_, mut cpu) = worker(&c, "cpu", &["libx264"], 8);
    let (_, mut d) = submit(&c, "h264_nvenc");
    assert!(matches!(next_event(&mut d), Some(Event::Queued(_))));
    let (_, mut e) = submit(&c, "libx264");
    assert!(matches!(next_event(&mut e), Some(Event::Accepted(x)) if x.worker_id == "cpu"));
    assert_eq!(assigned(&mut cpu).len(), 1);
    // Drained: not a candidate for anything, though it has free slots.
    c.drain("cpu", false);
    let (_, mut f) = submit(&c, "libx264");
    assert!(matches!(next_event(&mut f), Some(Event::Queued(_))));
    assert!(assigned(&mut cpu).is_empty());
}
