//! The in-process transcode engine.
//!
//! One job runs as one pipeline on the calling thread: demux (all inputs, interleaved by
//! timestamp) -> per-stream decoder -> libavfilter graph(s) (split around `tonemap`) ->
//! encoder -> muxer, with stream copy where asked. Decoders and encoders use libav's own
//! frame/slice threads, so the single driving thread is not the bottleneck. No FFmpeg context
//! is shared across threads: everything is created, used and freed on the thread that calls
//! [`Engine::run`].
//!
//! Segmented outputs use libavformat's dash, hls and segment muxers; see `io.rs` for how
//! manifests, finished segments and DASH start numbers are handled.

mod ffi;
pub mod filter;
mod io;
mod mp4;
mod mpegts;
mod plan;
mod streams;
mod subtitle;
mod tonemap_hook;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use clusterplex_core::events::LogLevel;
use clusterplex_core::{
    CancelToken, CodecChoice, Job, JobEvent, JobRunner, JobSummary, MediaKind, Progress, RunError,
    SegmentInfo, Segmenting, StreamSettings,
};
use ffmpeg_next::{Codec, Dictionary, Frame, Packet, Rational, codec, format, media};

use crate::{Error, Result, Stage};
pub use filter::{split_chain, split_tonemap};
use plan::{OutStreamPlan, Source};

/// Emit progress at most this often.
const PROGRESS_PERIOD: f64 = 0.5;
/// Smallest tolerance when dropping copied packets before a resume point (1 ms).
const MIN_COPY_TOLERANCE_US: i64 = 1000;
/// How far a continuation's encoded audio packet may start before the resume point and still
/// count as starting on it (the point went through seconds and back).
const RESUME_ROUNDING_US: i64 = 50;
/// A stream that never becomes ready cannot hold back an output forever.
const MAX_QUEUED_PACKETS: usize = 8192;
/// Plex's transcoder sleeps this long before each input packet while PMS throttles it.
const THROTTLE_SLEEP: Duration = Duration::from_millis(100);
/// Pacing sleeps are cut into slices this long, so cancel, pause and resume act promptly.
const PACING_SLICE: Duration = Duration::from_millis(20);

/// The in-process engine. Cheap to create; holds only defaults.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    /// Thread count for decoders/encoders when the job does not set one (0 = auto).
    pub threads: Option<u32>,
}

impl Engine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `job` to completion on this thread.
    pub fn run(
        &self,
        job: &Job,
        cancel: &CancelToken,
        events: &mut dyn FnMut(JobEvent),
    ) -> Result<JobSummary> {
        job.validate()?;
        init_libav();
        let mut run = Run::open(job, self.threads, events)?;
        let res = run.execute(cancel);
        run.finish(res)
    }
}

impl JobRunner for Engine {
    fn run(
        &self,
        job: &Job,
        cancel: &CancelToken,
        events: &mut dyn FnMut(JobEvent),
    ) -> std::result::Result<JobSummary, RunError> {
        Engine::run(self, job, cancel, events).map_err(RunError::from)
    }
}

fn init_libav() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // init() only registers devices in 5.1; failure is not fatal for files.
        let _ = ffmpeg_next::init();
        let level = match std::env::var("CLUSTERPLEX_AV_LOG").as_deref() {
            Ok("debug") => ffmpeg_next::util::log::Level::Debug,
            Ok("info") => ffmpeg_next::util::log::Level::Info,
            Ok("warning") => ffmpeg_next::util::log::Level::Warning,
            Ok("error") => ffmpeg_next::util::log::Level::Error,
            _ => ffmpeg_next::util::log::Level::Quiet,
        };
        ffmpeg_next::util::log::set_level(level);
    });
}

/// Resolves a path against the job's working directory (URLs are left alone).
pub fn resolve(job: &Job, p: &str) -> String {
    if p.contains("://") || p.starts_with("pipe:") || Path::new(p).is_absolute() {
        return p.to_string();
    }
    match &job.working_dir {
        Some(d) => d.join(p).to_string_lossy().into_owned(),
        None => p.to_string(),
    }
}

fn av(stage: Stage, context: impl Into<String>) -> impl FnOnce(ffmpeg_next::Error) -> Error {
    let context = context.into();
    move |source| Error::Av {
        stage,
        context,
        source,
    }
}

fn other(stage: Stage, message: impl Into<String>) -> Error {
    Error::Other {
        stage,
        message: message.into(),
    }
}

fn media_kind(t: media::Type) -> Option<MediaKind> {
    Some(match t {
        media::Type::Video => MediaKind::Video,
        media::Type::Audio => MediaKind::Audio,
        media::Type::Subtitle => MediaKind::Subtitle,
        media::Type::Data => MediaKind::Data,
        media::Type::Attachment => MediaKind::Attachment,
        _ => return None,
    })
}

fn secs(ts: i64, tb: Rational) -> f64 {
    ts as f64 * f64::from(tb)
}

fn rescale(ts: i64, from: Rational, to: Rational) -> i64 {
    use ffmpeg_next::Rescale;
    ts.rescale(from, to)
}

const US: Rational = Rational(1, 1_000_000);

struct InFile {
    ctx: format::context::Input,
    /// Added to every timestamp (microseconds) to put it on the output timeline.
    offset_us: i64,
    /// Accurate seek: decoded frames before this output-timeline time are dropped.
    drop_before_us: Option<i64>,
    /// Input `-t`/`-to`: stop reading at this output-timeline time.
    limit_us: Option<i64>,
    realtime: bool,
    /// `-re` paces from the first timestamp read (ffmpeg: from the input's start), not from 0.
    first_us: Option<i64>,
    eof: bool,
    last_us: i64,
}

enum Consumer {
    Stream { out: usize, stream: usize },
    Graph { graph: usize, input: usize },
}

struct Dec {
    dec: codec::decoder::Opened,
    kind: media::Type,
    time_base: Rational,
    frame_rate: Option<Rational>,
    input: usize,
    consumers: Vec<Consumer>,
    flushed: bool,
    _hw: Option<ffi::HwDevice>,
}

/// A `-filter_complex` graph.
struct Complex {
    spec: String,
    /// (input file, stream index) per source, in source order.
    sources: Vec<(usize, usize)>,
    /// Output labels and their kinds.
    outputs: Vec<(String, media::Type)>,
    /// Output label -> (out, stream).
    consumers: Vec<Option<(usize, usize)>>,
    pending: Vec<Vec<Frame>>,
    pending_eof: Vec<bool>,
    descs: Vec<Option<filter::SourceDesc>>,
    graph: Option<filter::LavfiGraph>,
    done: bool,
}

struct OutStream {
    plan: OutStreamPlan,
    /// Index in the muxer.
    index: usize,
    encoder: Option<codec::encoder::Encoder>,
    enc_codec: Option<Codec>,
    enc_tb: Rational,
    pipeline: Option<filter::Pipeline>,
    ready: bool,
    finished: bool,
    frames: u64,
    last_pts: Option<i64>,
    frame_dur: i64,
    next_kf: Option<f64>,
    kf_interval: Option<f64>,
    /// Stream copy has passed its first packet (ffmpeg's `streamcopy_started`): leading
    /// non-keyframes and packets before `copy_from_us` are dropped until then.
    seen_key: bool,
    /// Stream copy of a continuation: packets that start before this time (microseconds on the
    /// input's offset timeline: the resume point) are dropped until the first one is kept, as
    /// ffmpeg does with `-copypriorss 0`; `copy_tolerance_us` (half a frame) keeps the packet
    /// on the resume point when the point, computed in seconds, came out a little past it.
    copy_from_us: Option<i64>,
    copy_tolerance_us: i64,
    /// Encoded audio of an HLS continuation: packets that start before this time
    /// (microseconds, output timeline: the resume point) are dropped. The earlier job's last
    /// segment already holds the audio up to its first packet starting at or after the cut
    /// (hlsenc cuts every stream at the video keyframe), and the encoder's first packets here
    /// are its priming and the frame straddling the resume point, which would overlap it.
    /// (dashenc cuts audio on its own, before the keyframe: there the priming packet fills
    /// the join, so DASH keeps it.)
    enc_from_us: Option<i64>,
    max_frames: Option<u64>,
    /// Text subtitle conversion (decoder + encoder), for subtitle streams neither copied nor
    /// fed through filters.
    subconv: Option<subtitle::TextSubConv>,
}

