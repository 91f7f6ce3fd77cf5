//! The transcode job model: everything Plex Transcoder or ffmpeg is asked to do, as data.
//!
//! A [`Job`] is produced by the argument parser (or built by hand), travels over gRPC as JSON,
//! and is executed by the engine in `clusterplex-ffmpeg`. It carries no FFI types. Options that
//! address streams keep their ffmpeg stream specifier ([`StreamSpecifier`]) because which stream
//! `a:0` is can only be known once the input is probed, on the worker.

use std::{collections::BTreeMap, fmt, path::PathBuf, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::error::JobError;

/// One transcode: inputs, optional complex filter graphs, outputs, and where progress goes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Job {
    /// Inputs in `-i` order; `0:v:0` refers to `inputs[0]`.
    pub inputs: Vec<Input>,
    /// `-filter_complex` graphs (and `-lavfi`), in the order given.
    pub complex_filters: Vec<String>,
    /// Outputs in command-line order.
    pub outputs: Vec<Output>,
    /// Global timestamp handling (`-copyts`, `-start_at_zero`).
    pub timestamps: TimestampOptions,
    /// Where progress is reported (Plex `-progressurl`, ffmpeg `-progress`).
    pub progress: Option<ProgressTarget>,
    /// Working directory the transcoder was started in (Plex's session directory). Relative
    /// output paths resolve against it.
    pub working_dir: Option<PathBuf>,
    /// Encoder/decoder/filter thread count (`-threads`, 0 = auto).
    pub threads: Option<u32>,
    /// `-filter_threads` / `-filter_complex_threads`.
    pub filter_threads: Option<u32>,
    /// Plex-specific options that have no ffmpeg equivalent.
    pub plex: PlexOptions,
    /// Global ffmpeg options kept verbatim because they only affect logging or the CLI
    /// (`-loglevel`, `-nostats`, `-hide_banner`, `-y`, ...). The engine may ignore these.
    pub cli_flags: BTreeMap<String, String>,
    /// Set by [`Job::resume_at`] on a job that carries on a lost one (failover); `None` for
    /// every job a user or Plex started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continuation: Option<Continuation>,
}

/// One `-i` and the input-side options that preceded it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Input {
    /// Path or URL exactly as given (spaces, brackets and braces intact).
    pub url: String,
    /// Forced demuxer (`-f` before `-i`).
    pub format: Option<String>,
    /// Input seek (`-ss` before `-i`), in seconds.
    pub seek: Option<f64>,
    /// `-noaccurate_seek`: start at the keyframe before `seek` instead of decoding up to it.
    pub accurate_seek: bool,
    /// Input-side `-t` (seconds to read).
    pub duration: Option<f64>,
    /// Input-side `-to` (position to stop reading at).
    pub stop_at: Option<f64>,
    /// `-itsoffset` seconds.
    pub ts_offset: Option<f64>,
    /// `-re`: read at native frame rate.
    pub realtime: bool,
    /// `-stream_loop` count (-1 = forever).
    pub stream_loop: Option<i32>,
    /// Demuxer/protocol options (`-analyzeduration`, `-probesize`, `-fflags`, ...), verbatim.
    pub options: BTreeMap<String, String>,
    /// Forced decoders (`-c:v hevc_cuvid` before `-i`), by stream specifier.
    pub decoders: Vec<ByStream<String>>,
    /// Other per-stream decoder options (`-drc_scale:0 0`), by specifier.
    pub decoder_options: Vec<ByStream<(String, String)>>,
    /// Hardware decoding.
    pub hwaccel: Option<HwAccel>,
}

impl Input {
    /// An input reading `url` with default options.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            accurate_seek: true,
            ..Self::default()
        }
    }
}

/// `-hwaccel`, `-hwaccel_device`, `-hwaccel_output_format`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HwAccel {
    /// `cuda`, `nvdec`, `vaapi`, `qsv`, `auto`, ...
    pub name: String,
    pub device: Option<String>,
    /// e.g. `cuda` to keep frames on the GPU.
    pub output_format: Option<String>,
}

/// A value that applies to the streams matched by a specifier (`-c:v`, `-b:a:1`, `-crf:0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ByStream<T> {
    pub spec: StreamSpecifier,
    pub value: T,
}

impl<T> ByStream<T> {
    pub fn new(spec: StreamSpecifier, value: T) -> Self {
        Self { spec, value }
    }
}

/// Media type of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Video,
    Audio,
    Subtitle,
    Data,
    Attachment,
}

impl MediaKind {
    /// The ffmpeg specifier letter.
    pub fn letter(self) -> char {
        match self {
            MediaKind::Video => 'v',
            MediaKind::Audio => 'a',
            MediaKind::Subtitle => 's',
            MediaKind::Data => 'd',
            MediaKind::Attachment => 't',
        }
    }

    fn from_letter(c: char) -> Option<(Self, bool)> {
        Some(match c {
            'v' => (MediaKind::Video, false),
            // `V` is video excluding attached pictures.
            'V' => (MediaKind::Video, true),
            'a' => (MediaKind::Audio, false),
            's' => (MediaKind::Subtitle, false),
            'd' => (MediaKind::Data, false),
            't' => (MediaKind::Attachment, false),
            _ => return None,
        })
    }
}

