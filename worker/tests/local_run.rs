//! `clusterplex-worker run` as a real process: exit codes, output files, SIGINT.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use clusterplex_testkit as tk;

fn worker() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clusterplex-worker"));
    c.arg("run").env("CLUSTERPLEX_PROGRESS", "plain");
    c
}

#[test]
fn transcodes_like_ffmpeg_and_exits_zero() {
    let src = tk::h264_aac(320, 180, 2.0);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");
    let o = worker()
        .args(["--", "-y", "-i"])
        .arg(&src)
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-s",
            "160x90",
            "-c:a",
            "aac",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("done: 50 frames"), "{err}");
    let info = tk::probe(&out);
    assert_eq!(info.video().unwrap()["width"], 160);
    assert_eq!(tk::count_frames(&out, "v:0"), 50);
}

#[test]
fn hls_output_from_the_command_line() {
    let src = tk::h264_aac(320, 180, 2.0);
    let dir = tempfile::tempdir().unwrap();
    let o = worker()
        .current_dir(dir.path())
        .args(["-i"])
        .arg(&src)
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-f",
            "hls",
            "-hls_time",
            "1",
        ])
        .args(["-hls_playlist_type", "vod", "index.m3u8"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let pl = std::fs::read_to_string(dir.path().join("index.m3u8")).unwrap();
    assert!(
        pl.contains("index0.ts") && pl.contains("index1.ts") && pl.contains("#EXT-X-ENDLIST"),
        "{pl}"
    );
    assert!(err.contains("2 segments"), "{err}");
}

#[test]
fn missing_input_fails_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let o = worker()
        .args(["-i", "/nonexistent/in.mp4", "-c:v", "libx264"])
        .arg(dir.path().join("x.mp4"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("open_input") && err.contains("/nonexistent/in.mp4"),
        "{err}"
    );
}

#[test]
fn unknown_encoder_fails_naming_it() {
    let src = tk::h264_aac(320, 180, 2.0);
    let dir = tempfile::tempdir().unwrap();
    let o = worker()
        .args(["-i"])
        .arg(&src)
        .args(["-c:v", "h264_bogus"])
        .arg(dir.path().join("x.mp4"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("h264_bogus"), "{err}");
}

#[test]
fn no_arguments_is_usage_error() {
    let o = worker().output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("usage"));
}

#[test]
fn sigint_cancels_cleanly_with_exit_130() {
    let src = tk::h264_aac(1280, 720, 8.0);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("int.mkv");
    let child = worker()
        .args(["-i"])
        .arg(&src)
        .args(["-c:v", "libx264", "-preset", "medium", "-c:a", "aac"])
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it has written something.
    let t0 = std::time::Instant::now();
    while std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) < 50_000 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "job never started writing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let n = tk::count_frames(&out, "v:0");
    assert!(n > 0 && n < 200, "{n}");
    assert!(tk::decode_errors(&out).trim().is_empty());
}

/// HDR10 in, SDR out: both the `-vf tonemap=` form and Plex's `-filter_complex` form (which the
/// parser turns into a per-stream chain) must run ClusterPlex's tonemapper and tag BT.709.
#[test]
fn tonemaps_hdr10_to_bt709_from_vf_and_plex_filter_complex() {
    let src = tk::hevc_hdr10();
    let dir = tempfile::tempdir().unwrap();
    let forms: [&[&str]; 2] = [
        &["-vf", "tonemap=bt2390"],
        &[
            "-filter_complex",
            "[0:0]scale=w=320:h=180,format=p010,tonemap=mobius[0];[0]format=pix_fmts=yuv420p|nv12[1]",
            "-map",
            "[1]",
        ],
    ];
    for (n, form) in forms.iter().enumerate() {
        let out = dir.path().join(format!("out{n}.mp4"));
        let o = worker()
            .args(["--", "-i"])
            .arg(&src)
            .args(*form)
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-an"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{form:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let info = tk::probe(&out);
        let v = info.video().expect("a video stream");
        for (key, want) in [
            ("codec_name", "h264"),
            ("pix_fmt", "yuv420p"),
            ("color_primaries", "bt709"),
            ("color_transfer", "bt709"),
            ("color_space", "bt709"),
        ] {
            assert_eq!(v[key].as_str(), Some(want), "{form:?}: {key} in {v}");
        }
        assert_eq!(
            tk::count_frames(&out, "v:0"),
            tk::count_frames(&src, "v:0"),
            "{form:?}: every frame kept"
        );
    }
}
