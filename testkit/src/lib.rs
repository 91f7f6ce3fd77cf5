//! Test fixtures for ClusterPlex: real media generated with the `ffmpeg` CLI at test time, and
//! `ffprobe` helpers that return parsed JSON.
//!
//! Fixtures are cached under `<workspace>/target/fixtures/` (override with
//! `CLUSTERPLEX_FIXTURES_DIR`), keyed by a hash of the generating command, so the first test
//! that needs one pays for it and every later test (or run) reuses it. Generation writes to a
//! unique temporary name and renames it into place, so parallel tests are safe.
//!
//! ```no_run
//! let src = clusterplex_testkit::h264_aac(320, 180, 2.0);
//! let info = clusterplex_testkit::probe(&src);
//! assert_eq!(info.video().unwrap()["codec_name"], "h264");
//! ```
//!
//! Test helpers panic with a clear message on failure (they are only used from tests).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU64, Ordering},
};

use serde_json::Value;

pub mod process;

/// Directory fixtures are cached in.
pub fn fixtures_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CLUSTERPLEX_FIXTURES_DIR") {
        return PathBuf::from(d);
    }
    // testkit lives one level below the workspace root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    root.join("target").join("fixtures")
}

/// A stable 64-bit FNV-1a hash (std's hasher is not stable across Rust releases).
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary path in `dir` for `file`, unique per process and call, so parallel tests never
/// write the same file; it keeps `file`'s extension, from which ffmpeg picks the format.
fn tmp_path(dir: &Path, file: &str) -> PathBuf {
    dir.join(format!(
        ".tmp-{}-{}-{file}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes `bytes` as `file` in the fixtures directory unless it is there already (the name
/// carries a content hash), through [`tmp_path`] and a rename so no reader sees a partial file.
fn write_fixture(file: &str, bytes: &[u8]) -> PathBuf {
    let dir = fixtures_dir();
    std::fs::create_dir_all(&dir).expect("create fixtures dir");
    let path = dir.join(file);
    if !path.exists() {
        let tmp = tmp_path(&dir, file);
        std::fs::write(&tmp, bytes).expect("write fixture");
        std::fs::rename(&tmp, &path).expect("rename fixture into place");
    }
    path
}

/// Runs `ffmpeg -y <args> <out>` once and caches the result as `<name>-<hash>.<ext>`.
/// `args` must not contain the output path; it is appended. Returns the cached path.
pub fn generate(name: &str, ext: &str, args: &[&str]) -> PathBuf {
    let dir = fixtures_dir();
    std::fs::create_dir_all(&dir).expect("create fixtures dir");
    let mut key: Vec<&str> = vec![name, ext];
    key.extend_from_slice(args);
    let path = dir.join(format!("{name}-{:016x}.{ext}", fnv(&key)));
    if path.exists() {
        return path;
    }
    let tmp = tmp_path(&dir, &format!("{name}.{ext}"));
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(args)
        .arg(&tmp)
        .output()
        .expect("run ffmpeg (is it installed?)");
    assert!(
        out.status.success(),
        "ffmpeg failed generating {name}: {}\nargs: {args:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &path).expect("rename fixture into place");
    path
}

/// H.264 (yuv420p, 25 fps, keyframe every second) + stereo AAC in mp4, `secs` long.
pub fn h264_aac(width: u32, height: u32, secs: f64) -> PathBuf {
    h264_aac_fps(width, height, secs, 25)
}

/// Like [`h264_aac`] with a chosen frame rate.
pub fn h264_aac_fps(width: u32, height: u32, secs: f64, fps: u32) -> PathBuf {
    let v = format!("testsrc2=size={width}x{height}:rate={fps}");
    let g = format!("{fps}");
    let args = lavfi_h264_aac(
        &v,
        secs,
        "ultrafast",
        &[
            "-pix_fmt",
            "yuv420p",
            "-g",
            &g,
            "-c:a",
            "aac",
            "-b:a",
            "96k",
            "-movflags",
            "+faststart",
        ],
    );
    generate(
        &format!("h264-aac-{width}x{height}-{fps}"),
        "mp4",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

/// The bench source: 1080p25 H.264 (x264 medium-ish quality, like a real file) + AAC.
pub fn h264_aac_1080p(secs: f64) -> PathBuf {
    let args = lavfi_h264_aac(
        "testsrc2=size=1920x1080:rate=25",
        secs,
        "veryfast",
        &[
            "-b:v", "8M", "-pix_fmt", "yuv420p", "-g", "50", "-c:a", "aac", "-b:a", "128k",
        ],
    );
    generate(
        "h264-aac-1080p",
        "mp4",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

/// Arguments for an H.264 + stereo AAC clip from a lavfi `video` source and a 440 Hz tone,
/// `secs` long, x264 at `preset`; `tail` adds rate control, audio and container flags.
fn lavfi_h264_aac(video: &str, secs: f64, preset: &str, tail: &[&str]) -> Vec<String> {
    let t = format!("{secs}");
    let mut args = lavfi_inputs(&[video, "sine=frequency=440:sample_rate=48000"]);
    args.extend([
        "-t", &t, "-map", "0:v", "-map", "1:a", "-ac", "2", "-c:v", "libx264", "-preset", preset,
    ]);
    args.iter().chain(tail).map(|a| a.to_string()).collect()
}

/// `-f lavfi -i <source>` for each of `sources` in order: ffmpeg's generated test inputs.
fn lavfi_inputs<'a>(sources: &[&'a str]) -> Vec<&'a str> {
    sources
        .iter()
        .flat_map(|s| ["-f", "lavfi", "-i", *s])
        .collect()
}

/// HEVC Main10 HDR10 (PQ, BT.2020) with mastering-display and MaxCLL/MaxFALL SEI, 2 s,
/// 640x360, mkv. Colour tags are also set on the container.
pub fn hevc_hdr10() -> PathBuf {
    generate(
        "hevc-hdr10",
        "mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25",
            "-t",
            "2",
            "-vf",
            "format=yuv420p10le",
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=error:hdr10=1:repeat-headers=1:colorprim=bt2020:transfer=smpte2084:\
colormatrix=bt2020nc:master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):\
max-cll=1000,400",
            "-color_primaries",
            "bt2020",
            "-color_trc",
            "smpte2084",
            "-colorspace",
            "bt2020nc",
            "-color_range",
            "tv",
        ],
    )
}

/// mkv with H.264 video, two audio tracks (stereo `eng`, 5.1 `fre`) and an ASS subtitle track,
/// `secs` long at 320x180.
pub fn multi_audio_ass_mkv(secs: f64) -> PathBuf {
    let ass = ass_file();
    let t = format!("{secs}");
    let ass_s = ass.to_string_lossy().to_string();
    let mut args = lavfi_inputs(&[
        "testsrc2=size=320x180:rate=25",
        "sine=frequency=440:sample_rate=48000",
        "sine=frequency=660:sample_rate=48000",
    ]);
    args.extend([
        "-i",
        &ass_s,
        "-t",
        &t,
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-map",
        "2:a",
        "-map",
        "3:s",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-ac:a:0",
        "2",
        "-ac:a:1",
        "6",
        "-metadata:s:a:0",
        "language=eng",
        "-metadata:s:a:1",
        "language=fre",
        "-c:s",
        "ass",
    ]);
    generate("multi-audio-ass", "mkv", &args)
}

/// A small ASS subtitle file with a few events in the first seconds.
pub fn ass_file() -> PathBuf {
    let body = "[Script Info]\nScriptType: v4.00+\nPlayResX: 320\nPlayResY: 180\n\n\
[V4+ Styles]\nFormat: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, \
BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, \
Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n\
Style: Default,Arial,16,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,1\n\n\
[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n\
Dialogue: 0,0:00:00.20,0:00:00.90,Default,,0,0,0,,First line\n\
Dialogue: 0,0:00:01.10,0:00:01.80,Default,,0,0,0,,Second line\n\
Dialogue: 0,0:00:02.10,0:00:02.80,Default,,0,0,0,,Third line\n";
    write_fixture(&format!("subs-{:016x}.ass", fnv(&[body])), body.as_bytes())
}

/// A 2 s 320x180 H.264 clip (no audio) in container `ext`, cached as `name`: the source the
/// broken-file fixtures are cut from.
fn h264_video_only(name: &str, ext: &str) -> PathBuf {
    generate(
        name,
        ext,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=25",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    )
}

/// The first 40% of an H.264/AAC mp4 without `+faststart` (so the moov atom is missing):
/// libavformat cannot open it. Also see [`corrupt_ts`].
pub fn truncated_mp4() -> PathBuf {
    let src = h264_video_only("h264-aac-nofaststart", "mp4");
    cut_file(&src, "truncated", 0.4, false)
}

/// An MPEG-TS whose second half is overwritten with garbage: opens, then fails or yields
/// decode errors part-way.
pub fn corrupt_ts() -> PathBuf {
    let src = h264_video_only("h264-ts", "ts");
    cut_file(&src, "corrupt", 0.5, true)
}

fn cut_file(src: &Path, name: &str, keep: f64, garbage: bool) -> PathBuf {
    let data = std::fs::read(src).expect("read fixture");
    let n = (data.len() as f64 * keep) as usize;
    let mut out = data[..n].to_vec();
    if garbage {
        // Deterministic pseudo-random bytes, so the fixture is stable.
        let mut x: u32 = 0x1234_5678;
        for _ in n..data.len() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.push(x as u8);
        }
    }
    let file = format!(
        "{name}-{:016x}.{}",
        fnv(&[&src.to_string_lossy(), name, &garbage.to_string()]),
        src.extension().and_then(|e| e.to_str()).unwrap_or("bin")
    );
    write_fixture(&file, &out)
}

/// Parsed `ffprobe -show_format -show_streams` output.
#[derive(Debug, Clone)]
pub struct ProbeInfo {
    pub json: Value,
}

impl ProbeInfo {
    /// All streams.
    pub fn streams(&self) -> Vec<&Value> {
        self.json["streams"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }

    /// Streams of one `codec_type` (`video`, `audio`, `subtitle`).
    pub fn of_type(&self, kind: &str) -> Vec<&Value> {
        self.streams()
            .into_iter()
            .filter(|s| s["codec_type"] == kind)
            .collect()
    }

    /// The first video stream.
    pub fn video(&self) -> Option<&Value> {
        self.of_type("video").into_iter().next()
    }

    /// The first audio stream.
    pub fn audio(&self) -> Option<&Value> {
        self.of_type("audio").into_iter().next()
    }

    /// Container duration in seconds.
    pub fn duration(&self) -> Option<f64> {
        self.json["format"]["duration"]
            .as_str()
            .and_then(|s| s.parse().ok())
    }

    /// Container start time in seconds.
    pub fn start_time(&self) -> Option<f64> {
        self.json["format"]["start_time"]
            .as_str()
            .and_then(|s| s.parse().ok())
    }

    /// `format_name` (e.g. `mov,mp4,m4a,3gp,3g2,mj2`).
    pub fn format_name(&self) -> String {
        self.json["format"]["format_name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Reads a numeric field that ffprobe prints as a string or a number.
pub fn num(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// `ffprobe -of json <args> <path>`; the error is ffprobe's stderr, or why it did not run or
/// print JSON.
fn try_ffprobe(args: &[&str], path: &Path) -> Result<Value, String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(path)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn ffprobe(args: &[&str], path: &Path) -> Value {
    try_ffprobe(args, path).unwrap_or_else(|e| panic!("ffprobe failed on {}: {e}", path.display()))
}

/// Probes format and streams. Panics (with ffprobe's message) when ffprobe cannot read it.
pub fn probe(path: &Path) -> ProbeInfo {
    ProbeInfo {
        json: ffprobe(&["-show_format", "-show_streams"], path),
    }
}

/// Like [`probe`] but returns ffprobe's stderr on failure instead of panicking.
pub fn try_probe(path: &Path) -> Result<ProbeInfo, String> {
    try_ffprobe(&["-show_format", "-show_streams"], path).map(|json| ProbeInfo { json })
}

/// Number of decoded frames of the streams selected by `select` (`v:0`, `a:0`).
pub fn count_frames(path: &Path, select: &str) -> u64 {
    let v = ffprobe(
        &[
            "-count_frames",
            "-select_streams",
            select,
            "-show_entries",
            "stream=nb_read_frames",
        ],
        path,
    );
    v["streams"][0]["nb_read_frames"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no frame count for {select} in {}", path.display()))
}

/// Per-frame info (`pts_time`, `key_frame`, `pict_type`...) of the selected stream.
pub fn frames(path: &Path, select: &str) -> Vec<Value> {
    let v = ffprobe(
        &[
            "-select_streams",
            select,
            "-show_entries",
            "frame=pts_time,best_effort_timestamp_time,key_frame,pict_type,color_primaries,color_transfer,color_space,width,height",
        ],
        path,
    );
    v["frames"].as_array().cloned().unwrap_or_default()
}

/// Per-packet info (`pts_time`, `dts_time`, `duration_time`, `flags`) of the selected stream.
pub fn packets(path: &Path, select: &str) -> Vec<Value> {
    let v = ffprobe(
        &[
            "-select_streams",
            select,
            "-show_entries",
            "packet=pts_time,dts_time,duration_time,flags",
        ],
        path,
    );
    v["packets"].as_array().cloned().unwrap_or_default()
}

/// Decodes the whole file with `ffmpeg -f null` and returns stderr lines at `error` level
/// (empty means it decodes cleanly).
pub fn decode_errors(path: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let mut s = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        s.push_str("\n(ffmpeg exit failure)");
    }
    s
}

/// A 320x180 `testsrc2` clip, `secs` long at `fps`, in container `ext` (`mkv`, `mp4`), video
/// encoded with `video` (e.g. `["-c:v", "libx265", "-preset", "ultrafast"]`; a keyframe every
/// second is added), one sine-tone audio track per `(codec, channels)` in `audio` (440, 660…
/// Hz, `eng` first then `fre`), and the [`ass_file`] subtitles as the last stream when `ass`.
/// For end-to-end tests that need the stream layout of a real command line.
pub fn av_clip(
    ext: &str,
    secs: f64,
    fps: u32,
    video: &[&str],
    audio: &[(&str, u32)],
    ass: bool,
) -> PathBuf {
    let t = format!("{secs}");
    let g = format!("{fps}");
    let mut args: Vec<String> = vec![
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        format!("testsrc2=size=320x180:rate={fps}"),
    ];
    for (i, _) in audio.iter().enumerate() {
        args.extend([
            "-f".into(),
            "lavfi".into(),
            "-i".into(),
            format!("sine=frequency={}:sample_rate=48000", 440 + 220 * i),
        ]);
    }
    if ass {
        args.extend(["-i".into(), ass_file().to_string_lossy().into_owned()]);
    }
    args.extend(["-t".into(), t, "-map".into(), "0:v".into()]);
    for i in 0..audio.len() {
        args.extend(["-map".into(), format!("{}:a", i + 1)]);
    }
    if ass {
        args.extend(["-map".into(), format!("{}:s", audio.len() + 1)]);
    }
    args.extend(video.iter().map(|a| a.to_string()));
    args.extend(["-g".into(), g, "-pix_fmt".into(), "yuv420p".into()]);
    for (i, (codec, channels)) in audio.iter().enumerate() {
        let lang = if i == 0 { "eng" } else { "fre" };
        args.extend([
            format!("-c:a:{i}"),
            codec.to_string(),
            format!("-ac:a:{i}"),
            channels.to_string(),
            format!("-metadata:s:a:{i}"),
            format!("language={lang}"),
        ]);
    }
    if ass {
        args.extend(["-c:s".into(), "ass".into()]);
    }
    generate(
        &format!("clip-{}a{}", audio.len(), if ass { "-ass" } else { "" }),
        ext,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

/// A small SubRip sidecar (what Plex hands the transcoder as `temp-0.srt`), three cues in the
/// first 3 s.
pub fn srt_file() -> PathBuf {
    let body = "1\n00:00:00,200 --> 00:00:00,900\nFirst line\n\n\
2\n00:00:01,100 --> 00:00:01,800\nSecond line\n\n\
3\n00:00:02,100 --> 00:00:02,800\nThird line\n";
    write_fixture(&format!("subs-{:016x}.srt", fnv(&[body])), body.as_bytes())
}

/// The output half of Plex's DASH playback argv (as PMS 1.40 sends it for a direct-stream
/// session): video stream 0 with `video` as its codec options (`["copy"]` or an encoder and its
/// options), audio stream 1 as AAC 128k, 2 s DASH segments with Plex's names, a window of 5
/// that keeps every chunk, starting at chunk `skip_to_segment`. Callers add their own input
/// options before it and any extra output options plus the target (`dash`) after it.
pub fn plex_dash_outputs(video: &[&str], skip_to_segment: u64) -> Vec<String> {
    let skip = skip_to_segment.to_string();
    let mut a: Vec<&str> = vec!["-map", "0:0", "-codec:0"];
    a.extend_from_slice(video);
    a.extend_from_slice(&[
        "-map",
        "0:1",
        "-codec:1",
        "aac",
        "-b:1",
        "128k",
        "-f",
        "dash",
        "-seg_duration",
        "2",
        "-dash_segment_type",
        "mp4",
        "-init_seg_name",
        "init-stream$RepresentationID$.m4s",
        "-media_seg_name",
        "chunk-stream$RepresentationID$-$Number%05d$.m4s",
        "-window_size",
        "5",
        "-delete_removed",
        "false",
        "-skip_to_segment",
        &skip,
        "-avoid_negative_ts",
        "disabled",
    ]);
    a.into_iter().map(String::from).collect()
}
