//! Real processes for end-to-end tests: the workspace's own binaries (built on demand, like the
//! orchestrator's cluster tests do), free loopback ports, signals, children that die with the
//! test, and plain HTTP GETs for `/metrics` and `/_recording`.

use std::{
    collections::HashSet,
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, ExitStatus},
    sync::Mutex,
    time::{Duration, Instant},
};

/// `target/<profile>` of the running test binary (`target/debug/deps/<test>` → `target/debug`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    deps.parent().unwrap_or(deps).to_path_buf()
}

static BUILT: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Set to `1` by scripts/test.sh: the workspace's binaries next to the test binaries are current.
pub const PREBUILT_ENV: &str = "CLUSTERPLEX_TEST_BINS_BUILT";

/// The path of binary `bin` of workspace package `package`, next to the test binary. When the
/// test runs under cargo (`CARGO` is set), it is built first (once per test process), so a
/// test of one crate can run another crate's binary: cargo only builds binaries of the crate
/// under test. Building several at once in one call saves cargo start-ups.
pub fn workspace_bins(wanted: &[(&str, &str)]) -> Vec<PathBuf> {
    let dir = target_dir();
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let done = built.get_or_insert_with(HashSet::new);
    let missing: Vec<&(&str, &str)> = wanted
        .iter()
        .filter(|(p, b)| !done.contains(&format!("{p}/{b}")))
        .collect();
    // scripts/test.sh builds the whole workspace's tests first, which builds every package's
    // binaries too; a `cargo build -p` from here would resolve features (and build-script env)
    // differently and recompile a few minutes' worth of crates, then overwrite those binaries.
    let prebuilt = std::env::var_os(PREBUILT_ENV).is_some_and(|v| v == "1")
        && missing.iter().all(|(_, b)| dir.join(b).exists());
    if !missing.is_empty()
        && !prebuilt
        && let Ok(cargo) = std::env::var("CARGO")
    {
        let mut cmd = Command::new(cargo);
        cmd.arg("build");
        for (p, b) in &missing {
            cmd.args(["-p", p, "--bin", b]);
        }
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo build");
        assert!(st.success(), "building {missing:?} failed");
    }
    for (p, b) in &missing {
        done.insert(format!("{p}/{b}"));
    }
    wanted
        .iter()
        .map(|(_, b)| {
            let bin = dir.join(b);
            assert!(bin.exists(), "{} missing", bin.display());
            bin
        })
        .collect()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Sends `sig` (`TERM`, `KILL`, `INT`…) to `pid` with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid} failed");
}

/// Whether `pid` is running (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')),
        Err(_) => false,
    }
}

/// A child process that is SIGKILLed and reaped when dropped, so a failing test leaves
/// nothing behind.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    /// Spawns `cmd`; `name` is for messages.
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name: name.to_string(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on `127.0.0.1:port`; the body, or `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    if head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    }) {
        return Some(dechunk(body));
    }
    Some(body.to_string())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The value of an unlabelled Prometheus sample `name` in a `/metrics` text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
