//! The argument parser: a Plex Transcoder argv, or a plain ffmpeg argv as Jellyfin and Emby send
//! it, into a typed [`Job`].
//!
//! ffmpeg's rules are followed: options collect until an `-i` (they are that input's options)
//! or a non-option token (that output's options, the token being its target); global options
//! apply wherever they appear, also after the last output; per-stream options carry a stream
//! specifier suffix (`-codec:1`, `-b:v:0`, `-codec:#0x01`). Nothing is dropped silently: an
//! option that cannot be expressed in the [`Job`] lands in [`ParsedArgs::unsupported`], and
//! options that only affect logging or the command line are kept in `job.cli_flags` and listed in
//! [`ParsedArgs::ignored`] with the reason.

pub mod codecs;
pub mod filters;
pub mod rewrite;
pub mod urls;
pub mod values;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    error::JobError,
    job::{
        AvoidNegativeTs, ByStream, CodecChoice, FpsMode, HlsSegmentType, HwAccel, Input, Job,
        MapSource, MediaKind, Output, ProgressTarget, SegmentList, SegmentListType, Segmenting,
        StreamMap, StreamSettings, StreamSpecifier,
    },
};
use codecs::{CodecSide, is_eae, native_codec};
use values::{
    parse_bool, parse_duration, parse_float, parse_rate, parse_si, parse_size, parse_uint,
};

/// Which program's command-line conventions the argv follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// Plex Transcoder (Plex-only options such as `-progressurl` or `-skip_to_segment` seen).
    Plex,
    /// Plain ffmpeg (Jellyfin, Emby, hand-written).
    Ffmpeg,
}

/// An option whose effect the engine does not need, kept for the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoredOption {
    /// The option as written (`-loglevel`, `-eae_prefix:1`).
    pub option: String,
    pub value: Option<String>,
    pub reason: String,
}

/// A value the parser replaced with what libav or the engine understands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewrite {
    /// Where it happened (`-codec:1 (input 0)`, `-filter_complex #0`, `-vf`).
    pub option: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// The result of parsing an argv.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParsedArgs {
    pub job: Job,
    pub dialect: Dialect,
    /// Options (with their values) the engine cannot honour. Non-empty: run the original
    /// transcoder instead.
    pub unsupported: Vec<String>,
    /// Options that were deliberately not applied, and why.
    pub ignored: Vec<IgnoredOption>,
    /// Codec and filter names that were mapped (Plex names, tonemap chains, `inlineass`).
    pub rewrites: Vec<Rewrite>,
    /// The argv uses EasyAudioEncoder (`*_eae` codecs or `-eae_prefix`).
    pub uses_eae: bool,
    /// Hardware device types set up with `-init_hw_device` (`vaapi`, `cuda`...).
    pub hw_devices: Vec<String>,
    /// Non-fatal oddities (an option given twice, trailing options).
    pub warnings: Vec<String>,
}

/// Parses `args` (argv without the program name).
pub fn parse_args(args: &[String]) -> Result<ParsedArgs, JobError> {
    let mut p = Parser::default();
    p.run(args)?;
    p.finish()
}

#[derive(Debug, Clone)]
struct RawOpt {
    /// The option token as written, without the leading `-`.
    token: String,
    name: String,
    spec: Option<String>,
    value: Option<String>,
}

impl RawOpt {
    fn display(&self) -> String {
        match &self.value {
            Some(v) => format!("-{} {}", self.token, v),
            None => format!("-{}", self.token),
        }
    }
    fn value(&self) -> &str {
        self.value.as_deref().unwrap_or("")
    }
    /// The stream specifier, defaulting to `default` (`-vcodec` means `-codec:v`).
    fn specifier(&self, default: &str) -> Result<StreamSpecifier, JobError> {
        match &self.spec {
            Some(s) => s.parse(),
            None => default.parse(),
        }
    }
}

#[derive(Debug, Default)]
struct Parser {
    job: Job,
    plex: bool,
    pending: Vec<RawOpt>,
    unsupported: Vec<String>,
    ignored: Vec<IgnoredOption>,
    rewrites: Vec<Rewrite>,
    uses_eae: bool,
    hw_devices: Vec<String>,
    warnings: Vec<String>,
    global_fps_mode: Option<FpsMode>,
}

#[derive(PartialEq)]
enum Arity {
    Flag,
    Value,
}

/// Options that take no value. Everything else we know takes one.
fn known_arity(name: &str) -> Option<Arity> {
    const FLAGS: &[&str] = &[
        "y",
        "n",
        "nostats",
        "stats",
        "hide_banner",
        "nostdin",
        "stdin",
        "copyts",
        "start_at_zero",
        "re",
        "noaccurate_seek",
        "accurate_seek",
        "shortest",
        "vn",
        "an",
        "sn",
        "dn",
        "ignore_unknown",
        "copy_unknown",
        "benchmark",
        "benchmark_all",
        "xerror",
        "xioerror",
        "noautorotate",
        "noautoscale",
        "copyinkf",
        "dump",
        "hex",
        "debug_ts",
        "report",
        "fix_sub_duration",
        "nofix_sub_duration",
        "break_non_keyframes_flag",
    ];
    if FLAGS.contains(&name) {
        return Some(Arity::Flag);
    }
    if is_known_value_option(name) {
        Some(Arity::Value)
    } else {
        None
    }
}

