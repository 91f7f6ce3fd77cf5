//! Engine tests on real media made with the ffmpeg CLI (see clusterplex-testkit), outputs
//! checked with ffprobe.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use clusterplex_core::events::LogLevel;
use clusterplex_core::{
    ByStream, CancelToken, CodecChoice, HlsSegmentType, Input, Job, JobEvent, MapSource, MediaKind,
    Output, SegmentList, SegmentListType, Segmenting, StreamMap, StreamSettings, StreamSpecifier,
};
use clusterplex_ffmpeg::{Error, Stage, engine::Engine};
use clusterplex_testkit as tk;
use tempfile::TempDir;

fn map(input: usize, spec: &str) -> StreamMap {
    StreamMap {
        source: MapSource::Input {
            input,
            spec: spec.parse().unwrap(),
        },
        negative: false,
        optional: false,
    }
}

fn set(spec: &str, s: StreamSettings) -> ByStream<StreamSettings> {
    ByStream::new(spec.parse::<StreamSpecifier>().unwrap(), s)
}

fn enc(name: &str) -> StreamSettings {
    let mut s = StreamSettings {
        codec: Some(CodecChoice::Encoder(name.into())),
        ..Default::default()
    };
    if name == "libx264" {
        s.preset = Some("ultrafast".into());
    }
    s
}

fn copy() -> StreamSettings {
    StreamSettings {
        codec: Some(CodecChoice::Copy),
        ..Default::default()
    }
}

fn job(input: &Path, out: Output) -> Job {
    Job {
        inputs: vec![Input::new(input.to_string_lossy())],
        outputs: vec![out],
        ..Default::default()
    }
}

fn run(job: &Job) -> (Result<clusterplex_core::JobSummary, Error>, Vec<JobEvent>) {
    let mut evs = Vec::new();
    let r = Engine::new().run(job, &CancelToken::new(), &mut |e| evs.push(e));
    (r, evs)
}

fn ok(job: &Job) -> Vec<JobEvent> {
    let (r, evs) = run(job);
    if let Err(e) = r {
        panic!("job failed: {e}");
    }
    evs
}

fn num(v: &serde_json::Value) -> f64 {
    tk::num(v).unwrap_or(f64::NAN)
}

fn segments(evs: &[JobEvent]) -> Vec<(u64, Vec<PathBuf>)> {
    evs.iter()
        .filter_map(|e| match e {
            JobEvent::SegmentWritten(s) => Some((s.number, s.paths.clone())),
            _ => None,
        })
        .collect()
}

fn manifests(evs: &[JobEvent]) -> Vec<(String, String, bool)> {
    evs.iter()
        .filter_map(|e| match e {
            JobEvent::Manifest {
                target, body, last, ..
            } => Some((
                target.clone(),
                String::from_utf8_lossy(body).into_owned(),
                *last,
            )),
            _ => None,
        })
        .collect()
}

/// A scratch directory and a single-file output `name` in it, the shape most tests write and
/// then probe. The directory lives as long as the returned `TempDir`.
fn file_out(name: &str) -> (TempDir, PathBuf, Output) {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join(name);
    let out = Output::new(target.to_string_lossy(), None);
    (dir, target, out)
}

/// The plain transcode most tests run: video to libx264 (ultrafast), audio to AAC.
fn x264_aac(out: &mut Output) {
    out.streams.push(set("v", enc("libx264")));
    out.streams.push(set("a", enc("aac")));
}

/// [`job`] working in `dir`, where segmented outputs write their relatively named files.
fn job_in(dir: &Path, input: &Path, out: Output) -> Job {
    let mut j = job(input, out);
    j.working_dir = Some(dir.to_path_buf());
    j
}

/// A job encoding the video of `src` with `encoder` into scratch file `name`: what the error
/// tests vary.
fn video_job(src: &Path, name: &str, encoder: &str) -> (TempDir, PathBuf, Job) {
    let (dir, target, mut out) = file_out(name);
    out.streams.push(set("v", enc(encoder)));
    (dir, target, job(src, out))
}

/// The error of encoding the video of a 2 s clip with `encoder`, which must fail.
fn encode_error(encoder: &str) -> Error {
    let (_dir, _, j) = video_job(&tk::h264_aac(320, 180, 2.0), "x.mp4", encoder);
    match run(&j).0 {
        Ok(_) => panic!("encoding with {encoder} must fail"),
        Err(e) => e,
    }
}

/// The files `parts` of `dir` concatenated into `dir/name`: an init segment (or header)
/// followed by media segments must be a playable file.
fn join<P: AsRef<Path>>(dir: &Path, parts: &[P], name: &str) -> PathBuf {
    let mut cat = Vec::new();
    for p in parts {
        cat.extend(std::fs::read(dir.join(p)).unwrap());
    }
    let joined = dir.join(name);
    std::fs::write(&joined, cat).unwrap();
    joined
}

/// The names of the entries of `dir`, sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A VOD HLS output of 1 s segments to `playlist`, numbered from `start_number`.
fn hls_out(
    playlist: &str,
    start_number: u64,
    segment_type: HlsSegmentType,
    segment_filename: Option<&str>,
    init_filename: Option<&str>,
) -> Output {
    let mut out = Output::new(playlist, Some("hls"));
    out.segmenting = Some(Segmenting::Hls {
        time: 1.0,
        start_number,
        list_size: 0,
        playlist_type: Some("vod".into()),
        segment_type,
        segment_filename: segment_filename.map(Into::into),
        init_filename: init_filename.map(Into::into),
        flags: None,
    });
    out
}

