//! Orchestrator bench: 1000 simulated workers and many submitters against an orchestrator
//! running in its own process, over loopback gRPC, with no-op jobs.
//!
//! Three processes (this binary re-executed), so that each one's CPU time can be read from
//! /proc and the orchestrator's cost per placement is not mixed up with the load generators':
//! - the orchestrator (`clusterplex_orchestrator::start`, default config: `LOAD_RANK`);
//! - the simulated workers: each registers like a real worker (capabilities, score, 4 slots,
//!   a load report) on its own HTTP/2 connection, and answers each assignment with the
//!   messages a real worker sends for a job that does nothing: `accepted`, then `finished`;
//! - this process: the submitters. Each submit is a real `JobService.Submit` call whose event
//!   stream is read until its terminal event; submitters spread over several HTTP/2
//!   connections, as real shims each have their own.
//!
//! Prints: submit-to-start latency p50/p99 (submit call -> `accepted`, one job at a time),
//! placements per second (concurrent submitters, full submit -> finished cycles), the CPU time
//! per placement of the orchestrator, of the workers, of the submitters and of the kernel's
//! softirq work, the placement decision time (the orchestrator's histogram), and the
//! orchestrator's RSS.
//!
//! A second part drives the orchestrator's `Cluster` in-process with the same workers (their
//! streams are channels): what the orchestrator's state machine costs without HTTP/2.
//!
//! `cargo bench -p clusterplex-benches --bench placement`. Environment: `BENCH_WORKERS`
//! (1000), `BENCH_JOBS` (20000), `BENCH_CONCURRENCY` (256 submitters), `BENCH_SUBMIT_CONNS`
//! (32 connections for them), `BENCH_WORKERS_PER_CONN` (1; raised when the open-files limit
//! is too low for one connection per worker), `BENCH_ONLY` (`grpc` or `inprocess`: one part).

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use clusterplex_core::{
    ByStream, CodecChoice, Input, Job, Output, StreamSettings, StreamSpecifier,
    rpc::{self, Event, WorkerServiceClient, pb},
};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The orchestrator's runtime: the same as its binary's (`#[tokio::main]`, one thread per core).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The load generators' runtime: one thread, so that they spend less CPU on waking each other
/// across threads and leave more of the machine to the orchestrator.
fn load_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    match std::env::var("CLUSTERPLEX_BENCH_ROLE").as_deref() {
        Ok("orchestrator") => return orchestrator_role(),
        Ok("workers") => return workers_role(),
        _ => {}
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: keep that quick.
    let full = std::env::args().any(|a| a == "--bench");
    let workers = env_usize("BENCH_WORKERS", if full { 1000 } else { 20 });
    let jobs = env_usize("BENCH_JOBS", if full { 20_000 } else { 200 });
    // BENCH_ONLY=grpc or inprocess runs one part (for profiling).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only != "inprocess" {
        load_runtime().block_on(over_grpc(workers, jobs));
    }
    if only != "grpc" {
        runtime().block_on(in_process(workers, jobs.max(1000) * 5));
    }
}

// ----------------------------------------------------------------------- CPU accounting

/// Clock ticks per second of /proc's `utime`/`stime` (USER_HZ, 100 on Linux).
const TICK: f64 = 0.01;

/// User and system CPU seconds of a process (all its threads, live and exited).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    user: f64,
    sys: f64,
}

impl Cpu {
    fn of(pid: &str) -> Cpu {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the `(comm)`, which may contain spaces.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<f64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after `) state`.
        Cpu {
            user: f.get(11).copied().unwrap_or(0.0) * TICK,
            sys: f.get(12).copied().unwrap_or(0.0) * TICK,
        }
    }
    fn total(self) -> f64 {
        self.user + self.sys
    }
    fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            user: self.user - earlier.user,
            sys: self.sys - earlier.sys,
        }
    }
}

/// Machine-wide CPU seconds from /proc/stat: `(busy, softirq, all)`.
fn machine_cpu() -> (f64, f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    if v.len() < 8 {
        return (0.0, 0.0, 0.0);
    }
    let all: f64 = v.iter().sum();
    let idle = v[3] + v[4];
    ((all - idle) * TICK, v[6] * TICK, all * TICK)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_string)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// The soft open-files limit of this process.
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(1024)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

// ------------------------------------------------------------------------- the job

fn job() -> Job {
    let mut o = Output::new("/dev/null", Some("null"));
    o.streams.push(ByStream::new(
        StreamSpecifier::all(),
        StreamSettings {
            codec: Some(CodecChoice::Encoder("libx264".into())),
            ..Default::default()
        },
    ));
    Job {
        inputs: vec![Input::new("noop.mkv")],
        outputs: vec![o],
        ..Default::default()
    }
}