fn is_known_value_option(name: &str) -> bool {
    const VALUES: &[&str] = &[
        // global
        "loglevel",
        "v",
        "loglevel_plex",
        "progressurl",
        "progress",
        "stats_period",
        "filter_complex",
        "lavfi",
        "filter_complex_threads",
        "filter_threads",
        "threads",
        "init_hw_device",
        "filter_hw_device",
        "vsync",
        "map_inlineass",
        "i",
        // input / output, position dependent
        "f",
        "ss",
        "t",
        "to",
        "c",
        "codec",
        "vcodec",
        "acodec",
        "scodec",
        "dcodec",
        "fflags",
        "r",
        "s",
        "pix_fmt",
        "ar",
        "ac",
        // input
        "itsoffset",
        "stream_loop",
        "hwaccel",
        "hwaccel_device",
        "hwaccel_output_format",
        "hwaccel_flags",
        "analyzeduration",
        "probesize",
        "fpsprobesize",
        "thread_queue_size",
        "eae_prefix",
        "autorotate",
        "drc_scale",
        "discard",
        "rw_timeout",
        "timeout",
        "reconnect",
        "reconnect_streamed",
        "reconnect_on_network_error",
        "reconnect_delay_max",
        "reconnect_at_eof",
        "user_agent",
        "headers",
        "seekable",
        "http_persistent",
        "multiple_requests",
        "icy",
        "canvas_size",
        "err_detect",
        "max_delay",
        // output, per stream
        "map",
        "b",
        "ab",
        "vb",
        "maxrate",
        "minrate",
        "bufsize",
        "crf",
        "qp",
        "q",
        "qscale",
        "preset",
        "tune",
        "profile",
        "level",
        "g",
        "keyint_min",
        "bf",
        "force_key_frames",
        "fps_mode",
        "channel_layout",
        "ch_layout",
        "sample_fmt",
        "filter",
        "vf",
        "af",
        "bsf",
        "tag",
        "disposition",
        "metadata",
        "max_muxing_queue_size",
        "frames",
        "vframes",
        "aframes",
        "autoscale",
        "strict_ts",
        "aq",
        // output
        "map_metadata",
        "map_chapters",
        "avoid_negative_ts",
        "movflags",
        "muxdelay",
        "muxpreload",
        "frag_duration",
        "frag_size",
        "min_frag_duration",
        "flush_packets",
        "avioflags",
        "write_tmcd",
        "brand",
        "use_editlist",
        "mpegts_copyts",
        "mpegts_flags",
        "write_prft",
        // dash
        "seg_duration",
        "dash_segment_type",
        "init_seg_name",
        "media_seg_name",
        "window_size",
        "extra_window_size",
        "use_template",
        "use_timeline",
        "single_file",
        "single_file_name",
        "adaptation_sets",
        "streaming",
        "ldash",
        "remove_at_exit",
        "delete_removed",
        "skip_to_segment",
        "time_delta",
        "manifest_name",
        "break_non_keyframes",
        "hls_playlist",
        "format_options",
        "frag_type",
        "target_latency",
        // hls
        "hls_time",
        "start_number",
        "hls_list_size",
        "hls_playlist_type",
        "hls_segment_type",
        "hls_segment_filename",
        "hls_fmp4_init_filename",
        "hls_flags",
        "hls_init_time",
        "hls_base_url",
        "hls_allow_cache",
        "hls_segment_options",
        "master_pl_name",
        "master_pl_publish_rate",
        "hls_start_number_source",
        "hls_delete_threshold",
        "hls_enc",
        "method",
        "strftime",
        "strftime_mkdir",
        "hls_ts_options",
        // segment
        "segment_time",
        "segment_start_number",
        "segment_format",
        "segment_list",
        "segment_list_type",
        "segment_list_size",
        "segment_list_separate_stream_times",
        "segment_list_unfinished",
        "segment_header_filename",
        "segment_time_delta",
        "segment_format_options",
        "segment_list_flags",
        "segment_times",
        "segment_frames",
        "segment_wrap",
        "segment_list_entry_prefix",
        "segment_atclocktime",
        "reset_timestamps",
        "individual_header_trailer",
        "write_header_trailer",
        "increment_tc",
        "initial_offset",
        // encoder private options (to the encoder as given)
        "x264opts",
        "x264-params",
        "x265-params",
        "svtav1-params",
        "rc-lookahead",
        "sc_threshold",
        "flags",
        "rc",
        "cq",
        "spatial-aq",
        "spatial_aq",
        "temporal-aq",
        "temporal_aq",
        "b_ref_mode",
        "sei",
        "a53cc",
        "coder",
        "refs",
        "subq",
        "me_method",
        "aac_coder",
        "cutoff",
        "low_power",
        "look_ahead",
        "async_depth",
        "qmin",
        "qmax",
        "global_quality",
        "gpu",
        "rc_mode",
        "b_strategy",
        "forced-idr",
        "forced_idr",
        "zerolatency",
        "multipass",
        "strict",
        "vbr",
        "compression_level",
        "aspect_ratio_info",
        "idr_interval",
        "quality",
        "extbrc",
        "look_ahead_depth",
        "tier",
        "nonref_p",
        "weighted_pred",
        "surfaces",
        "bsf:v",
        "x264_build",
    ];
    VALUES.contains(&name)
}