/// An ffmpeg stream specifier *within one file*: empty (all streams), `v`, `a:1`, `2`,
/// `#0x101`, `i:0x101`, `m:language:eng`, `p:1:v`. The file index of a map (`0:a:0`) lives in
/// [`StreamMap`], not here.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct StreamSpecifier {
    /// Media type filter.
    pub kind: Option<MediaKind>,
    /// `V`: video but not attached pictures.
    pub no_attached_pic: bool,
    /// Program id (`p:N`).
    pub program: Option<u64>,
    /// Index among streams matching the filters so far (or absolute index without filters).
    pub index: Option<usize>,
    /// Container stream id (`#0x101`, `i:257`).
    pub id: Option<u64>,
    /// Metadata match (`m:key[:value]`).
    pub metadata: Option<(String, Option<String>)>,
}

/// Facts about a probed stream needed to evaluate a specifier.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamFacts<'a> {
    /// Absolute stream index in its file.
    pub index: usize,
    pub kind: Option<MediaKind>,
    pub attached_pic: bool,
    pub id: u64,
    pub programs: &'a [u64],
    pub metadata: &'a [(String, String)],
}

impl StreamSpecifier {
    /// The specifier that matches every stream.
    pub fn all() -> Self {
        Self::default()
    }

    /// `v`, `a`, `s`, ...
    pub fn kind(kind: MediaKind) -> Self {
        Self {
            kind: Some(kind),
            ..Self::default()
        }
    }

    /// `a:1`.
    pub fn kind_index(kind: MediaKind, index: usize) -> Self {
        Self {
            kind: Some(kind),
            index: Some(index),
            ..Self::default()
        }
    }

    /// An absolute stream index, `3`.
    pub fn index(index: usize) -> Self {
        Self {
            index: Some(index),
            ..Self::default()
        }
    }

    /// True when this matches every stream.
    pub fn is_all(&self) -> bool {
        *self == Self::default()
    }

    fn filters_match(&self, s: &StreamFacts<'_>) -> bool {
        if let Some(k) = self.kind
            && (s.kind != Some(k) || (self.no_attached_pic && s.attached_pic))
        {
            return false;
        }
        if let Some(p) = self.program
            && !s.programs.contains(&p)
        {
            return false;
        }
        if let Some(id) = self.id
            && s.id != id
        {
            return false;
        }
        if let Some((key, value)) = &self.metadata {
            let found = s.metadata.iter().find(|(k, _)| k == key);
            match (found, value) {
                (None, _) => return false,
                (Some((_, v)), Some(want)) if v != want => return false,
                _ => {}
            }
        }
        true
    }

    /// Indices (into `streams`) of the streams this specifier selects, in file order.
    pub fn select(&self, streams: &[StreamFacts<'_>]) -> Vec<usize> {
        let filtered: Vec<usize> = (0..streams.len())
            .filter(|&i| self.filters_match(&streams[i]))
            .collect();
        match self.index {
            None => filtered,
            Some(n) => {
                let has_filter = self.kind.is_some()
                    || self.program.is_some()
                    || self.id.is_some()
                    || self.metadata.is_some();
                if has_filter {
                    filtered.get(n).map(|&i| vec![i]).unwrap_or_default()
                } else {
                    filtered
                        .into_iter()
                        .filter(|&i| streams[i].index == n)
                        .collect()
                }
            }
        }
    }

    /// Whether this specifier selects `streams[which]`.
    pub fn matches(&self, streams: &[StreamFacts<'_>], which: usize) -> bool {
        self.select(streams).contains(&which)
    }
}

impl fmt::Display for StreamSpecifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(p) = self.program {
            parts.push(format!("p:{p}"));
        }
        if let Some(k) = self.kind {
            parts.push(if self.no_attached_pic {
                "V".into()
            } else {
                k.letter().to_string()
            });
        }
        if let Some((k, v)) = &self.metadata {
            match v {
                Some(v) => parts.push(format!("m:{k}:{v}")),
                None => parts.push(format!("m:{k}")),
            }
        }
        if let Some(id) = self.id {
            parts.push(format!("#{id:#x}"));
        }
        if let Some(i) = self.index {
            parts.push(i.to_string());
        }
        f.write_str(&parts.join(":"))
    }
}

impl From<StreamSpecifier> for String {
    fn from(s: StreamSpecifier) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for StreamSpecifier {
    type Error = JobError;
    fn try_from(s: String) -> Result<Self, JobError> {
        s.parse()
    }
}

fn parse_id(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else {
        s.parse().ok()
    }
}

impl FromStr for StreamSpecifier {
    type Err = JobError;

