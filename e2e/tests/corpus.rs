//! Real Plex command lines (the corpus) through the real shim, orchestrator and three worker
//! processes, against the PMS stand-in: each line is pointed at generated media with the
//! same stream layout and run as PMS would run it. Lines the cluster can honour must produce
//! valid, contiguously numbered segments and callbacks that pass the PMS contract's checks;
//! lines it cannot (GPU-only needs) must fall back to the original transcoder with the
//! original argv, not be skipped.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use clusterplex_e2e::{
    Cluster, ClusterOpts, Install, Pms, bins, check_dash, contract_violations, corpus, finish,
    point_at,
};
use clusterplex_pms_contract::Kind;
use clusterplex_testkit::{av_clip, srt_file};

/// Seconds of the generated clips: two 5 s DASH segments (`-seg_duration 5` in the corpus).
const SECS: f64 = 6.0;

#[derive(Debug)]
enum Expect {
    /// DASH into the session directory: codec per representation, the input stream types
    /// Plex's `stream` callbacks announce, and whether a subtitle segment list goes along.
    Dash {
        codecs: &'static [&'static str],
        streams: &'static [&'static str],
        subtitles: bool,
    },
    /// A null output (burn-in lines abbreviated at the source): the job runs remotely and
    /// exits 0.
    Null,
    /// No worker can run it: the shim falls back to the original transcoder.
    Fallback,
}

struct Line {
    name: &'static str,
    inputs: Vec<PathBuf>,
    expect: Expect,
}

fn h264() -> [&'static str; 4] {
    ["-c:v", "libx264", "-preset", "ultrafast"]
}

fn lines() -> Vec<Line> {
    let hevc = [
        "-c:v",
        "libx265",
        "-preset",
        "ultrafast",
        "-x265-params",
        "log-level=error",
    ];
    let av1 = ["-c:v", "libsvtav1", "-preset", "12"];
    vec![
        Line {
            name: "01",
            inputs: vec![av_clip("mkv", SECS, 25, &hevc, &[("aac", 6)], false)],
            expect: Expect::Dash {
                codecs: &["hevc", "aac"],
                streams: &["video", "audio"],
                subtitles: false,
            },
        },
        Line {
            name: "03",
            inputs: vec![av_clip("mkv", SECS, 25, &h264(), &[("eac3", 6)], false)],
            expect: Expect::Dash {
                codecs: &["h264", "aac"],
                streams: &["video", "audio"],
                subtitles: false,
            },
        },
        Line {
            name: "04",
            inputs: vec![av_clip(
                "mkv",
                SECS,
                25,
                &h264(),
                &[("eac3", 6), ("aac", 2)],
                true,
            )],
            expect: Expect::Dash {
                codecs: &["h264", "aac"],
                streams: &["video", "audio", "audio"],
                subtitles: true,
            },
        },
        Line {
            name: "07",
            inputs: vec![av_clip("mkv", SECS, 25, &h264(), &[("aac", 2)], false)],
            expect: Expect::Dash {
                codecs: &["h264", "aac"],
                streams: &["video", "audio"],
                subtitles: false,
            },
        },
        Line {
            name: "09",
            inputs: vec![av_clip("mkv", 2.0, 25, &av1, &[("eac3", 6)], false)],
            expect: Expect::Fallback,
        },
        Line {
            name: "13",
            // Upscaled to 3840x1600 by the line's own graph: keep it to 10 frames.
            inputs: vec![av_clip("mkv", 1.0, 10, &av1, &[], false), srt_file()],
            expect: Expect::Null,
        },
        Line {
            name: "15",
            inputs: vec![
                av_clip("mp4", 2.0, 10, &hevc, &[("aac", 2)], false),
                srt_file(),
            ],
            expect: Expect::Null,
        },
    ]
}

/// `clusterplex-shim plan` for the argv: (placement kind, hardware acceleration needed).
fn plan(args: &[String], pms_port: u16) -> (String, Vec<String>) {
    let out = Command::new(&bins().shim)
        .args(["plan", "--pms-ip", "127.0.0.1", "--local-relay-port"])
        .arg(pms_port.to_string())
        .arg("--")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "plan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hw = plan["needs"]["hwaccels"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    (
        plan["placement"]["kind"].as_str().unwrap_or("").to_string(),
        hw,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_dash_lines_run_through_the_cluster_or_fall_back() {
    run_lines(&["01", "03", "04", "07", "09"]).await;
}

/// The burn-in lines (a sidecar SRT, `-map_inlineass`, `inlineass=` as `subtitles=`, a null
/// output that also encodes the SRT to ASS): the plan sends them remote, so the worker must
/// run them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_burn_in_lines_run_remotely() {
    run_lines(&["13", "15"]).await;
}