/// Encoder private options: stored in `encoder_options` and given to the encoder.
fn is_encoder_private(name: &str) -> bool {
    matches!(
        name,
        "x264opts"
            | "x264-params"
            | "x265-params"
            | "svtav1-params"
            | "rc-lookahead"
            | "sc_threshold"
            | "flags"
            | "rc"
            | "cq"
            | "spatial-aq"
            | "spatial_aq"
            | "temporal-aq"
            | "temporal_aq"
            | "b_ref_mode"
            | "sei"
            | "a53cc"
            | "coder"
            | "refs"
            | "subq"
            | "me_method"
            | "aac_coder"
            | "cutoff"
            | "low_power"
            | "look_ahead"
            | "async_depth"
            | "qmin"
            | "qmax"
            | "global_quality"
            | "gpu"
            | "rc_mode"
            | "b_strategy"
            | "forced-idr"
            | "forced_idr"
            | "zerolatency"
            | "multipass"
            | "strict"
            | "vbr"
            | "compression_level"
            | "aspect_ratio_info"
            | "idr_interval"
            | "quality"
            | "extbrc"
            | "look_ahead_depth"
            | "tier"
            | "nonref_p"
            | "weighted_pred"
            | "surfaces"
    )
}

/// Muxer options kept verbatim in `format_options` (typed ones are lifted into `Segmenting`).
fn is_muxer_option(name: &str) -> bool {
    matches!(
        name,
        "movflags"
            | "muxdelay"
            | "muxpreload"
            | "frag_duration"
            | "frag_size"
            | "min_frag_duration"
            | "flush_packets"
            | "avioflags"
            | "write_tmcd"
            | "brand"
            | "use_editlist"
            | "mpegts_copyts"
            | "mpegts_flags"
            | "write_prft"
            | "fflags"
            | "max_delay"
            | "seg_duration"
            | "dash_segment_type"
            | "init_seg_name"
            | "media_seg_name"
            | "window_size"
            | "extra_window_size"
            | "use_template"
            | "use_timeline"
            | "single_file"
            | "single_file_name"
            | "adaptation_sets"
            | "streaming"
            | "ldash"
            | "remove_at_exit"
            | "delete_removed"
            | "skip_to_segment"
            | "time_delta"
            | "manifest_name"
            | "break_non_keyframes"
            | "hls_playlist"
            | "format_options"
            | "frag_type"
            | "target_latency"
            | "hls_time"
            | "start_number"
            | "hls_list_size"
            | "hls_playlist_type"
            | "hls_segment_type"
            | "hls_segment_filename"
            | "hls_fmp4_init_filename"
            | "hls_flags"
            | "hls_init_time"
            | "hls_base_url"
            | "hls_allow_cache"
            | "hls_segment_options"
            | "master_pl_name"
            | "master_pl_publish_rate"
            | "hls_start_number_source"
            | "hls_delete_threshold"
            | "hls_enc"
            | "method"
            | "strftime"
            | "strftime_mkdir"
            | "hls_ts_options"
            | "segment_time"
            | "segment_start_number"
            | "segment_format"
            | "segment_list"
            | "segment_list_type"
            | "segment_list_size"
            | "segment_list_separate_stream_times"
            | "segment_list_unfinished"
            | "segment_header_filename"
            | "segment_time_delta"
            | "segment_format_options"
            | "segment_list_flags"
            | "segment_times"
            | "segment_frames"
            | "segment_wrap"
            | "segment_list_entry_prefix"
            | "segment_atclocktime"
            | "reset_timestamps"
            | "individual_header_trailer"
            | "write_header_trailer"
            | "increment_tc"
            | "initial_offset"
    )
}

/// Plex-only options: their presence makes the argv a Plex one.
fn is_plex_only(name: &str) -> bool {
    matches!(
        name,
        "progressurl"
            | "loglevel_plex"
            | "skip_to_segment"
            | "manifest_name"
            | "time_delta"
            | "delete_removed"
            | "eae_prefix"
            | "map_inlineass"
            | "strict_ts"
            | "xioerror"
    )
}

/// Input-side options handed to the demuxer/protocol verbatim.
fn is_demuxer_option(name: &str) -> bool {
    matches!(
        name,
        "analyzeduration"
            | "probesize"
            | "fpsprobesize"
            | "fflags"
            | "thread_queue_size"
            | "rw_timeout"
            | "timeout"
            | "reconnect"
            | "reconnect_streamed"
            | "reconnect_on_network_error"
            | "reconnect_delay_max"
            | "reconnect_at_eof"
            | "user_agent"
            | "headers"
            | "seekable"
            | "http_persistent"
            | "multiple_requests"
            | "icy"
            | "max_delay"
            | "err_detect"
            | "autorotate"
    )
}

fn looks_like_option(tok: &str) -> bool {
    tok.len() > 1 && tok.starts_with('-') && tok.parse::<f64>().is_err()
}

