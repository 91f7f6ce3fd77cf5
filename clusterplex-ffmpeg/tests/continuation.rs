//! Continuations (a session carried on after its transcoder was lost, `Job::resume_at`) on
//! real media: stream-copied packets before the resume point are dropped the way ffmpeg 5.1
//! drops them with `-copypriorss 0` (checked against the `ffmpeg` CLI on the same input), with
//! half a frame of tolerance; a DASH session resumed from the reported end of its last
//! segment joins the earlier segments exactly (same packets as one uninterrupted run), keeps
//! the session's init segments and keeps listing the earlier segments in its MPD.

use std::path::{Path, PathBuf};

use clusterplex_core::{CancelToken, Job, JobEvent, SegmentInfo, parse::parse_args};
use clusterplex_ffmpeg::engine::Engine;
use clusterplex_testkit as tk;

/// 10 s, 25 fps H.264 with a keyframe every second (at x.021 s: Matroska shifts the video by
/// the AAC priming) and stereo AAC: the e2e failover clip.
fn clip() -> PathBuf {
    tk::av_clip(
        "mkv",
        10.0,
        25,
        &["-c:v", "libx264", "-preset", "ultrafast"],
        &[("aac", 2)],
        false,
    )
}

fn run(job: &Job) -> Vec<JobEvent> {
    let mut evs = Vec::new();
    Engine::new()
        .run(job, &CancelToken::new(), &mut |e| evs.push(e))
        .unwrap_or_else(|e| panic!("job failed: {e}"));
    evs
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Seconds of every packet of `select` in `path` (pts, key flag).
fn pts(path: &Path, select: &str) -> Vec<(f64, bool)> {
    tk::packets(path, select)
        .iter()
        .map(|p| {
            (
                tk::num(&p["pts_time"]).unwrap_or(f64::NAN),
                p["flags"].as_str().unwrap_or("").starts_with('K'),
            )
        })
        .collect()
}

/// `-ss <seek> -i clip -copyts -map 0 -c copy out.mkv`, as a parsed job in `dir`.
fn copy_job(src: &Path, dir: &Path, seek: f64) -> Job {
    let args = strings(&[
        "-ss",
        &seek.to_string(),
        "-i",
        &src.to_string_lossy(),
        "-copyts",
        "-map",
        "0",
        "-c",
        "copy",
        "out.mkv",
    ]);
    let mut job = parse_args(&args).unwrap().job;
    job.working_dir = Some(dir.to_path_buf());
    job
}

/// [`copy_job`] from 0 as a continuation resuming `at` seconds in (what `Job::resume_at` does
/// to a segmented job; this output is one file, which `resume_at` refuses to resume).
fn copy_continuation(src: &Path, dir: &Path, at: f64) -> Job {
    let mut job = copy_job(src, dir, at);
    job.inputs[0].accurate_seek = true;
    job.continuation = Some(clusterplex_core::Continuation {
        elapsed: at,
        ..Default::default()
    });
    job
}

/// The same with the `ffmpeg` CLI (plus `extra` output options).
fn ffmpeg_copy(src: &Path, out: &Path, seek: f64, extra: &[&str]) {
    let mut args = strings(&["-v", "error", "-y", "-ss", &seek.to_string(), "-i"]);
    args.push(src.to_string_lossy().into_owned());
    args.extend(strings(&["-copyts", "-map", "0", "-c", "copy"]));
    args.extend(strings(extra));
    args.push(out.to_string_lossy().into_owned());
    let st = std::process::Command::new("ffmpeg")
        .args(&args)
        .status()
        .unwrap();
    assert!(st.success(), "ffmpeg {args:?}");
}

#[test]
fn copied_packets_before_a_resume_point_are_dropped_like_ffmpeg_copypriorss_0() {
    let src = clip();
    let dir = tempfile::tempdir().unwrap();
    let first = |p: &[(f64, bool)]| p.first().map(|x| x.0).unwrap_or(f64::NAN);

    // A plain `-ss 4.5` job copies from the keyframe before 4.5 s, as ffmpeg 5.1 does by
    // default (`-copypriorss -1`).
    let cli = dir.path().join("cli-default.mkv");
    ffmpeg_copy(&src, &cli, 4.5, &[]);
    let plain = copy_job(&src, dir.path(), 4.5);
    run(&plain);
    let ours = dir.path().join("out.mkv");
    let (v_cli, v_ours) = (pts(&cli, "v:0"), pts(&ours, "v:0"));
    assert!((first(&v_cli) - 4.021).abs() < 1e-3, "{v_cli:?}");
    assert!((first(&v_ours) - first(&v_cli)).abs() < 1e-3, "{v_ours:?}");

    // A continuation resuming at 4.5 s drops what lies before it, like `-copypriorss 0`: video
    // from the first keyframe after it (5.021), audio from the first packet at or after it.
    let cont = copy_continuation(&src, dir.path(), 4.5);
    assert!(cont.continuation.is_some());
    run(&cont);
    let cli0 = dir.path().join("cli-copypriorss0.mkv");
    ffmpeg_copy(&src, &cli0, 4.5, &["-copypriorss", "0"]);
    for s in ["v:0", "a:0"] {
        let (c, o) = (pts(&cli0, s), pts(&ours, s));
        assert!(
            (first(&o) - first(&c)).abs() < 1e-3,
            "{s}: ours start at {}, ffmpeg -copypriorss 0 at {}",
            first(&o),
            first(&c)
        );
        assert_eq!(o.len(), c.len(), "{s}: packet counts differ");
    }
    let v = pts(&ours, "v:0");
    assert!(v[0].1, "the first copied video packet is a keyframe: {v:?}");
    assert!((first(&v) - 5.021).abs() < 1e-3, "{v:?}");

    // A resume point a little past a keyframe (rounding) keeps that keyframe: half a frame of
    // tolerance. ffmpeg's exact comparison would drop it and start a second later.
    let cont = copy_continuation(&src, dir.path(), 4.0215);
    run(&cont);
    let v = pts(&ours, "v:0");
    assert!((first(&v) - 4.021).abs() < 1e-3, "{v:?}");
    let a = pts(&ours, "a:0");
    assert!(
        first(&a) >= 4.0215 - 0.011 && first(&a) < 4.0215 + 0.022,
        "audio starts at {} for a resume at 4.0215 s",
        first(&a)
    );
}

/// Plex's DASH playback argv (the e2e shape) writing into `dir`, the video copied or encoded.
fn plex_dash(src: &Path, dir: &Path, encode_video: bool) -> Job {
    let video: &[&str] = if encode_video {
        &["libx264", "-preset:0", "ultrafast"]
    } else {
        &["copy"]
    };
    let mut args = strings(&["-i", &src.to_string_lossy(), "-start_at_zero", "-copyts"]);
    args.extend(tk::plex_dash_outputs(video, 1));
    args.push("dash".into());
    let mut job = parse_args(&args).unwrap().job;
    job.working_dir = Some(dir.to_path_buf());
    job
}

fn segment_infos(evs: &[JobEvent]) -> Vec<SegmentInfo> {
    evs.iter()
        .filter_map(|e| match e {
            JobEvent::SegmentWritten(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// init + chunks of one representation, concatenated.
fn joined(dir: &Path, rep: u32, nums: &[u64]) -> PathBuf {
    let mut data = std::fs::read(dir.join(format!("init-stream{rep}.m4s"))).unwrap();
    for n in nums {
        data.extend(std::fs::read(dir.join(format!("chunk-stream{rep}-{n:05}.m4s"))).unwrap());
    }
    let p = dir.join(format!("joined-{rep}.mp4"));
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn dash_continuation_from_the_reported_segment_end_joins_exactly() {
    dash_continuation(false);
}

#[test]
fn dash_continuation_with_encoded_video_joins_exactly() {
    dash_continuation(true);
}

fn dash_continuation(encode_video: bool) {
    let src = clip();
    // The uninterrupted session.
    let whole = tempfile::tempdir().unwrap();
    let evs = run(&plex_dash(&src, whole.path(), encode_video));
    let segs = segment_infos(&evs);
    assert!(segs.len() >= 5, "{segs:?}");
    // A segment ends where the next one starts: at the keyframe that opened it (x.021 s).
    for w in segs.windows(2) {
        assert!((w[0].end - w[1].start).abs() < 1e-9, "{segs:?}");
    }
    // Copied: the source's keyframes (x.021 s); encoded: keyframes forced on the 2 s
    // boundaries, on the output's 25 fps grid (cfr).
    let kf = if encode_video { 0.04 } else { 0.021 };
    for s in &segs[..4] {
        let frac = s.end - s.end.floor();
        assert!(
            (frac - kf).abs() < 1e-6,
            "segment end {} is not a keyframe",
            s.end
        );
    }

    // A session whose transcoder died after segment 2: its files and the MPD it wrote after
    // segment 2, as a SIGKILL leaves them.
    let sess = tempfile::tempdir().unwrap();
    for f in ["init-stream0.m4s", "init-stream1.m4s"] {
        std::fs::copy(whole.path().join(f), sess.path().join(f)).unwrap();
    }
    for r in 0..2 {
        for n in 1..=2u64 {
            let f = format!("chunk-stream{r}-{n:05}.m4s");
            std::fs::copy(whole.path().join(&f), sess.path().join(&f)).unwrap();
        }
    }
    let after_two = evs
        .iter()
        .skip_while(|e| !matches!(e, JobEvent::SegmentWritten(s) if s.number == 2))
        .find_map(|e| match e {
            JobEvent::Manifest { body, .. } => Some(body.clone()),
            _ => None,
        })
        .expect("an MPD after segment 2");
    std::fs::write(sess.path().join("dash"), &after_two).unwrap();
    let init_before: Vec<Vec<u8>> = (0..2)
        .map(|r| std::fs::read(sess.path().join(format!("init-stream{r}.m4s"))).unwrap())
        .collect();

    // The orchestrator resumes at segment 3 from the end of segment 2 (output origin 0).
    let cont = plex_dash(&src, sess.path(), encode_video)
        .resume_at(3, segs[1].end)
        .unwrap();
    let cevs = run(&cont);
    let csegs = segment_infos(&cevs);
    assert_eq!(csegs.first().map(|s| s.number), Some(3), "{csegs:?}");

    // The init segments the earlier chunks need are untouched.
    for (r, before) in init_before.iter().enumerate() {
        let now = std::fs::read(sess.path().join(format!("init-stream{r}.m4s"))).unwrap();
        assert!(&now == before, "init-stream{r}.m4s was rewritten");
    }
    // Video: exactly the packets of the uninterrupted run, no overlap, no gap.
    let nums: Vec<u64> = (1..=5).collect();
    let v_whole = pts(&joined(whole.path(), 0, &nums), "0");
    let v_sess = pts(&joined(sess.path(), 0, &nums), "0");
    assert_eq!(
        v_sess
            .iter()
            .map(|p| (p.0 * 1000.0).round() as i64)
            .collect::<Vec<_>>(),
        v_whole
            .iter()
            .map(|p| (p.0 * 1000.0).round() as i64)
            .collect::<Vec<_>>(),
        "video of the resumed session differs from one uninterrupted run"
    );
    // Audio (re-encoded): strictly increasing, no gap over one AAC frame at the join.
    let a = pts(&joined(sess.path(), 1, &nums), "0");
    let frame = 1024.0 / 48000.0;
    for w in a.windows(2) {
        let step = w[1].0 - w[0].0;
        assert!(
            step > 0.0 && step < 2.0 * frame + 1e-3,
            "audio jumps from {} to {} s",
            w[0].0,
            w[1].0
        );
    }
    let joined_v = joined(sess.path(), 0, &nums);
    assert!(tk::decode_errors(&joined_v).trim().is_empty());

    // The continuation's MPDs list the whole session: startNumber 1, five video segments,
    // the earlier ones with their own times; the last one is static and lasts 10 s.
    let mpds: Vec<String> = cevs
        .iter()
        .filter_map(|e| match e {
            JobEvent::Manifest { body, .. } => Some(String::from_utf8_lossy(body).into_owned()),
            _ => None,
        })
        .collect();
    let last = mpds.last().expect("MPDs");
    assert!(last.contains("type=\"static\""), "{last}");
    assert!(
        last.contains("mediaPresentationDuration=\"PT10.0S\""),
        "{last}"
    );
    let video = &last[..last.find("contentType=\"audio\"").unwrap()];
    assert!(video.contains("startNumber=\"1\""), "{last}");
    // The whole session's video timeline: five 2 s segments from the first frame (the copied
    // stream keeps Matroska's 0.021 s start and the 16 kHz timescale).
    let timeline = if encode_video {
        "<S t=\"512\" d=\"25600\" r=\"4\" />"
    } else {
        "<S t=\"336\" d=\"32000\" r=\"4\" />"
    };
    assert!(video.contains(timeline), "{last}");
    for m in &mpds {
        assert!(!m.contains("startNumber=\"3\""), "{m}");
    }
}
