//! Continuations (a session carried on after its transcoder was lost, `Job::resume_at`) on
//! real media: stream-copied packets before the resume point are dropped the way ffmpeg 5.1
//! drops them with `-copypriorss 0` (checked against the `ffmpeg` CLI on the same input), with
//! half a frame of tolerance; a DASH session resumed from the reported end of its last
//! segment joins the earlier segments exactly (same packets as one uninterrupted run), keeps
//! the session's init segments and keeps listing the earlier segments in its MPD; so does a
//! Jellyfin HLS session (fMP4 and MPEG-TS) with its playlist.

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

/// Re-encoded AAC (48 kHz) across a join: strictly increasing, no gap over one frame.
fn assert_audio_continuous(a: &[(f64, bool)]) {
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
    let a = pts(&joined(sess.path(), 1, &nums), "0");
    assert_audio_continuous(&a);
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

/// Jellyfin's HLS playback argv (the shape of its `DynamicHlsController` command lines,
/// trimmed to what matters here) writing `abc.m3u8`, `abc-1.mp4` (fMP4) and `abc<N>.mp4` /
/// `abc<N>.ts` into `dir`; the video encoded (keyframes forced every 2 s, as Jellyfin forces
/// them) or copied.
fn jellyfin_hls(src: &Path, dir: &Path, encode_video: bool, fmp4: bool) -> Job {
    let d = dir.to_string_lossy();
    let mut args = strings(&[
        "-analyzeduration",
        "200M",
        "-probesize",
        "1G",
        "-fflags",
        "+genpts",
        "-i",
        &format!("file:{}", src.to_string_lossy()),
        "-map_metadata",
        "-1",
        "-map_chapters",
        "-1",
        "-threads",
        "0",
        "-map",
        "0:0",
        "-map",
        "0:1",
        "-map",
        "-0:s",
    ]);
    if encode_video {
        args.extend(strings(&[
            "-codec:v:0",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "23",
            "-maxrate",
            "2000000",
            "-bufsize",
            "4000000",
            "-profile:v:0",
            "high",
            "-force_key_frames:0",
            "expr:gte(t,n_forced*2)",
            "-sc_threshold:v:0",
            "0",
            "-vf",
            "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709,scale=trunc(min(max(iw\\,ih*a)\\,320)/2)*2:trunc(ow/a/2)*2,format=yuv420p",
        ]));
    } else {
        args.extend(strings(&["-codec:v:0", "copy", "-start_at_zero"]));
    }
    args.extend(strings(&[
        "-codec:a:0",
        "aac",
        "-ac",
        "2",
        "-ab",
        "128000",
        "-copyts",
        "-avoid_negative_ts",
        "disabled",
        "-max_muxing_queue_size",
        "2048",
        "-f",
        "hls",
        "-max_delay",
        "5000000",
        "-hls_time",
        "2",
    ]));
    if fmp4 {
        args.extend(strings(&[
            "-hls_segment_type",
            "fmp4",
            "-hls_fmp4_init_filename",
            "abc-1.mp4",
        ]));
    } else {
        args.extend(strings(&["-hls_segment_type", "mpegts"]));
    }
    let ext = if fmp4 { "mp4" } else { "ts" };
    args.extend(strings(&[
        "-start_number",
        "0",
        "-hls_segment_filename",
        &format!("{d}/abc%d.{ext}"),
        "-hls_playlist_type",
        "vod",
        "-hls_list_size",
        "0",
        "-y",
        &format!("{d}/abc.m3u8"),
    ]));
    parse_args(&args).unwrap().job
}

/// The segment URIs of a playlist, its `#EXT-X-MEDIA-SEQUENCE`, its `#EXT-X-MAP` lines and its
/// `#EXTINF` durations.
fn playlist(body: &str) -> (Vec<String>, u64, Vec<String>, Vec<f64>) {
    let uris = body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let seq = body
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a media sequence");
    let maps = body
        .lines()
        .filter(|l| l.starts_with("#EXT-X-MAP:"))
        .map(str::to_string)
        .collect();
    let durs = body
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|v| v.trim_end_matches(',').parse().unwrap())
        .collect();
    (uris, seq, maps, durs)
}

