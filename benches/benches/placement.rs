//! Orchestrator bench: 1000 simulated workers (no-op jobs: a worker answers `finished` the
//! moment it is assigned) on loopback gRPC against an orchestrator running in its own process
//! (this binary re-executed), so its resident memory can be read from /proc.
//!
//! Prints: submit-to-start latency p50/p99 (submit call -> `accepted`, one submitter at a time),
//! placements per second (many concurrent submitters, full submit -> finished cycle), placement
//! time inside the orchestrator (its histogram), and the orchestrator's RSS with 1000 workers.
//!
//! A second part drives the orchestrator's `Cluster` in-process with the same 1000 workers
//! (their streams are channels), so it measures what placement itself costs without the gRPC
//! and HTTP/2 work, which on a small machine dominates the loopback figures.
//!
//! `cargo bench -p clusterplex-benches --bench placement` (env BENCH_WORKERS, BENCH_JOBS).

use std::{
    process::{Command, Stdio},
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

fn main() {
    if std::env::var("CLUSTERPLEX_BENCH_ROLE").as_deref() == Ok("orchestrator") {
        return orchestrator_role();
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: keep that quick.
    let full = std::env::args().any(|a| a == "--bench");
    let workers = env_usize("BENCH_WORKERS", if full { 1000 } else { 20 });
    let jobs = env_usize("BENCH_JOBS", if full { 20_000 } else { 200 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench(workers, jobs));
    rt.block_on(in_process(workers, jobs.max(1000) * 5));
}

/// Placement through `Cluster` directly: submit -> assign -> finished, no network.
async fn in_process(n_workers: usize, n_jobs: usize) {
    use clusterplex_orchestrator::{
        Cluster, ClusterConfig,
        cluster::{EventRx, Submission},
    };
    use std::sync::Arc;
    let cluster = Cluster::new(ClusterConfig {
        lost_timeout: Duration::from_secs(600),
        ..Default::default()
    });
    let caps = pb::Capabilities {
        encoders: vec!["libx264".into(), "aac".into()],
        ..Default::default()
    };
    let needs = clusterplex_core::placement::needs_of(&job());
    let job_json = rpc::encode_json(&job()).unwrap();
    for i in 0..n_workers {
        let id = format!("sim-{i:04}");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let session = cluster
            .register(
                &pb::Register {
                    worker_id: id.clone(),
                    name: id.clone(),
                    protocol_version: rpc::PROTOCOL_VERSION,
                    capabilities: Some(caps.clone()),
                    benchmark_score: 50.0 + (i % 50) as f64,
                    max_jobs: 4,
                    ..Default::default()
                },
                tx,
            )
            .unwrap();
        cluster.worker_message(
            &id,
            session,
            pb::worker_message::Msg::Load(pb::LoadReport {
                cpu_percent: ((i * 37) % 100) as f64,
                ..Default::default()
            }),
        );
        // The simulated worker finishes each job the moment it is assigned.
        let c = Arc::clone(&cluster);
        tokio::spawn(async move {
            while let Some(Ok(m)) = rx.recv().await {
                if let Some(pb::orchestrator_message::Msg::Assign(a)) = m.msg {
                    let done = rpc::job_event(&a.job_id, Event::Finished(pb::Finished::default()));
                    c.worker_message(&id, session, pb::worker_message::Msg::JobEvent(done));
                }
            }
        });
    }
    let submit = |c: &Arc<Cluster>| -> EventRx {
        c.submit(Submission {
            job_json: job_json.clone(),
            needs: needs.clone(),
            poster_id: "bench".into(),
            poster_host: "bench".into(),
            ..Default::default()
        })
        .unwrap()
        .1
    };
    // Latency: submit -> accepted, one job at a time.
    let mut lat = Vec::new();
    for _ in 0..2000 {
        let t0 = Instant::now();
        let mut rx = submit(&cluster);
        let mut started = None;
        while let Some(Ok(m)) = rx.recv().await {
            let ev = m.event.unwrap();
            if matches!(ev, Event::Accepted(_)) {
                started = Some(t0.elapsed());
            }
            if rpc::is_terminal(&ev) {
                break;
            }
        }
        lat.push(started.expect("no accepted event"));
    }
    lat.sort();
    // Throughput: submissions in batches of 1000 (under the 4000 free slots), each batch
    // waited out, so every job is placed at submit time, never queued.
    let t0 = Instant::now();
    let mut done = 0usize;
    while done < n_jobs {
        let batch: Vec<EventRx> = (0..1000).map(|_| submit(&cluster)).collect();
        for mut rx in batch {
            while let Some(Ok(m)) = rx.recv().await {
                if rpc::is_terminal(&m.event.unwrap()) {
                    break;
                }
            }
        }
        done += 1000;
    }
    let elapsed = t0.elapsed();
    println!("in-process (orchestrator state machine, no gRPC), {n_workers} workers:");
    println!(
        "  submit->assigned latency ({} jobs): p50 {:?}  p99 {:?}",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    println!(
        "  PLACEMENTS/s: {:.0}  ({done} submit->assign->finished cycles in {elapsed:.2?})",
        done as f64 / elapsed.as_secs_f64()
    );
}

fn orchestrator_role() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut cfg = clusterplex_orchestrator::OrchestratorConfig::loopback();
        cfg.cluster.lost_timeout = Duration::from_secs(600);
        let running = clusterplex_orchestrator::start(cfg).await.unwrap();
        println!("{} {}", running.grpc_addr.port(), running.http_addr.port());
        // Until the parent closes our stdin.
        let _ = tokio::task::spawn_blocking(|| {
            std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1])
        })
        .await;
    });
}

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

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn bench(n_workers: usize, n_jobs: usize) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .env("CLUSTERPLEX_BENCH_ROLE", "orchestrator")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let mut it = line.split_whitespace().map(|p| p.parse::<u16>().unwrap());
    let (port, http) = (it.next().unwrap(), it.next().unwrap());
    let url = format!("http://127.0.0.1:{port}");
    let rss_idle = rss_kib(child.id());

    // Workers share a few HTTP/2 connections (100 streams each) to stay under fd limits.
    let mut channels = Vec::new();
    for _ in 0..n_workers.div_ceil(100) {
        channels.push(
            rpc::connect_channel(&url, Duration::from_secs(5))
                .await
                .unwrap(),
        );
    }
    let caps = pb::Capabilities {
        encoders: vec!["libx264".into(), "aac".into()],
        ..Default::default()
    };
    for i in 0..n_workers {
        let mut client = WorkerServiceClient::new(channels[i / 100].clone());
        let (tx, rx) = mpsc::channel::<pb::WorkerMessage>(256);
        tx.send(pb::WorkerMessage {
            msg: Some(pb::worker_message::Msg::Register(pb::Register {
                worker_id: format!("sim-{i:04}"),
                name: format!("sim-{i:04}"),
                version: "bench".into(),
                protocol_version: rpc::PROTOCOL_VERSION,
                capabilities: Some(caps.clone()),
                benchmark_score: 50.0 + (i % 50) as f64,
                max_jobs: 4,
                running_job_ids: vec![],
            })),
        })
        .await
        .unwrap();
        tx.send(pb::WorkerMessage {
            msg: Some(pb::worker_message::Msg::Load(pb::LoadReport {
                cpu_percent: ((i * 37) % 100) as f64,
                ..Default::default()
            })),
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
                    let done = rpc::job_event(
                        &a.job_id,
                        Event::Finished(pb::Finished {
                            exit_status: 0,
                            ..Default::default()
                        }),
                    );
                    if tx
                        .send(pb::WorkerMessage {
                            msg: Some(pb::worker_message::Msg::JobEvent(done)),
                        })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
    }
    let mut c = rpc::job_client(&url, None, Duration::from_secs(5))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_workers = rss_kib(child.id());
    let req = rpc::submit_request(&job(), "bench", "bench").unwrap();

    // Latency: one job at a time.
    let mut lat = Vec::new();
    for _ in 0..(n_jobs / 10).max(100) {
        let t0 = Instant::now();
        let mut s = c.submit(req.clone()).await.unwrap().into_inner();
        let mut started = None;
        while let Some(m) = s.next().await {
            let ev = m.unwrap().event.unwrap();
            if matches!(ev, Event::Accepted(_)) {
                started = Some(t0.elapsed());
            }
            if rpc::is_terminal(&ev) {
                break;
            }
        }
        lat.push(started.expect("no accepted event"));
    }
    lat.sort();

    // Throughput: many concurrent submitters over a few connections.
    let conc = 256usize;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(
            rpc::job_client(&url, None, Duration::from_secs(5))
                .await
                .unwrap(),
        );
    }
    let t0 = Instant::now();
    let per = n_jobs / conc;
    let mut tasks = Vec::new();
    for k in 0..conc {
        let mut c = clients[k % clients.len()].clone();
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                let mut s = c.submit(req.clone()).await.unwrap().into_inner();
                while let Some(m) = s.next().await {
                    if rpc::is_terminal(&m.unwrap().event.unwrap()) {
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = t0.elapsed();
    let done = per * conc;
    let rss_after = rss_kib(child.id());

    // Placement time from the orchestrator's own histogram.
    let metrics = reqwest_like_get(http, "/metrics").await;
    let count = metric(&metrics, "placement_seconds_count");
    let sum = metric(&metrics, "placement_seconds_sum");

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "orchestrator bench: {n_workers} simulated workers on loopback gRPC, no-op jobs, {} cores, loadavg {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  submit->start latency (sequential, {} jobs): p50 {:?}  p99 {:?}",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    println!(
        "  PLACEMENTS/s over gRPC ({conc} concurrent submitters): {1:.0}  ({done} submit->finished cycles in {0:.2?})",
        elapsed,
        done as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  placement decision (orchestrator histogram): mean {:.1} us over {count} placements",
        sum / count * 1e6
    );
    println!(
        "  orchestrator RSS: {:.1} MiB idle, {:.1} MiB with {n_workers} workers, {:.1} MiB after the run",
        rss_idle as f64 / 1024.0,
        rss_workers as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
}

async fn reqwest_like_get(port: u16, path: &str) -> String {
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