struct OutFile {
    // Field order matters: the muxer context must be freed before the io hooks it calls.
    octx: format::context::Output,
    hooks: Option<io::IoHooks>,
    streams: Vec<OutStream>,
    header_written: bool,
    trailer_written: bool,
    queue: Vec<(usize, Packet, Rational)>,
    header_opts: Dictionary<'static>,
    seek: Option<f64>,
    limit: Option<f64>,
    out_time: f64,
    segments: u64,
    /// Where the segment being written starts (None until the first packet).
    seg_start: Option<f64>,
    /// The latest video keyframe handed to the muxer (seconds, output timeline). Segmenters
    /// cut at video keyframes, so when a segment closes this is where the next one starts:
    /// the exact end of the closed one, which a continuation resumes from.
    last_video_key: Option<f64>,
    label: String,
}

struct Run<'e> {
    job: Job,
    events: &'e mut dyn FnMut(JobEvent),
    inputs: Vec<InFile>,
    decs: HashMap<(usize, usize), Dec>,
    copies: HashMap<(usize, usize), Vec<(usize, usize)>>,
    /// Input stream -> converted subtitle output streams.
    subconvs: HashMap<(usize, usize), Vec<(usize, usize)>>,
    complex: Vec<Complex>,
    outs: Vec<OutFile>,
    threads: Option<u32>,
    started: Instant,
    last_progress: Instant,
    frames: u64,
    duration: Option<f64>,
    first_out_time: Option<f64>,
    pacing: Pacing,
}

/// What the job's control handle did to its pace (see [`Run::pace`]).
#[derive(Debug, Default)]
struct Pacing {
    control: CancelToken,
    throttling: bool,
    throttled_packets: u64,
    /// Time spent paused; `-re` pacing runs on wall time minus this, so a paused realtime
    /// input resumes at realtime instead of bursting to catch up.
    paused: Duration,
}

impl<'e> Run<'e> {
    fn open(job: &Job, threads: Option<u32>, events: &'e mut dyn FnMut(JobEvent)) -> Result<Self> {
        let threads = job.threads.or(threads);
        let mut inputs = Vec::new();
        for (i, inp) in job.inputs.iter().enumerate() {
            inputs.push(open_input(job, i, inp)?);
        }
        let mut run = Run {
            job: job.clone(),
            events,
            inputs,
            decs: HashMap::new(),
            copies: HashMap::new(),
            subconvs: HashMap::new(),
            complex: Vec::new(),
            outs: Vec::new(),
            threads,
            started: Instant::now(),
            last_progress: Instant::now(),
            frames: 0,
            duration: None,
            first_out_time: None,
            pacing: Pacing::default(),
        };
        run.duration = run.input_duration();
        run.plan()?;
        let video_size = run.first_video_size();
        let input_streams = run
            .inputs
            .iter()
            .enumerate()
            .flat_map(|(i, f)| streams::input_streams(i, &f.ctx))
            .collect();
        (run.events)(JobEvent::Started {
            duration: run.duration,
            video_size,
            input_streams,
        });
        Ok(run)
    }

    fn input_duration(&self) -> Option<f64> {
        let inp = self.inputs.first()?;
        let d = inp.ctx.duration();
        if d <= 0 {
            return None;
        }
        let mut d = d as f64 / 1e6;
        let spec = &self.job.inputs[0];
        if let Some(s) = spec.seek {
            d = (d - s).max(0.0);
        }
        if let Some(t) = spec.duration {
            d = d.min(t);
        }
        if let Some(t) = self.job.outputs.first().and_then(|o| o.duration) {
            d = d.min(t);
        }
        // A continuation reports the session's duration (its seek and limits grew and shrank
        // by the part already done), so that percentages carry on.
        if let Some(c) = &self.job.continuation {
            d += c.elapsed;
        }
        Some(d)
    }

    fn first_video_size(&self) -> Option<(u32, u32)> {
        for o in &self.outs {
            for s in &o.streams {
                if s.plan.kind == media::Type::Video {
                    if let Some(sz) = s.plan.settings.size {
                        return Some(sz);
                    }
                    if let Source::Input { input, stream } = s.plan.source {
                        let st = self.inputs[input].ctx.stream(stream)?;
                        let p = st.parameters();
                        // SAFETY: codecpar of a live stream; plain fields.
                        let (w, h) = unsafe { ((*p.as_ptr()).width, (*p.as_ptr()).height) };
                        return Some((w.max(0) as u32, h.max(0) as u32));
                    }
                }
            }
        }
        None
    }

    fn log(&mut self, level: LogLevel, message: String) {
        tracing::debug!(?level, "{message}");
        (self.events)(JobEvent::Log { level, message });
    }

    /// Builds outputs, streams, decoders and graphs.
    fn plan(&mut self) -> Result<()> {
        let job = self.job.clone();
        // Complex graphs first: their outputs are mapped by label.
        for (g, spec) in job.complex_filters.iter().enumerate() {
            let parsed = plan::parse_complex(spec, &job, &self.inputs_facts())
                .map_err(|m| other(Stage::Filter, format!("filter_complex #{g}: {m}")))?;
            self.complex.push(Complex {
                spec: parsed.spec,
                pending: (0..parsed.sources.len()).map(|_| Vec::new()).collect(),
                pending_eof: vec![false; parsed.sources.len()],
                descs: vec![None; parsed.sources.len()],
                consumers: vec![None; parsed.outputs.len()],
                sources: parsed.sources,
                outputs: parsed.outputs,
                graph: None,
                done: false,
            });
        }
        for (o, out) in job.outputs.iter().enumerate() {
            let of = self.open_output(o, out)?;
            self.outs.push(of);
        }
        // Wire complex graph sources to decoders.
        for g in 0..self.complex.len() {
            for k in 0..self.complex[g].sources.len() {
                let (i, s) = self.complex[g].sources[k];
                self.ensure_decoder(i, s)?;
                if let Some(d) = self.decs.get_mut(&(i, s)) {
                    d.consumers.push(Consumer::Graph { graph: g, input: k });
                }
            }
        }
        Ok(())
    }

    fn inputs_facts(&self) -> Vec<Vec<plan::StreamInfo>> {
        self.inputs
            .iter()
            .map(|i| plan::stream_infos(&i.ctx))
            .collect()
    }

    fn ensure_decoder(&mut self, input: usize, stream: usize) -> Result<()> {
        if self.decs.contains_key(&(input, stream)) {
            return Ok(());
        }
        let spec = self.job.inputs[input].clone();
        let ictx = &self.inputs[input].ctx;
        let st = ictx.stream(stream).ok_or_else(|| {
            other(
                Stage::Decode,
                format!("input #{input} has no stream {stream}"),
            )
        })?;
        let ctxname = format!("input #{input} stream #{input}:{stream}");
        let infos = plan::stream_infos(ictx);
        let facts = plan::facts(&infos);
        let forced = spec
            .decoders
            .iter()
            .rev()
            .find(|d| d.spec.matches(&facts, stream))
            .map(|d| d.value.clone());
        let mut cctx = codec::context::Context::from_parameters(st.parameters()).map_err(av(
            Stage::Decode,
            format!("{ctxname}: reading codec parameters"),
        ))?;
        let kind = cctx.medium();
        let tb = st.time_base();
        let frame_rate =
            Some(st.avg_frame_rate()).filter(|r| r.numerator() > 0 && r.denominator() > 0);
        let codec = match &forced {
            Some(name) => match codec::decoder::find_by_name(name) {
                Some(c) => c,
                None => {
                    let avail = ffi::codec_names(cctx.id(), false);
                    return Err(Error::Unsupported(format!(
                        "{ctxname}: unknown decoder `{name}`; {} decoders available here: {}",
                        codec_family(cctx.id()),
                        list_or_none(&avail)
                    )));
                }
            },
            None => codec::decoder::find(cctx.id()).ok_or_else(|| {
                Error::Unsupported(format!("{ctxname}: no decoder for codec {:?}", cctx.id()))
            })?,
        };
        let mut hw = None;
        if let Some(h) = &spec.hwaccel
            && !matches!(h.name.as_str(), "" | "none")
            && kind == media::Type::Video
        {
            let dev_kind = match h.name.as_str() {
                "nvdec" | "cuvid" => "cuda",
                "auto" => "cuda",
                n => n,
            };
            match ffi::HwDevice::open(dev_kind, h.device.as_deref()) {
                Ok(d) => {
                    d.attach(&mut cctx);
                    hw = Some(d);
                }
                Err(e) if h.name == "auto" => {
                    let msg = format!("{ctxname}: -hwaccel auto: {e}; decoding in software");
                    self.log(LogLevel::Warning, msg);
                }
                Err(e) => {
                    return Err(other(
                        Stage::Decode,
                        format!("{ctxname}: -hwaccel {}: {e}", h.name),
                    ));
                }
            }
        }
        cctx.set_threading(codec::threading::Config {
            kind: codec::threading::Type::Frame,
            count: self.threads.unwrap_or(0) as usize,
            ..Default::default()
        });
        let mut dec = cctx.decoder();
        dec.set_packet_time_base(tb);
        let mut opts = Dictionary::new();
        for d in &spec.decoder_options {
            if d.spec.matches(&facts, stream) {
                opts.set(&d.value.0, &d.value.1);
            }
        }
        let opened = dec.open_as_with(codec, opts).map_err(|e| {
            if plan::is_hw_name(codec.name()) {
                Error::Other {
                    stage: Stage::Decode,
                    message: format!(
                        "{ctxname}: hardware decoder `{}` is not usable on this machine ({e}); {} decoders available here: {}",
                        codec.name(),
                        codec_family(codec.id()),
                        list_or_none(&usable_decoders(codec.id()))
                    ),
                }
            } else {
                Error::Av { stage: Stage::Decode, context: format!("{ctxname}: opening decoder {}", codec.name()), source: e }
            }
        })?;
        self.decs.insert(
            (input, stream),
            Dec {
                dec: opened,
                kind,
                time_base: tb,
                frame_rate,
                input,
                consumers: Vec::new(),
                flushed: false,
                _hw: hw,
            },
        );
        Ok(())
    }

