//! Power saving with the real binaries on loopback: an idle `clusterplex-worker` is told to
//! sleep (its sleep command runs and takes the process down, as a suspend drops the box off
//! the network), a job then makes the orchestrator send a Wake-on-LAN magic packet for exactly
//! its MAC to a UDP socket this test listens on, and the worker started again (the "wake")
//! runs the job. Only the OS suspend itself is simulated.

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use clusterplex_core::rpc::{Event, pb};
use common::*;

const MAC: &str = "02:5e:00:c0:ff:ee";
const MAC_BYTES: [u8; 6] = [0x02, 0x5e, 0x00, 0xc0, 0xff, 0xee];

/// Records that it ran, then kills the worker that ran it (`sh -c`'s parent).
fn sleep_command(marker: &Path) -> String {
    format!("echo slept >> '{}'; kill -KILL $PPID", marker.display())
}

fn sleepy_worker(port: u16, media: &Path, marker: &Path) -> Proc {
    worker_with(
        port,
        "sleepy",
        media,
        &[
            ("CLUSTERPLEX_SLEEP_COMMAND", &sleep_command(marker)),
            ("CLUSTERPLEX_WOL_MAC", MAC),
        ],
    )
}

fn times_slept(marker: &Path) -> usize {
    std::fs::read_to_string(marker)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Polls `/metrics` until `name` equals `want` (hang guard: 20 s).
async fn wait_metric(http: u16, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = metric(&http_get(http, "/metrics").await, name);
        if v == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name} = {v}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_sleeps_and_a_job_wakes_it_with_a_magic_packet() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().canonicalize().unwrap();
    let clip = make_clip(&media, "in.mp4", 1);
    let marker = media.join("slept");
    let wol = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let wol_addr = wol.local_addr().unwrap().to_string();
    let (port, http) = (free_port(), free_port());
    let _orch = orchestrator(
        port,
        http,
        &[
            ("CLUSTERPLEX_SLEEP_AFTER_S", "1"),
            ("CLUSTERPLEX_MIN_AWAKE_WORKERS", "0"),
            ("CLUSTERPLEX_WAKE_TIMEOUT_S", "60"),
            ("CLUSTERPLEX_WOL_ADDR", &wol_addr),
        ],
    );
    let mut w = sleepy_worker(port, &media, &marker);
    let mut c = client(port, TOKEN).await;

    // 1. Idle for a second: told to sleep; its command ran and took the worker down.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = w.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the worker was never put to sleep"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "killed by its sleep command: {status:?}");
    assert_eq!(times_slept(&marker), 1);
    // Remembered as asleep after its connection dropped.
    wait_worker(&mut c, "sleepy", "not asleep", |w| {
        w.state == pb::WorkerState::Asleep as i32
    })
    .await;
    // ...and in the admin table.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clusterplex-orchestrator"))
        .env_remove("ORCHESTRATOR_URL")
        .env_remove("CLUSTERPLEX_TOKEN")
        .args(["workers", "--orchestrator-url"])
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--token", TOKEN])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("sleepy ") && l.split_whitespace().nth(2) == Some("asleep")),
        "{table}"
    );
    wait_metric(http, "workers_asleep", 1.0).await;
    wait_metric(http, "worker_sleeps_ordered", 1.0).await;
    assert_eq!(
        metric(
            &http_get(http, "/metrics").await,
            "worker_wake_packets_sent"
        ),
        0.0
    );

    // 2. A job no awake worker can take: queued, and a magic packet for exactly that MAC.
    let out = media.join("out.mp4");
    let job = transcode_job(&clip, &media, out.to_str().unwrap(), false);
    let mut events = submit(&mut c, &job).await;
    until(&mut events, 10, |e| matches!(e, Event::Queued(_))).await;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(20), wol.recv(&mut buf))
        .await
        .expect("no magic packet")
        .unwrap();
    let mut want = vec![0xff; 6];
    for _ in 0..16 {
        want.extend_from_slice(&MAC_BYTES);
    }
    assert_eq!(buf[..n], want[..]);
    wait_metric(http, "worker_wake_packets_sent", 1.0).await;

    // 3. The machine "resumes": the worker registers again and the waiting job runs there.
    let _w = sleepy_worker(port, &media, &marker);
    let a = accepted(&mut events).await;
    assert_eq!(a.worker_id, "sleepy");
    finished(&mut events, 60).await;
    assert_eq!(frames(&out), 25, "1 s at 25 fps");
    wait_metric(http, "workers_asleep", 0.0).await;
    // Only one packet for one job.
    assert_eq!(
        metric(
            &http_get(http, "/metrics").await,
            "worker_wake_packets_sent"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_no_worker_is_put_to_sleep() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().canonicalize().unwrap();
    let marker = media.join("slept");
    let (port, http) = (free_port(), free_port());
    // No power settings: the feature is off, even for a worker that could sleep.
    let _orch = orchestrator(port, http, &[]);
    let mut w = sleepy_worker(port, &media, &marker);
    let mut c = client(port, TOKEN).await;
    wait_workers(&mut c, 1).await;
    // Idle well past what a 1 s SLEEP_AFTER_S would allow.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(w.0.try_wait().unwrap().is_none(), "the worker went down");
    assert_eq!(times_slept(&marker), 0);
    assert_eq!(
        worker_info(&mut c, "sleepy").await.state,
        pb::WorkerState::Active as i32
    );
    let m = http_get(http, "/metrics").await;
    assert_eq!(metric(&m, "worker_sleeps_ordered"), 0.0);
    assert_eq!(metric(&m, "workers_asleep"), 0.0);
}

/// A MAC or Wake-on-LAN address that does not parse stops the binary at start-up with a
/// message naming the setting, before it connects or listens.
#[test]
fn bad_wake_settings_are_clear_start_up_errors() {
    // Under timeout(1): a worker that accepted the MAC would retry its connection forever.
    let out = std::process::Command::new("timeout")
        .arg("20")
        .arg(worker_bin())
        .env_remove("CLUSTERPLEX_WOL_MAC")
        .args(["--worker-score", "1", "--wol-mac", "not-a-mac"])
        .args(["--orchestrator-url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("CLUSTERPLEX_WOL_MAC `not-a-mac`"), "{err}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clusterplex-orchestrator"))
        .env_remove("CLUSTERPLEX_WOL_ADDR")
        .args(["--wol-addr", "broadcast"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--wol-addr"), "{err}");
}
