//! Failover resume with real processes: a worker SIGKILLed in the middle of a DASH job; the
//! orchestrator carries the session on elsewhere from the first segment not yet written.

mod common;

use std::{collections::BTreeSet, path::Path, time::Duration};

use clusterplex_core::{
    ByStream, CodecChoice, Input, Job, Output, Segmenting, StreamSettings, StreamSpecifier,
    rpc::{self, Event, pb},
};
use common::*;
use tokio_stream::StreamExt;

fn dash_job(input: &Path, dir: &Path) -> Job {
    let mut i = Input::new(input.to_str().unwrap());
    i.realtime = true;
    let mut o = Output::new(dir.join("session.mpd").to_str().unwrap(), Some("dash"));
    o.segmenting = Some(Segmenting::Dash {
        seg_duration: 1.0,
        start_number: 1,
        init_seg_name: None,
        media_seg_name: None,
        manifest_target: None,
        window_size: None,
        use_template: None,
        use_timeline: None,
        single_file: false,
        time_delta: None,
        delete_removed: Some(false),
        break_non_keyframes: false,
    });
    o.streams.push(ByStream::new(
        StreamSpecifier::all(),
        StreamSettings {
            codec: Some(CodecChoice::Encoder("libx264".into())),
            preset: Some("ultrafast".into()),
            ..Default::default()
        },
    ));
    Job {
        inputs: vec![i],
        outputs: vec![o],
        working_dir: Some(dir.to_path_buf()),
        ..Default::default()
    }
}

/// Media segment numbers on disk (`chunk-stream0-00003.m4s` -> 3).
fn segments_on_disk(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let n = name.strip_prefix("chunk-stream0-")?.strip_suffix(".m4s")?;
            n.parse().ok()
        })
        .collect();
    v.sort();
    v
}

/// Reads events until a terminal one; returns them all.
async fn all_events(ev: &mut Events, secs: u64) -> Vec<Event> {
    let mut out = Vec::new();
    let fut = async {
        while let Some(m) = ev.next().await {
            let e = m.unwrap().event.unwrap();
            let end = rpc::is_terminal(&e);
            out.push(e);
            if end {
                return;
            }
        }
        panic!("stream ended without a terminal event");
    };
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("no terminal event");
    out
}

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
    let all: Vec<&Event> = before.iter().chain(after.iter()).collect();
    let count = |f: fn(&Event) -> bool| all.iter().filter(|e| f(e)).count();
    assert_eq!(count(|e| matches!(e, Event::Accepted(_))), 1, "{all:#?}");
    assert_eq!(count(|e| matches!(e, Event::Started(_))), 1, "{all:#?}");
    assert_eq!(count(rpc::is_terminal), 1);
    let Some(Event::Finished(fin)) = after.last() else {
        panic!("{after:#?}")
    };
    assert_eq!(fin.exit_status, 0);
    // Every segment was announced exactly once, numbered without a gap from 1.
    let announced: Vec<u64> = all
        .iter()
        .filter_map(|e| match e {
            Event::Segment(s) if s.output == 0 => Some(s.number),
            _ => None,
        })
        .collect();
    let unique: BTreeSet<u64> = announced.iter().copied().collect();
    assert_eq!(
        unique.len(),
        announced.len(),
        "announced twice: {announced:?}"
    );
    let expected: Vec<u64> = (1..=announced.len() as u64).collect();
    assert_eq!(unique.into_iter().collect::<Vec<_>>(), expected);
    // 8 s at 1 s segments: the whole clip is covered.
    assert!(announced.len() >= 7, "{announced:?}");
    assert_eq!(fin.segments, expected, "Finished lists the whole session");
    // On disk: each number exactly once (one file per number), the same set.
    assert_eq!(segments_on_disk(&out), expected);
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
