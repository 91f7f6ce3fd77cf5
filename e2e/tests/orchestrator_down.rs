//! The orchestrator gone (its process killed: connection refused) or hung (the port accepts
//! TCP but nothing answers): `both` must fall back to the original transcoder within the
//! connect timeout, `remote` must exit non-zero with a clear message and run nothing locally.
//! (The shim's own tests cover a port nothing ever listened on, with a test gRPC server.)

use std::time::Duration;

use clusterplex_e2e::{Cluster, ClusterOpts, Install, Pms, corpus, finish, point_at};
use clusterplex_testkit::av_clip;

/// The shim's connect timeout in these runs (`CLUSTERPLEX_CONNECT_TIMEOUT_MS`, set by
/// [`Install::shim`]).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// What "within the connect timeout" may cost on a loaded 2-core CI machine: the connect
/// timeout for the channel and again for the first call, plus process start-up. Generous on
/// purpose; a hang would take the test's whole limit.
const BOUND: Duration = Duration::from_secs(8);

async fn both_falls_back_and_remote_refuses(url: &str, cluster: &Cluster, what: &str) {
    let input = cluster.media_file(
        &av_clip(
            "mkv",
            2.0,
            25,
            &[
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                "log-level=error",
            ],
            &[("aac", 6)],
            false,
        ),
        "Down.mkv",
    );
    let session = cluster.session_dir(&format!("down-{what}"));
    let pms = Pms::start(&session);
    let args = point_at(&corpus("01"), &[input], &session);
    let install = Install::new();

    let child = install
        .shim(url, pms.port, &session, "both", &args)
        .spawn()
        .unwrap();
    let done = finish(child, Duration::from_secs(60)).await;
    assert_eq!(done.code, 0, "{what}: {}", done.stderr);
    assert_eq!(
        install.original_ran_with().as_deref(),
        Some(args.as_slice()),
        "{what}: `both` must run the original transcoder with Plex's argv\n{}",
        done.stderr
    );
    assert!(
        done.stderr.contains("fallback") && done.stderr.contains("orchestrator unreachable"),
        "{what}: {}",
        done.stderr
    );
    assert!(
        done.elapsed < BOUND,
        "{what}: the fallback took {:?} (connect timeout {CONNECT_TIMEOUT:?})",
        done.elapsed
    );

    install.reset();
    let child = install
        .shim(url, pms.port, &session, "remote", &args)
        .spawn()
        .unwrap();
    let done = finish(child, Duration::from_secs(60)).await;
    assert_ne!(done.code, 0, "{what}: {}", done.stderr);
    assert!(
        install.original_ran_with().is_none(),
        "{what}: `remote` ran the job locally"
    );
    assert!(
        done.stderr.contains("orchestrator unreachable")
            && done.stderr.contains("not falling back to local"),
        "{what}: no clear message: {}",
        done.stderr
    );
    assert!(done.elapsed < BOUND, "{what}: took {:?}", done.elapsed);
    // Nothing reached PMS: no worker ran the job.
    assert!(pms.recording().requests.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_killed_or_hung() {
    let mut cluster = Cluster::start(ClusterOpts {
        workers: 1,
        ..ClusterOpts::default()
    })
    .await;
    cluster.kill_orchestrator();
    let url = cluster.url();
    both_falls_back_and_remote_refuses(&url, &cluster, "killed").await;

    // Hung: the kernel completes TCP handshakes into the backlog of a socket nobody accepts
    // on, so only the shim's timeouts stop it.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", hung.local_addr().unwrap());
    both_falls_back_and_remote_refuses(&url, &cluster, "hung").await;
    drop(hung);
}