    /// Parses a within-file specifier (no leading file index).
    fn from_str(s: &str) -> Result<Self, JobError> {
        let bad = || JobError::BadStreamSpecifier(s.to_string());
        let mut spec = StreamSpecifier::default();
        if s.is_empty() {
            return Ok(spec);
        }
        let parts: Vec<&str> = s.split(':').collect();
        let mut i = 0;
        while i < parts.len() {
            let p = parts[i];
            let last = i + 1 == parts.len();
            if let Some(id) = p.strip_prefix('#') {
                // `#0x101` or `#257`: a stream id, always the end of the specifier.
                spec.id = Some(parse_id(id).ok_or_else(bad)?);
                if !last {
                    return Err(bad());
                }
            } else if p == "i" {
                let v = parts.get(i + 1).ok_or_else(bad)?;
                spec.id = Some(parse_id(v).ok_or_else(bad)?);
                i += 1;
            } else if p == "p" {
                let v = parts.get(i + 1).ok_or_else(bad)?;
                spec.program = Some(v.parse().map_err(|_| bad())?);
                i += 1;
            } else if p == "m" {
                // m:key[:value] consumes the rest.
                let key = parts.get(i + 1).ok_or_else(bad)?.to_string();
                let value = if parts.len() > i + 2 {
                    Some(parts[i + 2..].join(":"))
                } else {
                    None
                };
                spec.metadata = Some((key, value));
                break;
            } else if p.len() == 1 && p.chars().all(|c| c.is_ascii_alphabetic()) {
                let c = p.chars().next().ok_or_else(bad)?;
                let (k, no_pic) = MediaKind::from_letter(c).ok_or_else(bad)?;
                if spec.kind.is_some() {
                    return Err(bad());
                }
                spec.kind = Some(k);
                spec.no_attached_pic = no_pic;
            } else if let Ok(n) = p.parse::<usize>() {
                if !last {
                    return Err(bad());
                }
                spec.index = Some(n);
            } else {
                return Err(bad());
            }
            i += 1;
        }
        Ok(spec)
    }
}

/// Where an output stream comes from (`-map`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapSource {
    /// `-map 0:a:0`, `-map 0:#0x101`, `-map [0:#0x01]`: streams of an input.
    Input { input: usize, spec: StreamSpecifier },
    /// `-map [vout]`: a labelled output pad of a complex filter graph.
    Label(String),
}

/// One `-map`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamMap {
    pub source: MapSource,
    /// `-map -0:s` removes streams selected by earlier maps.
    #[serde(default)]
    pub negative: bool,
    /// `-map 0:a?`: no error when nothing matches.
    #[serde(default)]
    pub optional: bool,
}

/// Codec choice for an output stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodecChoice {
    /// `-c copy`: pass packets through.
    Copy,
    /// An encoder by libavcodec name (`libx264`, `aac`, `h264_nvenc`, `ass`, `eac3_eae`...).
    Encoder(String),
}

impl CodecChoice {
    /// Parses an ffmpeg codec argument.
    pub fn parse(s: &str) -> Self {
        if s == "copy" {
            CodecChoice::Copy
        } else {
            CodecChoice::Encoder(s.to_string())
        }
    }
}

/// `-fps_mode` / `-vsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FpsMode {
    Passthrough,
    Cfr,
    Vfr,
    Drop,
    Auto,
}

impl FromStr for FpsMode {
    type Err = JobError;
    fn from_str(s: &str) -> Result<Self, JobError> {
        Ok(match s {
            "passthrough" | "0" => FpsMode::Passthrough,
            "cfr" | "1" => FpsMode::Cfr,
            "vfr" | "2" => FpsMode::Vfr,
            "drop" => FpsMode::Drop,
            "auto" | "-1" => FpsMode::Auto,
            _ => {
                return Err(JobError::InvalidValue {
                    option: "fps_mode".into(),
                    value: s.into(),
                });
            }
        })
    }
}

/// Per-output-stream settings. Several `ByStream<StreamSettings>` may match one stream; they are
/// overlaid in command-line order, later `Some` values winning (ffmpeg's rule).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamSettings {
    /// `-c` / `-codec` / `-vcodec` / `-acodec` / `-scodec`.
    pub codec: Option<CodecChoice>,
    /// `-b` in bits per second.
    pub bitrate: Option<u64>,
    /// `-maxrate` bits/s.
    pub maxrate: Option<u64>,
    /// `-minrate` bits/s.
    pub minrate: Option<u64>,
    /// `-bufsize` bits.
    pub bufsize: Option<u64>,
    /// `-crf`.
    pub crf: Option<f32>,
    /// `-qp` / `-q` / `-qscale`.
    pub qscale: Option<f32>,
    pub preset: Option<String>,
    pub tune: Option<String>,
    pub profile: Option<String>,
    pub level: Option<String>,
    /// `-pix_fmt`.
    pub pix_fmt: Option<String>,
    /// `-s WxH`.
    pub size: Option<(u32, u32)>,
    /// `-r` output frame rate as a rational (num, den).
    pub frame_rate: Option<(u32, u32)>,
    /// `-g`.
    pub gop: Option<u32>,
    /// `-keyint_min`.
    pub keyint_min: Option<u32>,
    /// `-bf`.
    pub max_b_frames: Option<u32>,
    /// `-force_key_frames` expression or list, verbatim.
    pub force_key_frames: Option<String>,
    /// `-fps_mode` / `-vsync`.
    pub fps_mode: Option<FpsMode>,
    /// `-ac`.
    pub channels: Option<u32>,
    /// `-channel_layout` / `-ch_layout`.
    pub channel_layout: Option<String>,
    /// `-ar`.
    pub sample_rate: Option<u32>,
    /// `-sample_fmt`.
    pub sample_fmt: Option<String>,
    /// `-filter` / `-vf` / `-af` simple filter chain for this stream.
    pub filter: Option<String>,
    /// `-bsf`.
    pub bitstream_filters: Option<String>,
    /// `-tag` codec tag (e.g. `hvc1`).
    pub tag: Option<String>,
    /// `-disposition`.
    pub disposition: Option<String>,
    /// `-metadata:s:N key=value`.
    pub metadata: BTreeMap<String, String>,
    /// Encoder private options (`-x264opts`, `-x265-params`, `-x264-params`, `-aac_coder`,
    /// `-rc-lookahead`, ...), name to value, passed to the encoder.
    pub encoder_options: BTreeMap<String, String>,
    /// `-max_muxing_queue_size`.
    pub max_muxing_queue_size: Option<u32>,
    /// Plex `-eae_prefix:N`.
    pub eae_prefix: Option<String>,
}