/// DASH in 1 s segments with Plex's file names, numbered from `start_number`.
fn dash_segmenting(
    start_number: u64,
    manifest_target: Option<&str>,
    window_size: Option<u32>,
    delete_removed: Option<bool>,
) -> Segmenting {
    Segmenting::Dash {
        seg_duration: 1.0,
        start_number,
        init_seg_name: Some("init-stream$RepresentationID$.m4s".into()),
        media_seg_name: Some("chunk-stream$RepresentationID$-$Number%05d$.m4s".into()),
        manifest_target: manifest_target.map(Into::into),
        window_size,
        use_template: None,
        use_timeline: None,
        single_file: false,
        time_delta: None,
        delete_removed,
        break_non_keyframes: false,
    }
}

/// Plex's burn-in layout: video copied from a 3 s clip, a sidecar SRT as the second input,
/// its stream encoded with `codec`, into scratch file `name` (returned once written).
fn srt_beside_video(name: &str, codec: &str) -> (TempDir, PathBuf) {
    let video = tk::h264_aac(320, 180, 3.0);
    let (dir, target, mut out) = file_out(name);
    out.maps = vec![map(0, "v:0"), map(1, "s:0")];
    out.streams.push(set("v", copy()));
    out.streams.push(set("s", enc(codec)));
    let mut j = job(&video, out);
    j.inputs
        .push(Input::new(tk::srt_file().to_string_lossy().into_owned()));
    ok(&j);
    (dir, target)
}

#[test]
fn mp4_transcode_scales_and_keeps_all_frames() {
    let src = tk::h264_aac(320, 180, 2.0);
    let dir = tempfile::tempdir().unwrap();
    let mut out = Output::new("out.mp4", None);
    out.streams.push(set(
        "v",
        StreamSettings {
            size: Some((160, 90)),
            ..enc("libx264")
        },
    ));
    out.streams.push(set("a", enc("aac")));
    // A relative target lands in the working directory.
    let evs = ok(&job_in(dir.path(), &src, out));
    let path = dir.path().join("out.mp4");
    let info = tk::probe(&path);
    let v = info.video().unwrap();
    assert_eq!(v["codec_name"], "h264");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(160), Some(90))
    );
    assert_eq!(info.audio().unwrap()["codec_name"], "aac");
    assert_eq!(tk::count_frames(&path, "v:0"), 50);
    let d = info.duration().unwrap();
    assert!((d - 2.0).abs() <= 0.05, "duration {d}");
    assert!(
        matches!(
            evs.first(),
            Some(JobEvent::Started {
                video_size: Some((160, 90)),
                ..
            })
        ),
        "{:?}",
        evs.first()
    );
    let last_progress = evs.iter().rev().find_map(|e| match e {
        JobEvent::Progress(p) => Some(p.clone()),
        _ => None,
    });
    let p = last_progress.expect("a final progress event");
    assert_eq!(p.frames, 50);
    assert!(p.bytes > 0 && p.out_time > 1.8, "{p:?}");
    assert!(tk::decode_errors(&path).trim().is_empty());
}

#[test]
fn mp4_stream_copy_keeps_packets() {
    let src = tk::h264_aac(320, 180, 2.0);
    let (_dir, target, mut out) = file_out("copy.mp4");
    out.streams.push(set("", copy()));
    ok(&job(&src, out));
    let info = tk::probe(&target);
    assert_eq!(info.video().unwrap()["codec_name"], "h264");
    assert_eq!(info.audio().unwrap()["codec_name"], "aac");
    assert_eq!(tk::count_frames(&target, "v:0"), 50);
}

#[test]
fn fragmented_mp4() {
    let src = tk::h264_aac(320, 180, 2.0);
    let (_dir, target, mut out) = file_out("frag.mp4");
    out.format = Some("mp4".into());
    out.format_options.insert(
        "movflags".into(),
        "frag_keyframe+empty_moov+default_base_moof".into(),
    );
    x264_aac(&mut out);
    ok(&job(&src, out));
    let bytes = std::fs::read(&target).unwrap();
    assert!(bytes.windows(4).any(|w| w == b"moof"), "no moof box");
    assert_eq!(tk::count_frames(&target, "v:0"), 50);
}

#[test]
fn mkv_with_two_audio_tracks_and_ass_copy() {
    let src = tk::multi_audio_ass_mkv(2.0);
    let (_dir, target, mut out) = file_out("out.mkv");
    out.maps = vec![map(0, "v"), map(0, "a"), map(0, "s")];
    out.streams.push(set("v", enc("libx264")));
    out.streams.push(set(
        "a",
        StreamSettings {
            bitrate: Some(96_000),
            ..enc("aac")
        },
    ));
    out.streams.push(set("s", copy()));
    ok(&job(&src, out));
    let info = tk::probe(&target);
    let audio = info.of_type("audio");
    assert_eq!(audio.len(), 2);
    assert_eq!(audio[0]["channels"], 2);
    assert_eq!(audio[1]["channels"], 6);
    assert_eq!(info.of_type("subtitle")[0]["codec_name"], "ass");
    assert_eq!(tk::count_frames(&target, "v:0"), 50);
}

#[test]
fn downmix_51_to_stereo_aac_in_mpegts() {
    let src = tk::multi_audio_ass_mkv(2.0);
    let (_dir, target, mut out) = file_out("out.ts");
    out.maps = vec![map(0, "v:0"), map(0, "a:1")];
    out.streams.push(set("v", enc("libx264")));
    out.streams.push(set(
        "a",
        StreamSettings {
            channels: Some(2),
            sample_rate: Some(44_100),
            ..enc("aac")
        },
    ));
    ok(&job(&src, out));
    let info = tk::probe(&target);
    assert!(info.format_name().contains("mpegts"));
    let a = info.audio().unwrap();
    assert_eq!(a["channels"], 2);
    assert_eq!(a["sample_rate"], "44100");
    assert_eq!(tk::count_frames(&target, "v:0"), 50);
}

