//! The `clusterplex-pms-contract` binary: serves on the port it is given, enforces the token
//! from `X_PLEX_TOKEN`, and dumps the recording as JSON on SIGTERM.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::Duration,
};

fn put(addr: &str, target: &str, token: Option<&str>) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let tok = token
        .map(|t| format!("X-Plex-Token: {t}\r\n"))
        .unwrap_or_default();
    write!(s, "PUT {target} HTTP/1.1\r\nHost: {addr}\r\n{tok}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn serves_enforces_token_and_dumps_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("recording.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_clusterplex-pms-contract"))
        .env("PMS_CONTRACT_PORT", "0")
        .env("X_PLEX_TOKEN", "tok")
        .env("PMS_CONTRACT_DUMP", &dump)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("PMS_CONTRACT_URL=http://")
        .unwrap()
        .to_string();
    assert!(url.starts_with("127.0.0.1:"), "{url}");

    let target = "/video/:/transcode/session/k/u/progress?duration=2.000000";
    assert_eq!(put(&url, target, None), 401);
    assert_eq!(put(&url, target, Some("tok")), 204);

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&dump).unwrap()).unwrap();
    let reqs = v.as_array().unwrap();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0]["status"], 401);
    assert_eq!(reqs[1]["kind"], "duration");
}
