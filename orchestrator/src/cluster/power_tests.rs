//! `Cluster` with power saving on, workers as channels and a real UDP socket as the Wake-on-LAN
//! target: who is told to sleep, what a queued job wakes, and what happens when a wake fails.

use super::*;
use clusterplex_core::{Input, Output};

type WorkerRx = mpsc::UnboundedReceiver<Result<pb::OrchestratorMessage, Status>>;

const MAC: &str = "02:00:00:00:00:07";

fn sleepy(c: &Arc<Cluster>, id: &str, mac: &str) -> (u64, WorkerRx) {
    let reg = pb::Register {
        wake_mac: mac.into(),
        can_sleep: true,
        ..super::tests::registration(id)
    };
    super::tests::attach(c, &reg)
}

fn submit(c: &Arc<Cluster>) -> (String, EventRx) {
    let job = Job {
        inputs: vec![Input::new("/m/a.mkv")],
        outputs: vec![Output::new("/t/a.mp4", Some("mp4"))],
        ..Default::default()
    };
    c.submit(Submission {
        job_json: rpc::encode_json(&job).unwrap(),
        job: Some(job),
        ..Default::default()
    })
    .unwrap()
}

/// Waits (10 s at most, a hang guard) for a message matching `f` on a worker's stream.
async fn expect(rx: &mut WorkerRx, what: &str, f: impl Fn(&pb::orchestrator_message::Msg) -> bool) {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = rx.recv().await {
            if m.msg.as_ref().is_some_and(&f) {
                return;
            }
        }
        panic!("stream ended before {what}");
    })
    .await;
    assert!(found.is_ok(), "no {what}");
}

async fn expect_assign(rx: &mut WorkerRx, job_id: &str) {
    expect(
        rx,
        "the job",
        |m| matches!(m, pb::orchestrator_message::Msg::Assign(a) if a.job_id == job_id),
    )
    .await;
}

fn is_sleep(m: &pb::orchestrator_message::Msg) -> bool {
    matches!(m, pb::orchestrator_message::Msg::Sleep(_))
}

fn no_sleep_sent(rx: &mut WorkerRx) -> bool {
    while let Ok(m) = rx.try_recv() {
        if m.unwrap().msg.as_ref().is_some_and(is_sleep) {
            return false;
        }
    }
    true
}

fn state(c: &Cluster, id: &str) -> pb::WorkerState {
    let w = c.list_workers().into_iter().find(|w| w.id == id).unwrap();
    pb::WorkerState::try_from(w.state).unwrap()
}

async fn wol_socket() -> tokio::net::UdpSocket {
    tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

fn power(sleep_after_ms: u64, wol: &tokio::net::UdpSocket, wake_timeout: Duration) -> PowerConfig {
    PowerConfig {
        sleep_after: Some(Duration::from_millis(sleep_after_ms)),
        min_awake: 0,
        wake_timeout,
        wol_addr: wol.local_addr().unwrap(),
    }
}

async fn magic_packet(sock: &tokio::net::UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf))
        .await
        .expect("no magic packet")
        .unwrap();
    buf[..n].to_vec()
}

#[tokio::test]
async fn off_by_default_no_worker_is_ever_told_to_sleep() {
    let c = Cluster::new(ClusterConfig::default());
    assert!(!c.config().power.enabled());
    let (_, mut rx) = sleepy(&c, "w1", MAC);
    // Even asked directly, long after it became idle.
    if let Some(w) = c.lock().workers.get_mut("w1") {
        w.idle_since = Some(Instant::now() - Duration::from_secs(86_400));
    }
    c.check_sleep();
    assert!(no_sleep_sent(&mut rx));
    assert_eq!(state(&c, "w1"), pb::WorkerState::Active);
    assert_eq!(c.metrics.sleeps_ordered.get(), 0);
}