#[test]
fn ass_subtitles_to_ass_file() {
    let src = tk::multi_audio_ass_mkv(3.0);
    let (_dir, target, mut out) = file_out("subs.ass");
    out.maps = vec![map(0, "s:0")];
    ok(&job(&src, out));
    let text = std::fs::read_to_string(&target).unwrap();
    assert_eq!(text.matches("Dialogue:").count(), 3, "{text}");
    assert!(text.contains("Second line"));
}

#[test]
fn two_inputs_video_from_one_audio_from_other() {
    let a = tk::h264_aac(320, 180, 2.0);
    let b = tk::multi_audio_ass_mkv(2.0);
    let (_dir, target, mut out) = file_out("two.mp4");
    out.maps = vec![map(0, "v:0"), map(1, "a:1")];
    out.streams.push(set("v", copy()));
    out.streams.push(set(
        "a",
        StreamSettings {
            channels: Some(2),
            ..enc("aac")
        },
    ));
    let j = Job {
        inputs: vec![
            Input::new(a.to_string_lossy()),
            Input::new(b.to_string_lossy()),
        ],
        outputs: vec![out],
        ..Default::default()
    };
    ok(&j);
    let info = tk::probe(&target);
    assert_eq!(info.video().unwrap()["width"], 320);
    assert_eq!(info.audio().unwrap()["channels"], 2);
}

#[test]
fn complex_filter_graph_output() {
    let src = tk::h264_aac(320, 180, 2.0);
    let (_dir, target, mut out) = file_out("cx.mp4");
    out.maps = vec![
        StreamMap {
            source: MapSource::Label("1".into()),
            negative: false,
            optional: false,
        },
        map(0, "a:0"),
    ];
    out.streams.push(set("v", enc("libx264")));
    out.streams.push(set("a", copy()));
    let mut j = job(&src, out);
    // Plex's shape: numeric internal labels.
    j.complex_filters = vec!["[0:0]scale=w=128:h=72[0];[0]format=pix_fmts=yuv420p|nv12[1]".into()];
    ok(&j);
    let info = tk::probe(&target);
    assert_eq!(info.video().unwrap()["width"], 128);
    assert_eq!(tk::count_frames(&target, "v:0"), 50);
}