/// What the simulated workers can do: the job needs libx264, so capability filtering runs.
fn caps() -> pb::Capabilities {
    pb::Capabilities {
        decoders: vec!["h264".into(), "hevc".into()],
        encoders: vec!["libx264".into(), "aac".into()],
        filters: vec!["scale".into()],
        ten_bit: true,
        tonemap: vec!["cpu".into(), "reference".into()],
        arch: "x86_64".into(),
        ..Default::default()
    }
}

fn register(i: usize) -> pb::Register {
    let id = format!("sim-{i:04}");
    pb::Register {
        worker_id: id.clone(),
        name: id,
        version: "bench".into(),
        protocol_version: rpc::PROTOCOL_VERSION,
        capabilities: Some(caps()),
        benchmark_score: 50.0 + (i % 50) as f64,
        max_jobs: 4,
        running_job_ids: vec![],
        ..Default::default()
    }
}

fn load_report(i: usize) -> pb::LoadReport {
    pb::LoadReport {
        cpu_percent: ((i * 37) % 100) as f64,
        running_jobs: 0,
        mem_used_bytes: 1 << 30,
        mem_total_bytes: 4 << 30,
    }
}

/// A real worker's answer to an assignment of a job that does nothing.
fn no_op_run(job_id: &str, worker_id: &str) -> [pb::WorkerMessage; 2] {
    let msg = |event| pb::WorkerMessage {
        msg: Some(pb::worker_message::Msg::JobEvent(rpc::job_event(
            job_id, event,
        ))),
    };
    [
        msg(Event::Accepted(pb::Accepted {
            worker_id: worker_id.to_string(),
            worker_name: worker_id.to_string(),
        })),
        msg(Event::Finished(pb::Finished {
            exit_status: 0,
            ..Default::default()
        })),
    ]
}

// ----------------------------------------------------------------------- the processes

fn orchestrator_role() {
    runtime().block_on(async {
        let mut cfg = clusterplex_orchestrator::OrchestratorConfig::loopback();
        cfg.cluster.lost_timeout = Duration::from_secs(600);
        let running = clusterplex_orchestrator::start(cfg).await.unwrap();
        println!("{} {}", running.grpc_addr.port(), running.http_addr.port());
        wait_for_stdin_eof().await;
    });
}

/// The simulated workers. Prints `ready` once all are attached.
fn workers_role() {
    let url = std::env::var("BENCH_URL").unwrap();
    let n = env_usize("BENCH_WORKERS", 1000);
    let per_conn = env_usize("BENCH_WORKERS_PER_CONN", 1).max(1);
    load_runtime().block_on(async move {
        let mut channels = Vec::new();
        for _ in 0..n.div_ceil(per_conn) {
            channels.push(
                rpc::connect_channel(&url, Duration::from_secs(5))
                    .await
                    .unwrap(),
            );
        }
        let mut attached = Vec::new();
        for i in 0..n {
            let client = WorkerServiceClient::new(channels[i / per_conn].clone());
            attached.push(tokio::spawn(simulated_worker(client, i)));
        }
        for a in attached {
            a.await.unwrap();
        }
        println!("ready");
        wait_for_stdin_eof().await;
    });
}