    fn open_output(&mut self, o: usize, out: &clusterplex_core::Output) -> Result<OutFile> {
        let job = self.job.clone();
        let target = resolve(&job, &out.target);
        let label = format!("output #{o} ({})", out.target);
        let (fmt, header_opts, io_kind, manifests) = plan::muxer_setup(&job, o, out, &target)?;
        if let Some(parent) = Path::new(&target).parent()
            && !parent.as_os_str().is_empty()
            && !target.contains("://")
        {
            std::fs::create_dir_all(parent).map_err(|e| Error::Io {
                context: format!("{label}: creating {}", parent.display()),
                source: e,
            })?;
        }
        // A continuation's DASH MPD or HLS playlist lists the earlier job's segments: read it
        // before opening the output truncates it.
        let prev_manifest = job
            .continuation
            .as_ref()
            .and_then(|_| std::fs::read_to_string(&target).ok());
        let mut octx = match &fmt {
            Some(f) => format::output_as(&target, f),
            None => format::output(&target),
        }
        .map_err(av(Stage::Mux, format!("{label}: opening output")))?;
        if !out.metadata.is_empty() {
            let mut md = Dictionary::new();
            for (k, v) in &out.metadata {
                md.set(k, v);
            }
            octx.set_metadata(md);
        }
        let plans = plan::select_streams(
            &job,
            o,
            out,
            &self.inputs_facts(),
            &self.complex_outputs(),
            &octx,
        )
        .map_err(|m| other(Stage::Validate, format!("{label}: {m}")))?;
        let hooks = io_kind.map(|mut k| {
            if let io::IoKind::Dash {
                representations, ..
            } = &mut k
            {
                *representations = plans.len();
            }
            let h = io::IoHooks::new(k, manifests);
            if let Some(c) = &job.continuation {
                let window = match &out.segmenting {
                    Some(Segmenting::Dash {
                        window_size: Some(w),
                        ..
                    }) if *w > 0 => Some(*w as usize),
                    Some(Segmenting::Hls { list_size, .. }) if *list_size > 0 => {
                        Some(*list_size as usize)
                    }
                    _ => None,
                };
                h.continue_session(c.elapsed, window, prev_manifest.clone());
            }
            h.install(&mut octx);
            h
        });
        if plans.is_empty() {
            return Err(other(
                Stage::Validate,
                format!("{label}: no streams selected"),
            ));
        }
        // Plex's DASH `-time_delta` cuts at keyframes up to D before a boundary. When the engine
        // encodes the video it puts keyframes exactly on the boundaries, so libav's cuts are
        // Plex's. Copied video keeps the source's keyframes: a keyframe lying less than D before
        // a boundary starts the next segment one GOP later here. The MPD describes the segments
        // as written, so playback stays consistent; refusing would send every remux session of
        // an older PMS (the one that sends -time_delta) back to the local transcoder.
        if let Some(Segmenting::Dash {
            time_delta: Some(d),
            ..
        }) = &out.segmenting
            && *d > 0.0
            && plans.iter().any(|p| p.copy && p.kind == media::Type::Video)
        {
            self.log(
                LogLevel::Warning,
                format!(
                    "{label}: -time_delta {d} with stream-copied video: segments are cut at the \
                     first source keyframe at or after each boundary"
                ),
            );
        }
        let seg_interval = match &out.segmenting {
            Some(Segmenting::Hls { time, .. }) => Some(*time),
            Some(Segmenting::Dash { seg_duration, .. }) => Some(*seg_duration),
            Some(Segmenting::Segment { segment_time, .. }) => Some(*segment_time),
            None => None,
        };
        let mut streams = Vec::new();
        for (s, p) in plans.into_iter().enumerate() {
            let sctx = format!("{label} stream #{o}:{s} ({})", p.describe());
            let index;
            let mut enc_codec = None;
            let mut subconv = None;
            if p.copy {
                let Source::Input { input, stream } = p.source else {
                    return Err(other(
                        Stage::Validate,
                        format!("{sctx}: cannot copy a filter graph output"),
                    ));
                };
                let ist = self.inputs[input]
                    .ctx
                    .stream(stream)
                    .ok_or_else(|| other(Stage::Validate, "stream vanished"))?;
                let in_tb = ist.time_base();
                let params = ist.parameters();
                let mut ost = octx
                    .add_stream(codec::encoder::find(codec::Id::None))
                    .map_err(av(Stage::Mux, sctx.clone()))?;
                ost.set_parameters(params);
                ost.set_time_base(in_tb);
                index = ost.index();
                ffi::set_stream_codec_tag(&mut octx, index, p.settings.tag.as_deref());
                self.copies.entry((input, stream)).or_default().push((o, s));
            } else if let (media::Type::Subtitle, Source::Input { input, stream }) =
                (p.kind, p.source)
            {
                let ist = self.inputs[input]
                    .ctx
                    .stream(stream)
                    .ok_or_else(|| other(Stage::Validate, "stream vanished"))?;
                let codec = plan::find_encoder(&p, &octx, &sctx)?;
                let conv =
                    subtitle::TextSubConv::open(ist.parameters(), ist.time_base(), codec, &sctx)?;
                let mut ost = octx
                    .add_stream(codec)
                    .map_err(av(Stage::Mux, sctx.clone()))?;
                ost.set_parameters(conv.parameters()?);
                ost.set_time_base(US);
                index = ost.index();
                ffi::set_stream_codec_tag(&mut octx, index, p.settings.tag.as_deref());
                self.subconvs
                    .entry((input, stream))
                    .or_default()
                    .push((o, s));
                subconv = Some(conv);
            } else {
                let codec = plan::find_encoder(&p, &octx, &sctx)?;
                let ost = octx
                    .add_stream(codec)
                    .map_err(av(Stage::Mux, sctx.clone()))?;
                index = ost.index();
                enc_codec = Some(codec);
            }
            let force_kf = p
                .settings
                .force_key_frames
                .as_deref()
                .and_then(plan::parse_force_kf);
            let kf_interval = if p.kind == media::Type::Video && !p.copy {
                force_kf.or(seg_interval)
            } else {
                None
            };
            let max_frames = out
                .max_frames
                .iter()
                .rev()
                .find(|m| p.spec_matches(&m.spec))
                .map(|m| m.value);
            let (copy_from_us, copy_tolerance_us) = match (p.copy, p.source) {
                (true, Source::Input { input, stream }) if job.continuation.is_some() => (
                    self.inputs[input].drop_before_us,
                    self.inputs[input]
                        .ctx
                        .stream(stream)
                        .map_or(MIN_COPY_TOLERANCE_US, |st| streams::half_frame_us(&st)),
                ),
                _ => (None, 0),
            };
            let enc_from_us = match (p.copy, p.kind, p.source) {
                (false, media::Type::Audio, Source::Input { input, .. })
                    if job.continuation.is_some()
                        && out.seek.is_none()
                        && matches!(out.segmenting, Some(Segmenting::Hls { .. })) =>
                {
                    self.inputs[input].drop_before_us
                }
                _ => None,
            };
            streams.push(OutStream {
                plan: p,
                index,
                encoder: None,
                enc_codec,
                enc_tb: Rational(1, 1),
                pipeline: None,
                ready: false,
                finished: false,
                frames: 0,
                last_pts: None,
                frame_dur: 0,
                next_kf: None,
                kf_interval,
                seen_key: false,
                copy_from_us,
                copy_tolerance_us,
                enc_from_us,
                max_frames,
                subconv,
            });
        }
        let mut of = OutFile {
            octx,
            hooks,
            streams,
            header_written: false,
            trailer_written: false,
            queue: Vec::new(),
            header_opts,
            seek: out.seek,
            limit: out
                .duration
                .or(out.stop_at.map(|t| t - out.seek.unwrap_or(0.0))),
            out_time: 0.0,
            segments: 0,
            seg_start: None,
            last_video_key: None,
            label,
        };
        // Decoders and pipelines for transcoded streams fed straight from an input.
        for s in 0..of.streams.len() {
            let p = &of.streams[s].plan;
            if p.copy || of.streams[s].subconv.is_some() {
                of.streams[s].ready = true;
                continue;
            }
            match p.source {
                Source::Input { input, stream } => {
                    self.ensure_decoder(input, stream)?;
                    let d = &self.decs[&(input, stream)];
                    let (tb, rate) = (d.time_base, d.frame_rate);
                    let tail = plan::tail_filters(&of.streams[s].plan, of.streams[s].enc_codec);
                    let user = of.streams[s]
                        .plan
                        .settings
                        .filter
                        .clone()
                        .unwrap_or_default();
                    let ctx = format!("{} stream #{o}:{s}", of.label);
                    of.streams[s].pipeline = Some(filter::Pipeline::new(
                        p.kind,
                        &user,
                        &tail,
                        tb,
                        rate,
                        self.threads,
                        ctx,
                    )?);
                    if let Some(d) = self.decs.get_mut(&(input, stream)) {
                        d.consumers.push(Consumer::Stream { out: o, stream: s });
                    }
                }
                Source::Graph { graph, output } => {
                    self.complex[graph].consumers[output] = Some((o, s));
                }
            }
        }
        Ok(of)
    }

