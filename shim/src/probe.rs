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

/// What an interactive key on stdin asks of the job: ffmpeg's `q`, and the pause keys
/// Jellyfin's TranscodingThrottler writes (`p` for jellyfin-ffmpeg, else `c`; resumed with `u`
/// or a newline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Quit,
    Pause,
    Resume,
}

impl Key {
    pub fn of(byte: u8) -> Option<Self> {
        match byte {
            b'q' => Some(Key::Quit),
            b'p' | b'c' => Some(Key::Pause),
            b'u' | b'\n' | b'\r' => Some(Key::Resume),
            _ => None,
        }
    }
}

/// The shim's stdin, read by one task for the whole run, so that bytes read while a remote
/// job ran are not lost when a local transcoder takes over: a read cannot be cancelled, and a
/// second reader would miss what the first had pending.
pub struct StdinRelay {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
}

impl StdinRelay {
    /// Starts reading stdin (until end of input or an error).
    pub fn start() -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 256];
            while let Ok(n) = stdin.read(&mut buf).await {
                if n == 0 || tx.send(buf[..n].to_vec()).await.is_err() {
                    break;
                }
            }
        });
        Self { rx }
    }

    /// The next bytes; `None` at end of input.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        self.rx.recv().await
    }

    /// Interprets the interactive keys: pause and resume set `paused`; resolves when `q`
    /// arrives (Jellyfin's stop). Never resolves at end of input (a closed stdin is no request
    /// to stop).
    pub async fn keys(&mut self, paused: tokio::sync::watch::Sender<bool>) {
        while let Some(bytes) = self.next().await {
            for key in bytes.iter().filter_map(|b| Key::of(*b)) {
                match key {
                    Key::Quit => return,
                    Key::Pause => {
                        paused.send_replace(true);
                    }
                    Key::Resume => {
                        paused.send_replace(false);
                    }
                }
            }
        }
        std::future::pending::<()>().await
    }

    /// Copies what arrives on stdin to a local transcoder's stdin until either side ends,
    /// then closes it (the transcoder sees end of input, as if it had inherited ours).
    pub async fn forward(&mut self, mut to: tokio::process::ChildStdin) {
        use tokio::io::AsyncWriteExt;
        while let Some(bytes) = self.next().await {
            if to.write_all(&bytes).await.is_err() || to.flush().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jellyfin_keys() {
        // "q\n" is Jellyfin's stop: the q acts first.
        let keys: Vec<Key> = b"pucx\nq".iter().filter_map(|b| Key::of(*b)).collect();
        assert_eq!(
            keys,
            [Key::Pause, Key::Resume, Key::Pause, Key::Resume, Key::Quit]
        );
    }
}