impl Parser {
    fn run(&mut self, args: &[String]) -> Result<(), JobError> {
        let mut i = 0;
        while i < args.len() {
            let tok = &args[i];
            i += 1;
            if !(tok.len() > 1 && tok.starts_with('-')) {
                self.add_output(tok)?;
                continue;
            }
            let token = tok[1..].to_string();
            let (name, spec) = match token.split_once(':') {
                Some((n, s)) => (n.to_string(), Some(s.to_string())),
                None => (token.clone(), None),
            };
            let value = match known_arity(&name) {
                Some(Arity::Flag) => None,
                Some(Arity::Value) => {
                    let v = args
                        .get(i)
                        .ok_or_else(|| JobError::MissingValue(tok.clone()))?;
                    i += 1;
                    Some(v.clone())
                }
                None => {
                    // Unknown option: guess its arity so the rest still lines up. The job
                    // goes to the original transcoder anyway.
                    let v = match args.get(i) {
                        Some(next) if !looks_like_option(next) && i + 1 < args.len() => {
                            i += 1;
                            Some(next.clone())
                        }
                        _ => None,
                    };
                    let raw = RawOpt {
                        token,
                        name,
                        spec,
                        value: v,
                    };
                    self.unsupported.push(raw.display());
                    continue;
                }
            };
            if is_plex_only(&name) {
                self.plex = true;
            }
            let raw = RawOpt {
                token,
                name,
                spec,
                value,
            };
            if raw.name == "i" {
                let url = raw.value().to_string();
                self.add_input(url)?;
            } else if !self.global(&raw)? {
                self.pending.push(raw);
            }
        }
        Ok(())
    }

    fn ignore(&mut self, raw: &RawOpt, reason: &str) {
        self.ignored.push(IgnoredOption {
            option: format!("-{}", raw.token),
            value: raw.value.clone(),
            reason: reason.to_string(),
        });
        self.job
            .cli_flags
            .insert(raw.token.clone(), raw.value.clone().unwrap_or_default());
    }