async fn run_lines(names: &[&str]) {
    let lines: Vec<Line> = lines()
        .into_iter()
        .filter(|l| names.contains(&l.name))
        .collect();
    let cluster = Cluster::start(ClusterOpts::default()).await;
    let install = Install::new();
    let mut failures = Vec::new();
    let mut remote_jobs = 0;
    for line in &lines {
        let t0 = Instant::now();
        let session = cluster.session_dir(&format!("corpus{}", line.name));
        let inputs: Vec<PathBuf> = line
            .inputs
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let ext = f.extension().unwrap().to_string_lossy();
                cluster.media_file(f, &format!("Corpus {} [{i}].{ext}", line.name))
            })
            .collect();
        let args = point_at(&corpus(line.name), &inputs, &session);
        let pms = Pms::start(&session);
        let (placement, hw) = plan(&args, pms.port);
        // The plan decides: only GPU needs (no test worker has a GPU) must fall back.
        let can_run = placement == "remote" && hw.is_empty();
        let fallback_expected = matches!(line.expect, Expect::Fallback);
        if can_run == fallback_expected {
            failures.push(format!(
                "{}: plan says placement={placement} hwaccels={hw:?}, but this test expects {:?}",
                line.name, line.expect
            ));
            continue;
        }
        install.reset();
        let child = install
            .shim(&cluster.url(), pms.port, &session, "both", &args)
            .spawn()
            .unwrap();
        let done = finish(child, Duration::from_secs(120)).await;
        let mut v: Vec<String> = Vec::new();
        if done.code != 0 {
            v.push(format!("exit code {}", done.code));
        }
        match &line.expect {
            Expect::Fallback => {
                match install.original_ran_with() {
                    Some(a) if a == args => {}
                    Some(a) => v.push(format!("original transcoder got another argv: {a:?}")),
                    None => v.push("the original transcoder did not run".into()),
                }
                if !done.stderr.contains("fallback") {
                    v.push("the shim did not log a fallback reason".into());
                }
            }
            Expect::Null | Expect::Dash { .. } => {
                remote_jobs += 1;
                if install.original_ran_with().is_some() {
                    v.push(
                        "fell back to the original transcoder instead of running remotely".into(),
                    );
                }
                if !done.stderr.contains("remote job finished") {
                    v.push("no \"remote job finished\" in the shim log".into());
                }
            }
        }
        if let Expect::Dash {
            codecs,
            streams,
            subtitles,
        } = &line.expect
        {
            let dash = check_dash(&session, codecs.len() as u32, 1);
            v.extend(dash.violations.iter().cloned());
            for (r, want) in codecs.iter().enumerate() {
                let got = dash.codecs.get(&(r as u32)).map(String::as_str);
                if got != Some(*want) {
                    v.push(format!("stream {r}: codec {got:?}, expected {want}"));
                }
                match dash.durations.get(&(r as u32)) {
                    Some(d) if (d - SECS).abs() <= 0.6 => {}
                    d => v.push(format!("stream {r}: duration {d:?}, expected about {SECS}")),
                }
            }
            if dash.chunks.get(&0).is_some_and(|c| c.len() < 2) {
                v.push(format!(
                    "only chunks {:?} for a {SECS} s clip",
                    dash.chunks[&0]
                ));
            }
            let rec = pms.recording();
            v.extend(contract_violations(&rec, 1));
            let stream_v = rec.check_streams(streams);
            if !stream_v.is_empty() {
                v.push(format!(
                    "stream/streamDetail callbacks: {stream_v:?} (the engine must fill \
                     JobEvent::Started.input_streams)"
                ));
            }
            if rec.progress_values().last() != Some(&100.0) {
                v.push(format!(
                    "last progress {:?}, expected 100.0",
                    rec.progress_values().last()
                ));
            }
            if *subtitles {
                v.extend(rec.check_csv_rows(5));
                let csv_posts = rec
                    .of(Kind::Manifest)
                    .iter()
                    .filter(|r| r.param("stream") == Some("subtitles"))
                    .count();
                if csv_posts == 0 {
                    v.push("no subtitle segment list POSTed".into());
                }
                if !session.join("sub-chunk-00000").is_file() {
                    v.push("sub-chunk-00000 missing".into());
                }
            }
        }
        eprintln!(
            "corpus {}: {:?} in {:.1} s, {} problem(s)",
            line.name,
            line.expect,
            t0.elapsed().as_secs_f64(),
            v.len()
        );
        if !v.is_empty() {
            failures.push(format!(
                "{}: {v:#?}\n--- shim stderr:\n{}",
                line.name, done.stderr
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n\n"),
        cluster.log_tails()
    );
    // Every remote line was counted by the orchestrator, and the fallback line as a failure
    // (no worker has VAAPI).
    let m = cluster.metrics();
    let get = |n| clusterplex_testkit::process::metric(&m, n).unwrap_or(-1.0);
    assert_eq!(get("jobs_succeeded"), remote_jobs as f64, "{m}");
    assert!(cluster.list_jobs().await.is_empty());
}