#[test]
fn segment_muxer_with_csv_list() {
    let src = tk::h264_aac(320, 180, 3.0);
    let dir = tempfile::tempdir().unwrap();
    let list = SegmentList {
        target: "list.csv".into(),
        kind: SegmentListType::Csv,
        size: 0,
        separate_stream_times: false,
        unfinished: false,
    };
    let mut out = segment_out("media-%05d.ts", "mpegts", 1.0, Some(list));
    x264_aac(&mut out);
    let evs = ok(&job_in(dir.path(), &src, out));
    let csv = std::fs::read_to_string(dir.path().join("list.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 3, "{csv}");
    for (i, row) in rows.iter().enumerate() {
        let cols: Vec<&str> = row.split(',').collect();
        assert_eq!(cols[0], format!("media-{i:05}.ts"));
        let (s, e): (f64, f64) = (cols[1].parse().unwrap(), cols[2].parse().unwrap());
        assert!(
            (s - i as f64).abs() < 0.05 && (e - s - 1.0).abs() < 0.05,
            "{row}"
        );
        let seg = dir.path().join(cols[0]);
        assert_eq!(tk::count_frames(&seg, "v:0"), 25, "{row}");
        // Each segment starts with a keyframe.
        assert_eq!(tk::frames(&seg, "v:0")[0]["key_frame"], 1);
    }
    let segs = segments(&evs);
    assert_eq!(segs.iter().map(|s| s.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(segs.iter().all(|s| s.1[0].exists()));
    let m = manifests(&evs);
    assert!(
        !m.is_empty() && m.last().unwrap().2,
        "last list write is marked last"
    );
    assert_eq!(m.last().unwrap().1, csv);
}

#[test]
fn hls_mpegts_segments_and_playlist() {
    let src = tk::h264_aac(320, 180, 3.0);
    let dir = tempfile::tempdir().unwrap();
    let mut out = hls_out("index.m3u8", 0, HlsSegmentType::Mpegts, None, None);
    x264_aac(&mut out);
    let evs = ok(&job_in(dir.path(), &src, out));
    let pl = std::fs::read_to_string(dir.path().join("index.m3u8")).unwrap();
    let segs: Vec<&str> = pl
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(segs, vec!["index0.ts", "index1.ts", "index2.ts"], "{pl}");
    assert!(pl.contains("#EXT-X-ENDLIST"));
    for s in &segs {
        assert_eq!(tk::count_frames(&dir.path().join(s), "v:0"), 25);
    }
    assert_eq!(segments(&evs).len(), 3);
    let m = manifests(&evs);
    assert!(m.last().unwrap().1.contains("#EXT-X-ENDLIST") && m.last().unwrap().2);
}

#[test]
fn hls_fmp4_segments() {
    let src = tk::h264_aac(320, 180, 2.0);
    let dir = tempfile::tempdir().unwrap();
    let mut out = hls_out(
        "master.m3u8",
        5,
        HlsSegmentType::Fmp4,
        Some("seg-%03d.m4s"),
        Some("init.mp4"),
    );
    x264_aac(&mut out);
    let evs = ok(&job_in(dir.path(), &src, out));
    let pl = std::fs::read_to_string(dir.path().join("master.m3u8")).unwrap();
    assert!(pl.contains("#EXT-X-MAP:URI=\"init.mp4\""), "{pl}");
    assert!(
        pl.contains("seg-005.m4s") && pl.contains("seg-006.m4s"),
        "{pl}"
    );
    assert!(dir.path().join("init.mp4").exists());
    let nums: Vec<u64> = segments(&evs).iter().map(|s| s.0).collect();
    assert_eq!(nums, vec![5, 6]);
    // init + segment concatenated is a valid fragmented mp4.
    let joined = join(dir.path(), &["init.mp4", "seg-005.m4s"], "joined.mp4");
    assert_eq!(tk::count_frames(&joined, "v:0"), 25);
}

#[test]
fn dash_plex_names_with_start_number_100() {
    let src = tk::h264_aac(320, 180, 3.0);
    let dir = tempfile::tempdir().unwrap();
    let mut out = Output::new("dash", Some("dash"));
    x264_aac(&mut out);
    out.segmenting = Some(dash_segmenting(
        100,
        Some("http://127.0.0.1:32400/video/:/transcode/session/x/manifest"),
        None,
        Some(false),
    ));
    let evs = ok(&job_in(dir.path(), &src, out));
    let names = file_names(dir.path());
    for rep in 0..2 {
        assert!(
            names.contains(&format!("init-stream{rep}.m4s")),
            "{names:?}"
        );
        for n in 100..103 {
            assert!(
                names.contains(&format!("chunk-stream{rep}-{n:05}.m4s")),
                "{names:?}"
            );
        }
    }
    // 3 s of video at 1 s segments is exactly 3 video chunks (AAC padding may add a tiny
    // fourth audio chunk).
    assert!(
        !names.contains(&"chunk-stream0-00103.m4s".to_string()),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("chunk-stream") && n < &"chunk-stream0-00100".to_string())
    );
    assert!(
        !names
            .iter()
            .any(|n| n.contains("cpxtmp") || n.ends_with(".tmp")),
        "{names:?}"
    );
    let mpd = std::fs::read_to_string(dir.path().join("dash")).unwrap();
    let doc = roxmltree::Document::parse(&mpd).expect("MPD is XML");
    let templates: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("SegmentTemplate"))
        .collect();
    assert_eq!(templates.len(), 2, "{mpd}");
    for t in templates {
        assert_eq!(t.attribute("startNumber"), Some("100"));
        assert_eq!(
            t.attribute("media"),
            Some("chunk-stream$RepresentationID$-$Number%05d$.m4s")
        );
        assert_eq!(
            t.attribute("initialization"),
            Some("init-stream$RepresentationID$.m4s")
        );
    }
    assert!(mpd.contains("type=\"static\""));
    // Segment events: one per number with both representations, files present.
    let segs = segments(&evs);
    assert_eq!(
        segs.iter().take(3).map(|s| s.0).collect::<Vec<_>>(),
        vec![100, 101, 102]
    );
    assert!(segs.iter().take(3).all(|s| s.1.len() == 2));
    assert!(segs.iter().all(|s| s.1.iter().all(|p| p.exists())));
    // Manifests go to the callback target; only the final one is static and marked last.
    let m = manifests(&evs);
    assert!(m.len() >= 2);
    assert!(m.iter().all(|x| x.0.starts_with("http://127.0.0.1:32400/")));
    for x in m.iter().rev().skip(1) {
        assert!(!x.2 && x.1.contains("type=\"dynamic\""), "{}", x.1);
    }
    assert!(m.last().unwrap().2 && m.last().unwrap().1 == mpd);
    // init + one chunk is decodable video with a keyframe first.
    let parts = ["init-stream0.m4s", "chunk-stream0-00101.m4s"];
    let joined = join(dir.path(), &parts, "joined.mp4");
    assert_eq!(tk::count_frames(&joined, "v:0"), 25);
    assert_eq!(tk::frames(&joined, "v:0")[0]["key_frame"], 1);
}

#[test]
fn accurate_input_seek() {
    let src = tk::h264_aac(320, 180, 3.0);
    let (_dir, target, mut out) = file_out("seek.mp4");
    x264_aac(&mut out);
    let mut j = job(&src, out);
    // 1.4 s is between keyframes (every 1 s): accurate seek must drop 0.4 s of decoded frames.
    j.inputs[0].seek = Some(1.4);
    ok(&j);
    assert_eq!(tk::count_frames(&target, "v:0"), 40);
    let frames = tk::frames(&target, "v:0");
    let first = num(&frames[0]["pts_time"]);
    assert!(first.abs() < 0.05, "first pts {first}");
    let d = tk::probe(&target).duration().unwrap();
    assert!((d - 1.6).abs() < 0.08, "duration {d}");
}

#[test]
fn output_duration_limit() {
    let src = tk::h264_aac(320, 180, 3.0);
    let (_dir, target, mut out) = file_out("t.mkv");
    out.streams.push(set("v", enc("libx264")));
    out.disable.push(MediaKind::Audio);
    out.duration = Some(1.0);
    ok(&job(&src, out));
    assert_eq!(tk::count_frames(&target, "v:0"), 25);
    assert!(tk::probe(&target).audio().is_none());
}

#[test]
fn cancel_stops_quickly_and_leaves_valid_output() {
    let src = tk::h264_aac(1280, 720, 8.0);
    let (_dir, target, mut out) = file_out("cancel.mkv");
    out.streams.push(set(
        "v",
        StreamSettings {
            preset: Some("veryfast".into()),
            ..enc("libx264")
        },
    ));
    out.streams.push(set("a", enc("aac")));
    let j = job(&src, out);
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    let mut saw_progress = false;
    let mut cancelled_at = None;
    let r = Engine::new().run(&j, &cancel, &mut |e| {
        if let JobEvent::Progress(p) = &e
            && p.frames > 10
            && !saw_progress
        {
            saw_progress = true;
            let c3 = c2.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                let t = Instant::now();
                c3.cancel();
                let _ = tx.send(t);
            });
        }
        if cancelled_at.is_none() {
            cancelled_at = rx.try_recv().ok();
        }
    });
    let returned = Instant::now();
    let at = cancelled_at
        .or_else(|| rx.try_recv().ok())
        .expect("cancel fired before the job ended");
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    let took = returned.duration_since(at);
    assert!(took < Duration::from_millis(200), "cancel took {took:?}");
    // What was written is a valid file.
    let n = tk::count_frames(&target, "v:0");
    assert!(n > 0 && n < 200, "{n} frames");
    assert!(tk::decode_errors(&target).trim().is_empty());
}

