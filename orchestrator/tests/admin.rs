//! The admin subcommands (`workers`, `jobs`, `drain`) of the real binary against a real
//! orchestrator and worker on loopback.

mod common;

use std::process::Command;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_clusterplex-orchestrator");

/// Runs an admin subcommand; returns (exit code, stdout, stderr).
fn admin(port: u16, token: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(BIN)
        .env_remove("ORCHESTRATOR_URL")
        .env_remove("CLUSTERPLEX_TOKEN")
        .args(&args[..1])
        .args(["--orchestrator-url", &format!("http://127.0.0.1:{port}")])
        .args(["--token", token])
        .args(&args[1..])
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_jobs_and_drain_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().canonicalize().unwrap();
    let (port, http) = (free_port(), free_port());
    let _orch = orchestrator(port, http, &[]);
    let _w = worker(port, "adm1", &media);
    let mut c = client(port, TOKEN).await;
    wait_workers(&mut c, 1).await;

    let (code, out, err) = admin(port, TOKEN, &["workers"]);
    assert_eq!(code, Some(0), "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("adm1 "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains("node-adm1") && row.contains("active") && row.contains("0/1"),
        "{row}"
    );

    let (code, out, err) = admin(port, TOKEN, &["jobs"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 1, "only the header: {out}");

    let (code, out, err) = admin(port, TOKEN, &["drain", "adm1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("`adm1` drained"), "{out}");
    assert!(
        worker_info(&mut c, "adm1").await.state
            == clusterplex_core::rpc::pb::WorkerState::Draining as i32
    );
    let (_, out, _) = admin(port, TOKEN, &["workers"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("adm1 ") && l.contains("draining")),
        "{out}"
    );

    // Unknown worker, wrong token, nobody listening: a message and a non-zero exit.
    let (code, _, err) = admin(port, TOKEN, &["drain", "nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("NotFound") && err.contains("`nope`"), "{err}");
    let (code, _, err) = admin(port, "wrong", &["workers"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("Unauthenticated"), "{err}");
    let (code, _, err) = admin(free_port(), TOKEN, &["workers"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot reach the orchestrator"), "{err}");
}