    /// Applies a global option; false when `raw` is not global.
    fn global(&mut self, raw: &RawOpt) -> Result<bool, JobError> {
        let v = raw.value();
        match raw.name.as_str() {
            "loglevel" | "v" => self.ignore(raw, "logging only; the engine logs with tracing"),
            "nostats" | "stats" | "hide_banner" | "benchmark" | "benchmark_all" | "report"
            | "debug_ts" | "dump" | "hex" => self.ignore(raw, "console output only"),
            "y" => self.ignore(raw, "outputs are always overwritten"),
            "nostdin" | "stdin" => self.ignore(raw, "the engine never reads stdin"),
            "xerror" | "xioerror" => {
                self.ignore(raw, "the engine stops at the first error in any case")
            }
            "ignore_unknown" | "copy_unknown" => self.ignore(
                raw,
                "streams of unknown type are never mapped by the engine",
            ),
            "loglevel_plex" => self.job.plex.loglevel = Some(v.to_string()),
            "progressurl" => {
                self.job
                    .progress
                    .get_or_insert_with(ProgressTarget::default)
                    .plex_url = Some(v.to_string());
            }
            "progress" => {
                self.job
                    .progress
                    .get_or_insert_with(ProgressTarget::default)
                    .ffmpeg_progress = Some(v.to_string());
            }
            "stats_period" => {
                self.job
                    .progress
                    .get_or_insert_with(ProgressTarget::default)
                    .period = Some(parse_duration("stats_period", v)?);
            }
            "filter_complex" | "lavfi" => {
                let index = self.job.complex_filters.len();
                let graph = self.rewrite_filter(&format!("-{} #{index}", raw.token), v);
                self.job.complex_filters.push(graph);
            }
            "filter_complex_threads" | "filter_threads" => {
                self.job.filter_threads = Some(parse_uint(&raw.name, v)?);
            }
            "threads" => self.job.threads = Some(parse_uint("threads", v)?),
            "copyts" => self.job.timestamps.copyts = true,
            "start_at_zero" => self.job.timestamps.start_at_zero = true,
            "init_hw_device" => {
                let kind = v.split(['=', ':']).next().unwrap_or(v).to_string();
                if !kind.is_empty() && !self.hw_devices.contains(&kind) {
                    self.hw_devices.push(kind);
                }
                self.ignore(raw, "the worker opens its own device of this type");
            }
            "filter_hw_device" => self.ignore(raw, "the worker uses its own device"),
            "vsync" => self.global_fps_mode = Some(v.parse()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn add_input(&mut self, url: String) -> Result<(), JobError> {
        let opts = std::mem::take(&mut self.pending);
        let index = self.job.inputs.len();
        let mut input = Input::new(url);
        for raw in opts {
            let v = raw.value();
            match raw.name.as_str() {
                "f" => input.format = Some(v.to_string()),
                "ss" => input.seek = Some(parse_duration("ss", v)?),
                "t" => input.duration = Some(parse_duration("t", v)?),
                "to" => input.stop_at = Some(parse_duration("to", v)?),
                "itsoffset" => input.ts_offset = Some(parse_duration("itsoffset", v)?),
                "re" => input.realtime = true,
                "stream_loop" => input.stream_loop = Some(parse_uint("stream_loop", v)?),
                "accurate_seek" => input.accurate_seek = true,
                "noaccurate_seek" => input.accurate_seek = false,
                "c" | "codec" | "vcodec" | "acodec" | "scodec" | "dcodec" => {
                    let spec = raw.specifier(codec_default_spec(&raw.name))?;
                    let name = self.map_codec(&raw, index, v, CodecSide::Decoder);
                    if name != "copy" {
                        input.decoders.push(ByStream::new(spec, name));
                    }
                }
                "hwaccel" => {
                    input.hwaccel.get_or_insert_with(HwAccel::default).name = v.to_string();
                }
                "hwaccel_device" => {
                    input.hwaccel.get_or_insert_with(HwAccel::default).device = Some(v.to_string());
                }
                "hwaccel_output_format" => {
                    input
                        .hwaccel
                        .get_or_insert_with(HwAccel::default)
                        .output_format = Some(v.to_string());
                }
                "hwaccel_flags" => self.ignore(&raw, "the worker sets its own hwaccel flags"),
                "eae_prefix" => {
                    self.uses_eae = true;
                    self.ignore(&raw, "EasyAudioEncoder codecs are replaced by native ones");
                }
                "noautorotate" => {
                    input.options.insert("autorotate".into(), "0".into());
                }
                "r" => {
                    input.options.insert("framerate".into(), v.to_string());
                }
                "s" => {
                    input.options.insert("video_size".into(), v.to_string());
                }
                "pix_fmt" => {
                    input.options.insert("pixel_format".into(), v.to_string());
                }
                "ar" => {
                    input.options.insert("sample_rate".into(), v.to_string());
                }
                "ac" => {
                    input.options.insert("channels".into(), v.to_string());
                }
                "drc_scale" | "discard" | "canvas_size" => {
                    let spec = raw.specifier("")?;
                    input
                        .decoder_options
                        .push(ByStream::new(spec, (raw.name.clone(), v.into())));
                }
                n if is_demuxer_option(n) => {
                    input.options.insert(n.to_string(), v.to_string());
                }
                _ => self
                    .unsupported
                    .push(format!("{} (input option)", raw.display())),
            }
        }
        self.job.inputs.push(input);
        Ok(())
    }

    /// Plex codec names to libav ones, recording the mapping.
    fn map_codec(&mut self, raw: &RawOpt, index: usize, name: &str, side: CodecSide) -> String {
        if is_eae(name) {
            self.uses_eae = true;
        }
        match native_codec(name, side) {
            Some(native) => {
                let (where_, what) = match side {
                    CodecSide::Decoder => (format!("input {index}"), "decoder"),
                    CodecSide::Encoder => (format!("output {index}"), "encoder"),
                };
                let reason = if is_eae(name) {
                    format!("EasyAudioEncoder {what} replaced by libav's native {what}")
                } else {
                    format!("Plex's name for libav's {native} {what}")
                };
                self.rewrites.push(Rewrite {
                    option: format!("-{} ({where_})", raw.token),
                    from: name.to_string(),
                    to: native.to_string(),
                    reason,
                });
                native.to_string()
            }
            None if is_eae(name) => {
                self.unsupported.push(format!(
                    "{} (no native libav {} for this EasyAudioEncoder codec)",
                    raw.display(),
                    if side == CodecSide::Decoder {
                        "decoder"
                    } else {
                        "encoder"
                    }
                ));
                name.to_string()
            }
            None => name.to_string(),
        }
    }

    fn rewrite_filter(&mut self, location: &str, graph: &str) -> String {
        let (text, rewrites, problems) = rewrite::rewrite_graph(graph, &self.job);
        for r in rewrites {
            self.rewrites.push(Rewrite {
                option: location.to_string(),
                ..r
            });
        }
        for p in problems {
            self.unsupported.push(format!("{location}: {p}"));
        }
        text
    }

    fn add_output(&mut self, target: &str) -> Result<(), JobError> {
        let opts = std::mem::take(&mut self.pending);
        let index = self.job.outputs.len();
        let mut out = Output::new(target, None);
        let mut seen: Vec<String> = Vec::new();
        for raw in opts {
            let v = raw.value().to_string();
            let v = v.as_str();
            if raw.spec.is_none() && !matches!(raw.name.as_str(), "map" | "metadata") {
                if seen.contains(&raw.name) && !is_per_stream(&raw.name) {
                    self.warnings.push(format!(
                        "output {index}: -{} given more than once; the last one wins",
                        raw.name
                    ));
                }
                seen.push(raw.name.clone());
            }
            match raw.name.as_str() {
                "f" => out.format = Some(v.to_string()),
                "ss" => out.seek = Some(parse_duration("ss", v)?),
                "t" => out.duration = Some(parse_duration("t", v)?),
                "to" => out.stop_at = Some(parse_duration("to", v)?),
                "shortest" => out.shortest = true,
                "vn" => out.disable.push(MediaKind::Video),
                "an" => out.disable.push(MediaKind::Audio),
                "sn" => out.disable.push(MediaKind::Subtitle),
                "dn" => out.disable.push(MediaKind::Data),
                "map" => out.maps.push(parse_map(v)?),
                "map_metadata" => out.map_metadata = Some(v.to_string()),
                "map_chapters" => out.map_chapters = Some(parse_uint("map_chapters", v)?),
                "avoid_negative_ts" => out.avoid_negative_ts = Some(v.parse::<AvoidNegativeTs>()?),
                "map_inlineass" => out.map_inlineass = Some(v.to_string()),
                "metadata" => self.output_metadata(&mut out, &raw)?,
                "frames" | "vframes" | "aframes" => {
                    let default = match raw.name.as_str() {
                        "vframes" => "v",
                        "aframes" => "a",
                        _ => "",
                    };
                    out.max_frames.push(ByStream::new(
                        raw.specifier(default)?,
                        parse_uint("frames", v)?,
                    ));
                }
                "strict_ts" => self.ignore(
                    &raw,
                    "Plex-only subtitle timestamp check; libav keeps the packet timestamps",
                ),
                "eae_prefix" => {
                    self.uses_eae = true;
                    self.ignore(&raw, "EasyAudioEncoder codecs are replaced by native ones");
                }
                "noautoscale" => {
                    // Jellyfin sizes frames itself in its filter chain; without it the
                    // encoder would rescale to the first frame's size anyway.
                    self.ignore(&raw, "the engine never inserts a scaler of its own");
                }
                "autoscale" => {
                    if parse_bool("autoscale", v)? {
                        self.ignore(&raw, "default behaviour");
                    } else {
                        self.ignore(&raw, "the engine never inserts a scaler of its own");
                    }
                }
                n if is_muxer_option(n) => {
                    out.format_options.insert(n.to_string(), v.to_string());
                }
                _ => {
                    if !self.stream_option(&mut out, index, &raw)? {
                        self.unsupported
                            .push(format!("{} (output option)", raw.display()));
                    }
                }
            }
        }
        out.segmenting = build_segmenting(&mut out)?;
        self.job.outputs.push(out);
        Ok(())
    }

    fn output_metadata(&mut self, out: &mut Output, raw: &RawOpt) -> Result<(), JobError> {
        let v = raw.value();
        let (key, value) = v.split_once('=').unwrap_or((v, ""));
        let spec = raw.spec.as_deref().unwrap_or("g");
        let (kind, rest) = match spec.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (spec, None),
        };
        match kind {
            "g" => {
                out.metadata.insert(key.to_string(), value.to_string());
            }
            "s" => {
                let spec: StreamSpecifier = rest.unwrap_or("").parse()?;
                let settings = self.settings_entry(out, spec);
                settings.metadata.insert(key.to_string(), value.to_string());
            }
            _ => self
                .unsupported
                .push(format!("{} (chapter/program metadata)", raw.display())),
        }
        Ok(())
    }

    /// The settings entry for `spec`: the last entry when it has the same specifier (so one
    /// stream's options stay together), else a new one. Order is preserved, so ffmpeg's
    /// "later option wins" overlay still holds.
    fn settings_entry<'o>(
        &self,
        out: &'o mut Output,
        spec: StreamSpecifier,
    ) -> &'o mut StreamSettings {
        let reuse = out.streams.last().is_some_and(|last| last.spec == spec);
        if !reuse {
            out.streams
                .push(ByStream::new(spec, StreamSettings::default()));
        }
        let last = out.streams.len() - 1;
        &mut out.streams[last].value
    }