impl StreamSettings {
    /// Overlays `other` on `self`: every `Some` (and every map entry) in `other` wins.
    pub fn overlay(&mut self, other: &StreamSettings) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f.clone(); } )* };
        }
        take!(
            codec,
            bitrate,
            maxrate,
            minrate,
            bufsize,
            crf,
            qscale,
            preset,
            tune,
            profile,
            level,
            pix_fmt,
            size,
            frame_rate,
            gop,
            keyint_min,
            max_b_frames,
            force_key_frames,
            fps_mode,
            channels,
            channel_layout,
            sample_rate,
            sample_fmt,
            filter,
            bitstream_filters,
            tag,
            disposition,
            max_muxing_queue_size,
            eae_prefix
        );
        self.metadata
            .extend(other.metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.encoder_options.extend(
            other
                .encoder_options
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }
}

/// `-avoid_negative_ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AvoidNegativeTs {
    Auto,
    Disabled,
    MakeNonNegative,
    MakeZero,
}

impl FromStr for AvoidNegativeTs {
    type Err = JobError;
    fn from_str(s: &str) -> Result<Self, JobError> {
        Ok(match s {
            "auto" | "-1" => Self::Auto,
            "disabled" | "0" => Self::Disabled,
            "make_non_negative" | "1" => Self::MakeNonNegative,
            "make_zero" | "2" => Self::MakeZero,
            _ => {
                return Err(JobError::InvalidValue {
                    option: "avoid_negative_ts".into(),
                    value: s.into(),
                });
            }
        })
    }
}

/// Global timestamp options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TimestampOptions {
    /// `-copyts`: keep input timestamps.
    pub copyts: bool,
    /// `-start_at_zero` (with copyts): shift so the input start is 0, keep seek offsets.
    pub start_at_zero: bool,
}

/// Segment list format (`-segment_list_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentListType {
    Csv,
    Flat,
    M3u8,
    Ffconcat,
}

/// A segment list target (`-segment_list`): a file path or an HTTP URL (Plex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentList {
    pub target: String,
    pub kind: SegmentListType,
    /// `-segment_list_size` (0 = all rows).
    #[serde(default)]
    pub size: u32,
    /// `-segment_list_separate_stream_times` (Plex: five CSV columns).
    #[serde(default)]
    pub separate_stream_times: bool,
    /// `-segment_list_unfinished` (Plex: the in-progress row, prefixed `#`).
    #[serde(default)]
    pub unfinished: bool,
}

/// HLS segment container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HlsSegmentType {
    #[default]
    Mpegts,
    Fmp4,
}

