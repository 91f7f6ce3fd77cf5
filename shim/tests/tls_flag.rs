//! `--tls-ca` reaches the shim's orchestrator connection: an `https://` URL with a CA file that
//! cannot be read fails the remote attempt with a message naming that file (in `remote` mode,
//! with a non-zero exit); without any CA the message names `CLUSTERPLEX_TLS_CA`.

use std::process::Command;

const SHIM: &str = env!("CARGO_BIN_EXE_clusterplex-shim");

fn run_remote(extra: &[&str]) -> (Option<i32>, String) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.mp4");
    let mut c = Command::new(SHIM);
    c.env_remove("CLUSTERPLEX_TLS_CA")
        .env_remove("ORCHESTRATOR_URL")
        .args(["run", "--mode", "remote", "--orchestrator-url"])
        .arg("https://127.0.0.1:9")
        .args(["--connect-timeout-ms", "500", "--transcoder-path"])
        .arg(tmp.path())
        .args(extra)
        .args([
            "--",
            "-i",
            "/media/in.mkv",
            "-c:v",
            "libx264",
            "-c:a",
            "aac",
        ])
        .arg(&out);
    let o = c.output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn tls_ca_flag_is_used_for_https_orchestrators() {
    let (code, err) = run_remote(&["--tls-ca", "/nonexistent/clusterplex-ca.pem"]);
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}\n{err}");
    assert!(err.contains("/nonexistent/clusterplex-ca.pem"), "{err}");

    let (code, err) = run_remote(&[]);
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}\n{err}");
    assert!(err.contains("CLUSTERPLEX_TLS_CA"), "{err}");
}