#[test]
fn truncated_input_is_a_typed_error() {
    let (_dir, _, j) = video_job(&tk::truncated_mp4(), "x.mp4", "libx264");
    let (r, _) = run(&j);
    match r {
        Err(Error::Av {
            stage: Stage::OpenInput,
            context,
            ..
        }) => assert!(context.contains("input #0")),
        other => panic!("expected an open_input error, got {other:?}"),
    }
}

#[test]
fn corrupt_input_does_not_panic() {
    let (_dir, target, j) = video_job(&tk::corrupt_ts(), "x.mkv", "libx264");
    let (r, _) = run(&j);
    // Either the decodable part is transcoded (like ffmpeg) or a typed error comes back.
    match r {
        Ok(_) => assert!(tk::count_frames(&target, "v:0") > 0),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// A full disk (`/dev/full` fails every write with ENOSPC) is a mux error that names the
/// output and the cause, and it stops the job at the first failed write instead of transcoding
/// the rest of the input into nothing.
#[test]
fn full_disk_is_a_clear_mux_error_and_stops_the_job() {
    let src = tk::h264_aac(640, 360, 8.0);
    // Header-time failure (mp4 writes `ftyp` first) and mid-stream failure (mpegts).
    for (format, video) in [("mp4", copy()), ("mpegts", enc("libx264"))] {
        let mut out = Output::new("/dev/full", Some(format));
        // Video only: the result must not depend on which default audio encoders a build has.
        out.maps = vec![map(0, "v:0")];
        out.streams.push(set("v", video));
        let (r, evs) = run(&job(&src, out));
        let e = r.expect_err("writing to a full disk must fail");
        let msg = e.to_string();
        assert_eq!(e.stage(), "mux", "{format}: {msg}");
        assert!(
            msg.contains("No space left on device") && msg.contains("/dev/full"),
            "{format}: {msg}"
        );
        let reached = evs
            .iter()
            .filter_map(|e| match e {
                JobEvent::Progress(p) => Some(p.out_time),
                _ => None,
            })
            .fold(0.0, f64::max);
        assert!(reached < 4.0, "{format}: ran on to {reached} s of 8");
    }
}

#[test]
fn unknown_encoder_is_named() {
    let e = encode_error("h264_bogus");
    let msg = e.to_string();
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
    assert!(
        msg.contains("h264_bogus") && msg.contains("libx264"),
        "{msg}"
    );
}

#[test]
fn missing_hardware_encoder_is_clear() {
    // No NVIDIA GPU here.
    let e = encode_error("h264_nvenc");
    let msg = e.to_string();
    assert_eq!(e.stage(), "encode", "{msg}");
    assert!(
        msg.contains("h264_nvenc") && msg.contains("libx264") && msg.contains("video"),
        "{msg}"
    );
}

#[test]
fn missing_hardware_decoder_is_clear() {
    let src = tk::h264_aac(320, 180, 2.0);
    let (_dir, _, mut j) = video_job(&src, "x.mp4", "libx264");
    j.inputs[0].decoders.push(ByStream::new(
        "v".parse().unwrap(),
        "h264_cuvid".to_string(),
    ));
    let (r, _) = run(&j);
    let msg = r.expect_err("no CUDA here").to_string();
    assert!(msg.contains("h264_cuvid") && msg.contains("h264"), "{msg}");
}

#[test]
fn tonemap_in_a_simple_chain_is_split_out() {
    let src = tk::hevc_hdr10();
    let (_dir, target, mut out) = file_out("sdr.mp4");
    out.streams.push(set(
        "v",
        StreamSettings {
            filter: Some("scale=320:180,tonemap=hable:impl=cpu,setsar=1".into()),
            ..enc("libx264")
        },
    ));
    ok(&job(&src, out));
    let f = &tk::frames(&target, "v:0")[0];
    assert_eq!(f["width"], 320);
    assert_eq!(f["color_transfer"], "bt709", "{f}");
    assert_eq!(f["color_primaries"], "bt709", "{f}");
    assert_eq!(tk::count_frames(&target, "v:0"), 50);
}

#[test]
fn started_lists_every_input_audio_and_video_stream() {
    // Video, stereo `eng` and 5.1 `fre` AAC, and an ASS track (not listed: Plex only reports
    // audio and video).
    let src = tk::multi_audio_ass_mkv(1.0);
    let (_dir, _, mut out) = file_out("o.mkv");
    out.format = Some("matroska".into());
    out.maps.push(map(0, "v:0"));
    out.streams.push(set("v", copy()));
    let evs = ok(&job(&src, out));
    let Some(JobEvent::Started { input_streams, .. }) = evs.first() else {
        panic!("first event is Started: {evs:?}");
    };
    let kinds: Vec<(&str, &str, usize)> = input_streams
        .iter()
        .map(|s| (s.kind.as_str(), s.codec.as_str(), s.index))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("video", "h264", 0),
            ("audio", "aac", 1),
            ("audio", "aac", 2)
        ]
    );
    let probe = tk::probe(&src);
    let get = |s: &clusterplex_core::events::InputStream, k: &str| {
        s.details
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    let v = &input_streams[0];
    assert_eq!(v.input, 0);
    // libavformat's Matroska demuxer exposes no stream id (ffprobe shows none either).
    assert_eq!(v.id, 0);
    assert!(probe.video().unwrap().get("id").is_none());
    assert_eq!(get(v, "width").as_deref(), Some("320"));
    assert_eq!(get(v, "height").as_deref(), Some("180"));
    assert_eq!(get(v, "frameRate").as_deref(), Some("25.000"));
    assert_eq!(get(v, "interlaced").as_deref(), Some("0"));
    let pv = probe.video().unwrap();
    assert_eq!(get(v, "profile").as_deref(), pv["profile"].as_str());
    assert_eq!(get(v, "level"), Some(pv["level"].to_string()));
    // Keys come in the contract's order.
    let order = [
        "bitrate",
        "profile",
        "language",
        "width",
        "height",
        "interlaced",
        "sar",
        "level",
        "frameRate",
        "closedCaptions",
        "channels",
        "layout",
        "sampleRate",
        "bitDepth",
        "disp_default",
        "disp_forced",
    ];
    for s in input_streams {
        let pos: Vec<usize> = s
            .details
            .iter()
            .map(|(k, _)| order.iter().position(|o| o == k).unwrap())
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{:?}", s.details);
    }
    let (a0, a1) = (&input_streams[1], &input_streams[2]);
    assert_eq!(get(a0, "language").as_deref(), Some("eng"));
    assert_eq!(get(a0, "channels").as_deref(), Some("2"));
    assert_eq!(get(a0, "layout").as_deref(), Some("stereo"));
    assert_eq!(get(a0, "sampleRate").as_deref(), Some("48000"));
    assert_eq!(get(a0, "profile").as_deref(), Some("LC"));
    assert_eq!(get(a1, "language").as_deref(), Some("fre"));
    assert_eq!(get(a1, "channels").as_deref(), Some("6"));
    assert_eq!(get(a1, "layout").as_deref(), Some("5.1"));
    // ffmpeg marks the first track of each type default in Matroska.
    let pa = probe.of_type("audio");
    for (s, p) in [(a0, pa[0]), (a1, pa[1])] {
        assert_eq!(
            get(s, "disp_default"),
            Some(p["disposition"]["default"].to_string())
        );
        assert_eq!(get(s, "disp_forced").as_deref(), Some("0"));
    }
}

fn segment_out(target: &str, format: &str, time: f64, list: Option<SegmentList>) -> Output {
    let mut out = Output::new(target, Some("segment"));
    out.segmenting = Some(Segmenting::Segment {
        segment_time: time,
        start_number: 0,
        segment_format: Some(format.into()),
        list,
        header_filename: None,
        time_delta: None,
        format_options: Default::default(),
    });
    out
}

fn plex_list(size: u32) -> SegmentList {
    SegmentList {
        target: "http://127.0.0.1:32400/video/:/transcode/session/s/j/manifest".into(),
        kind: SegmentListType::Csv,
        size,
        separate_stream_times: true,
        unfinished: true,
    }
}

/// Sets the segment muxer's `-segment_header_filename` (Plex's segmented outputs write one).
fn set_header(out: &mut Output, name: &str) {
    if let Some(Segmenting::Segment {
        header_filename, ..
    }) = &mut out.segmenting
    {
        *header_filename = Some(name.into());
    }
}

#[test]
fn segment_header_file_and_plex_csv_list() {
    // Plex's HLS shape: Matroska segments, one header file, a CSV list with per-stream end
    // times and the unfinished row, re-sent for a window of 5.
    let src = tk::h264_aac(320, 180, 3.0);
    let dir = tempfile::tempdir().unwrap();
    let mut out = segment_out("media-%05d.mkv", "matroska", 1.0, Some(plex_list(5)));
    x264_aac(&mut out);
    set_header(&mut out, "header");
    let evs = ok(&job_in(dir.path(), &src, out));
    // The header holds the EBML header once; segments start with a Cluster and no header.
    let header = std::fs::read(dir.path().join("header")).unwrap();
    assert_eq!(&header[..4], &[0x1a, 0x45, 0xdf, 0xa3]);
    let mut parts = vec!["header".to_string()];
    for n in 0..3 {
        let name = format!("media-{n:05}.mkv");
        let seg = std::fs::read(dir.path().join(&name)).unwrap();
        assert_eq!(&seg[..4], &[0x1f, 0x43, 0xb6, 0x75], "segment {n}");
        parts.push(name);
    }
    let joined = join(dir.path(), &parts, "joined.mkv");
    assert_eq!(tk::count_frames(&joined, "v:0"), 75);
    // The header is not a segment.
    let segs = segments(&evs);
    assert_eq!(segs.iter().map(|s| s.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    let m = manifests(&evs);
    assert!(m.iter().all(|x| x.0.starts_with("http://127.0.0.1:32400/")));
    // While running: finished rows with 5 columns, then the segment in progress with `#`.
    let first = &m[0].1;
    let rows: Vec<&str> = first.lines().collect();
    assert_eq!(rows.len(), 2, "{first}");
    assert!(rows[1].starts_with("#media-00001.mkv,"), "{first}");
    let cols: Vec<f64> = rows[0]
        .strip_prefix("media-00000.mkv,")
        .unwrap()
        .split(',')
        .map(|c| c.parse().unwrap())
        .collect();
    assert_eq!(cols.len(), 4, "{first}");
    let (start, end, end_a, end_v) = (cols[0], cols[1], cols[2], cols[3]);
    assert!(start.abs() < 1e-6 && (end - 1.0).abs() < 0.05, "{first}");
    // Video ends where the next segment's keyframe starts; AAC frames (21.3 ms) end near it.
    assert!((end_v - end).abs() < 0.005, "{first}");
    assert!((end_a - end).abs() < 0.05, "{first}");
    let in_progress: Vec<&str> = rows[1].split(',').collect();
    assert_eq!(in_progress.len(), 5);
    assert!((in_progress[1].parse::<f64>().unwrap() - end).abs() < 1e-6);
    // The final list: every segment, no unfinished row, marked last; the same row values as
    // before (rows are re-sent unchanged).
    let (_, last_body, last) = m.last().unwrap();
    assert!(*last);
    let rows: Vec<&str> = last_body.lines().collect();
    assert_eq!(rows.len(), 3, "{last_body}");
    assert!(
        rows.iter()
            .all(|r| !r.starts_with('#') && r.split(',').count() == 5)
    );
    assert_eq!(rows[0], first.lines().next().unwrap());
    let last_cols: Vec<f64> = rows[2]
        .split(',')
        .skip(1)
        .map(|c| c.parse().unwrap())
        .collect();
    assert!((last_cols[3] - 3.0).abs() < 0.05, "{last_body}");
}

#[test]
fn plex_csv_list_of_subtitles_has_no_stream_ends() {
    // Plex's DASH subtitle side-output: ASS segments with a header, 5-column rows of -1.
    let src = tk::multi_audio_ass_mkv(3.0);
    let dir = tempfile::tempdir().unwrap();
    let mut out = segment_out("sub-chunk-%05d", "ass", 1.0, Some(plex_list(5)));
    out.maps.push(map(0, "s:0"));
    out.streams.push(set("s", enc("ass")));
    set_header(&mut out, "sub-header");
    let evs = ok(&job_in(dir.path(), &src, out));
    let header = std::fs::read_to_string(dir.path().join("sub-header")).unwrap();
    assert!(header.contains("[Script Info]"), "{header}");
    let m = manifests(&evs);
    let (_, body, last) = m.last().unwrap();
    assert!(*last);
    for row in body.lines() {
        assert!(row.ends_with(",-1,-1"), "{body}");
    }
    for n in 0..body.lines().count() {
        let chunk = dir.path().join(format!("sub-chunk-{n:05}"));
        assert!(
            !std::fs::read_to_string(&chunk)
                .unwrap()
                .contains("[Script Info]")
        );
    }
}

#[test]
fn segment_time_delta_cuts_at_a_keyframe_just_before_the_boundary() {
    // Keyframes at 0, 0.96 and 1.96 s (one frame early); stream copy keeps them.
    let src = tk::generate(
        "early-keyframes",
        "mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x90:rate=25",
            "-t",
            "3",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "1000",
            "-force_key_frames",
            "0,0.96,1.96",
        ],
    );
    let run_with = |delta: Option<f64>| {
        let dir = tempfile::tempdir().unwrap();
        let mut out = segment_out("m-%03d.mkv", "matroska", 1.0, None);
        out.streams.push(set("v", copy()));
        if let Some(Segmenting::Segment { time_delta, .. }) = &mut out.segmenting {
            *time_delta = delta;
        }
        ok(&job_in(dir.path(), &src, out));
        tk::count_frames(&dir.path().join("m-000.mkv"), "v:0")
    };
    assert_eq!(run_with(Some(0.0625)), 24, "cut at 0.96 s");
    assert_eq!(
        run_with(None),
        49,
        "without the delta the next keyframe is 1.96 s"
    );
}

fn dash_out(window: Option<u32>, delete_removed: Option<bool>) -> Output {
    let mut out = Output::new("dash", Some("dash"));
    out.segmenting = Some(dash_segmenting(1, None, window, delete_removed));
    out.format_options
        .insert("extra_window_size".into(), "1".into());
    out
}

#[test]
fn dash_delete_removed_false_keeps_old_segments_true_deletes_them() {
    let src = tk::h264_aac(160, 90, 4.0);
    let chunks = |delete: Option<bool>| {
        let dir = tempfile::tempdir().unwrap();
        let mut out = dash_out(Some(1), delete);
        out.maps.push(map(0, "v:0"));
        out.streams.push(set("v", copy()));
        let evs = ok(&job_in(dir.path(), &src, out));
        assert_eq!(segments(&evs).len(), 4);
        let mut names = file_names(dir.path());
        names.retain(|n| n.starts_with("chunk-"));
        names
    };
    let all: Vec<String> = (1..=4)
        .map(|n| format!("chunk-stream0-{n:05}.m4s"))
        .collect();
    assert_eq!(chunks(Some(false)), all);
    // window 1 + extra_window_size 1: FFmpeg keeps the last two on disk.
    assert_eq!(chunks(Some(true)), all[2..].to_vec());
    assert_eq!(chunks(None), all[2..].to_vec());
}

#[test]
fn dash_time_delta_is_honoured_when_encoding_and_logged_with_copied_video() {
    let src = tk::h264_aac(160, 90, 2.0);
    let with_delta = |video: StreamSettings| {
        let mut out = dash_out(None, Some(false));
        if let Some(Segmenting::Dash { time_delta, .. }) = &mut out.segmenting {
            *time_delta = Some(0.0625);
        }
        out.maps.push(map(0, "v:0"));
        out.streams.push(set("v", video));
        out
    };
    let dir = tempfile::tempdir().unwrap();
    // Copied video: the source's keyframes decide (every second here), and the
    // session log says so.
    let evs = ok(&job_in(dir.path(), &src, with_delta(copy())));
    assert_eq!(segments(&evs).len(), 2);
    assert!(evs.iter().any(|e| matches!(e,
        JobEvent::Log { level: LogLevel::Warning, message } if message.contains("-time_delta"))));
    let evs = ok(&job_in(dir.path(), &src, with_delta(enc("libx264"))));
    // Keyframes forced on the boundaries: every chunk is exactly one second.
    assert_eq!(segments(&evs).len(), 2);
    for n in 1..=2 {
        let chunk = format!("chunk-stream0-{n:05}.m4s");
        let joined = join(dir.path(), &["init-stream0.m4s", &chunk], "joined.mp4");
        assert_eq!(tk::count_frames(&joined, "v:0"), 25);
    }
}

/// The cues of subtitle stream `s:0` of `path` as (start, end, text), read back with the ffmpeg
/// CLI (converted to SubRip on stdout), so the check does not trust our own decoder.
fn cues(path: &Path) -> Vec<(f64, f64, String)> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:s:0", "-c:s", "srt", "-f", "srt", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = |s: &str| {
        let s = s.trim().replace(',', ".");
        let p: Vec<f64> = s.split(':').map(|x| x.parse().unwrap()).collect();
        p[0] * 3600.0 + p[1] * 60.0 + p[2]
    };
    String::from_utf8_lossy(&out.stdout)
        .split("\n\n")
        .filter_map(|block| {
            let lines: Vec<&str> = block.trim().lines().collect();
            let (a, b) = lines.get(1)?.split_once("-->")?;
            Some((t(a), t(b), lines[2..].join("\n")))
        })
        .collect()
}

