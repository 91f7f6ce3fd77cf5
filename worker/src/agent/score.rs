//! The worker's benchmark score (LOAD_RANK's "ops"): measured once at start on all cores,
//! cached on disk, overridable with `WORKER_SCORE`.

use std::{
    path::Path,
    time::{Duration, Instant},
};

/// How long the measurement runs.
const MEASURE_FOR: Duration = Duration::from_millis(250);

/// The cached score for this machine, or a fresh measurement (then cached).
pub fn cached_or_measure(cache_dir: &Path) -> f64 {
    let key = format!("score-v1-{}cpu", cores());
    let file = cache_dir.join(key);
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

/// Measures for about a quarter of a second on every core: a pixel-processing kernel shaped
/// like the tonemap/scale work (per-pixel float math over a 320x180 frame). The score is
/// frames per second over all cores, so a machine with twice the cores scores twice as high
/// (unlike ClusterPlex's single-thread `cpu-benchmark`).
pub fn measure() -> f64 {
    let n = cores();
    let start = Instant::now();
    let frames: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                s.spawn(move || {
                    let mut frame: Vec<f32> = (0..320 * 180)
                        .map(|p| ((p + i) % 1024) as f32 / 1023.0)
                        .collect();
                    let mut count = 0u64;
                    while start.elapsed() < MEASURE_FOR {
                        for v in frame.iter_mut() {
                            // Reinhard-like curve and a gamma step.
                            let x = *v * 4.0;
                            *v = (x / (1.0 + x)).sqrt();
                        }
                        count += 1;
                    }
                    std::hint::black_box(&frame);
                    count
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    let secs = start.elapsed().as_secs_f64().max(1e-3);
    (frames as f64 / secs).max(1.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn measures_and_caches() {
        let t = tempfile::tempdir().unwrap();
        let a = super::cached_or_measure(t.path());
        assert!(a > 0.0);
        // The second call reads the cache: exactly the same number.
        assert_eq!(super::cached_or_measure(t.path()), a);
        std::fs::write(
            t.path().join(format!("score-v1-{}cpu", super::cores())),
            "42\n",
        )
        .unwrap();
        assert_eq!(super::cached_or_measure(t.path()), 42.0);
    }
}