/// The init segment (fMP4) and the playlist's segments, in playlist order, as one file.
fn joined_hls(dir: &Path, fmp4: bool) -> PathBuf {
    joined_hls_upto(dir, fmp4, u64::MAX)
}

/// [`joined_hls`] of the segments numbered up to `last` (numbers from 0).
fn joined_hls_upto(dir: &Path, fmp4: bool, last: u64) -> PathBuf {
    let body = std::fs::read_to_string(dir.join("abc.m3u8")).unwrap();
    let mut data = if fmp4 {
        std::fs::read(dir.join("abc-1.mp4")).unwrap()
    } else {
        Vec::new()
    };
    for uri in playlist(&body)
        .0
        .iter()
        .take(last.saturating_add(1) as usize)
    {
        data.extend(std::fs::read(dir.join(uri)).unwrap());
    }
    let ext = if fmp4 { "mp4" } else { "ts" };
    let p = dir.join(format!("joined-{last}.{ext}"));
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn hls_fmp4_continuation_with_copied_video_joins_exactly() {
    hls_continuation(false, true);
}

#[test]
fn hls_fmp4_continuation_with_encoded_video_joins_exactly() {
    hls_continuation(true, true);
}

#[test]
fn hls_mpegts_continuation_with_copied_video_joins_exactly() {
    hls_continuation(false, false);
}

#[test]
fn hls_mpegts_continuation_with_encoded_video_joins_exactly() {
    hls_continuation(true, false);
}

/// A Jellyfin HLS session cancelled after its segment 2 and resumed at segment 3 from the
/// reported end of segment 2 joins exactly: its playlist lists every segment once, and the
/// segments joined in playlist order (after the init segment for fMP4) carry the video packets
/// of one uninterrupted run and audio without gap or overlap.
fn hls_continuation(encode_video: bool, fmp4: bool) {
    let src = clip();
    // The uninterrupted session.
    let whole = tempfile::tempdir().unwrap();
    let job = jellyfin_hls(&src, whole.path(), encode_video, fmp4);
    let evs = run(&job);
    let segs = segment_infos(&evs);
    assert!(segs.len() >= 5, "{segs:?}");
    assert_eq!(segs[0].number, 0);
    let whole_list = std::fs::read_to_string(whole.path().join("abc.m3u8")).unwrap();
    let (whole_uris, ..) = playlist(&whole_list);

    // The same session cancelled once its segment 2 is reported (the trailer then writes a
    // cut segment 3 and a final playlist, which a continuation must replace).
    let sess = tempfile::tempdir().unwrap();
    let job = jellyfin_hls(&src, sess.path(), encode_video, fmp4);
    let cancel = CancelToken::new();
    let mut reported = Vec::new();
    let r = Engine::new().run(&job, &cancel, &mut |e| {
        if let JobEvent::SegmentWritten(s) = &e
            && !cancel.is_cancelled()
        {
            reported.push(s.clone());
            if s.number == 2 {
                cancel.cancel();
            }
        }
    });
    assert!(r.is_err(), "the first job was not cancelled");
    let last = reported.last().expect("segments reported").clone();
    assert_eq!(last.number, 2, "{reported:?}");
    let init_before = std::fs::read(sess.path().join("abc-1.mp4")).ok();
    assert_eq!(init_before.is_some(), fmp4);

    // The orchestrator resumes at the next segment from the reported end of the last one.
    let cont = job
        .resume_at(last.number + 1, last.end - job.output_origin())
        .unwrap();
    let cevs = run(&cont);
    let csegs = segment_infos(&cevs);
    assert_eq!(csegs.first().map(|s| s.number), Some(3), "{csegs:?}");
    let now = std::fs::read(sess.path().join("abc-1.mp4")).ok();
    assert!(now == init_before, "the init segment was rewritten");

    // The playlist lists every segment once, in order, as the uninterrupted run's does.
    let list = std::fs::read_to_string(sess.path().join("abc.m3u8")).unwrap();
    let (uris, seq, maps, durs) = playlist(&list);
    assert_eq!(uris, whole_uris, "{list}");
    assert_eq!(seq, 0, "{list}");
    let map: &[&str] = if fmp4 {
        &["#EXT-X-MAP:URI=\"abc-1.mp4\""]
    } else {
        &[]
    };
    assert_eq!(maps, map, "{list}");
    let total: f64 = durs.iter().sum();
    assert!(
        (total - 10.0).abs() < 0.1,
        "segments last {total} s: {list}"
    );
    assert!(list.trim_end().ends_with("#EXT-X-ENDLIST"), "{list}");
    // Every playlist the continuation published lists the earlier segments too.
    for e in &cevs {
        if let JobEvent::Manifest { body, .. } = e {
            let body = String::from_utf8_lossy(body);
            assert!(body.contains("\nabc0."), "{body}");
        }
    }

    // Fragment sequence numbers (`mfhd`) count on across the join.
    let seqs: Vec<u32> = uris
        .iter()
        .filter(|_| fmp4)
        .map(|u| {
            let data = std::fs::read(sess.path().join(u)).unwrap();
            let at = data.windows(4).position(|w| w == b"mfhd").unwrap() + 8;
            u32::from_be_bytes(data[at..at + 4].try_into().unwrap())
        })
        .collect();
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "mfhd sequence numbers {seqs:?}");
    }

    // init + segments in playlist order: the video packets of the uninterrupted run, each
    // frame once, one frame duration apart across the join.
    let joined = joined_hls(sess.path(), fmp4);
    let whole_joined = joined_hls(whole.path(), fmp4);
    let ms = |p: &[(f64, bool)]| -> Vec<i64> {
        p.iter().map(|x| (x.0 * 1000.0).round() as i64).collect()
    };
    let v = pts(&joined, "v:0");
    let (ours, one_run) = (ms(&v), ms(&pts(&whole_joined, "v:0")));
    if ours != one_run {
        let i = ours
            .iter()
            .zip(&one_run)
            .take_while(|(a, b)| a == b)
            .count();
        let around = |x: &[i64]| x[i.saturating_sub(3)..(i + 3).min(x.len())].to_vec();
        panic!(
            "video of the resumed session differs from one uninterrupted run at packet {i} \
             (of {} / {}): {:?} vs {:?}",
            ours.len(),
            one_run.len(),
            around(&ours),
            around(&one_run)
        );
    }
    let mut sorted = ms(&v);
    sorted.sort();
    for w in sorted.windows(2) {
        assert_eq!(w[1] - w[0], 40, "video frames {} -> {} ms", w[0], w[1]);
    }
    // The continuation starts with a keyframe, one frame after the earlier job's last one
    // (the sorted check above); in fMP4 at the end the earlier job reported for its last
    // segment (MPEG-TS adds the muxer's delay to the file's timeline).
    let earlier = joined_hls_upto(sess.path(), fmp4, last.number);
    let n = pts(&earlier, "v:0").len();
    assert!(
        v[n].1,
        "the continuation starts on a non-keyframe: {:?}",
        &v[n - 1..n + 2]
    );
    if fmp4 {
        assert!(
            (v[n].0 - last.end).abs() < 1e-3,
            "{:?} vs {}",
            v[n],
            last.end
        );
    }
    let a = pts(&joined, "a:0");
    assert_audio_continuous(&a);
    assert!((a.last().unwrap().0 - a[0].0 - 10.0).abs() < 0.1, "{a:?}");
    assert!(tk::decode_errors(&joined).trim().is_empty());
}