fn assert_cues(got: &[(f64, f64, String)], want: &[(f64, f64, &str)]) {
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g.0 - w.0).abs() < 0.011 && (g.1 - w.1).abs() < 0.011 && g.2 == w.2,
            "{got:?} != {want:?}"
        );
    }
}

const SRT_CUES: [(f64, f64, &str); 3] = [
    (0.2, 0.9, "First line"),
    (1.1, 1.8, "Second line"),
    (2.1, 2.8, "Third line"),
];

#[test]
fn srt_to_ass_file_keeps_texts_and_times() {
    let (_dir, target, mut out) = file_out("subs.ass");
    out.streams.push(set("s", enc("ass")));
    ok(&job(&tk::srt_file(), out));
    let text = std::fs::read_to_string(&target).unwrap();
    // The header is the SubRip decoder's default ASS script header.
    assert!(
        text.contains("[Script Info]") && text.contains("[V4+ Styles]"),
        "{text}"
    );
    assert_eq!(text.matches("Dialogue:").count(), 3, "{text}");
    assert!(
        text.contains("0:00:01.10,0:00:01.80,Default,,0,0,0,,Second line"),
        "{text}"
    );
    assert_eq!(
        tk::probe(&target).of_type("subtitle")[0]["codec_name"],
        "ass"
    );
    assert_cues(&cues(&target), &SRT_CUES);
}

