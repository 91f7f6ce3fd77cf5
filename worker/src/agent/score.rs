//! The worker's benchmark score (LOAD_RANK's "ops"): a short run of the real work at start, on
//! all cores, cached on disk, overridable with `WORKER_SCORE`.
//!
//! The score is frames per second of a 640x360 HDR-to-SDR transcode, made of two parts
//! measured separately and combined as a pipeline (`1 / (1/tonemap + 1/encode)`):
//! - the engine's CPU tonemap stage (the code jobs run, all cores) on a PQ test pattern;
//! - the engine itself encoding a short generated clip with libx264 (`veryfast`, what Plex
//!   asks for), decode and mux included.
//!
//! Unlike ClusterPlex's single-thread `cpu-benchmark`, a machine with twice the cores (or a
//! faster SIMD path) scores higher, so LOAD_RANK ranks real capacity.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use clusterplex_core::{
    ByStream, CancelToken, CodecChoice, Input, Job, Output, StreamSettings, StreamSpecifier,
};
use clusterplex_ffmpeg::tonemap::{
    Impl, OutputFormat, TonemapOptions, TonemapStage,
    image::{InputLayout, OwnedImage, Signal},
};

/// How long the tonemap part runs.
const TONEMAP_FOR: Duration = Duration::from_millis(400);
/// Frames the encode part transcodes.
const ENCODE_FRAMES: usize = 24;
const W: usize = 640;
const H: usize = 360;

/// The cache file for this binary on this CPU: a new release or another CPU measures again.
fn cache_file(cache_dir: &Path) -> PathBuf {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(str::to_string)
        })
        .unwrap_or_default();
    // FNV-1a: stable across builds (std's hasher is not promised to be).
    let hash = model.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    cache_dir.join(format!(
        "score-v2-{}-{hash:016x}-{}cpu",
        env!("CARGO_PKG_VERSION"),
        cores()
    ))
}

/// The cached score for this binary and CPU, or a fresh measurement (then cached).
pub fn cached_or_measure(cache_dir: &Path) -> f64 {
    let file = cache_file(cache_dir);
    if let Some(s) = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        && s.is_finite()
        && s > 0.0
    {
        return s;
    }
    let s = measure();
    if std::fs::create_dir_all(cache_dir)
        .and_then(|_| std::fs::write(&file, format!("{s}\n")))
        .is_err()
    {
        tracing::warn!(dir = %cache_dir.display(), "cannot cache the benchmark score");
    }
    s
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Measures the score now (about a second).
pub fn measure() -> f64 {
    let t0 = Instant::now();
    let tonemap = tonemap_fps();
    let score = match encode_fps() {
        Ok(encode) => 1.0 / (1.0 / tonemap + 1.0 / encode),
        Err(e) => {
            tracing::warn!("benchmark: the encode part failed ({e}); scoring tonemap only");
            tonemap
        }
    };
    tracing::info!(
        score,
        tonemap_fps = tonemap,
        took = ?t0.elapsed(),
        "benchmark score measured"
    );
    score.max(0.01)
}

/// Frames/s of the CPU tonemap stage (all cores) on a 640x360 PQ gradient.
pub fn tonemap_fps() -> f64 {
    let src = OwnedImage::new_input(W, H, InputLayout::Yuv420p10, |x, y| {
        (
            64 + ((x * 7 + y * 3) % 876) as u16,
            512 + (x % 64) as u16,
            512 - (y % 64) as u16,
        )
    });
    let opts = TonemapOptions {
        imp: Impl::Cpu,
        format: OutputFormat::Yuv420p,
        ..Default::default()
    };
    let Ok(mut stage) = TonemapStage::new(&opts) else {
        return 1.0;
    };
    let mut dst = OwnedImage::new_output(W, H, OutputFormat::Yuv420p);
    let start = Instant::now();
    let mut frames = 0u64;
    while start.elapsed() < TONEMAP_FOR {
        if stage
            .process_image(
                &src.src(InputLayout::Yuv420p10),
                &mut dst.dst(OutputFormat::Yuv420p),
                Signal::pq(),
            )
            .is_err()
        {
            break;
        }
        frames += 1;
    }
    std::hint::black_box(&dst);
    (frames as f64 / start.elapsed().as_secs_f64().max(1e-3)).max(1.0)
}

/// Frames/s of the engine transcoding a generated 640x360 clip to H.264 (veryfast).
pub fn encode_fps() -> Result<f64, String> {
    let dir = std::env::temp_dir().join(format!("clusterplex-score-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = encode_in(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn encode_in(dir: &Path) -> Result<f64, String> {
    // A raw YUV4MPEG2 clip: no encoder needed to make it, and the engine demuxes it natively.
    let input = dir.join("pattern.y4m");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).map_err(|e| e.to_string())?);
    let io = |e: std::io::Error| e.to_string();
    writeln!(f, "YUV4MPEG2 W{W} H{H} F24:1 Ip A1:1 C420jpeg").map_err(io)?;
    let mut frame = vec![128u8; W * H * 3 / 2];
    for n in 0..ENCODE_FRAMES {
        for y in 0..H {
            for x in 0..W {
                frame[y * W + x] = ((x + y + n * 5) % 220 + 16) as u8;
            }
        }
        f.write_all(b"FRAME\n").map_err(io)?;
        f.write_all(&frame).map_err(io)?;
    }
    f.flush().map_err(io)?;
    drop(f);
    let mut out = Output::new(dir.join("out.mp4").to_string_lossy(), Some("mp4"));
    out.streams.push(ByStream::new(
        StreamSpecifier::all(),
        StreamSettings {
            codec: Some(CodecChoice::Encoder("libx264".into())),
            preset: Some("veryfast".into()),
            ..Default::default()
        },
    ));
    let job = Job {
        inputs: vec![Input::new(input.to_string_lossy())],
        outputs: vec![out],
        working_dir: Some(dir.to_path_buf()),
        ..Default::default()
    };
    let start = Instant::now();
    let summary = clusterplex_ffmpeg::engine::Engine::new()
        .run(&job, &CancelToken::new(), &mut |_| {})
        .map_err(|e| e.to_string())?;
    let frames = summary.progress.frames.max(1);
    Ok(frames as f64 / start.elapsed().as_secs_f64().max(1e-3))
}

#[cfg(test)]
mod tests {
    #[test]
    fn measures_the_engine_and_caches_per_binary_and_cpu() {
        // The encode part really runs the engine (an error here would silently halve the
        // score's meaning).
        let enc = super::encode_fps().unwrap();
        assert!(enc > 0.0);
        assert!(super::tonemap_fps() > 1.0);
        let t = tempfile::tempdir().unwrap();
        let a = super::cached_or_measure(t.path());
        assert!(a > 0.0);
        // The second call reads the cache: exactly the same number.
        assert_eq!(super::cached_or_measure(t.path()), a);
        let file = super::cache_file(t.path());
        assert!(
            file.file_name()
                .unwrap()
                .to_string_lossy()
                .contains(env!("CARGO_PKG_VERSION"))
        );
        std::fs::write(&file, "42\n").unwrap();
        assert_eq!(super::cached_or_measure(t.path()), 42.0);
        // A cache written by another version is not used.
        std::fs::remove_file(&file).unwrap();
        std::fs::write(t.path().join("score-v1-2cpu"), "7\n").unwrap();
        assert_ne!(super::cached_or_measure(t.path()), 7.0);
    }
}
