//! The Plex callback reporter against the PMS-contract endpoint over real loopback HTTP:
//! a realistic DASH and segment-list event sequence must produce exactly the callbacks PMS
//! expects, and a missing, slow or unauthorised PMS must never hang or crash the job.

use std::{path::Path, time::Duration};

use clusterplex_core::{
    events::{JobEvent, LogLevel, Progress, SegmentInfo},
    job::{Input, Job, Output, ProgressTarget, SegmentList, SegmentListType, Segmenting},
};
use clusterplex_pms_contract::{Config, Kind, PmsContract, Recording};
use clusterplex_worker::plex::{PlexReporter, ReporterConfig};

const TOKEN: &str = "local-3f0e9d3c";

fn dash_job(base: &str, dir: &Path, skip: u64) -> Job {
    let mut job = Job::default();
    job.inputs.push(Input::new("/media/clip.mkv"));
    let mut out = Output::new("dash", Some("dash"));
    out.segmenting = Some(Segmenting::Dash {
        seg_duration: 5.0,
        start_number: skip,
        init_seg_name: Some("init-stream$RepresentationID$.m4s".into()),
        media_seg_name: Some("chunk-stream$RepresentationID$-$Number%05d$.m4s".into()),
        manifest_target: Some(format!("{base}/manifest?X-Plex-Http-Pipeline=infinite")),
        window_size: Some(5),
        use_template: None,
        use_timeline: None,
        single_file: false,
        time_delta: Some(0.0625),
        delete_removed: Some(false),
        break_non_keyframes: false,
    });
    job.outputs.push(out);
    job.progress = Some(ProgressTarget {
        plex_url: Some(format!("{base}/progress")),
        ..Default::default()
    });
    job.working_dir = Some(dir.to_path_buf());
    job.plex.skip_to_segment = Some(skip);
    job.plex.loglevel = Some("error".into());
    job
}

/// A PMS stand-in started with `config`, and the DASH job (resumed at `skip`) of its session
/// `key`/`uuid`, working in `dir`; also returns the session's base URL.
async fn dash_session(
    config: Config,
    dir: &Path,
    (key, uuid): (&str, &str),
    skip: u64,
) -> (PmsContract, String, Job) {
    let pms = PmsContract::start_local(config).await.unwrap();
    let base = pms.session_base(key, uuid);
    let job = dash_job(&base, dir, skip);
    (pms, base, job)
}

/// [`dash_session`] as a real session has it: PMS requires [`TOKEN`] and checks every manifest
/// against the job's directory `dir` on arrival.
async fn checked_session(
    dir: &Path,
    session: (&str, &str),
    skip: u64,
) -> (PmsContract, String, Job) {
    let config = Config::default().with_token(TOKEN).with_session_dir(dir);
    dash_session(config, dir, session, skip).await
}

/// Asserts that a DASH session resumed at `skip` and reported with [`TOKEN`] met the whole
/// contract: no violation from any check that applies to it, nor in `more` (a test's own).
fn assert_dash_contract_held(rec: &Recording, skip: u64, more: Vec<String>) {
    let violations = [
        rec.check_order(),
        rec.check_token(TOKEN),
        rec.check_manifests_list_existing_chunks(),
        rec.check_start_number(skip),
        rec.check_static_only_last(),
        rec.check_progress_monotonic(),
        more,
    ]
    .concat();
    assert!(
        violations.is_empty(),
        "{violations:#?}\n{:#?}",
        rec.requests
    );
}

/// The MPD dashenc writes, listing segments `start..start+count` of both representations.
fn mpd(kind: &str, start: u64, count: u64) -> Vec<u8> {
    let rep = |id: u32, timescale: u64| {
        let s: String = (0..count)
            .map(|i| {
                format!(
                    "<S t=\"{}\" d=\"{}\"/>",
                    (start - 1 + i) * 5 * timescale,
                    5 * timescale
                )
            })
            .collect();
        format!(
            "<Representation id=\"{id}\" bandwidth=\"1\"><SegmentTemplate timescale=\"{timescale}\" \
             initialization=\"init-stream$RepresentationID$.m4s\" \
             media=\"chunk-stream$RepresentationID$-$Number%05d$.m4s\" startNumber=\"{start}\">\
             <SegmentTimeline>{s}</SegmentTimeline></SegmentTemplate></Representation>"
        )
    };
    let dur = if kind == "static" {
        format!(" mediaPresentationDuration=\"PT{}S\"", count * 5)
    } else {
        String::new()
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" type=\"{kind}\"{dur}>\
         <Period id=\"0\"><AdaptationSet id=\"0\" contentType=\"video\">{}</AdaptationSet>\
         <AdaptationSet id=\"1\" contentType=\"audio\">{}</AdaptationSet></Period></MPD>\n",
        rep(0, 12288),
        rep(1, 48000)
    )
    .into_bytes()
}