    fn complex_outputs(&self) -> Vec<Vec<(String, media::Type)>> {
        self.complex.iter().map(|c| c.outputs.clone()).collect()
    }

    /// The main loop.
    fn execute(&mut self, cancel: &CancelToken) -> Result<()> {
        self.pacing.control = cancel.clone();
        self.try_write_headers()?;
        loop {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            if self.all_outputs_done() {
                break;
            }
            let Some(i) = self.next_input() else { break };
            self.pace()?;
            let mut pkt = Packet::empty();
            match pkt.read(&mut self.inputs[i].ctx) {
                Ok(()) => {}
                Err(ffmpeg_next::Error::Eof) => {
                    self.inputs[i].eof = true;
                    self.flush_input(i)?;
                    continue;
                }
                Err(e) => {
                    return Err(Error::Av {
                        stage: Stage::Decode,
                        context: format!("input #{i} ({}): reading packet", self.job.inputs[i].url),
                        source: e,
                    });
                }
            }
            self.handle_packet(i, pkt)?;
            self.maybe_progress(false);
        }
        for i in 0..self.inputs.len() {
            if !self.inputs[i].eof {
                self.inputs[i].eof = true;
                self.flush_input(i)?;
            }
        }
        // Encoders: flush all.
        for o in 0..self.outs.len() {
            for s in 0..self.outs[o].streams.len() {
                self.flush_encoder(o, s)?;
            }
        }
        Ok(())
    }

    /// Honours the control handle's pause and throttle flags before the next input packet:
    /// paused, it waits (in slices, so cancel still stops it promptly); throttled, it sleeps
    /// 100 ms as Plex's transcoder does. Transitions are logged, not packets.
    fn pace(&mut self) -> Result<()> {
        let c = &self.pacing.control;
        if !self.pacing.throttling && !c.is_throttled() && !c.is_paused() {
            return Ok(());
        }
        let control = c.clone();
        if control.is_paused() {
            let since = Instant::now();
            tracing::info!("job paused: reading no input until resumed");
            while control.is_paused() {
                if control.is_cancelled() {
                    self.pacing.paused += since.elapsed();
                    return Err(Error::Cancelled);
                }
                std::thread::sleep(PACING_SLICE);
            }
            let waited = since.elapsed();
            self.pacing.paused += waited;
            tracing::info!(paused_ms = waited.as_millis() as u64, "job resumed");
        }
        let throttled = control.is_throttled();
        if throttled != self.pacing.throttling {
            self.pacing.throttling = throttled;
            if throttled {
                tracing::info!("job throttled: sleeping 100 ms per input packet");
            } else {
                tracing::info!(
                    packets = self.pacing.throttled_packets,
                    "job no longer throttled"
                );
            }
        }
        if throttled {
            self.pacing.throttled_packets += 1;
            // Cancelling, pausing or lifting the throttle ends the sleep early.
            sleep_unless(THROTTLE_SLEEP, || {
                control.is_cancelled() || control.is_paused() || !control.is_throttled()
            });
            if control.is_cancelled() {
                return Err(Error::Cancelled);
            }
        }
        Ok(())
    }

    fn all_outputs_done(&self) -> bool {
        self.outs
            .iter()
            .all(|o| o.streams.iter().all(|s| s.finished))
    }