    /// Per-stream output options; false when `raw` is not one.
    fn stream_option(
        &mut self,
        out: &mut Output,
        index: usize,
        raw: &RawOpt,
    ) -> Result<bool, JobError> {
        let v = raw.value();
        let name = raw.name.as_str();
        // Resolve values first (they may record rewrites), then store.
        let mut s = StreamSettings::default();
        let default_spec = match name {
            "vcodec" | "vf" | "vb" => "v",
            "acodec" | "af" | "ab" | "aq" => "a",
            "scodec" => "s",
            "dcodec" => "d",
            _ => "",
        };
        match name {
            "c" | "codec" | "vcodec" | "acodec" | "scodec" | "dcodec" => {
                let codec = self.map_codec(raw, index, v, CodecSide::Encoder);
                s.codec = Some(CodecChoice::parse(&codec));
            }
            "b" | "ab" | "vb" => s.bitrate = Some(parse_si("b", v)?),
            "maxrate" => s.maxrate = Some(parse_si("maxrate", v)?),
            "minrate" => s.minrate = Some(parse_si("minrate", v)?),
            "bufsize" => s.bufsize = Some(parse_si("bufsize", v)?),
            "crf" => s.crf = Some(parse_float("crf", v)? as f32),
            "qp" | "q" | "qscale" | "aq" => s.qscale = Some(parse_float(name, v)? as f32),
            "preset" => s.preset = Some(v.to_string()),
            "tune" => s.tune = Some(v.to_string()),
            "profile" => s.profile = Some(v.to_string()),
            "level" => s.level = Some(v.to_string()),
            "pix_fmt" => s.pix_fmt = Some(v.to_string()),
            "s" => s.size = Some(parse_size("s", v)?),
            "r" => s.frame_rate = Some(parse_rate("r", v)?),
            "g" => s.gop = Some(parse_uint("g", v)?),
            "keyint_min" => s.keyint_min = Some(parse_uint("keyint_min", v)?),
            "bf" => s.max_b_frames = Some(parse_uint("bf", v)?),
            "force_key_frames" => s.force_key_frames = Some(v.to_string()),
            "fps_mode" => s.fps_mode = Some(v.parse()?),
            "ac" => s.channels = Some(parse_uint("ac", v)?),
            "channel_layout" | "ch_layout" => s.channel_layout = Some(v.to_string()),
            "ar" => s.sample_rate = Some(parse_uint("ar", v)?),
            "sample_fmt" => s.sample_fmt = Some(v.to_string()),
            "filter" | "vf" | "af" => {
                let loc = format!("-{} (output {index})", raw.token);
                s.filter = Some(self.rewrite_filter(&loc, v));
            }
            "bsf" => s.bitstream_filters = Some(v.to_string()),
            "tag" => s.tag = Some(v.to_string()),
            "disposition" => s.disposition = Some(v.to_string()),
            "max_muxing_queue_size" => {
                s.max_muxing_queue_size = Some(parse_uint("max_muxing_queue_size", v)?)
            }
            "copyinkf" => {
                s.encoder_options.insert("copyinkf".into(), "1".into());
            }
            n if is_encoder_private(n) => {
                s.encoder_options.insert(n.to_string(), v.to_string());
            }
            _ => return Ok(false),
        }
        let spec = raw.specifier(default_spec)?;
        self.settings_entry(out, spec).overlay(&s);
        Ok(true)
    }

