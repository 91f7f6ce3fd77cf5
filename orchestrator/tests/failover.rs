//! Failover resume with real processes: a worker SIGKILLed in the middle of a DASH job; the
//! orchestrator carries the session on elsewhere from the first segment not yet written.

mod common;

use std::time::Duration;

use clusterplex_core::{
    Job,
    rpc::{self, Event, pb},
};
use common::*;
use tokio_stream::StreamExt;

/// Submits the DASH job, waits for its worker to announce segment 2, SIGKILLs that worker.
/// Returns the events seen before the kill and the victim's id.
async fn run_until_segment_2_then_kill(
    c: &mut JobServiceClient<rpc::AuthChannel>,
    job: &Job,
    workers: &mut Vec<(String, Proc)>,
) -> (Events, Vec<Event>, String) {
    let mut ev = submit(c, job).await;
    let mut seen = Vec::new();
    let fut = async {
        let mut victim = None;
        while let Some(m) = ev.next().await {
            let e = m.unwrap().event.unwrap();
            assert!(!rpc::is_terminal(&e), "ended early: {e:?}");
            if let Event::Accepted(a) = &e {
                victim = Some(a.worker_id.clone());
            }
            let stop = matches!(&e, Event::Segment(s) if s.number >= 2);
            seen.push(e);
            if stop {
                return victim.unwrap();
            }
        }
        panic!("stream ended");
    };
    let victim = tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("no segment 2");
    let idx = workers.iter().position(|(id, _)| *id == victim).unwrap();
    let (_, mut p) = workers.remove(idx);
    p.0.kill().unwrap();
    let _ = p.0.wait();
    (ev, seen, victim)
}

use clusterplex_core::rpc::JobServiceClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_dash_session_resumes_elsewhere_without_gaps_or_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().canonicalize().unwrap();
    let clip = make_clip(&media, "clip.mp4", 8);
    let out = media.join("session");
    std::fs::create_dir(&out).unwrap();
    let (port, http) = (free_port(), free_port());
    let _orch = orchestrator(port, http, &[("QUEUE_TIMEOUT_MS", "20000")]);
    let mut workers: Vec<(String, Proc)> = ["fa", "fb"]
        .iter()
        .map(|id| (id.to_string(), worker(port, id, &media)))
        .collect();
    let mut c = client(port, TOKEN).await;
    wait_workers(&mut c, 2).await;

    let (mut ev, before, victim) =
        run_until_segment_2_then_kill(&mut c, &dash_job(&clip, &out), &mut workers).await;
    let after = all_events(&mut ev, 90).await;

    // The submitter saw one acceptance, one start, and one Finished; nothing of the move.
    // 8 s at 1 s segments: the whole clip is covered, each segment once, on disk too.
    let all: Vec<Event> = before.into_iter().chain(after).collect();
    assert_whole_dash_session(&all, &out, 7);
    // The continuation ran on the survivor, and the move was counted.
    let survivor = &workers[0].0;
    assert_ne!(survivor, &victim);
    let m = http_get(http, "/metrics").await;
    assert_eq!(metric(&m, "jobs_failed_over"), 1.0);
    assert_eq!(metric(&m, "jobs_succeeded"), 1.0);
    assert_eq!(metric(&m, "jobs_failed"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_worker_left_the_submitter_gets_the_resume_point() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().canonicalize().unwrap();
    let clip = make_clip(&media, "clip.mp4", 8);
    let out = media.join("session");
    std::fs::create_dir(&out).unwrap();
    let (port, http) = (free_port(), free_port());
    let _orch = orchestrator(port, http, &[("QUEUE_TIMEOUT_MS", "1000")]);
    let mut workers = vec![("only".to_string(), worker(port, "only", &media))];
    let mut c = client(port, TOKEN).await;
    wait_workers(&mut c, 1).await;

    let (mut ev, before, _) =
        run_until_segment_2_then_kill(&mut c, &dash_job(&clip, &out), &mut workers).await;
    let written: Vec<(u64, f64, f64)> = before
        .iter()
        .filter_map(|e| match e {
            Event::Segment(s) if s.output == 0 => Some((s.number, s.start, s.end)),
            _ => None,
        })
        .collect();
    let after = all_events(&mut ev, 30).await;
    let Some(Event::Failed(f)) = after.last() else {
        panic!("{after:#?}")
    };
    assert_eq!(f.code, pb::FailureCode::WorkerLost as i32);
    assert!(f.retryable);
    assert!(f.reason.contains("nowhere to resume"), "{}", f.reason);
    // The resume point covers at least what the submitter saw written before the kill
    // (more segments may have been reported in flight before the stream dropped).
    let seen_after: Vec<(u64, f64, f64)> = after
        .iter()
        .filter_map(|e| match e {
            Event::Segment(s) if s.output == 0 => Some((s.number, s.start, s.end)),
            _ => None,
        })
        .collect();
    let all: Vec<(u64, f64, f64)> = written.into_iter().chain(seen_after).collect();
    let last = all.last().unwrap();
    assert_eq!(f.resume_segment, Some(last.0 + 1), "{all:?}");
    let elapsed = f.resume_elapsed.unwrap();
    assert!(
        (elapsed - (last.2 - all[0].1)).abs() < 1e-6,
        "{elapsed} vs {all:?}"
    );
}