    fn next_input(&self) -> Option<usize> {
        self.inputs
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.eof)
            .min_by_key(|(_, f)| f.last_us)
            .map(|(i, _)| i)
    }

    fn handle_packet(&mut self, i: usize, mut pkt: Packet) -> Result<()> {
        let si = pkt.stream();
        let key = (i, si);
        let has_dec = self.decs.contains_key(&key);
        let has_copy = self.copies.contains_key(&key);
        let has_sub = self.subconvs.contains_key(&key);
        if !has_dec && !has_copy && !has_sub {
            return Ok(());
        }
        let tb = match self.inputs[i].ctx.stream(si) {
            Some(s) => s.time_base(),
            None => return Ok(()),
        };
        let off = rescale(self.inputs[i].offset_us, US, tb);
        if let Some(p) = pkt.pts() {
            pkt.set_pts(Some(p + off));
        }
        if let Some(d) = pkt.dts() {
            pkt.set_dts(Some(d + off));
        }
        if let Some(t) = pkt.dts().or(pkt.pts()) {
            let us = rescale(t, tb, US);
            let inp = &mut self.inputs[i];
            inp.last_us = inp.last_us.max(us);
            if inp.realtime {
                let first = *inp.first_us.get_or_insert(us);
                let clock = self.started.elapsed().saturating_sub(self.pacing.paused);
                let ahead = (us - first) as f64 / 1e6 - clock.as_secs_f64();
                if ahead > 0.0 {
                    let control = &self.pacing.control;
                    sleep_unless(Duration::from_secs_f64(ahead.min(1.0)), || {
                        control.is_cancelled() || control.is_paused()
                    });
                }
            }
            if let Some(lim) = inp.limit_us
                && us >= lim
            {
                inp.eof = true;
                return self.flush_input(i);
            }
        }
        if has_copy {
            let targets = self.copies[&key].clone();
            for (o, s) in targets {
                self.copy_packet(o, s, &pkt, tb)?;
            }
        }
        if has_sub {
            let targets = self.subconvs[&key].clone();
            for (o, s) in targets {
                self.convert_subtitle(o, s, i, &pkt)?;
            }
        }
        if has_dec {
            let ctx = format!("input #{i} stream #{i}:{si}");
            let d = self
                .decs
                .get_mut(&key)
                .ok_or_else(|| other(Stage::Decode, "decoder vanished"))?;
            match d.dec.send_packet(&pkt) {
                Ok(()) => {}
                // Corrupt packets: libav already concealed what it could; keep going like ffmpeg.
                Err(ffmpeg_next::Error::InvalidData) => {
                    self.log(
                        LogLevel::Warning,
                        format!("{ctx}: invalid data in packet, skipped"),
                    );
                }
                Err(e) if is_eagain(&e) => {}
                Err(e) => {
                    return Err(Error::Av {
                        stage: Stage::Decode,
                        context: ctx,
                        source: e,
                    });
                }
            }
            self.drain_decoder(key)?;
        }
        Ok(())
    }

    fn drain_decoder(&mut self, key: (usize, usize)) -> Result<()> {
        loop {
            let mut frame = ffi::new_frame();
            let (r, kind) = {
                let d = self
                    .decs
                    .get_mut(&key)
                    .ok_or_else(|| other(Stage::Decode, "decoder vanished"))?;
                (d.dec.receive_frame(&mut frame), d.kind)
            };
            match r {
                Ok(()) => {}
                Err(ffmpeg_next::Error::Eof) => return Ok(()),
                Err(e) if is_eagain(&e) => return Ok(()),
                Err(ffmpeg_next::Error::InvalidData) => continue,
                Err(e) => {
                    return Err(Error::Av {
                        stage: Stage::Decode,
                        context: format!("input #{} stream #{}:{}", key.0, key.0, key.1),
                        source: e,
                    });
                }
            }
            if let Some(sw) = ffi::download_if_hw(&frame)
                .map_err(av(Stage::Decode, "downloading hardware frame"))?
            {
                frame = sw;
            }
            // SAFETY: best_effort_timestamp is a plain field of the frame we own.
            let ts = unsafe { (*frame.as_ptr()).best_effort_timestamp };
            let ts = if ts == i64::MIN {
                frame.pts()
            } else {
                Some(ts)
            };
            frame.set_pts(ts);
            let d = &self.decs[&key];
            if let (Some(t), Some(drop)) = (ts, self.inputs[d.input].drop_before_us) {
                let end = if kind == media::Type::Audio {
                    // SAFETY: plain fields of the frame we own.
                    let (n, rate) =
                        unsafe { ((*frame.as_ptr()).nb_samples, (*frame.as_ptr()).sample_rate) };
                    rescale(t, d.time_base, US)
                        + (i64::from(n) * 1_000_000) / i64::from(rate.max(1))
                } else if self.job.continuation.is_some() {
                    // A continuation resumes at the output time of the frame that starts the
                    // next segment; encoding may have moved that frame up to half a frame
                    // (`-fps_mode cfr` rounds to its grid), so keep what lies within half a
                    // frame of the resume point.
                    let half = d
                        .frame_rate
                        .filter(|r| r.numerator() > 0 && r.denominator() > 0)
                        .map_or(MIN_COPY_TOLERANCE_US, |r| (5e5 / f64::from(r)) as i64);
                    rescale(t, d.time_base, US) + half.max(MIN_COPY_TOLERANCE_US)
                } else {
                    rescale(t, d.time_base, US) + 1
                };
                if end <= drop {
                    continue;
                }
            }
            if kind == media::Type::Video {
                ffi::set_forced_keyframe(&mut frame, false);
            }
            let n = self.decs[&key].consumers.len();
            for c in 0..n {
                let target = match &self.decs[&key].consumers[c] {
                    Consumer::Stream { out, stream } => (true, *out, *stream),
                    Consumer::Graph { graph, input } => (false, *graph, *input),
                };
                if target.0 {
                    self.feed_stream(target.1, target.2, Some(&frame))?;
                } else {
                    self.feed_graph(target.1, target.2, Some(&frame))?;
                }
            }
        }
    }

    fn flush_input(&mut self, i: usize) -> Result<()> {
        let keys: Vec<(usize, usize)> = self.decs.keys().filter(|k| k.0 == i).cloned().collect();
        for key in keys {
            if self.decs[&key].flushed {
                continue;
            }
            if let Some(d) = self.decs.get_mut(&key) {
                d.flushed = true;
                let _ = d.dec.send_eof();
            }
            self.drain_decoder(key)?;
            let n = self.decs[&key].consumers.len();
            for c in 0..n {
                match self.decs[&key].consumers[c] {
                    Consumer::Stream { out, stream } => self.feed_stream(out, stream, None)?,
                    Consumer::Graph { graph, input } => self.feed_graph(graph, input, None)?,
                }
            }
        }
        Ok(())
    }

    /// Feeds a decoded frame (or EOF) into a simple per-stream pipeline, then encodes.
    fn feed_stream(&mut self, o: usize, s: usize, frame: Option<&Frame>) -> Result<()> {
        if self.outs[o].streams[s].finished && frame.is_some() {
            return Ok(());
        }
        let mut pipe = match self.outs[o].streams[s].pipeline.take() {
            Some(p) => p,
            None => return Ok(()),
        };
        let res = (|| {
            pipe.push(frame)?;
            self.open_audio_encoder_if_ready(o, s, &mut pipe)?;
            let mut frames = Vec::new();
            pipe.pull(&mut frames)?;
            let tb = pipe.out_time_base();
            for f in frames {
                self.encode_frame(o, s, Some(f), tb.unwrap_or(Rational(1, 1)), Some(&mut pipe))?;
            }
            Ok(())
        })();
        self.outs[o].streams[s].pipeline = Some(pipe);
        res
    }

    fn open_audio_encoder_if_ready(
        &mut self,
        o: usize,
        s: usize,
        pipe: &mut filter::Pipeline,
    ) -> Result<()> {
        if pipe.kind() != media::Type::Audio || self.outs[o].streams[s].encoder.is_some() {
            return Ok(());
        }
        let Some(mut sink) = pipe.final_sink() else {
            return Ok(());
        };
        let (size, variable) = self.open_encoder(o, s, &mut sink, None)?;
        if size > 0 && !variable {
            pipe.samples = Some(size);
        }
        Ok(())
    }

    fn feed_graph(&mut self, g: usize, k: usize, frame: Option<&Frame>) -> Result<()> {
        let c = &mut self.complex[g];
        if c.done {
            return Ok(());
        }
        match frame {
            Some(f) => {
                if c.descs[k].is_none() {
                    let (i, s) = c.sources[k];
                    let d = &self.decs[&(i, s)];
                    c.descs[k] = Some(filter::SourceDesc::of_frame(
                        d.kind,
                        f,
                        d.time_base,
                        d.frame_rate,
                    ));
                }
                let mut copy = ffi::new_frame();
                // SAFETY: new reference to the frame's buffers into an empty frame we own.
                unsafe { ffmpeg_next::ffi::av_frame_ref(copy.as_mut_ptr(), f.as_ptr()) };
                c.pending[k].push(copy);
            }
            None => c.pending_eof[k] = true,
        }
        if c.graph.is_none() {
            let all = (0..c.sources.len()).all(|j| c.descs[j].is_some() || c.pending_eof[j]);
            if !all {
                return Ok(());
            }
            if c.descs.iter().any(Option::is_none) {
                return Err(other(
                    Stage::Filter,
                    format!("filter_complex `{}`: an input had no frames", c.spec),
                ));
            }
            let sources: Vec<(String, filter::SourceDesc)> = c
                .descs
                .iter()
                .enumerate()
                .map(|(j, d)| {
                    (
                        format!("cpxin{j}"),
                        d.clone().unwrap_or_else(unreachable_desc),
                    )
                })
                .collect();
            let graph = filter::LavfiGraph::build(
                &c.spec,
                &sources,
                &c.outputs,
                self.threads,
                "filter_complex",
            )?;
            c.graph = Some(graph);
        }
        // Push everything pending.
        let c = &mut self.complex[g];
        let Some(graph) = c.graph.as_mut() else {
            return Ok(());
        };
        for j in 0..c.pending.len() {
            for f in std::mem::take(&mut c.pending[j]) {
                graph.push(j, &f)?;
            }
            if c.pending_eof[j] {
                graph.close(j)?;
            }
        }
        let all_eof = c.pending_eof.iter().all(|e| *e);
        // Pull per output.
        for out_idx in 0..c.outputs.len() {
            let Some((o, s)) = self.complex[g].consumers[out_idx] else {
                continue;
            };
            let kind = self.complex[g].outputs[out_idx].1;
            if kind == media::Type::Audio && self.outs[o].streams[s].encoder.is_none() {
                let mut sink = match self.complex[g]
                    .graph
                    .as_mut()
                    .and_then(|gr| gr.sink_ctx(out_idx))
                {
                    Some(x) => x,
                    None => continue,
                };
                let (size, variable) = self.open_encoder(o, s, &mut sink, None)?;
                self.outs[o].streams[s].frame_dur = 0;
                if size > 0 && !variable {
                    self.outs[o].streams[s].plan.samples = Some(size);
                }
            }
            let samples = self.outs[o].streams[s].plan.samples;
            let mut frames = Vec::new();
            let tb = {
                let gr = self.complex[g]
                    .graph
                    .as_mut()
                    .ok_or_else(|| other(Stage::Filter, "graph vanished"))?;
                gr.pull(out_idx, samples, &mut frames)?;
                gr.sink_ctx(out_idx)
                    .map(|mut c| c.sink().time_base())
                    .unwrap_or(Rational(1, 1))
            };
            for f in frames {
                self.encode_frame_graph(o, s, f, tb, g, out_idx)?;
            }
        }
        if all_eof {
            self.complex[g].done = true;
        }
        Ok(())
    }

    fn encode_frame_graph(
        &mut self,
        o: usize,
        s: usize,
        f: Frame,
        tb: Rational,
        g: usize,
        out_idx: usize,
    ) -> Result<()> {
        if self.outs[o].streams[s].encoder.is_none() {
            let mut sink = self.complex[g]
                .graph
                .as_mut()
                .and_then(|gr| gr.sink_ctx(out_idx))
                .ok_or_else(|| other(Stage::Filter, "graph sink vanished"))?;
            self.open_encoder(o, s, &mut sink, Some(&f))?;
        }
        self.encode_frame(o, s, Some(f), tb, None)
    }

    /// Opens the encoder of (o, s) from the configured sink. Returns the audio frame size.
    fn open_encoder(
        &mut self,
        o: usize,
        s: usize,
        sink: &mut ffmpeg_next::filter::Context,
        first: Option<&Frame>,
    ) -> Result<(u32, bool)> {
        let global_header = ffi::format_wants_global_header(&self.outs[o].octx);
        let threads = self.threads;
        let of = &mut self.outs[o];
        let st = &mut of.streams[s];
        let sctx = format!("{} stream #{o}:{s} ({})", of.label, st.plan.describe());
        let codec = st
            .enc_codec
            .ok_or_else(|| other(Stage::Encode, format!("{sctx}: no encoder")))?;
        let mut cctx = codec::context::Context::new_with_codec(codec);
        let mut opts = plan::encoder_options(&st.plan.settings, threads);
        let kind = st.plan.kind;
        let (tb, frame_dur) = match kind {
            media::Type::Video => {
                let p = ffi::video_sink_params(sink);
                let rate = st
                    .plan
                    .settings
                    .frame_rate
                    .map(|(n, d)| Rational(n as i32, d as i32))
                    .or(Some(p.frame_rate).filter(|r| r.numerator() > 0 && r.denominator() > 0));
                let tb = rate.map(|r| r.invert()).unwrap_or(p.time_base);
                if let Some(f) = first {
                    ffi::copy_frame_colors(f, &mut cctx);
                }
                let mut v = cctx
                    .encoder()
                    .video()
                    .map_err(av(Stage::Encode, sctx.clone()))?;
                v.set_width(p.width);
                v.set_height(p.height);
                v.set_format(p.format);
                if p.sample_aspect.numerator() > 0 {
                    v.set_aspect_ratio(p.sample_aspect);
                }
                v.set_time_base(tb);
                v.set_frame_rate(rate);
                if let (Some(iv), Some(r), None) = (st.kf_interval, rate, st.plan.settings.gop) {
                    let g = (iv * f64::from(r)).round().max(1.0) as u32;
                    opts.set("g", &g.to_string());
                    if st.plan.settings.keyint_min.is_none() {
                        opts.set("keyint_min", &g.to_string());
                    }
                    if codec.name() == "libx264" || codec.name() == "libx265" {
                        // Scene cuts would add keyframes that make segments uneven.
                        opts.set("sc_threshold", "0");
                    }
                }
                cctx = v.0.0;
                let dur = rate.map(|r| rescale(1, r.invert(), tb).max(1)).unwrap_or(0);
                (tb, dur)
            }
            _ => {
                let p = ffi::audio_sink_params(sink);
                let mut a = cctx
                    .encoder()
                    .audio()
                    .map_err(av(Stage::Encode, sctx.clone()))?;
                a.set_rate(p.rate as i32);
                a.set_format(p.format);
                a.set_time_base(Rational(1, p.rate.max(1) as i32));
                cctx = a.0.0;
                ffi::copy_sink_layout_to_encoder(sink, &mut cctx);
                (Rational(1, p.rate.max(1) as i32), 0)
            }
        };
        ffi::set_codec_rates(&mut cctx, tb, None);
        if global_header {
            ffi::add_codec_flags(&mut cctx, codec::flag::Flags::GLOBAL_HEADER.bits() as i32);
        }
        let enc = match kind {
            media::Type::Video => cctx
                .encoder()
                .video()
                .and_then(|v| v.open_as_with(codec, opts))
                .map(|e| e.0.0),
            _ => cctx
                .encoder()
                .audio()
                .and_then(|a| a.open_as_with(codec, opts))
                .map(|e| e.0.0),
        }
        .map_err(|e| encoder_open_error(&sctx, codec, e))?;
        let (size, variable) = ffi::audio_frame_size(&enc);
        {
            let mut ost = of
                .octx
                .stream_mut(st.index)
                .ok_or_else(|| other(Stage::Mux, format!("{sctx}: stream vanished")))?;
            ost.set_parameters(&enc);
            ost.set_time_base(tb);
        }
        ffi::set_stream_codec_tag(&mut of.octx, st.index, st.plan.settings.tag.as_deref());
        st.encoder = Some(enc);
        st.enc_tb = tb;
        st.frame_dur = frame_dur;
        st.ready = true;
        self.try_write_headers()?;
        Ok((size, variable))
    }

    /// Encodes one filtered frame (or flushes with `None`).
    fn encode_frame(
        &mut self,
        o: usize,
        s: usize,
        frame: Option<Frame>,
        tb: Rational,
        pipe: Option<&mut filter::Pipeline>,
    ) -> Result<()> {
        let Some(mut f) = frame else { return Ok(()) };
        if self.outs[o].streams[s].finished {
            return Ok(());
        }
        if self.outs[o].streams[s].encoder.is_none() {
            // Video encoders open on the first filtered frame (its colour tags are known).
            let Some(p) = pipe else {
                return Err(other(Stage::Encode, "encoder not ready"));
            };
            let mut sink = p
                .final_sink()
                .ok_or_else(|| other(Stage::Filter, "pipeline not configured"))?;
            self.open_encoder(o, s, &mut sink, Some(&f))?;
        }
        let Some(pts) = f.pts() else { return Ok(()) };
        let t = secs(pts, tb);
        let (oseek, olimit) = (self.outs[o].seek, self.outs[o].limit);
        let base = oseek.unwrap_or(0.0);
        if t < base - 1e-6 {
            return Ok(());
        }
        if let Some(lim) = olimit
            && t - base >= lim - 1e-6
        {
            self.outs[o].streams[s].finished = true;
            return Ok(());
        }
        let of = &mut self.outs[o];
        let st = &mut of.streams[s];
        let mut epts = rescale(pts - rescale_f(base, tb), tb, st.enc_tb);
        if st.plan.kind == media::Type::Video {
            if let Some(last) = st.last_pts
                && epts <= last
            {
                epts = last + 1;
            }
            let mut key = false;
            if let Some(iv) = st.kf_interval {
                let next = st.next_kf.get_or_insert(t);
                if t + 1e-6 >= *next {
                    key = true;
                    while *next <= t + 1e-6 {
                        *next += iv;
                    }
                }
            }
            ffi::set_forced_keyframe(&mut f, key);
        }
        st.last_pts = Some(epts);
        f.set_pts(Some(epts));
        let sctx = format!("{} stream #{o}:{s}", of.label);
        let enc = st
            .encoder
            .as_mut()
            .ok_or_else(|| other(Stage::Encode, "no encoder"))?;
        enc.send_frame(&f).map_err(av(Stage::Encode, sctx))?;
        st.frames += 1;
        if st.plan.kind == media::Type::Video {
            self.frames += 1;
        }
        if let Some(max) = st.max_frames
            && st.frames >= max
        {
            st.finished = true;
        }
        self.drain_encoder(o, s)
    }

    fn drain_encoder(&mut self, o: usize, s: usize) -> Result<()> {
        loop {
            let mut pkt = Packet::empty();
            let st = &mut self.outs[o].streams[s];
            let Some(enc) = st.encoder.as_mut() else {
                return Ok(());
            };
            match enc.receive_packet(&mut pkt) {
                Ok(()) => {}
                Err(ffmpeg_next::Error::Eof) => return Ok(()),
                Err(e) if is_eagain(&e) => return Ok(()),
                Err(e) => {
                    return Err(Error::Av {
                        stage: Stage::Encode,
                        context: format!("{} stream #{o}:{s}", self.outs[o].label),
                        source: e,
                    });
                }
            }
            if pkt.duration() == 0 && st.frame_dur > 0 {
                pkt.set_duration(st.frame_dur);
            }
            // Timestamps are in µs after rounding the resume point from seconds: allow for it.
            if let (Some(from), Some(t)) = (st.enc_from_us, pkt.pts())
                && rescale(t, st.enc_tb, US) + RESUME_ROUNDING_US < from
            {
                continue;
            }
            let tb = st.enc_tb;
            let idx = st.index;
            pkt.set_stream(idx);
            self.mux(o, pkt, tb)?;
        }
    }

    fn flush_encoder(&mut self, o: usize, s: usize) -> Result<()> {
        // Pipelines first (EOF through every stage).
        if self.outs[o].streams[s].pipeline.is_some() {
            self.feed_stream(o, s, None)?;
        }
        let st = &mut self.outs[o].streams[s];
        if let Some(enc) = st.encoder.as_mut() {
            match enc.send_eof() {
                Ok(()) | Err(ffmpeg_next::Error::Eof) => {}
                Err(e) => {
                    return Err(av(
                        Stage::Encode,
                        format!("{} stream #{o}:{s}: flushing", self.outs[o].label),
                    )(e));
                }
            }
            self.drain_encoder(o, s)?;
        } else if !st.plan.copy && !st.ready {
            let what = st.plan.describe();
            return Err(other(
                Stage::Encode,
                format!(
                    "{} stream #{o}:{s} ({what}): no frames reached the encoder",
                    self.outs[o].label
                ),
            ));
        }
        self.outs[o].streams[s].finished = true;
        Ok(())
    }

    fn copy_packet(&mut self, o: usize, s: usize, pkt: &Packet, tb: Rational) -> Result<()> {
        let of = &mut self.outs[o];
        let st = &mut of.streams[s];
        if st.finished {
            return Ok(());
        }
        if !st.seen_key {
            // ffmpeg's do_streamcopy: no leading non-keyframe video (`-copyinkf` off), and for a
            // continuation nothing before the resume point (`-copypriorss 0`).
            if st.plan.kind == media::Type::Video && !pkt.is_key() {
                return Ok(());
            }
            if let (Some(from), Some(t)) = (st.copy_from_us, pkt.pts().or(pkt.dts()))
                && rescale(t, tb, US) + st.copy_tolerance_us < from
            {
                return Ok(());
            }
            st.seen_key = true;
        }
        let mut p = pkt.clone();
        let base = of.seek.unwrap_or(0.0);
        if let Some(t) = p.pts().or(p.dts()) {
            let t = secs(t, tb);
            if let Some(lim) = of.limit
                && t - base >= lim
            {
                st.finished = true;
                return Ok(());
            }
        }
        if base > 0.0 {
            let off = rescale_f(base, tb);
            if let Some(x) = p.pts() {
                p.set_pts(Some(x - off));
            }
            if let Some(x) = p.dts() {
                p.set_dts(Some(x - off));
            }
        }
        p.set_stream(st.index);
        p.set_position(-1);
        st.frames += 1;
        if st.plan.kind == media::Type::Video {
            self.frames += 1;
        }
        self.mux(o, p, tb)
    }

    /// Decodes a text subtitle packet and encodes it for (o, s). Output seek and limit apply
    /// as for copied subtitles; an event that starts before the output's start (or an accurate
    /// input seek point) but is still showing there is kept, clipped to start there.
    fn convert_subtitle(&mut self, o: usize, s: usize, i: usize, pkt: &Packet) -> Result<()> {
        let floor_in = self.inputs[i].drop_before_us;
        let of = &mut self.outs[o];
        let st = &mut of.streams[s];
        if st.finished {
            return Ok(());
        }
        let sctx = format!("{} stream #{o}:{s}", of.label);
        let Some(conv) = st.subconv.as_mut() else {
            return Ok(());
        };
        let ev = match conv.decode(pkt) {
            Ok(Some(ev)) => ev,
            Ok(None) => return Ok(()),
            Err(e) => {
                self.log(
                    LogLevel::Warning,
                    format!("{sctx}: undecodable subtitle packet skipped ({e})"),
                );
                return Ok(());
            }
        };
        let base_us = (of.seek.unwrap_or(0.0) * 1e6).round() as i64;
        if let Some(lim) = of.limit
            && (ev.start_us - base_us) as f64 >= lim * 1e6
        {
            st.finished = true;
            return Ok(());
        }
        let floor = floor_in.map_or(base_us, |f| f.max(base_us));
        if ev.end_us <= floor {
            return Ok(());
        }
        let (start, end) = (ev.start_us.max(floor) - base_us, ev.end_us - base_us);
        let Some(mut p) = conv.encode(ev, start, end, &sctx)? else {
            return Ok(());
        };
        p.set_stream(st.index);
        st.frames += 1;
        self.mux(o, p, US)
    }

    fn try_write_headers(&mut self) -> Result<()> {
        for o in 0..self.outs.len() {
            let unused = {
                let of = &mut self.outs[o];
                if of.header_written || !of.streams.iter().all(|s| s.ready) {
                    continue;
                }
                let opts = std::mem::replace(&mut of.header_opts, Dictionary::new());
                let left = of
                    .octx
                    .write_header_with(opts)
                    .map_err(av(Stage::Mux, format!("{}: writing header", of.label)))?;
                let unused: Vec<String> = left.iter().map(|(k, _)| k.to_string()).collect();
                unused
            };
            self.outs[o].header_written = true;
            if !unused.is_empty() {
                let msg = format!(
                    "{}: muxer ignored options: {}",
                    self.outs[o].label,
                    unused.join(", ")
                );
                self.log(LogLevel::Warning, msg);
            }
            let queued = std::mem::take(&mut self.outs[o].queue);
            for (_, p, tb) in queued {
                self.mux(o, p, tb)?;
            }
            self.drain_io(o)?;
        }
        Ok(())
    }

    fn mux(&mut self, o: usize, mut pkt: Packet, tb: Rational) -> Result<()> {
        let of = &mut self.outs[o];
        if !of.header_written {
            if of.queue.len() >= MAX_QUEUED_PACKETS {
                let waiting: Vec<String> = of
                    .streams
                    .iter()
                    .filter(|s| !s.ready)
                    .map(|s| s.plan.describe())
                    .collect();
                return Err(other(
                    Stage::Mux,
                    format!(
                        "{}: streams never produced data: {}",
                        of.label,
                        waiting.join(", ")
                    ),
                ));
            }
            of.queue.push((pkt.stream(), pkt, tb));
            return Ok(());
        }
        let idx = pkt.stream();
        let ost_tb = of.octx.stream(idx).map(|s| s.time_base()).unwrap_or(tb);
        pkt.rescale_ts(tb, ost_tb);
        if let Some(t) = pkt.pts().or(pkt.dts()) {
            let t = secs(t, ost_tb);
            if t > of.out_time {
                of.out_time = t;
            }
            if self.first_out_time.is_none() {
                self.first_out_time = Some(t);
            }
            if of.seg_start.is_none() {
                of.seg_start = Some(t);
            }
            if pkt.is_key()
                && let Some(pts) = pkt.pts()
                && of
                    .streams
                    .iter()
                    .any(|s| s.index == idx && s.plan.kind == media::Type::Video)
            {
                of.last_video_key = Some(secs(pts, ost_tb));
            }
        }
        if let (Some(h), Some(pts)) = (&of.hooks, pkt.pts()) {
            let kind = of
                .streams
                .iter()
                .find(|s| s.index == idx)
                .map(|s| s.plan.kind);
            if let Some(k @ (media::Type::Video | media::Type::Audio)) = kind {
                let t = secs(pts, ost_tb);
                h.note_packet(k == media::Type::Video, t, t + secs(pkt.duration(), ost_tb));
            }
        }
        let label = of.label.clone();
        pkt.write_interleaved(&mut of.octx).map_err(av(
            Stage::Mux,
            format!("{label}: writing packet for stream {idx}"),
        ))?;
        self.drain_io(o)
    }

    fn drain_io(&mut self, o: usize) -> Result<()> {
        let Some(h) = &self.outs[o].hooks else {
            return Ok(());
        };
        let evs = h.drain();
        for ev in evs {
            match ev {
                io::IoEvent::Segment { number, paths } => {
                    let of = &mut self.outs[o];
                    of.segments += 1;
                    let start = of.seg_start.unwrap_or(of.out_time);
                    // The segmenter closed this segment because the keyframe that starts the
                    // next one arrived: that keyframe is the exact cut. Without video (or for
                    // the last segment, closed by the trailer) the furthest packet is.
                    let end = match of.last_video_key {
                        Some(k) if k > start + 1e-6 && !of.trailer_written => k,
                        _ => of.out_time,
                    };
                    let info = SegmentInfo {
                        output: o,
                        number,
                        paths,
                        start,
                        end,
                    };
                    of.seg_start = Some(end);
                    (self.events)(JobEvent::SegmentWritten(info));
                }
                io::IoEvent::Manifest {
                    target,
                    content_type,
                    body,
                    last,
                } => {
                    (self.events)(JobEvent::Manifest {
                        output: o,
                        target,
                        content_type,
                        body,
                        last,
                    });
                }
                io::IoEvent::Error(m) => {
                    return Err(other(Stage::Mux, format!("{}: {m}", self.outs[o].label)));
                }
            }
        }
        Ok(())
    }

    fn progress(&self) -> Progress {
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-6);
        let out_time = self.outs.iter().map(|o| o.out_time).fold(0.0, f64::max);
        let rel = out_time - self.first_out_time.unwrap_or(0.0).min(out_time);
        let bytes = self
            .outs
            .iter()
            .map(|o| ffi::output_bytes(&o.octx) + o.hooks.as_ref().map_or(0, |h| h.bytes_closed()))
            .sum();
        Progress {
            frames: self.frames,
            fps: self.frames as f64 / elapsed,
            out_time,
            speed: rel / elapsed,
            bytes,
            duration: self.duration,
        }
    }

    fn maybe_progress(&mut self, force: bool) {
        if force || self.last_progress.elapsed().as_secs_f64() >= PROGRESS_PERIOD {
            self.last_progress = Instant::now();
            let p = self.progress();
            (self.events)(JobEvent::Progress(p));
        }
    }

    /// Writes trailers (also after a failure or cancel, so finished data stays valid) and
    /// builds the summary.
    fn finish(mut self, res: Result<()>) -> Result<JobSummary> {
        let mut first_err = res.err();
        for o in 0..self.outs.len() {
            if self.outs[o].header_written && !self.outs[o].trailer_written {
                self.outs[o].trailer_written = true;
                if let Some(h) = &self.outs[o].hooks {
                    h.set_finalizing();
                }
                let label = self.outs[o].label.clone();
                if let Err(e) = self.outs[o].octx.write_trailer()
                    && first_err.is_none()
                {
                    first_err = Some(Error::Av {
                        stage: Stage::Mux,
                        context: format!("{label}: writing trailer"),
                        source: e,
                    });
                }
                if let Err(e) = self.drain_io(o)
                    && first_err.is_none()
                {
                    first_err = Some(e);
                }
            } else if !self.outs[o].header_written && first_err.is_none() {
                first_err = Some(other(
                    Stage::Mux,
                    format!("{}: nothing was written", self.outs[o].label),
                ));
            }
        }
        self.maybe_progress(true);
        if matches!(first_err, Some(Error::Cancelled)) {
            let encs = self
                .outs
                .iter_mut()
                .flat_map(|o| o.streams.iter_mut().filter_map(|s| s.encoder.take()))
                .collect();
            let decs = self.decs.drain().map(|(_, d)| d.dec).collect();
            ffi::FreeElsewhere(encs, decs).spawn();
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        Ok(JobSummary {
            progress: self.progress(),
            elapsed: self.started.elapsed().as_secs_f64(),
            segments: self.outs.iter().map(|o| o.segments).collect(),
            throttled_packets: self.pacing.throttled_packets,
            paused_ms: u64::try_from(self.pacing.paused.as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// Sleeps `total` in short slices, stopping early once `stop` says so.
fn sleep_unless(total: Duration, stop: impl Fn() -> bool) {
    let until = Instant::now() + total;
    loop {
        let now = Instant::now();
        if now >= until || stop() {
            return;
        }
        std::thread::sleep(PACING_SLICE.min(until - now));
    }
}

fn unreachable_desc() -> filter::SourceDesc {
    filter::SourceDesc::Video {
        width: 0,
        height: 0,
        format: format::Pixel::None,
        time_base: Rational(1, 1),
        sar: Rational(1, 1),
        frame_rate: None,
    }
}

fn rescale_f(t: f64, tb: Rational) -> i64 {
    (t / f64::from(tb)).round() as i64
}

fn is_eagain(e: &ffmpeg_next::Error) -> bool {
    matches!(e, ffmpeg_next::Error::Other { errno } if *errno == filter::libc_eagain())
}

fn open_input(job: &Job, i: usize, inp: &clusterplex_core::Input) -> Result<InFile> {
    let url = resolve(job, &inp.url);
    let mut opts = Dictionary::new();
    for (k, v) in &inp.options {
        opts.set(k, v);
    }
    let ctx = match &inp.format {
        Some(f) => plan::open_input_format(&url, f, opts),
        None => format::input_with_dictionary(&url, opts),
    }
    .map_err(av(Stage::OpenInput, format!("input #{i} ({})", inp.url)))?;
    let mut ctx = ctx;
    let start = ffi::input_start_time(&ctx).unwrap_or(0);
    let seek_us = inp.seek.map(|s| (s * 1e6).round() as i64);
    if let Some(s) = seek_us {
        let ts = start + s;
        ctx.seek(ts, ..ts).map_err(av(
            Stage::OpenInput,
            format!("input #{i} ({}): seeking to {}s", inp.url, s as f64 / 1e6),
        ))?;
    }
    let itso = inp.ts_offset.map(|t| (t * 1e6).round() as i64).unwrap_or(0);
    let offset_us = if job.timestamps.copyts {
        (if job.timestamps.start_at_zero {
            -start
        } else {
            0
        }) + itso
    } else {
        -(start + seek_us.unwrap_or(0)) + itso
    };
    let seek_point = start + seek_us.unwrap_or(0) + offset_us;
    let drop_before_us = (seek_us.is_some() && inp.accurate_seek).then_some(seek_point);
    let limit_us = inp
        .duration
        .map(|d| seek_point + (d * 1e6) as i64)
        .or(inp.stop_at.map(|t| start + (t * 1e6) as i64 + offset_us));
    Ok(InFile {
        ctx,
        offset_us,
        drop_before_us,
        limit_us,
        realtime: inp.realtime,
        first_us: None,
        eof: false,
        last_us: i64::MIN,
    })
}

fn codec_family(id: codec::Id) -> String {
    format!("{id:?}").to_lowercase()
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

/// Decoders of `id` that are not hardware wrappers needing a device.
fn usable_decoders(id: codec::Id) -> Vec<String> {
    ffi::codec_names(id, false)
}

fn encoder_open_error(sctx: &str, codec: Codec, e: ffmpeg_next::Error) -> Error {
    let avail = ffi::codec_names(codec.id(), true);
    if plan::is_hw_name(codec.name()) {
        Error::Other {
            stage: Stage::Encode,
            message: format!(
                "{sctx}: hardware encoder `{}` is not usable on this machine (no device or driver: {e}); {} encoders compiled in: {}",
                codec.name(),
                codec_family(codec.id()),
                list_or_none(&avail)
            ),
        }
    } else {
        Error::Av {
            stage: Stage::Encode,
            context: format!("{sctx}: opening encoder {}", codec.name()),
            source: e,
        }
    }
}

/// The settings that apply to one output stream (exposed for the CLI summary).
pub fn settings_of(
    out: &clusterplex_core::Output,
    kind: MediaKind,
    index_in_kind: usize,
) -> StreamSettings {
    out.settings_for(|spec| {
        spec.kind.is_none_or(|k| k == kind) && spec.index.is_none_or(|i| i == index_in_kind)
    })
}

/// Whether a codec choice is stream copy.
pub fn is_copy(c: &Option<CodecChoice>) -> bool {
    matches!(c, Some(CodecChoice::Copy))
}

#[allow(dead_code)]
fn _path_unused(_: PathBuf) {}
