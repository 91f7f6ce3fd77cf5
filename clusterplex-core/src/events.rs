//! What a running job reports, and how it is cancelled, paused or throttled. Shared by the
//! engine (which emits), the worker (which forwards over gRPC) and the shim (which acts on
//! them).

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use serde::{Deserialize, Serialize};

/// Progress of a running job, as ffmpeg prints it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Video frames encoded (or packets copied) so far, over all outputs.
    pub frames: u64,
    /// Frames per second since the job started.
    pub fps: f64,
    /// Output position in seconds (the furthest output stream).
    pub out_time: f64,
    /// `out_time` / wall time.
    pub speed: f64,
    /// Bytes written to all outputs.
    pub bytes: u64,
    /// Input duration in seconds when known, for percentages.
    pub duration: Option<f64>,
}

impl Progress {
    /// Percentage done, when the duration is known.
    pub fn percent(&self) -> Option<f64> {
        self.duration
            .filter(|d| *d > 0.0)
            .map(|d| (self.out_time / d * 100.0).clamp(0.0, 100.0))
    }
}

/// A finished segment of a segmented output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentInfo {
    /// Output index in the job.
    pub output: usize,
    /// Segment number (starts at the output's start number).
    pub number: u64,
    /// Files written for this segment (one per representation for DASH).
    pub paths: Vec<PathBuf>,
    /// Start and end time in seconds on the output timeline.
    pub start: f64,
    pub end: f64,
}

/// One probed input stream, as Plex's `stream` / `streamDetail` callbacks describe it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InputStream {
    /// Input index in the job.
    pub input: usize,
    /// Stream index within that input.
    pub index: usize,
    /// Container stream id (MPEG-TS PID, Matroska track number), 0 when the container has none.
    pub id: u64,
    /// `video`, `audio`, `subtitle`, ...
    pub kind: String,
    /// Codec name as libavcodec names it (`hevc`, `aac`).
    pub codec: String,
    /// The remaining `streamDetail` keys in order (`width`, `height`, `channels`, `language`,
    /// `disp_default`...), values already formatted as the transcoder prints them.
    #[serde(default)]
    pub details: Vec<(String, String)>,
}

/// Events a job emits while it runs, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    /// Inputs opened and probed; per-stream facts Plex wants (`stream`, `streamDetail`).
    Started {
        /// Input duration in seconds, if known.
        duration: Option<f64>,
        /// Size of the first output video stream.
        video_size: Option<(u32, u32)>,
        /// Every audio and video stream of every input, as probed (Plex's `stream` and
        /// `streamDetail` callbacks are made from these).
        #[serde(default)]
        input_streams: Vec<InputStream>,
    },
    Progress(Progress),
    SegmentWritten(SegmentInfo),
    /// A manifest (DASH MPD, HLS playlist, segment list) was (re)written. `target` is where it
    /// must go (a path it was written to, or a URL the caller must deliver it to).
    Manifest {
        output: usize,
        target: String,
        content_type: String,
        body: Vec<u8>,
        /// The last write of this manifest (DASH: `type="static"`).
        last: bool,
    },
    /// A log line for the session log (Plex's `-loglevel_plex` channel).
    Log {
        level: LogLevel,
        message: String,
    },
}

/// Log levels as Plex numbers them (0 = error ... 4 = debug).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Error = 0,
    Warning = 1,
    Info = 2,
    Verbose = 3,
    Debug = 4,
}

/// Final summary of a successful job.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct JobSummary {
    pub progress: Progress,
    /// Wall time in seconds.
    pub elapsed: f64,
    /// Segments written, per output.
    pub segments: Vec<u64>,
    /// Input packets read while throttled (each one after a 100 ms sleep, as Plex's
    /// transcoder does while PMS answers progress with `canThrottle`).
    #[serde(default)]
    pub throttled_packets: u64,
    /// Milliseconds the job spent paused (no input read).
    #[serde(default)]
    pub paused_ms: u64,
}

#[derive(Debug, Default)]
struct Control {
    cancelled: AtomicBool,
    throttled: AtomicBool,
    paused: AtomicBool,
}

/// A running job's control handle: cheap to clone, shared by whoever may steer the job. The
/// engine polls it between packets and frames. Besides cancel it carries two pacing flags:
/// *throttle* (Plex's `canThrottle`: sleep 100 ms before each input packet) and *pause*
/// (Jellyfin's `p` key: read nothing until resumed). Cancel wins over both.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<Control>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Acquire)
    }

    /// Turns Plex-style throttling on or off.
    pub fn set_throttled(&self, on: bool) {
        self.0.throttled.store(on, Ordering::Release);
    }

    pub fn is_throttled(&self) -> bool {
        self.0.throttled.load(Ordering::Acquire)
    }

    /// Pauses (`true`) or resumes (`false`) the job.
    pub fn set_paused(&self, on: bool) {
        self.0.paused.store(on, Ordering::Release);
    }

    pub fn is_paused(&self) -> bool {
        self.0.paused.load(Ordering::Acquire)
    }
}

/// Something that runs jobs: the in-process engine on a worker, a no-op runner in benches,
/// or a test double. Blocking: call from a thread that may block.
pub trait JobRunner: Send + Sync + 'static {
    /// Runs `job` to completion, reporting through `events`, stopping early when `cancel` fires
    /// and honouring its pause and throttle flags.
    fn run(
        &self,
        job: &crate::job::Job,
        cancel: &CancelToken,
        events: &mut dyn FnMut(JobEvent),
    ) -> Result<JobSummary, RunError>;
}

/// Why a job did not finish, in a form that crosses process boundaries.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[error("{stage}: {message}")]
pub struct RunError {
    /// Which stage failed: `validate`, `open_input`, `decode`, `filter`, `encode`, `mux`,
    /// `cancelled`, `io`, `unsupported`...
    pub stage: String,
    /// Human-readable reason, naming the stream when one is at fault.
    pub message: String,
    /// True when the job was cancelled rather than failed.
    pub cancelled: bool,
}

impl RunError {
    pub fn new(stage: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            stage: stage.into(),
            message: message.into(),
            cancelled: false,
        }
    }

    pub fn cancelled() -> Self {
        Self {
            stage: "cancelled".into(),
            message: "job cancelled".into(),
            cancelled: true,
        }
    }
}