/// Segmented output. The engine cuts at keyframes at or after each boundary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Segmenting {
    /// `-f segment` / `-f ssegment`.
    Segment {
        /// `-segment_time` seconds.
        segment_time: f64,
        /// `-segment_start_number`.
        #[serde(default)]
        start_number: u64,
        /// `-segment_format` (container of each segment), e.g. `mpegts`, `matroska`, `ass`.
        #[serde(default)]
        segment_format: Option<String>,
        #[serde(default)]
        list: Option<SegmentList>,
        /// `-segment_header_filename` (Plex).
        #[serde(default)]
        header_filename: Option<String>,
        /// `-segment_time_delta`.
        #[serde(default)]
        time_delta: Option<f64>,
        /// `-segment_format_options`, verbatim.
        #[serde(default)]
        format_options: BTreeMap<String, String>,
    },
    /// `-f hls`.
    Hls {
        /// `-hls_time` seconds (default 2).
        time: f64,
        /// `-start_number`.
        #[serde(default)]
        start_number: u64,
        /// `-hls_list_size` (0 = all).
        #[serde(default)]
        list_size: u32,
        #[serde(default)]
        playlist_type: Option<String>,
        #[serde(default)]
        segment_type: HlsSegmentType,
        /// `-hls_segment_filename` template.
        #[serde(default)]
        segment_filename: Option<String>,
        /// `-hls_fmp4_init_filename`.
        #[serde(default)]
        init_filename: Option<String>,
        /// `-hls_flags`, verbatim.
        #[serde(default)]
        flags: Option<String>,
    },
    /// `-f dash`.
    Dash {
        /// `-seg_duration` seconds (default 5).
        seg_duration: f64,
        /// First segment number: `-skip_to_segment` (Plex) or `-start_number`... default 1.
        start_number: u64,
        /// `-init_seg_name` template (default `init-stream$RepresentationID$.$ext$`).
        #[serde(default)]
        init_seg_name: Option<String>,
        /// `-media_seg_name` template (default `chunk-stream$RepresentationID$-$Number%05d$.$ext$`).
        #[serde(default)]
        media_seg_name: Option<String>,
        /// Where the MPD goes: Plex's `-manifest_name` URL or a path. `None`: the output target.
        #[serde(default)]
        manifest_target: Option<String>,
        #[serde(default)]
        window_size: Option<u32>,
        #[serde(default)]
        use_template: Option<bool>,
        #[serde(default)]
        use_timeline: Option<bool>,
        #[serde(default)]
        single_file: bool,
        /// Plex `-time_delta`.
        #[serde(default)]
        time_delta: Option<f64>,
        /// Plex `-delete_removed` (default true in upstream; Plex sends false).
        #[serde(default)]
        delete_removed: Option<bool>,
        /// `-break_non_keyframes`.
        #[serde(default)]
        break_non_keyframes: bool,
    },
}

impl Segmenting {
    /// DASH with `-seg_duration` and `-skip_to_segment`/start number, everything else as
    /// FFmpeg's defaults.
    pub fn dash(seg_duration: f64, start_number: u64) -> Self {
        Segmenting::Dash {
            seg_duration,
            start_number,
            init_seg_name: None,
            media_seg_name: None,
            manifest_target: None,
            window_size: None,
            use_template: None,
            use_timeline: None,
            single_file: false,
            time_delta: None,
            delete_removed: None,
            break_non_keyframes: false,
        }
    }
}

/// One output file (or segmented output set).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Output {
    /// Path or URL as given (`dash`, `out.mp4`, `pipe:1`, `/dev/null`).
    pub target: String,
    /// `-f`. `None`: guessed from the target's extension.
    pub format: Option<String>,
    /// `-map`s in order. Empty: ffmpeg's default selection (best video, best audio, first
    /// subtitle when the container takes one).
    pub maps: Vec<StreamMap>,
    /// Per-stream settings, in command-line order.
    pub streams: Vec<ByStream<StreamSettings>>,
    /// `-vn`, `-an`, `-sn`, `-dn`.
    pub disable: Vec<MediaKind>,
    /// Output-side `-ss` (decode and drop until this position), seconds.
    pub seek: Option<f64>,
    /// `-t` seconds of output.
    pub duration: Option<f64>,
    /// `-to` position.
    pub stop_at: Option<f64>,
    /// `-frames:v` / `-vframes` etc., by specifier.
    pub max_frames: Vec<ByStream<u64>>,
    /// `-shortest`.
    pub shortest: bool,
    /// `-avoid_negative_ts`.
    pub avoid_negative_ts: Option<AvoidNegativeTs>,
    /// `-muxdelay`, `-muxpreload` and other muxer/format AVOptions (`-movflags`, `-hls_flags`,
    /// `-frag_duration`...), verbatim, for the muxer.
    pub format_options: BTreeMap<String, String>,
    /// Typed view of segmenting options; `None` for single-file outputs.
    pub segmenting: Option<Segmenting>,
    /// `-metadata key=value` (global).
    pub metadata: BTreeMap<String, String>,
    /// `-map_metadata` source (`-1` disables); verbatim.
    pub map_metadata: Option<String>,
    /// `-map_chapters` input index (-1 disables).
    pub map_chapters: Option<i64>,
    /// `-map_inlineass` (Plex): burn/embed the ASS of this input stream.
    pub map_inlineass: Option<String>,
}

impl Output {
    /// An output to `target` with the given format.
    pub fn new(target: impl Into<String>, format: Option<&str>) -> Self {
        Self {
            target: target.into(),
            format: format.map(str::to_string),
            ..Self::default()
        }
    }

    /// Effective settings for one output stream: every matching entry overlaid in order.
    /// `matches(spec)` answers whether a specifier selects the stream in question.
    pub fn settings_for(
        &self,
        mut matches: impl FnMut(&StreamSpecifier) -> bool,
    ) -> StreamSettings {
        let mut out = StreamSettings::default();
        for entry in &self.streams {
            if matches(&entry.spec) {
                out.overlay(&entry.value);
            }
        }
        out
    }
}

/// Where progress goes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProgressTarget {
    /// Plex `-progressurl` base URL (PUTs with query strings).
    pub plex_url: Option<String>,
    /// ffmpeg `-progress` target (`pipe:1`, a file, or a URL): key=value blocks.
    pub ffmpeg_progress: Option<String>,
    /// `-stats_period` seconds.
    pub period: Option<f64>,
}