/// Registers worker `i` and spawns the task that answers its assignments.
async fn simulated_worker(mut client: WorkerServiceClient<rpc::Channel>, i: usize) {
    let (tx, rx) = mpsc::channel::<pb::WorkerMessage>(256);
    let reg = register(i);
    let id = reg.worker_id.clone();
    tx.send(pb::WorkerMessage {
        msg: Some(pb::worker_message::Msg::Register(reg)),
    })
    .await
    .unwrap();
    tx.send(pb::WorkerMessage {
        msg: Some(pb::worker_message::Msg::Load(load_report(i))),
    })
    .await
    .unwrap();
    let mut down = client
        .attach(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tokio::spawn(async move {
        while let Some(Ok(m)) = down.next().await {
            if let Some(pb::orchestrator_message::Msg::Assign(a)) = m.msg {
                for m in no_op_run(&a.job_id, &id) {
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
}

async fn wait_for_stdin_eof() {
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read(&mut [0u8; 1])).await;
}

/// Re-executes this binary in `role`; returns the child and the first line it prints.
fn spawn_role(role: &str, env: &[(&str, String)]) -> (Child, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env("CLUSTERPLEX_BENCH_ROLE", role)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

// ------------------------------------------------------------------------ over gRPC

/// One submit -> terminal cycle. Returns the time to `accepted` and checks the stream's end.
async fn submit_once(
    c: &mut rpc::JobServiceClient<rpc::AuthChannel>,
    req: &pb::SubmitJobRequest,
) -> Duration {
    let t0 = Instant::now();
    let mut s = c.submit(req.clone()).await.unwrap().into_inner();
    let mut started = None;
    while let Some(m) = s.next().await {
        let ev = m.unwrap().event.unwrap();
        match ev {
            Event::Accepted(_) => started = Some(t0.elapsed()),
            Event::Finished(_) => break,
            Event::Queued(_) => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert!(s.next().await.is_none(), "events after the terminal one");
    started.expect("no accepted event")
}

async fn over_grpc(n_workers: usize, n_jobs: usize) {
    let t_setup = Instant::now();
    let (mut orch, ports) = spawn_role("orchestrator", &[]);
    let mut it = ports.split_whitespace().map(|p| p.parse::<u16>().unwrap());
    let (port, http) = (it.next().unwrap(), it.next().unwrap());
    let url = format!("http://127.0.0.1:{port}");
    let opid = orch.id().to_string();
    let rss_idle = rss_kib(orch.id());

    // One connection per worker, as real workers have, when the open-files limit allows.
    let conc = env_usize("BENCH_CONCURRENCY", 256);
    let submit_conns = env_usize("BENCH_SUBMIT_CONNS", 32).clamp(1, conc);
    let room = open_files_limit().saturating_sub(submit_conns + 200) / 2;
    let per_conn = env_usize(
        "BENCH_WORKERS_PER_CONN",
        n_workers.div_ceil(room.max(1)).max(1),
    );
    let (mut sim, _) = spawn_role(
        "workers",
        &[
            ("BENCH_URL", url.clone()),
            ("BENCH_WORKERS", n_workers.to_string()),
            ("BENCH_WORKERS_PER_CONN", per_conn.to_string()),
        ],
    );
    let spid = sim.id().to_string();
    let mut c = rpc::job_client(&url, None, Duration::from_secs(5))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while c
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers
        .len()
        < n_workers
    {
        assert!(Instant::now() < deadline, "workers did not register");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let setup = t_setup.elapsed();
    let rss_workers = rss_kib(orch.id());
    let req = rpc::submit_request(&job(), "bench", "bench").unwrap();

    // Latency: one job at a time.
    let mut lat = Vec::new();
    for _ in 0..(n_jobs / 10).max(100) {
        lat.push(submit_once(&mut c, &req).await);
    }
    lat.sort();

    // Throughput: concurrent submitters over several connections.
    let mut clients = Vec::new();
    for _ in 0..submit_conns {
        clients.push(
            rpc::job_client(&url, None, Duration::from_secs(5))
                .await
                .unwrap(),
        );
    }
    let conc = conc.min(n_jobs / 4).max(1);
    let per = n_jobs / conc;
    let done = per * conc;
    let req = Arc::new(req);
    let (o0, s0, b0, m0) = (
        Cpu::of(&opid),
        Cpu::of(&spid),
        Cpu::of("self"),
        machine_cpu(),
    );
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..conc {
        let mut c = clients[k % clients.len()].clone();
        let req = Arc::clone(&req);
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                submit_once(&mut c, &req).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = t0.elapsed();
    let (o1, s1, b1, m1) = (
        Cpu::of(&opid),
        Cpu::of(&spid),
        Cpu::of("self"),
        machine_cpu(),
    );
    let rss_after = rss_kib(orch.id());

    // Placement decision time from the orchestrator's own histogram.
    let metrics = http_get(http, "/metrics").await;
    let count = metric(&metrics, "placement_seconds_count");
    let sum = metric(&metrics, "placement_seconds_sum");

    let per_job = |s: f64| s / done as f64 * 1e6;
    let (o, s, b) = (o1.since(o0), s1.since(s0), b1.since(b0));
    let (busy, softirq, all) = (m1.0 - m0.0, m1.1 - m0.1, m1.2 - m0.2);
    let others = busy - o.total() - s.total() - b.total();
    println!(
        "orchestrator over loopback gRPC: {n_workers} simulated workers ({per_conn} per connection, 4 slots each), no-op jobs, LOAD_RANK, {} cores, loadavg {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        loadavg()
    );
    println!("  setup (start, {n_workers} workers registered): {setup:.2?}");
    println!(
        "  submit->start latency (sequential, {} jobs): p50 {:?}  p99 {:?}",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    println!(
        "  PLACEMENTS/s over gRPC ({conc} concurrent submitters on {submit_conns} connections): {1:.0}  ({done} submit->finished cycles in {0:.2?})",
        elapsed,
        done as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  CPU per placement: orchestrator {:.1} us ({:.1} user + {:.1} sys), workers {:.1} us, submitters {:.1} us, other processes {:.1} us (softirq {:.1} us); machine busy {:.0}%",
        per_job(o.total()),
        per_job(o.user),
        per_job(o.sys),
        per_job(s.total()),
        per_job(b.total()),
        per_job(others),
        per_job(softirq),
        busy / all.max(1e-9) * 100.0
    );
    println!(
        "  placement decision (orchestrator histogram): mean {:.2} us over {count} placements",
        sum / count * 1e6
    );
    println!(
        "  orchestrator RSS: {:.1} MiB idle, {:.1} MiB with {n_workers} workers, {:.1} MiB after the run",
        rss_idle as f64 / 1024.0,
        rss_workers as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    for child in [&mut sim, &mut orch] {
        drop(child.stdin.take());
        let _ = child.kill();
        let _ = child.wait();
    }
}

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

// ------------------------------------------------------------------------ in-process

/// Placement through `Cluster` directly: submit -> assign -> accepted -> finished, no network.
async fn in_process(n_workers: usize, n_jobs: usize) {
    use clusterplex_orchestrator::{
        Cluster, ClusterConfig,
        cluster::{EventRx, Submission},
    };
    let cluster = Cluster::new(ClusterConfig {
        lost_timeout: Duration::from_secs(600),
        ..Default::default()
    });
    let job = job();
    let needs = clusterplex_core::placement::needs_of(&job);
    let job_json = rpc::encode_json(&job).unwrap();
    for i in 0..n_workers {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let reg = register(i);
        let id = reg.worker_id.clone();
        let session = cluster.register(&reg, tx).unwrap();
        cluster.worker_message(&id, session, pb::worker_message::Msg::Load(load_report(i)));
        let c = Arc::clone(&cluster);
        tokio::spawn(async move {
            while let Some(Ok(m)) = rx.recv().await {
                if let Some(pb::orchestrator_message::Msg::Assign(a)) = m.msg {
                    for m in no_op_run(&a.job_id, &id) {
                        if let Some(m) = m.msg {
                            c.worker_message(&id, session, m);
                        }
                    }
                }
            }
        });
    }
    // What the job service does for each submission: parse the job, then submit it.
    let submit = |c: &Arc<Cluster>| -> EventRx {
        let job = rpc::decode_job(&job_json).unwrap();
        c.submit(Submission {
            job_json: job_json.clone(),
            job: Some(job),
            needs: needs.clone(),
            poster_id: "bench".into(),
            poster_host: "bench".into(),
            ..Default::default()
        })
        .unwrap()
        .1
    };
    async fn until_end(rx: &mut EventRx) -> Option<Instant> {
        let mut accepted = None;
        while let Some(Ok(m)) = rx.recv().await {
            let ev = m.event.unwrap();
            if matches!(ev, Event::Accepted(_)) {
                accepted = Some(Instant::now());
            }
            if rpc::is_terminal(&ev) {
                assert!(matches!(ev, Event::Finished(_)), "{ev:?}");
                break;
            }
        }
        accepted
    }
    // Latency: submit -> accepted, one job at a time.
    let mut lat = Vec::new();
    for _ in 0..2000 {
        let t0 = Instant::now();
        let mut rx = submit(&cluster);
        let accepted = until_end(&mut rx).await.expect("no accepted event");
        lat.push(accepted - t0);
    }
    lat.sort();
    // Throughput: submissions in batches of 1000 (under the 4000 free slots), each batch
    // waited out, so every job is placed at submit time, never queued.
    let c0 = Cpu::of("self");
    let t0 = Instant::now();
    let mut done = 0usize;
    while done < n_jobs {
        let batch: Vec<EventRx> = (0..1000).map(|_| submit(&cluster)).collect();
        for mut rx in batch {
            until_end(&mut rx).await;
        }
        done += 1000;
    }
    let elapsed = t0.elapsed();
    let cpu = Cpu::of("self").since(c0);
    println!("in-process (orchestrator state machine, no gRPC), {n_workers} workers:");
    println!(
        "  submit->assigned latency ({} jobs): p50 {:?}  p99 {:?}",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    println!(
        "  PLACEMENTS/s: {:.0}  ({done} submit->assign->accepted->finished cycles in {elapsed:.2?}); CPU {:.1} us per placement",
        done as f64 / elapsed.as_secs_f64(),
        cpu.total() / done as f64 * 1e6
    );
}