    fn finish(mut self) -> Result<ParsedArgs, JobError> {
        if !self.pending.is_empty() {
            let names: Vec<String> = self.pending.iter().map(RawOpt::display).collect();
            if self.job.outputs.is_empty() {
                return Err(JobError::NoOutputs);
            }
            // ffmpeg ignores options after the last output (with a warning); so do we, but
            // say so: a value here might be one the user expected to take effect.
            self.warnings.push(format!(
                "trailing options after the last output are ignored, as ffmpeg does: {}",
                names.join(" ")
            ));
            for raw in std::mem::take(&mut self.pending) {
                self.ignored.push(IgnoredOption {
                    option: format!("-{}", raw.token),
                    value: raw.value.clone(),
                    reason: "after the last output (ffmpeg ignores it too)".into(),
                });
            }
        }
        if let Some(fps) = self.global_fps_mode {
            // `-vsync` sets the default; per-stream `-fps_mode` given for an output still wins,
            // so the default goes first.
            for out in &mut self.job.outputs {
                out.streams.insert(
                    0,
                    ByStream::new(
                        StreamSpecifier::all(),
                        StreamSettings {
                            fps_mode: Some(fps),
                            ..Default::default()
                        },
                    ),
                );
            }
        }
        // The session id is in any of the callback URLs.
        let mut urls: Vec<String> = Vec::new();
        if let Some(p) = self.job.progress.as_ref().and_then(|p| p.plex_url.clone()) {
            urls.push(p);
        }
        for out in &self.job.outputs {
            match &out.segmenting {
                Some(Segmenting::Dash {
                    manifest_target: Some(m),
                    start_number,
                    ..
                }) => {
                    urls.push(m.clone());
                    if self.plex && self.job.plex.skip_to_segment.is_none() {
                        self.job.plex.skip_to_segment = Some(*start_number);
                    }
                }
                Some(Segmenting::Segment { list: Some(l), .. }) => urls.push(l.target.clone()),
                _ => {}
            }
        }
        self.job.plex.session_id = urls.iter().find_map(|u| urls::session_id(u));
        if self.job.inputs.is_empty() {
            return Err(JobError::NoInputs);
        }
        if self.job.outputs.is_empty() {
            return Err(JobError::NoOutputs);
        }
        rewrite::apply_inlineass(&mut self.job, &mut self.rewrites, &mut self.unsupported);
        rewrite::inline_tonemap_graphs(&mut self.job, &mut self.rewrites);
        self.job.validate()?;
        let dialect = if self.plex {
            Dialect::Plex
        } else {
            Dialect::Ffmpeg
        };
        Ok(ParsedArgs {
            job: self.job,
            dialect,
            unsupported: self.unsupported,
            ignored: self.ignored,
            rewrites: self.rewrites,
            uses_eae: self.uses_eae,
            hw_devices: self.hw_devices,
            warnings: self.warnings,
        })
    }
}

fn is_per_stream(name: &str) -> bool {
    !matches!(
        name,
        "f" | "ss" | "t" | "to" | "map_metadata" | "map_chapters" | "avoid_negative_ts"
    )
}

fn codec_default_spec(name: &str) -> &'static str {
    match name {
        "vcodec" => "v",
        "acodec" => "a",
        "scodec" => "s",
        "dcodec" => "d",
        _ => "",
    }
}

/// `-map` syntax: `[label]`, `[-]N[:spec][?]`.
pub fn parse_map(v: &str) -> Result<StreamMap, JobError> {
    let bad = || JobError::InvalidValue {
        option: "map".into(),
        value: v.to_string(),
    };
    let (negative, body) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (optional, body) = match body.strip_suffix('?') {
        Some(rest) => (true, rest),
        None => (false, body),
    };
    if let Some(label) = body.strip_prefix('[').and_then(|b| b.strip_suffix(']')) {
        if negative || label.is_empty() {
            return Err(bad());
        }
        return Ok(StreamMap {
            source: MapSource::Label(label.to_string()),
            negative,
            optional,
        });
    }
    let (file, spec) = match body.split_once(':') {
        Some((f, s)) => (f, s),
        None => (body, ""),
    };
    let input: usize = file.parse().map_err(|_| bad())?;
    // `0:v,0:a` (sync stream) is long deprecated and not in the Job model.
    if spec.contains(',') {
        return Err(bad());
    }
    let spec: StreamSpecifier = spec.parse()?;
    Ok(StreamMap {
        source: MapSource::Input { input, spec },
        negative,
        optional,
    })
}

fn take<T>(
    opts: &mut BTreeMap<String, String>,
    key: &str,
    f: impl FnOnce(&str) -> Result<T, JobError>,
) -> Result<Option<T>, JobError> {
    match opts.remove(key) {
        Some(v) => f(&v).map(Some),
        None => Ok(None),
    }
}