/// What the engine emits for a DASH job resumed at `skip`: files first, then the manifest.
async fn feed_dash(reporter: &PlexReporter, dir: &Path, target: &str, skip: u64, segments: u64) {
    reporter.on_event(&JobEvent::Started {
        duration: Some(40.0),
        video_size: Some((320, 180)),
        input_streams: Vec::new(),
    });
    std::fs::write(dir.join("init-stream0.m4s"), b"init").unwrap();
    std::fs::write(dir.join("init-stream1.m4s"), b"init").unwrap();
    let mut bytes = 0;
    for i in 0..segments {
        let n = skip + i;
        for rep in 0..2 {
            std::fs::write(
                dir.join(format!("chunk-stream{rep}-{n:05}.m4s")),
                vec![0u8; 1000],
            )
            .unwrap();
        }
        bytes += 2000;
        let start = (n - 1) as f64 * 5.0;
        let paths = (0..2)
            .map(|r| dir.join(format!("chunk-stream{r}-{n:05}.m4s")))
            .collect();
        reporter.on_event(&JobEvent::SegmentWritten(SegmentInfo {
            output: 0,
            number: n,
            paths,
            start,
            end: start + 5.0,
        }));
        reporter.on_event(&JobEvent::Manifest {
            output: 0,
            target: target.into(),
            content_type: "application/dash+xml".into(),
            body: mpd("dynamic", skip, i + 1),
            last: false,
        });
        reporter.on_event(&JobEvent::Progress(Progress {
            frames: (i + 1) * 120,
            fps: 240.0,
            out_time: start + 5.0,
            speed: 8.0,
            bytes,
            duration: Some(40.0),
        }));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    reporter.on_event(&JobEvent::Log {
        level: LogLevel::Error,
        message: "Invalid data, skipping 1 packet".into(),
    });
    reporter.on_event(&JobEvent::Log {
        level: LogLevel::Debug,
        message: "below -loglevel_plex, not sent".into(),
    });
    reporter.on_event(&JobEvent::Manifest {
        output: 0,
        target: target.into(),
        content_type: "application/dash+xml".into(),
        body: mpd("static", skip, segments),
        last: true,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dash_job_callbacks_follow_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let skip = 3;
    let session = ("kx9", "0b7c1e2a-1111-4222-8333-444455556666");
    let (pms, base, job) = checked_session(dir.path(), session, skip).await;
    let reporter = PlexReporter::new(&job, Some(TOKEN.into())).expect("a Plex job gets a reporter");
    let target = format!("{base}/manifest?X-Plex-Http-Pipeline=infinite");
    feed_dash(&reporter, dir.path(), &target, skip, 4).await;
    let stats = reporter.finish(true).await;
    let rec = pms.shutdown().await;

    assert_dash_contract_held(&rec, skip, Vec::new());

    assert_eq!(rec.requests[0].kind, Kind::Startup);
    assert_eq!(
        rec.of(Kind::Duration)[0].param("duration"),
        Some("40.000000")
    );
    let dims = rec.of(Kind::Dimensions);
    assert_eq!(
        (dims[0].param("width"), dims[0].param("height")),
        (Some("320"), Some("180"))
    );
    // Every manifest arrived, in order, chunked, and the last one is the static one.
    let manifests = rec.of(Kind::Manifest);
    assert_eq!(manifests.len(), 5);
    assert!(manifests.iter().all(|m| m.chunked && m.method == "POST"));
    assert!(
        manifests
            .iter()
            .all(|m| m.param("X-Plex-Http-Pipeline") == Some("infinite"))
    );
    assert_eq!(rec.mpds().last().unwrap().listed_files().len(), 2 + 2 * 4);
    // Only the error-level log line passes `-loglevel_plex error`.
    let logs = rec.of(Kind::Log);
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].param("level"), Some("0"));
    assert_eq!(
        logs[0].param("message"),
        Some("Invalid data, skipping 1 packet")
    );
    assert!(logs[0].path.ends_with("/progress/log"));
    // Progress: at most one PUT per 0.5 s (the final report may follow sooner), ending at 100.
    let progress = rec.of(Kind::Progress);
    assert!(progress.len() >= 2, "{progress:#?}");
    for pair in progress[..progress.len() - 1].windows(2) {
        assert!(
            pair[1].at_ms - pair[0].at_ms >= 450.0,
            "PUTs {} and {} too close",
            pair[0].seq,
            pair[1].seq
        );
    }
    let last = progress.last().unwrap();
    assert_eq!(last.param("progress"), Some("100.0"));
    assert_eq!(last.param("remaining"), Some("0"));
    assert_eq!(last.param("size"), Some("8000"));
    assert_eq!(progress[0].param("speed"), Some("8.0"));
    assert!(rec.requests.iter().all(|r| {
        r.user_agent
            .as_deref()
            .is_some_and(|u| u.starts_with("Lavf/"))
    }));
    // Nothing after the final progress.
    assert_eq!(rec.requests.last().unwrap().seq, last.seq);
    assert_eq!(stats.failed, 0);
    assert_eq!(stats.manifests, 5);
    assert_eq!(stats.delivered as usize, rec.requests.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_list_csv_is_posted_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let pms = PmsContract::start_local(Config::default().with_session_dir(dir.path()))
        .await
        .unwrap();
    let base = pms.session_base("k2", "u2");
    let list = format!("{base}/manifest?stream=subtitles&X-Plex-Http-Pipeline=infinite");
    let mut job = Job::default();
    job.inputs.push(Input::new("in.mkv"));
    let mut out = Output::new("sub-chunk-%05d", Some("segment"));
    out.segmenting = Some(Segmenting::Segment {
        segment_time: 5.0,
        start_number: 40,
        segment_format: Some("ass".into()),
        list: Some(SegmentList {
            target: list.clone(),
            kind: SegmentListType::Csv,
            size: 5,
            separate_stream_times: true,
            unfinished: true,
        }),
        header_filename: None,
        time_delta: None,
        format_options: Default::default(),
    });
    job.outputs.push(out);
    // No progress URL: the reporter still exists to deliver the list.
    let reporter = PlexReporter::new(&job, None).expect("an http segment list needs a reporter");
    let mut rows: Vec<String> = Vec::new();
    for n in 40..47u64 {
        let name = format!("sub-chunk-{n:05}");
        std::fs::write(dir.path().join(&name), b"[Events]").unwrap();
        let s = (n - 1) as f64 * 5.0;
        rows.push(format!("{name},{s:.6},{:.6},-1,{:.6}", s + 5.0, s + 5.0));
        let window = &rows[rows.len().saturating_sub(5)..];
        let body = format!(
            "{}\n#sub-chunk-{:05},{:.6},{:.6},-1,-1\n",
            window.join("\n"),
            n + 1,
            s + 5.0,
            s + 5.5
        );
        reporter.on_event(&JobEvent::Manifest {
            output: 0,
            target: list.clone(),
            content_type: "text/csv".into(),
            body: body.into_bytes(),
            last: false,
        });
    }
    let stats = reporter.finish(true).await;
    let rec = pms.shutdown().await;
    assert_eq!(stats.manifests, 7);
    assert!(
        rec.of(Kind::Progress).is_empty(),
        "no progress URL, no progress PUTs"
    );
    let v = [
        rec.check_csv_rows(5),
        rec.check_manifests_list_existing_chunks(),
    ]
    .concat();
    // Windows are at most 5 finished rows (+1 unfinished); check_csv_rows counts all rows.
    assert!(v.iter().all(|s| s.contains("6 rows")), "{v:#?}");
    let firsts: Vec<String> = rec
        .of(Kind::Manifest)
        .iter()
        .map(|r| match &r.manifest {
            Some(clusterplex_pms_contract::ManifestBody::Csv { rows }) => rows[0].name.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        firsts,
        [
            "sub-chunk-00040",
            "sub-chunk-00040",
            "sub-chunk-00040",
            "sub-chunk-00040",
            "sub-chunk-00040",
            "sub-chunk-00041",
            "sub-chunk-00042"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pms_down_neither_hangs_nor_panics() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let base = format!("http://127.0.0.1:{port}/video/:/transcode/session/k/u");
    let job = dash_job(&base, dir.path(), 1);
    let config = ReporterConfig {
        request_timeout: Duration::from_millis(500),
        ..ReporterConfig::default()
    };
    let reporter = PlexReporter::with_config(&job, Some(TOKEN.into()), config).unwrap();
    feed_dash(&reporter, dir.path(), &format!("{base}/manifest"), 1, 2).await;
    let stats = tokio::time::timeout(Duration::from_secs(30), reporter.finish(false))
        .await
        .expect("finish must not hang");
    assert_eq!(stats.delivered, 0);
    assert!(stats.failed >= 5, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pms_does_not_block_the_engine() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let base = format!("http://{addr}/video/:/transcode/session/k/u");
    let job = dash_job(&base, dir.path(), 1);
    let config = ReporterConfig {
        request_timeout: Duration::from_millis(300),
        finish_timeout: Duration::from_secs(1),
        ..ReporterConfig::default()
    };
    let reporter = PlexReporter::with_config(&job, None, config).unwrap();
    // 2000 events would take minutes if each waited for PMS; queued, they take no time.
    let engine = std::thread::spawn(move || {
        for i in 0..1000u64 {
            reporter.on_event(&JobEvent::Progress(Progress {
                out_time: i as f64,
                bytes: i,
                ..Default::default()
            }));
            reporter.on_event(&JobEvent::Log {
                level: LogLevel::Error,
                message: format!("line {i}"),
            });
        }
        reporter
    });
    let reporter = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || engine.join().unwrap()),
    )
    .await
    .expect("on_event must not block")
    .unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(20), reporter.finish(true))
        .await
        .expect("finish is bounded");
    assert_eq!(stats.delivered, 0);
    assert!(
        stats.dropped_logs > 0,
        "logs beyond the queue bound are dropped: {stats:?}"
    );
    assert!(stats.abandoned > 0, "{stats:?}");
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_rejected_and_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().with_token(TOKEN);
    let (pms, _, job) = dash_session(config, dir.path(), ("k", "u"), 1).await;
    let reporter = PlexReporter::new(&job, Some("stale-token".into())).unwrap();
    reporter.on_event(&JobEvent::Started {
        duration: Some(2.0),
        video_size: None,
        input_streams: Vec::new(),
    });
    let stats = reporter.finish(true).await;
    let rec = pms.shutdown().await;
    // startup, duration, final progress: each tried once (a 401 does not change on retry).
    assert_eq!(rec.requests.len(), 3, "{:#?}", rec.requests);
    assert!(rec.requests.iter().all(|r| r.status == 401));
    assert_eq!(stats.failed, 3);
    assert_eq!(rec.check_token(TOKEN).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_throttle_is_honoured_in_the_speed_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        throttle: true,
        ..Config::default()
    };
    let (pms, _, job) = dash_session(config, dir.path(), ("k", "u"), 1).await;
    let reporter = PlexReporter::new(&job, None).unwrap();
    reporter.on_event(&JobEvent::Started {
        duration: Some(10.0),
        video_size: None,
        input_streams: Vec::new(),
    });
    let p = |t: f64| {
        JobEvent::Progress(Progress {
            out_time: t,
            speed: 3.0,
            bytes: t as u64,
            ..Default::default()
        })
    };
    reporter.on_event(&p(1.0));
    assert!(
        pms.wait_for(Duration::from_secs(10), |r| !r
            .of(Kind::Progress)
            .is_empty())
            .await
    );
    for _ in 0..100 {
        if reporter.throttled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reporter.throttled());
    reporter.on_event(&p(2.0));
    assert!(
        pms.wait_for(Duration::from_secs(10), |r| r.of(Kind::Progress).len() >= 2)
            .await
    );
    pms.set_throttle(false);
    reporter.finish(true).await;
    let rec = pms.shutdown().await;
    let progress = rec.of(Kind::Progress);
    assert_eq!(progress[0].param("speed"), Some("3.0"), "not throttled yet");
    assert_eq!(
        progress[1].param("speed"),
        None,
        "speed is left out while throttled"
    );
}

#[test]
fn jobs_without_plex_urls_get_no_reporter() {
    let mut job = Job::default();
    job.inputs.push(Input::new("in.mkv"));
    job.outputs.push(Output::new("out.mp4", None));
    assert!(PlexReporter::new(&job, None).is_none());
    job.progress = Some(ProgressTarget {
        ffmpeg_progress: Some("pipe:1".into()),
        ..Default::default()
    });
    assert!(PlexReporter::new(&job, None).is_none());
}

/// A real engine run of a tiny DASH job resumed at segment 5, reported to the PMS-contract
/// endpoint: every manifest must list only chunks already on disk when it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_engine_dash_run_meets_the_contract() {
    use clusterplex_core::{
        CancelToken,
        job::{ByStream, CodecChoice, StreamSettings},
    };
    let src = clusterplex_testkit::h264_aac(320, 180, 3.0);
    let dir = tempfile::tempdir().unwrap();
    let skip = 5;
    let session = ("engine", "9a8b7c6d-0000-4000-8000-000000000005");
    let (pms, _, mut job) = checked_session(dir.path(), session, skip).await;
    job.inputs = vec![Input::new(src.to_string_lossy())];
    if let Some(Segmenting::Dash { seg_duration, .. }) = &mut job.outputs[0].segmenting {
        *seg_duration = 1.0;
    }
    let enc = |name: &str| StreamSettings {
        codec: Some(CodecChoice::Encoder(name.into())),
        preset: (name == "libx264").then(|| "ultrafast".to_string()),
        ..Default::default()
    };
    job.outputs[0]
        .streams
        .push(ByStream::new("v".parse().unwrap(), enc("libx264")));
    job.outputs[0]
        .streams
        .push(ByStream::new("a".parse().unwrap(), enc("aac")));

    let reporter = PlexReporter::new(&job, Some(TOKEN.into())).unwrap();
    let (job2, reporter) = tokio::task::spawn_blocking(move || {
        let res =
            clusterplex_ffmpeg::engine::Engine::new()
                .run(&job, &CancelToken::new(), &mut |ev| reporter.on_event(&ev));
        assert!(res.is_ok(), "{res:?}");
        (job, reporter)
    })
    .await
    .unwrap();
    let stats = reporter.finish(true).await;
    let rec = pms.shutdown().await;
    let listed = rec.check_listed_files_exist_in(job2.working_dir.as_deref().unwrap());
    assert_dash_contract_held(&rec, skip, listed);
    assert_eq!(stats.failed, 0);
    let dims = rec.of(Kind::Dimensions);
    assert_eq!(
        (dims[0].param("width"), dims[0].param("height")),
        (Some("320"), Some("180"))
    );
    let last = rec.mpds().last().copied().cloned().unwrap();
    assert_eq!(last.mpd_type, "static");
    // Three 1 s video chunks numbered from 5, all listed.
    let files = last.listed_files();
    for n in 5..8 {
        assert!(
            files.contains(&format!("chunk-stream0-{n:05}.m4s")),
            "{files:?}"
        );
    }
    assert_eq!(
        rec.of(Kind::Progress).last().unwrap().param("progress"),
        Some("100.0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_streams_become_stream_and_stream_detail_puts_before_duration() {
    use clusterplex_core::events::InputStream;
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().with_token(TOKEN);
    let (pms, _, job) = dash_session(config, dir.path(), ("ks", "us"), 1).await;
    let reporter = PlexReporter::new(&job, Some(TOKEN.into())).unwrap();
    let stream = |index, id, kind: &str, codec: &str, details: &[(&str, &str)]| InputStream {
        input: 0,
        index,
        id,
        kind: kind.into(),
        codec: codec.into(),
        details: details
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    reporter.on_event(&JobEvent::Started {
        duration: Some(6.0),
        video_size: Some((320, 180)),
        input_streams: vec![
            stream(
                0,
                1,
                "video",
                "hevc",
                &[("width", "320"), ("height", "180"), ("frameRate", "25.000")],
            ),
            stream(
                1,
                2,
                "audio",
                "aac",
                &[
                    ("channels", "6"),
                    ("layout", "5.1(side)"),
                    ("language", "eng"),
                ],
            ),
            // Subtitles are not announced: Plex's transcoder sends audio and video only.
            stream(2, 3, "subtitle", "subrip", &[("language", "fre")]),
        ],
    });
    let stats = reporter.finish(true).await;
    let rec = pms.shutdown().await;
    assert_eq!(stats.failed, 0, "{:#?}", rec.requests);
    let kinds: Vec<Kind> = rec.requests.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            Kind::Startup,
            Kind::Stream,
            Kind::Stream,
            Kind::StreamDetail,
            Kind::StreamDetail,
            Kind::Duration,
            Kind::Dimensions,
            Kind::Progress,
        ]
    );
    let v = [
        rec.check_order(),
        rec.check_token(TOKEN),
        rec.check_streams(&["video", "audio"]),
    ]
    .concat();
    assert!(v.is_empty(), "{v:#?}");
    let s = rec.of(Kind::Stream);
    assert!(s[0].path.ends_with("/progress/stream"), "{}", s[0].path);
    assert_eq!(s[0].query, "index=0&id=1&codec=hevc&type=video");
    assert_eq!(s[1].query, "index=1&id=2&codec=aac&type=audio");
    let d = rec.of(Kind::StreamDetail);
    assert!(
        d[0].path.ends_with("/progress/streamDetail"),
        "{}",
        d[0].path
    );
    assert_eq!(
        d[0].query,
        "index=0&id=1&codec=hevc&type=video&width=320&height=180&frameRate=25.000"
    );
    // Values are form-encoded on the wire and decode back to the engine's text.
    assert_eq!(d[1].param("layout"), Some("5.1(side)"));
    assert_eq!(d[1].param("language"), Some("eng"));
    assert!(rec.requests.iter().all(|r| r.method == "PUT"));
}

/// A continuation (the job moved to this worker after its first worker died) does not
/// announce the session to PMS again, and its progress counts on from what the lost worker
/// had reported (`continue_progress`, as the agent applies it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_is_not_announced_again_and_its_progress_counts_on() {
    let dir = tempfile::tempdir().unwrap();
    let session = ("kc1", "0b7c1e2a-1111-4222-8333-444455556677");
    let (pms, _, job) = checked_session(dir.path(), session, 1).await;
    let mut job = job.resume_at(3, 10.0).unwrap();
    let before = clusterplex_core::Continuation {
        elapsed: 10.0,
        frames: 250,
        bytes: 4200,
        out_time: 11.5,
    };
    job.continuation = Some(before.clone());
    let reporter = PlexReporter::new(&job, Some(TOKEN.into())).expect("a reporter");
    reporter.on_event(&JobEvent::Started {
        duration: Some(40.0),
        video_size: Some((320, 180)),
        input_streams: Vec::new(),
    });
    let mut p = Progress {
        frames: 10,
        fps: 25.0,
        out_time: 10.4,
        speed: 1.0,
        bytes: 100,
        duration: Some(40.0),
    };
    clusterplex_worker::agent::continue_progress(&mut p, &before);
    assert_eq!((p.frames, p.bytes, p.out_time), (260, 4300, 11.5));
    reporter.on_event(&JobEvent::Progress(p));
    tokio::time::sleep(Duration::from_millis(700)).await;
    reporter.finish(true).await;
    let rec = pms.shutdown().await;
    for kind in [Kind::Startup, Kind::Duration] {
        assert!(
            rec.of(kind).is_empty(),
            "{kind:?} sent again: {:#?}",
            rec.requests
        );
    }
    assert!(
        !rec.requests.iter().any(|r| r.path.ends_with("/stream")),
        "{:#?}",
        rec.requests
    );
    let sizes: Vec<f64> = rec
        .of(Kind::Progress)
        .iter()
        .filter_map(|r| r.num("size"))
        .collect();
    assert_eq!(sizes.first(), Some(&4300.0), "{sizes:?}");
    assert!(rec.check_progress_monotonic().is_empty());
}