/// Plex's burn-in layout: video from the media file, a sidecar SRT as the second input, the
/// SRT stream encoded as ASS.
#[test]
fn srt_sidecar_to_ass_in_mkv_beside_video() {
    let (_dir, target) = srt_beside_video("out.mkv", "ass");
    let info = tk::probe(&target);
    let subs = info.of_type("subtitle");
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["codec_name"], "ass");
    assert_eq!(tk::count_frames(&target, "v:0"), 75);
    let pk = tk::packets(&target, "s:0");
    let pts: Vec<f64> = pk.iter().map(|p| num(&p["pts_time"])).collect();
    assert_eq!(pts.len(), 3, "{pk:?}");
    for (p, w) in pts.iter().zip([0.2, 1.1, 2.1]) {
        assert!((p - w).abs() < 0.002, "{pts:?}");
    }
    assert_cues(&cues(&target), &SRT_CUES);
}

#[test]
fn srt_to_mov_text_in_mp4() {
    let (_dir, target) = srt_beside_video("out.mp4", "mov_text");
    let info = tk::probe(&target);
    assert_eq!(info.of_type("subtitle")[0]["codec_name"], "mov_text");
    assert_cues(&cues(&target), &SRT_CUES);
}

#[test]
fn ass_to_srt_and_webvtt() {
    let src = tk::multi_audio_ass_mkv(3.0);
    for (name, codec, want) in [
        ("subs.srt", "srt", "subrip"),
        ("subs.vtt", "webvtt", "webvtt"),
    ] {
        let (_dir, target, mut out) = file_out(name);
        out.maps = vec![map(0, "s:0")];
        out.streams.push(set("s", enc(codec)));
        ok(&job(&src, out));
        assert_eq!(
            tk::probe(&target).of_type("subtitle")[0]["codec_name"],
            want
        );
        // The ffmpeg CLI's own conversion of the source is the reference (it shifts the mkv's
        // timeline by the audio priming like the engine does).
        let reference = cues(&src);
        let want: Vec<(f64, f64, &str)> =
            reference.iter().map(|c| (c.0, c.1, c.2.as_str())).collect();
        assert_eq!(want.len(), 3);
        assert_cues(&cues(&target), &want);
    }
}

/// Output seek and duration cut converted subtitles like copied ones: an event still showing
/// at the start is kept from the start, events past the end are dropped.
#[test]
fn converted_subtitles_follow_output_seek_and_limit() {
    let (_dir, target, mut out) = file_out("cut.ass");
    out.streams.push(set("s", enc("ass")));
    out.seek = Some(1.5);
    out.duration = Some(0.5);
    ok(&job(&tk::srt_file(), out));
    assert_cues(&cues(&target), &[(0.0, 0.3, "Second line")]);
}