/// Lifts the typed segmenting options of the output's muxer out of `format_options`.
fn build_segmenting(out: &mut Output) -> Result<Option<Segmenting>, JobError> {
    let o = &mut out.format_options;
    let fmt = out
        .format
        .as_deref()
        .unwrap_or_else(|| guess_format(&out.target));
    Ok(Some(match fmt {
        "dash" => Segmenting::Dash {
            seg_duration: take(o, "seg_duration", |v| parse_duration("seg_duration", v))?
                .unwrap_or(5.0),
            start_number: take(o, "skip_to_segment", |v| parse_uint("skip_to_segment", v))?
                .unwrap_or(1),
            init_seg_name: o.remove("init_seg_name"),
            media_seg_name: o.remove("media_seg_name"),
            manifest_target: o.remove("manifest_name"),
            window_size: take(o, "window_size", |v| parse_uint("window_size", v))?,
            use_template: take(o, "use_template", |v| parse_bool("use_template", v))?,
            use_timeline: take(o, "use_timeline", |v| parse_bool("use_timeline", v))?,
            single_file: take(o, "single_file", |v| parse_bool("single_file", v))?.unwrap_or(false),
            time_delta: take(o, "time_delta", |v| parse_float("time_delta", v))?,
            delete_removed: take(o, "delete_removed", |v| parse_bool("delete_removed", v))?,
            break_non_keyframes: take(o, "break_non_keyframes", |v| {
                parse_bool("break_non_keyframes", v)
            })?
            .unwrap_or(false),
        },
        "hls" => Segmenting::Hls {
            time: take(o, "hls_time", |v| parse_duration("hls_time", v))?.unwrap_or(2.0),
            start_number: take(o, "start_number", |v| parse_uint("start_number", v))?.unwrap_or(0),
            list_size: take(o, "hls_list_size", |v| parse_uint("hls_list_size", v))?.unwrap_or(5),
            playlist_type: o.remove("hls_playlist_type"),
            segment_type: take(o, "hls_segment_type", |v| match v {
                "mpegts" | "0" => Ok(HlsSegmentType::Mpegts),
                "fmp4" | "1" => Ok(HlsSegmentType::Fmp4),
                _ => Err(JobError::InvalidValue {
                    option: "hls_segment_type".into(),
                    value: v.into(),
                }),
            })?
            .unwrap_or_default(),
            segment_filename: o.remove("hls_segment_filename"),
            init_filename: o.remove("hls_fmp4_init_filename"),
            flags: o.remove("hls_flags"),
        },
        "segment" | "ssegment" | "stream_segment" => {
            let list = match o.remove("segment_list") {
                Some(target) => {
                    let kind = match o.remove("segment_list_type") {
                        Some(t) => parse_list_type(&t)?,
                        None => guess_list_type(&target),
                    };
                    Some(SegmentList {
                        kind,
                        size: take(o, "segment_list_size", |v| {
                            parse_uint("segment_list_size", v)
                        })?
                        .unwrap_or(0),
                        separate_stream_times: take(
                            o,
                            "segment_list_separate_stream_times",
                            |v| parse_bool("segment_list_separate_stream_times", v),
                        )?
                        .unwrap_or(false),
                        unfinished: take(o, "segment_list_unfinished", |v| {
                            parse_bool("segment_list_unfinished", v)
                        })?
                        .unwrap_or(false),
                        target,
                    })
                }
                None => None,
            };
            let format_options = match o.remove("segment_format_options") {
                Some(s) => parse_kv_list(&s),
                None => BTreeMap::new(),
            };
            Segmenting::Segment {
                segment_time: take(o, "segment_time", |v| parse_duration("segment_time", v))?
                    .unwrap_or(2.0),
                start_number: take(o, "segment_start_number", |v| {
                    parse_uint("segment_start_number", v)
                })?
                .unwrap_or(0),
                segment_format: o.remove("segment_format"),
                list,
                header_filename: o.remove("segment_header_filename"),
                time_delta: take(o, "segment_time_delta", |v| {
                    parse_duration("segment_time_delta", v)
                })?,
                format_options,
            }
        }
        _ => return Ok(None),
    }))
}

fn parse_list_type(t: &str) -> Result<SegmentListType, JobError> {
    Ok(match t {
        "csv" | "ext" => SegmentListType::Csv,
        "flat" => SegmentListType::Flat,
        "m3u8" | "hls" => SegmentListType::M3u8,
        "ffconcat" => SegmentListType::Ffconcat,
        _ => {
            return Err(JobError::InvalidValue {
                option: "segment_list_type".into(),
                value: t.into(),
            });
        }
    })
}

fn guess_list_type(target: &str) -> SegmentListType {
    let path = target.split('?').next().unwrap_or(target);
    if path.ends_with(".csv") || path.ends_with(".ext") {
        SegmentListType::Csv
    } else if path.ends_with(".m3u8") {
        SegmentListType::M3u8
    } else if path.ends_with(".ffcat") || path.ends_with(".ffconcat") {
        SegmentListType::Ffconcat
    } else {
        SegmentListType::Flat
    }
}

/// `k=v:k2=v2` (muxer option lists).
fn parse_kv_list(s: &str) -> BTreeMap<String, String> {
    s.split(':')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

/// Muxer name for an output without `-f`, by extension (only to pick the segmenting view).
fn guess_format(target: &str) -> &'static str {
    let lower = target.to_ascii_lowercase();
    if lower.ends_with(".m3u8") {
        "hls"
    } else if lower.ends_with(".mpd") {
        "dash"
    } else {
        ""
    }
}