#[tokio::test]
async fn an_idle_worker_sleeps_and_a_queued_job_wakes_exactly_it() {
    let wol = wol_socket().await;
    let c = Cluster::new(ClusterConfig {
        power: power(50, &wol, Duration::from_secs(60)),
        ..Default::default()
    });
    // No MAC or no sleep command: never told to sleep.
    let (_, mut no_mac) = sleepy(&c, "nomac", "");
    let (s1, mut w1) = sleepy(&c, "w1", MAC);
    expect(&mut w1, "Sleep", is_sleep).await;
    assert_eq!(state(&c, "w1"), pb::WorkerState::Asleep);
    assert!(no_sleep_sent(&mut no_mac));
    // The suspend drops its connection: still listed, as asleep.
    c.worker_lost("w1", s1, "stream closed");
    assert_eq!(state(&c, "w1"), pb::WorkerState::Asleep);
    assert_eq!(c.metrics.workers_asleep.get(), 1);
    assert_eq!(c.metrics.sleeps_ordered.get(), 1);
    // `nomac` is drained so that the job cannot go there.
    c.drain("nomac", false);
    let (id, mut rx) = submit(&c);
    assert!(matches!(
        rx.try_recv().unwrap().unwrap().event.unwrap(),
        Event::Queued(_)
    ));
    let mac = rpc::parse_mac(MAC).unwrap();
    assert_eq!(magic_packet(&wol).await, power::magic_packet(&mac));
    // A second job fits no slot of the woken worker, but nobody else can be woken.
    let (_, _rx2) = submit(&c);
    // The worker comes back: the job is placed on it.
    let (_, mut w1) = sleepy(&c, "w1", MAC);
    expect_assign(&mut w1, &id).await;
    assert_eq!(state(&c, "w1"), pb::WorkerState::Active);
    assert_eq!(c.metrics.workers_asleep.get(), 0);
    assert_eq!(c.metrics.wake_packets_sent.get(), 1);
}

#[tokio::test]
async fn a_still_connected_sleeper_is_taken_back_without_a_packet() {
    let wol = wol_socket().await;
    let c = Cluster::new(ClusterConfig {
        power: power(50, &wol, Duration::from_secs(60)),
        ..Default::default()
    });
    let (_, mut w1) = sleepy(&c, "w1", MAC);
    expect(&mut w1, "Sleep", is_sleep).await;
    // Its sleep command failed: it is still connected. A job needs it.
    let (id, _rx) = submit(&c);
    expect_assign(&mut w1, &id).await;
    assert_eq!(state(&c, "w1"), pb::WorkerState::Active);
    assert_eq!(c.metrics.wake_packets_sent.get(), 0);
    assert_eq!(c.metrics.workers_asleep.get(), 0);
}

#[tokio::test]
async fn min_awake_keeps_the_last_workers_up() {
    let wol = wol_socket().await;
    let mut cfg = power(50, &wol, Duration::from_secs(60));
    cfg.min_awake = 1;
    let c = Cluster::new(ClusterConfig {
        power: cfg,
        ..Default::default()
    });
    let (_, mut w1) = sleepy(&c, "w1", MAC);
    let (_, mut w2) = sleepy(&c, "w2", "02:00:00:00:00:08");
    // One of the two sleeps (the one idle longest: w1), the other stays up, even when asked
    // again later.
    expect(&mut w1, "Sleep", is_sleep).await;
    c.check_sleep();
    assert!(no_sleep_sent(&mut w2));
    assert_eq!(state(&c, "w2"), pb::WorkerState::Active);
    assert_eq!(c.metrics.sleeps_ordered.get(), 1);
}

#[tokio::test]
async fn a_failed_wake_ends_the_job_as_no_worker_and_is_not_retried() {
    let wol = wol_socket().await;
    let c = Cluster::new(ClusterConfig {
        queue_timeout: Duration::from_millis(100),
        power: power(50, &wol, Duration::from_secs(3)),
        ..Default::default()
    });
    let (s1, mut w1) = sleepy(&c, "w1", MAC);
    expect(&mut w1, "Sleep", is_sleep).await;
    c.worker_lost("w1", s1, "stream closed");
    let (_, mut rx) = submit(&c);
    magic_packet(&wol).await;
    // Past its queue timeout the job still waits for the woken worker...
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(matches!(
        rx.try_recv().unwrap().unwrap().event.unwrap(),
        Event::Queued(_)
    ));
    assert!(rx.try_recv().is_err(), "ended before the wake timed out");
    // ...and ends as it would have without it once the wake times out.
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(&ev.event, Some(Event::Failed(f)) if f.code == pb::FailureCode::NoWorker as i32),
        "{ev:?}"
    );
    // Not woken again for the next job (it fails at its plain queue timeout).
    let (_, mut rx) = submit(&c);
    let ev = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = rx.recv().await.unwrap().unwrap().event.unwrap();
            if rpc::is_terminal(&e) {
                return e;
            }
        }
    })
    .await
    .unwrap();
    assert!(matches!(ev, Event::Failed(_)), "{ev:?}");
    assert_eq!(c.metrics.wake_packets_sent.get(), 1);
    // It registers by itself: no longer asleep.
    let (_, _w1) = sleepy(&c, "w1", MAC);
    assert_eq!(state(&c, "w1"), pb::WorkerState::Active);
}