/// What a continuation (see [`Job::resume_at`]) knows about the part of the session before it,
/// so that its output and progress join the earlier part seamlessly: stream-copied packets
/// before the resume point are dropped (ffmpeg's `-copypriorss 0`, so the first copied video
/// packet is the keyframe that starts the next segment), the session's init segments and
/// segment headers already on disk are kept, the DASH manifest keeps listing the earlier
/// segments, and progress counts on from what was reported before.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Continuation {
    /// Media seconds of the session before this job, from the original job's output origin.
    pub elapsed: f64,
    /// Frames and bytes reported before this job (the furthest report the submitter saw).
    pub frames: u64,
    pub bytes: u64,
    /// The furthest output time reported before this job.
    pub out_time: f64,
}

/// Plex options that describe the session rather than the media.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PlexOptions {
    /// `-loglevel_plex`: threshold for the HTTP log channel.
    pub loglevel: Option<String>,
    /// `-skip_to_segment`: first segment number of a resumed session (also set as the DASH
    /// output's start number).
    pub skip_to_segment: Option<u64>,
    /// The transcode session id found in the callback URLs, used for affinity and superseding.
    pub session_id: Option<String>,
    /// Plex's `X_PLEX_TOKEN` for the callbacks. The shim fills it in only when it submits the
    /// job (it is never part of a printed plan); the worker sends it as `X-Plex-Token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Job {
    /// Checks that the job is internally consistent before any work starts.
    pub fn validate(&self) -> Result<(), JobError> {
        if self.inputs.is_empty() {
            return Err(JobError::NoInputs);
        }
        if self.outputs.is_empty() {
            return Err(JobError::NoOutputs);
        }
        for (i, input) in self.inputs.iter().enumerate() {
            if input.url.is_empty() {
                return Err(JobError::EmptyInput(i));
            }
            check_time("ss", input.seek)?;
            check_time("t", input.duration)?;
        }
        let labels = declared_output_labels(&self.complex_filters);
        for (o, output) in self.outputs.iter().enumerate() {
            if output.target.is_empty() {
                return Err(JobError::EmptyOutput(o));
            }
            check_time("ss", output.seek)?;
            check_time("t", output.duration)?;
            for map in &output.maps {
                match &map.source {
                    MapSource::Input { input, .. } if *input >= self.inputs.len() => {
                        return Err(JobError::MapInputOutOfRange {
                            output: o,
                            input: *input,
                            inputs: self.inputs.len(),
                        });
                    }
                    MapSource::Label(l) if !labels.iter().any(|x| x == l) => {
                        return Err(JobError::UnknownLabel {
                            output: o,
                            label: l.clone(),
                        });
                    }
                    _ => {}
                }
            }
            for s in &output.streams {
                let v = &s.value;
                if matches!(v.codec, Some(CodecChoice::Copy)) && v.filter.is_some() {
                    return Err(JobError::FilterWithCopy {
                        output: o,
                        spec: s.spec.to_string(),
                    });
                }
                if let Some((w, h)) = v.size
                    && (w == 0 || h == 0)
                {
                    return Err(JobError::InvalidValue {
                        option: "s".into(),
                        value: format!("{w}x{h}"),
                    });
                }
                if let Some((n, d)) = v.frame_rate
                    && (n == 0 || d == 0)
                {
                    return Err(JobError::InvalidValue {
                        option: "r".into(),
                        value: format!("{n}/{d}"),
                    });
                }
            }
            match &output.segmenting {
                Some(Segmenting::Segment { segment_time, .. }) => {
                    check_positive("segment_time", *segment_time)?
                }
                Some(Segmenting::Hls { time, .. }) => check_positive("hls_time", *time)?,
                Some(Segmenting::Dash { seg_duration, .. }) => {
                    check_positive("seg_duration", *seg_duration)?
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Where this job's media starts on its output timeline: with `-copyts` (and Plex's
    /// `-start_at_zero`) output times are input positions, so the main input's seek; otherwise
    /// timestamps restart at its `-itsoffset`. Segment times minus this are media seconds into
    /// the job, which is what [`Job::resume_at`] takes.
    pub fn output_origin(&self) -> f64 {
        match self.inputs.first() {
            Some(i) if self.timestamps.copyts => i.seek.unwrap_or(0.0),
            Some(i) => i.ts_offset.unwrap_or(0.0),
            None => 0.0,
        }
    }

    /// A copy of this segmented job that carries on from segment number `next_segment`, which
    /// begins `elapsed` seconds of media after the point where this job started (the end of the
    /// last segment already on disk minus [`Job::output_origin`]: not the first segment's start,
    /// whose first packet may lie a frame after the origin, which would make a seek over copied
    /// video land on the keyframe before the boundary). Used to resume a session on
    /// another transcoder after a worker is lost, the way Plex itself restarts a transcode on a
    /// seek: the inputs seek further (accurately, so the first new frame is the boundary), the
    /// segment numbering and `-skip_to_segment` continue, and the output timestamps stay
    /// continuous (with `-copyts` they follow the input; otherwise `-itsoffset` shifts them).
    /// Outputs that are one file cannot be resumed: they must restart.
    pub fn resume_at(&self, next_segment: u64, elapsed: f64) -> Result<Job, JobError> {
        check_time("resume position", Some(elapsed))?;
        let mut job = self.clone();
        for (o, out) in job.outputs.iter_mut().enumerate() {
            match &mut out.segmenting {
                Some(Segmenting::Segment { start_number, .. })
                | Some(Segmenting::Hls { start_number, .. })
                | Some(Segmenting::Dash {
                    start_number,
                    single_file: false,
                    ..
                }) => *start_number = next_segment,
                _ => return Err(JobError::NotResumable { output: o }),
            }
            if let Some(d) = out.duration.as_mut() {
                *d = (*d - elapsed).max(0.0);
            }
        }
        if elapsed > 0.0 {
            let copyts = job.timestamps.copyts;
            for input in &mut job.inputs {
                input.seek = Some(input.seek.unwrap_or(0.0) + elapsed);
                input.accurate_seek = true;
                if let Some(d) = input.duration.as_mut() {
                    *d = (*d - elapsed).max(0.0);
                }
                if !copyts {
                    input.ts_offset = Some(input.ts_offset.unwrap_or(0.0) + elapsed);
                }
            }
        }
        if job.plex.skip_to_segment.is_some() {
            job.plex.skip_to_segment = Some(next_segment);
        }
        let mut c = self.continuation.clone().unwrap_or_default();
        c.elapsed += elapsed;
        job.continuation = Some(c);
        Ok(job)
    }

    /// Every input index that any output or graph reads (for path checks and probing).
    pub fn input_urls(&self) -> impl Iterator<Item = &str> {
        self.inputs.iter().map(|i| i.url.as_str())
    }
}

fn check_time(option: &str, t: Option<f64>) -> Result<(), JobError> {
    match t {
        Some(v) if !v.is_finite() || v < 0.0 => Err(JobError::InvalidValue {
            option: option.into(),
            value: v.to_string(),
        }),
        _ => Ok(()),
    }
}

fn check_positive(option: &str, v: f64) -> Result<(), JobError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(JobError::InvalidValue {
            option: option.into(),
            value: v.to_string(),
        })
    }
}

/// Output pad labels declared in complex graphs and not consumed inside the same graph: the
/// labels `-map [name]` can refer to.
pub fn declared_output_labels(graphs: &[String]) -> Vec<String> {
    let mut outs = Vec::new();
    for g in graphs {
        let filters: Vec<_> = crate::parse::filters::parse_graph(g)
            .into_iter()
            .flatten()
            .collect();
        let used: Vec<&String> = filters.iter().flat_map(|f| &f.inputs).collect();
        outs.extend(
            filters
                .iter()
                .flat_map(|f| &f.outputs)
                .filter(|l| !used.contains(l))
                .cloned(),
        );
    }
    outs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specifier_round_trip() {
        for s in [
            "",
            "v",
            "a:1",
            "3",
            "#0x101",
            "p:1:v",
            "m:language:eng",
            "V",
            "s:0",
        ] {
            let spec: StreamSpecifier = s.parse().unwrap();
            let back = spec.to_string();
            let again: StreamSpecifier = back.parse().unwrap();
            assert_eq!(spec, again, "{s} -> {back}");
        }
        assert_eq!("i:257".parse::<StreamSpecifier>().unwrap().id, Some(257));
        assert!("x:1".parse::<StreamSpecifier>().is_err());
        assert!("1:v".parse::<StreamSpecifier>().is_err());
    }

    #[test]
    fn specifier_selects_streams() {
        let md = [("language".to_string(), "eng".to_string())];
        let streams = [
            StreamFacts {
                index: 0,
                kind: Some(MediaKind::Video),
                id: 0x100,
                ..Default::default()
            },
            StreamFacts {
                index: 1,
                kind: Some(MediaKind::Audio),
                id: 0x101,
                ..Default::default()
            },
            StreamFacts {
                index: 2,
                kind: Some(MediaKind::Audio),
                id: 0x102,
                metadata: &md,
                ..Default::default()
            },
        ];
        let sel = |s: &str| s.parse::<StreamSpecifier>().unwrap().select(&streams);
        assert_eq!(sel(""), vec![0, 1, 2]);
        assert_eq!(sel("a"), vec![1, 2]);
        assert_eq!(sel("a:1"), vec![2]);
        assert_eq!(sel("a:2"), Vec::<usize>::new());
        assert_eq!(sel("2"), vec![2]);
        assert_eq!(sel("#0x101"), vec![1]);
        assert_eq!(sel("m:language:eng"), vec![2]);
    }

    #[test]
    fn settings_overlay_in_order() {
        let mut out = Output::new("o.mp4", None);
        out.streams.push(ByStream::new(
            StreamSpecifier::all(),
            StreamSettings {
                codec: Some(CodecChoice::Copy),
                ..Default::default()
            },
        ));
        out.streams.push(ByStream::new(
            StreamSpecifier::kind(MediaKind::Video),
            StreamSettings {
                codec: Some(CodecChoice::Encoder("libx264".into())),
                crf: Some(20.0),
                ..Default::default()
            },
        ));
        let v = out.settings_for(|s| s.kind.is_none() || s.kind == Some(MediaKind::Video));
        assert_eq!(v.codec, Some(CodecChoice::Encoder("libx264".into())));
        assert_eq!(v.crf, Some(20.0));
        let a = out.settings_for(|s| s.kind.is_none() || s.kind == Some(MediaKind::Audio));
        assert_eq!(a.codec, Some(CodecChoice::Copy));
    }

    #[test]
    fn validation_rejects_impossible_jobs() {
        let mut job = Job::default();
        assert!(matches!(job.validate(), Err(JobError::NoInputs)));
        job.inputs.push(Input::new("in.mkv"));
        assert!(matches!(job.validate(), Err(JobError::NoOutputs)));
        let mut out = Output::new("o.mp4", None);
        out.maps.push(StreamMap {
            source: MapSource::Input {
                input: 1,
                spec: StreamSpecifier::all(),
            },
            negative: false,
            optional: false,
        });
        job.outputs.push(out);
        assert!(matches!(
            job.validate(),
            Err(JobError::MapInputOutOfRange { .. })
        ));
        job.outputs[0].maps[0].source = MapSource::Label("vout".into());
        assert!(matches!(job.validate(), Err(JobError::UnknownLabel { .. })));
        job.complex_filters.push("[0:v]scale=640:-2[vout]".into());
        job.validate().unwrap();
        job.inputs[0].seek = Some(-1.0);
        assert!(job.validate().is_err());
    }

    #[test]
    fn labels_of_complex_graphs() {
        let g = vec!["[0:v]split[a][b];[a]scale=640:360[small];[b]null[big]".to_string()];
        assert_eq!(
            declared_output_labels(&g),
            vec!["small".to_string(), "big".to_string()]
        );
    }

    #[test]
    fn resume_continues_numbering_and_seeks_past_written_segments() {
        let mut job = Job::default();
        let mut input = Input::new("/media/a.mkv");
        input.seek = Some(30.0);
        job.inputs.push(input);
        let mut out = Output::new("dash", Some("dash"));
        out.segmenting = Some(Segmenting::dash(4.0, 8));
        job.outputs.push(out);
        job.plex.skip_to_segment = Some(8);

        // Segments 8..=10 are on disk (12 s): carry on with 11 at 30 + 12 s.
        let r = job.resume_at(11, 12.0).unwrap();
        assert_eq!(r.inputs[0].seek, Some(42.0));
        assert!(r.inputs[0].accurate_seek);
        assert_eq!(r.inputs[0].ts_offset, Some(12.0));
        assert_eq!(r.plex.skip_to_segment, Some(11));
        // Marked as a continuation; a second failover adds up the media already done.
        assert_eq!(r.continuation.as_ref().map(|c| c.elapsed), Some(12.0));
        let again = r.resume_at(12, 4.0).unwrap();
        assert_eq!(again.continuation.map(|c| c.elapsed), Some(16.0));
        assert_eq!(job.continuation, None);
        assert!(matches!(
            r.outputs[0].segmenting,
            Some(Segmenting::Dash {
                start_number: 11,
                ..
            })
        ));

        // With -copyts the timestamps follow the input: no extra offset.
        job.timestamps.copyts = true;
        assert_eq!(job.resume_at(11, 12.0).unwrap().inputs[0].ts_offset, None);

        // Nothing written yet: the same job, numbering unchanged.
        let same = job.resume_at(8, 0.0).unwrap();
        assert_eq!(same.inputs, job.inputs);

        job.outputs.push(Output::new("out.mp4", None));
        assert!(matches!(
            job.resume_at(11, 12.0),
            Err(JobError::NotResumable { output: 1 })
        ));
        assert!(job.resume_at(11, f64::NAN).is_err());
    }

    #[test]
    fn json_round_trip() {
        let mut job = Job::default();
        let mut input = Input::new("/media/Movie (2020) [1080p]/movie {x}.mkv");
        input.seek = Some(495.0);
        job.inputs.push(input);
        let mut out = Output::new("dash", Some("dash"));
        out.segmenting = Some(Segmenting::Dash {
            seg_duration: 5.0,
            start_number: 100,
            init_seg_name: None,
            media_seg_name: None,
            manifest_target: Some("http://127.0.0.1:32400/manifest".into()),
            window_size: None,
            use_template: None,
            use_timeline: None,
            single_file: false,
            time_delta: Some(0.0625),
            delete_removed: Some(false),
            break_non_keyframes: false,
        });
        out.streams.push(ByStream::new(
            "#0x101".parse().unwrap(),
            StreamSettings {
                codec: Some(CodecChoice::Encoder("aac".into())),
                ..Default::default()
            },
        ));
        job.outputs.push(out);
        let json = serde_json::to_string(&job).unwrap();
        let back: Job = serde_json::from_str(&json).unwrap();
        assert_eq!(job, back);
    }
}
