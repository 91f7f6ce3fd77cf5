//! Jellyfin/Emby-style invocations that are not jobs: capability probes (`-version`,
//! `-encoders`, `-h filter=X`...) and the interactive keys on stdin.

use tokio::io::AsyncReadExt;

/// True for an argv that runs no job: no input at all (`-version`, `-encoders`, `-decoders`,
/// `-filters`, `-hwaccels`, `-muxers`, `-h ...`, `-init_hw_device` device probes, or nothing).
/// These go to the local transcoder untouched: its own output is what the caller must see.
pub fn is_capability_probe(args: &[String]) -> bool {
    !args.iter().any(|a| a == "-i")
}

/// The `-version` text when no local transcoder is installed. The first line matches
/// Jellyfin's check (`^ffmpeg version n?((?:[0-9]+\.?)+)`, at least 4.4); the library lines are
/// FFmpeg 5.1's, the libav the workers run, for Jellyfin's fallback check.
pub const VERSION_TEXT: &str = "\
ffmpeg version 5.1-clusterplex Copyright (c) 2000-2022 the FFmpeg developers
built for ClusterPlex: jobs run in-process on cluster workers
configuration: --clusterplex-shim
libavutil      57. 28.100 / 57. 28.100
libavcodec     59. 37.100 / 59. 37.100
libavformat    59. 27.100 / 59. 27.100
libavdevice    59.  7.100 / 59.  7.100
libavfilter     8. 44.100 /  8. 44.100
libswscale      6.  7.100 /  6.  7.100
libswresample   4.  7.100 /  4.  7.100
libpostproc    56.  6.100 / 56.  6.100
";

/// Answers a probe itself when no local transcoder exists; only `-version` can be answered
/// truthfully without one.
pub fn answer_without_transcoder(args: &[String]) -> Option<i32> {
    if args.iter().any(|a| a == "-version" || a == "--version") {
        print!("{VERSION_TEXT}");
        return Some(0);
    }
    None
}

/// Resolves when `q` arrives on stdin (ffmpeg's "quit" key, which Jellyfin sends to stop a
/// job). Never resolves when disabled, at end of input, or on a read error. Pause keys cannot
/// be relayed to a remote job (the protocol has no pause) and are ignored.
pub async fn quit_key(enabled: bool) {
    if enabled {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if buf[..n].contains(&b'q') {
                return;
            }
        }
    }
    std::future::pending::<()>().await
}
