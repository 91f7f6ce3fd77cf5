//! Planning: which input streams go to which output streams, with which codec, filters and
//! muxer options. Pure logic over probed stream facts; no libav state is changed here.

use clusterplex_core::{
    CodecChoice, HlsSegmentType, Job, MapSource, MediaKind, Output, SegmentListType, Segmenting,
    StreamFacts, StreamSettings, StreamSpecifier,
};
use ffmpeg_next::{Dictionary, codec, format, media};

use super::{ffi, io, resolve};
use crate::{Error, Result, Stage};

/// Probed facts of one input stream.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub index: usize,
    pub mtype: media::Type,
    pub kind: Option<MediaKind>,
    pub attached_pic: bool,
    pub id: u64,
    pub metadata: Vec<(String, String)>,
    pub pixels: u64,
    pub channels: u32,
    pub codec: codec::Id,
}

pub fn stream_infos(ictx: &format::context::Input) -> Vec<StreamInfo> {
    ictx.streams()
        .map(|st| {
            let p = st.parameters();
            let mtype = p.medium();
            // SAFETY-free accessors: dimensions/channels via a temporary codec context would
            // allocate; read them from the parameters through ffmpeg-next's raw pointer view.
            let (pixels, channels) = ffi_params(&p);
            StreamInfo {
                index: st.index(),
                mtype,
                kind: super::media_kind(mtype),
                attached_pic: st
                    .disposition()
                    .contains(format::stream::Disposition::ATTACHED_PIC),
                id: st.id() as u64,
                metadata: st
                    .metadata()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                pixels,
                channels,
                codec: p.id(),
            }
        })
        .collect()
}

fn ffi_params(p: &codec::Parameters) -> (u64, u32) {
    let (w, h, c) = ffi::params_dims(p);
    (u64::from(w) * u64::from(h), c)
}

pub fn facts(infos: &[StreamInfo]) -> Vec<StreamFacts<'_>> {
    infos
        .iter()
        .map(|s| StreamFacts {
            index: s.index,
            kind: s.kind,
            attached_pic: s.attached_pic,
            id: s.id,
            programs: &[],
            metadata: &s.metadata,
        })
        .collect()
}

/// Where an output stream's data comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    Input { input: usize, stream: usize },
    Graph { graph: usize, output: usize },
}

/// One planned output stream.
#[derive(Debug, Clone)]
pub struct OutStreamPlan {
    pub source: Source,
    pub kind: media::Type,
    pub settings: StreamSettings,
    pub copy: bool,
    /// Index among output streams of the same kind.
    pub kind_index: usize,
    pub out_index: usize,
    /// Fixed audio frame size (complex graph outputs).
    pub samples: Option<u32>,
}

impl OutStreamPlan {
    pub fn describe(&self) -> String {
        let src = match self.source {
            Source::Input { input, stream } => format!("from #{input}:{stream}"),
            Source::Graph { graph, output } => format!("from filter_complex #{graph} pad {output}"),
        };
        let codec = match &self.settings.codec {
            Some(CodecChoice::Copy) => "copy".to_string(),
            Some(CodecChoice::Encoder(e)) => e.clone(),
            None => "default codec".to_string(),
        };
        format!("{:?} {src}, {codec}", self.kind).to_lowercase()
    }

    /// Whether an output-side specifier (`-frames:v`, `-c:a:1`) selects this stream.
    pub fn spec_matches(&self, spec: &StreamSpecifier) -> bool {
        out_matches(
            spec,
            super::media_kind(self.kind),
            self.out_index,
            self.kind_index,
        )
    }
}

fn out_matches(
    spec: &StreamSpecifier,
    kind: Option<MediaKind>,
    abs: usize,
    kind_index: usize,
) -> bool {
    if let Some(k) = spec.kind {
        if Some(k) != kind {
            return false;
        }
        if let Some(i) = spec.index {
            return i == kind_index;
        }
        return true;
    }
    if let Some(i) = spec.index {
        return i == abs;
    }
    true
}

/// Selects and describes the output streams of output `o`.
pub fn select_streams(
    job: &Job,
    o: usize,
    out: &Output,
    inputs: &[Vec<StreamInfo>],
    graphs: &[Vec<(String, media::Type)>],
    octx: &format::context::Output,
) -> std::result::Result<Vec<OutStreamPlan>, String> {
    let mut picked: Vec<(Source, media::Type)> = Vec::new();
    if out.maps.is_empty() {
        for (mk, t) in [
            (MediaKind::Video, media::Type::Video),
            (MediaKind::Audio, media::Type::Audio),
            (MediaKind::Subtitle, media::Type::Subtitle),
        ] {
            if out.disable.contains(&mk) {
                continue;
            }
            let user_codec = out
                .streams
                .iter()
                .any(|s| s.spec.kind == Some(mk) && s.value.codec.is_some());
            if ffi::default_codec(octx, t) == codec::Id::None && !user_codec {
                continue;
            }
            let mut best: Option<(usize, usize, u64)> = None;
            for (i, streams) in inputs.iter().enumerate() {
                for s in streams.iter().filter(|s| s.mtype == t && !s.attached_pic) {
                    let score = match t {
                        media::Type::Video => s.pixels,
                        media::Type::Audio => u64::from(s.channels),
                        _ => 0,
                    };
                    if best.is_none_or(|b| score > b.2) {
                        best = Some((i, s.index, score));
                    }
                }
            }
            if let Some((i, s, _)) = best {
                picked.push((
                    Source::Input {
                        input: i,
                        stream: s,
                    },
                    t,
                ));
            }
        }
    } else {
        for m in &out.maps {
            match &m.source {
                MapSource::Input { input, spec } => {
                    let infos = inputs
                        .get(*input)
                        .ok_or_else(|| format!("map refers to missing input #{input}"))?;
                    let f = facts(infos);
                    let sel = spec.select(&f);
                    if m.negative {
                        picked.retain(|(src, _)| !matches!(src, Source::Input { input: i, stream } if i == input && sel.contains(stream)));
                        continue;
                    }
                    if sel.is_empty() && !m.optional {
                        return Err(format!("-map {input}:{spec} matches no streams"));
                    }
                    for s in sel {
                        picked.push((
                            Source::Input {
                                input: *input,
                                stream: infos[s].index,
                            },
                            infos[s].mtype,
                        ));
                    }
                }
                MapSource::Label(l) => {
                    let found = graphs.iter().enumerate().find_map(|(g, outs)| {
                        outs.iter()
                            .position(|(name, _)| name == l)
                            .map(|k| (g, k, outs[k].1))
                    });
                    let (g, k, t) =
                        found.ok_or_else(|| format!("no filter_complex output [{l}]"))?;
                    picked.push((
                        Source::Graph {
                            graph: g,
                            output: k,
                        },
                        t,
                    ));
                }
            }
        }
        picked.retain(|(_, t)| super::media_kind(*t).is_none_or(|k| !out.disable.contains(&k)));
    }
    let _ = (job, o);
    let mut plans = Vec::new();
    let mut per_kind = [0usize; 8];
    for (n, (source, kind)) in picked.into_iter().enumerate() {
        let slot = super::media_kind(kind).map_or(7, |k| k as usize);
        let ki = per_kind[slot];
        per_kind[slot] += 1;
        let mk = super::media_kind(kind);
        let mut settings = out.settings_for(|spec| out_matches(spec, mk, n, ki));
        settings.codec = codec_of_kind(out, kind, settings.codec, |spec| {
            out_matches(spec, mk, n, ki)
        });
        let in_codec = match source {
            Source::Input { input, stream } => inputs[input]
                .iter()
                .find(|s| s.index == stream)
                .map(|s| s.codec),
            Source::Graph { .. } => None,
        };
        let mut copy = matches!(settings.codec, Some(CodecChoice::Copy));
        if matches!(kind, media::Type::Data | media::Type::Attachment) {
            copy = true;
        }
        if kind == media::Type::Subtitle && !copy {
            // Text subtitle "encoding" between identical codecs is a stream copy.
            let want = match &settings.codec {
                Some(CodecChoice::Encoder(e)) => codec::encoder::find_by_name(e).map(|c| c.id()),
                _ => Some(ffi::default_codec(octx, kind)),
            };
            if want.is_some() && want == in_codec {
                copy = true;
            } else if !(in_codec.is_some_and(super::subtitle::is_text)
                && want.is_some_and(super::subtitle::is_text))
            {
                // Bitmap subtitles (PGS, DVD, DVB) would need OCR to become text.
                return Err(format!(
                    "subtitle stream #{n}: converting {:?} to {:?} is not supported (only text subtitles convert: subrip, ass, ssa, webvtt, mov_text, text; use -c:s copy or a matching codec)",
                    in_codec.unwrap_or(codec::Id::None),
                    want.unwrap_or(codec::Id::None)
                ));
            }
        }
        if copy && matches!(source, Source::Graph { .. }) {
            return Err(format!(
                "stream #{n}: a filter graph output cannot be stream-copied"
            ));
        }
        plans.push(OutStreamPlan {
            source,
            kind,
            settings,
            copy,
            kind_index: ki,
            out_index: n,
            samples: None,
        });
    }
    Ok(plans)
}

/// A codec option without a stream specifier that comes after per-stream ones (Plex's burn-in
/// lines end in `-map 1:s:0 -codec ass` after `-codec:0 libx264`) can only mean the streams it
/// can encode: a stream of another kind keeps the last matching codec of its own kind, as Plex's
/// transcoder does. Unknown encoder names are left alone (they fail later with their name).
fn codec_of_kind(
    out: &Output,
    kind: media::Type,
    chosen: Option<CodecChoice>,
    mut matches: impl FnMut(&StreamSpecifier) -> bool,
) -> Option<CodecChoice> {
    let fits = |c: &CodecChoice| match c {
        CodecChoice::Copy => true,
        CodecChoice::Encoder(e) => {
            codec::encoder::find_by_name(alias(e)).is_none_or(|c| c.medium() == kind)
        }
    };
    match &chosen {
        Some(c) if !fits(c) => out
            .streams
            .iter()
            .rev()
            .filter(|e| matches(&e.spec))
            .filter_map(|e| e.value.codec.as_ref())
            .find(|c| fits(c))
            .cloned()
            .or(chosen),
        _ => chosen,
    }
}

/// Plex and jellyfin codec names that libavcodec knows under another name.
fn alias(name: &str) -> &str {
    match name {
        "aac_lc" => "aac",
        "eac3_eae" => "eac3",
        "ac3_eae" => "ac3",
        "truehd_eae" | "mlp_eae" => "eac3",
        n => n,
    }
}

/// Names that wrap hardware (need a device or driver at run time).
pub fn is_hw_name(name: &str) -> bool {
    [
        "_nvenc",
        "_cuvid",
        "_vaapi",
        "_qsv",
        "_nvmpi",
        "_v4l2m2m",
        "_omx",
        "_amf",
        "_videotoolbox",
        "_mediacodec",
        "_rkmpp",
    ]
    .iter()
    .any(|s| name.ends_with(s))
}

fn family_id(name: &str) -> Option<codec::Id> {
    let fam = name.split('_').next()?;
    let fam = match fam {
        "libx264" => "h264",
        "libx265" => "hevc",
        f => f,
    };
    codec::decoder::find_by_name(fam).map(|c| c.id())
}

pub fn find_encoder(
    p: &OutStreamPlan,
    octx: &format::context::Output,
    sctx: &str,
) -> Result<ffmpeg_next::Codec> {
    match &p.settings.codec {
        Some(CodecChoice::Encoder(name)) => {
            let n = alias(name);
            codec::encoder::find_by_name(n).ok_or_else(|| {
                let avail = family_id(n).map(|id| ffi::codec_names(id, true)).unwrap_or_default();
                if avail.is_empty() {
                    Error::Unsupported(format!("{sctx}: unknown encoder `{name}` (not in this libavcodec build)"))
                } else {
                    Error::Unsupported(format!(
                        "{sctx}: unknown encoder `{name}` (not in this libavcodec build); encoders of that codec available here: {}",
                        avail.join(", ")
                    ))
                }
            })
        }
        _ => {
            let id = ffi::default_codec(octx, p.kind);
            codec::encoder::find(id).ok_or_else(|| {
                Error::Unsupported(format!(
                    "{sctx}: the output format has no default encoder for {:?}",
                    p.kind
                ))
            })
        }
    }
}

fn layout_for_channels(n: u32) -> Option<&'static str> {
    Some(match n {
        1 => "mono",
        2 => "stereo",
        3 => "3.0",
        4 => "quad",
        5 => "5.0",
        6 => "5.1",
        7 => "6.1",
        8 => "7.1",
        _ => return None,
    })
}

/// Filters the engine appends after the user's chain so frames suit the encoder.
pub fn tail_filters(p: &OutStreamPlan, codec: Option<ffmpeg_next::Codec>) -> String {
    let s = &p.settings;
    let mut parts: Vec<String> = Vec::new();
    match p.kind {
        media::Type::Video => {
            if let Some((w, h)) = s.size {
                parts.push(format!("scale={w}:{h}"));
            }
            if let Some((n, d)) = s.frame_rate {
                parts.push(format!("fps={n}/{d}"));
            }
            if let Some(pf) = &s.pix_fmt {
                parts.push(format!("format=pix_fmts={pf}"));
            } else if let Some(list) = codec.and_then(|c| c.video().ok()).and_then(|v| v.formats())
            {
                let names: Vec<String> = list
                    .filter_map(|f| f.descriptor().map(|d| d.name().to_string()))
                    .collect();
                if !names.is_empty() {
                    parts.push(format!("format=pix_fmts={}", names.join("|")));
                }
            }
        }
        media::Type::Audio => {
            let mut af = Vec::new();
            if let Some(list) = codec.and_then(|c| c.audio().ok()).and_then(|a| a.formats()) {
                let names: Vec<&str> = list.map(|f| f.name()).collect();
                if !names.is_empty() {
                    af.push(format!("sample_fmts={}", names.join("|")));
                }
            }
            if let Some(r) = s.sample_rate {
                af.push(format!("sample_rates={r}"));
            }
            let layout = s
                .channel_layout
                .clone()
                .or_else(|| s.channels.and_then(layout_for_channels).map(str::to_string));
            if let Some(l) = layout {
                af.push(format!("channel_layouts={l}"));
            }
            if !af.is_empty() {
                parts.push(format!("aformat={}", af.join(":")));
            }
        }
        _ => {}
    }
    parts.join(",")
}

/// Encoder AVOptions from the stream settings (applied by `avcodec_open2`).
pub fn encoder_options(s: &StreamSettings, threads: Option<u32>) -> Dictionary<'static> {
    let mut d = Dictionary::new();
    let mut set = |k: &str, v: String| d.set(k, &v);
    if let Some(v) = s.bitrate {
        set("b", v.to_string());
    }
    if let Some(v) = s.maxrate {
        set("maxrate", v.to_string());
    }
    if let Some(v) = s.minrate {
        set("minrate", v.to_string());
    }
    if let Some(v) = s.bufsize {
        set("bufsize", v.to_string());
    }
    if let Some(v) = s.crf {
        set("crf", v.to_string());
    }
    if let Some(v) = s.qscale {
        set("qp", v.to_string());
    }
    for (k, v) in [
        ("preset", &s.preset),
        ("tune", &s.tune),
        ("profile", &s.profile),
        ("level", &s.level),
    ] {
        if let Some(v) = v {
            set(k, v.clone());
        }
    }
    if let Some(v) = s.gop {
        set("g", v.to_string());
    }
    if let Some(v) = s.keyint_min {
        set("keyint_min", v.to_string());
    }
    if let Some(v) = s.max_b_frames {
        set("bf", v.to_string());
    }
    set(
        "threads",
        threads.map_or("auto".to_string(), |t| {
            if t == 0 { "auto".into() } else { t.to_string() }
        }),
    );
    for (k, v) in &s.encoder_options {
        set(k, v.clone());
    }
    d
}

/// `-force_key_frames expr:gte(t,n_forced*N)` -> N seconds.
pub fn parse_force_kf(s: &str) -> Option<f64> {
    let s = s.replace(' ', "");
    let inner = s.strip_prefix("expr:gte(t,n_forced*")?.strip_suffix(')')?;
    inner.parse().ok().filter(|v: &f64| *v > 0.0)
}

pub struct ParsedComplex {
    pub spec: String,
    pub sources: Vec<(usize, usize)>,
    pub outputs: Vec<(String, media::Type)>,
}

/// Rewrites a `-filter_complex` graph: input references (`[0:v]`, `[1:a:0]`, `[0:#0x101]`)
/// become `[cpxinK]` buffer sources; unconsumed output labels become sinks.
pub fn parse_complex(
    spec: &str,
    _job: &Job,
    inputs: &[Vec<StreamInfo>],
) -> std::result::Result<ParsedComplex, String> {
    let outputs_declared = clusterplex_core::declared_output_labels(&[spec.to_string()]);
    // Labels produced by some chain are internal links, not input references.
    let mut produced: Vec<String> = Vec::new();
    for chain in spec.split(';') {
        let t = chain.trim_end();
        let mut rest = t;
        while rest.ends_with(']') {
            match rest.rfind('[') {
                Some(i) => {
                    produced.push(rest[i + 1..rest.len() - 1].to_string());
                    rest = rest[..i].trim_end();
                }
                None => break,
            }
        }
    }
    let mut out = String::new();
    let mut sources = Vec::new();
    let mut source_kinds = Vec::new();
    let mut outputs: Vec<(String, media::Type)> = Vec::new();
    for (ci, chain) in spec.split(';').enumerate() {
        if ci > 0 {
            out.push(';');
        }
        let mut rest = chain.trim_start();
        let mut first_kind: Option<media::Type> = None;
        let mut had_label = false;
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else { break };
            let label = &stripped[..end];
            had_label = true;
            if produced.iter().any(|p| p == label) {
                out.push_str(&format!("[{label}]"));
            } else {
                let (file, spec_s) = label.split_once(':').unwrap_or((label, ""));
                let file: usize = file
                    .parse()
                    .map_err(|_| format!("unknown input label [{label}]"))?;
                let infos = inputs
                    .get(file)
                    .ok_or_else(|| format!("[{label}] refers to missing input #{file}"))?;
                let sp: StreamSpecifier = spec_s
                    .parse()
                    .map_err(|e: clusterplex_core::JobError| e.to_string())?;
                let f = facts(infos);
                let sel = sp.select(&f);
                let s = *sel
                    .first()
                    .ok_or_else(|| format!("[{label}] matches no stream"))?;
                let k = sources.len();
                sources.push((file, infos[s].index));
                source_kinds.push(infos[s].mtype);
                first_kind.get_or_insert(infos[s].mtype);
                out.push_str(&format!("[cpxin{k}]"));
            }
            rest = stripped[end + 1..].trim_start();
        }
        if !had_label && ci == 0 {
            return Err(
                "unlabelled filter_complex inputs are not supported; label them, e.g. [0:v]".into(),
            );
        }
        out.push_str(rest);
        let body = rest;
        let first_filter = super::filter::filter_name(body).to_string();
        let kind = first_kind.unwrap_or(if first_filter.starts_with('a') {
            media::Type::Audio
        } else {
            media::Type::Video
        });
        for l in &outputs_declared {
            if body.trim_end().ends_with(&format!("[{l}]")) && !outputs.iter().any(|(n, _)| n == l)
            {
                outputs.push((l.clone(), kind));
            }
        }
    }
    // Labels ending a chain with several outputs (`split[a][b]`).
    for l in outputs_declared {
        if !outputs.iter().any(|(n, _)| *n == l) {
            outputs.push((
                l,
                source_kinds.first().copied().unwrap_or(media::Type::Video),
            ));
        }
    }
    Ok(ParsedComplex {
        spec: out,
        sources,
        outputs,
    })
}

/// Muxer name, header options, io-hook kind and manifests for an output.
pub type MuxerSetup = (
    Option<String>,
    Dictionary<'static>,
    Option<io::IoKind>,
    Vec<io::ManifestRule>,
);

/// Muxer name, header options, io-hook kind and manifests for an output.
pub fn muxer_setup(job: &Job, o: usize, out: &Output, target: &str) -> Result<MuxerSetup> {
    let mut fmt = out.format.clone();
    let mut d = Dictionary::new();
    for (k, v) in &out.format_options {
        d.set(k, v);
    }
    if let Some(a) = out.avoid_negative_ts {
        use clusterplex_core::AvoidNegativeTs as A;
        let v = match a {
            A::Auto => "auto",
            A::Disabled => "disabled",
            A::MakeNonNegative => "make_non_negative",
            A::MakeZero => "make_zero",
        };
        d.set("avoid_negative_ts", v);
    }
    let dir = std::path::Path::new(target)
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let mut manifests = Vec::new();
    let kind = match &out.segmenting {
        None => None,
        Some(Segmenting::Segment {
            segment_time,
            start_number,
            segment_format,
            list,
            header_filename,
            time_delta,
            format_options,
        }) => {
            if fmt.is_none() {
                fmt = Some("segment".into());
            }
            d.set("segment_time", &segment_time.to_string());
            if *start_number > 0 {
                d.set("segment_start_number", &start_number.to_string());
            }
            if let Some(f) = segment_format {
                d.set("segment_format", f);
            }
            // libav's segment muxer has the same cut tolerance Plex uses.
            if let Some(t) = time_delta {
                d.set("segment_time_delta", &t.to_string());
            }
            // Written once with the container header; the segments then carry no header.
            if let Some(h) = header_filename {
                d.set("segment_header_filename", &resolve(job, h));
            }
            if !format_options.is_empty() {
                let v: Vec<String> = format_options
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                d.set("segment_format_options", &v.join(":"));
            }
            if let Some(l) = list {
                let (ty, ext, ct) = match l.kind {
                    SegmentListType::Csv => ("csv", "csv", "text/csv"),
                    SegmentListType::Flat => ("flat", "txt", "text/plain"),
                    SegmentListType::M3u8 => ("m3u8", "m3u8", "application/vnd.apple.mpegurl"),
                    SegmentListType::Ffconcat => ("ffconcat", "ffconcat", "text/plain"),
                };
                let local = if l.target.contains("://") {
                    dir.join(format!(".segment-list-{o}.{ext}"))
                        .to_string_lossy()
                        .into_owned()
                } else {
                    resolve(job, &l.target)
                };
                d.set("segment_list", &local);
                d.set("segment_list_type", ty);
                if l.size > 0 {
                    d.set("segment_list_size", &l.size.to_string());
                }
                manifests.push(io::ManifestRule {
                    path: local,
                    target: l.target.clone(),
                    content_type: ct.into(),
                });
            }
            let plex_list = list
                .as_ref()
                .filter(|l| {
                    l.kind == SegmentListType::Csv && (l.separate_stream_times || l.unfinished)
                })
                .map(|l| io::PlexList {
                    separate_stream_times: l.separate_stream_times,
                    unfinished: l.unfinished,
                    template: out.target.clone(),
                });
            Some(io::IoKind::Segment {
                start_number: *start_number,
                header_name: header_filename.clone(),
                plex_list,
            })
        }
        Some(Segmenting::Hls {
            time,
            start_number,
            list_size,
            playlist_type,
            segment_type,
            segment_filename,
            init_filename,
            flags,
        }) => {
            if fmt.is_none() {
                fmt = Some("hls".into());
            }
            d.set("hls_time", &time.to_string());
            d.set("start_number", &start_number.to_string());
            d.set("hls_list_size", &list_size.to_string());
            if let Some(p) = playlist_type {
                d.set("hls_playlist_type", p);
            }
            if *segment_type == HlsSegmentType::Fmp4 {
                d.set("hls_segment_type", "fmp4");
            }
            if let Some(f) = segment_filename {
                d.set("hls_segment_filename", &resolve(job, f));
            }
            if let Some(f) = init_filename {
                d.set("hls_fmp4_init_filename", f);
            }
            if let Some(f) = flags {
                d.set("hls_flags", f);
            }
            manifests.push(io::ManifestRule {
                path: target.to_string(),
                target: target.to_string(),
                content_type: "application/vnd.apple.mpegurl".into(),
            });
            Some(io::IoKind::Hls {
                init_name: Some(init_filename.clone().unwrap_or_else(|| "init.mp4".into())),
                start_number: *start_number,
            })
        }
        Some(Segmenting::Dash {
            seg_duration,
            start_number,
            init_seg_name,
            media_seg_name,
            manifest_target,
            window_size,
            use_template,
            use_timeline,
            single_file,
            delete_removed,
            ..
        }) => {
            if fmt.is_none() {
                fmt = Some("dash".into());
            }
            let start = if *start_number <= 1 {
                job.plex.skip_to_segment.unwrap_or(1).max(1)
            } else {
                *start_number
            };
            d.set("seg_duration", &seg_duration.to_string());
            if let Some(n) = init_seg_name {
                d.set("init_seg_name", n);
            }
            if let Some(w) = window_size {
                d.set("window_size", &w.to_string());
            }
            if let Some(v) = use_template {
                d.set("use_template", if *v { "1" } else { "0" });
            }
            if let Some(v) = use_timeline {
                d.set("use_timeline", if *v { "1" } else { "0" });
            }
            let template = media_seg_name
                .clone()
                .unwrap_or_else(|| "chunk-stream$RepresentationID$-$Number%05d$.$ext$".into());
            if *single_file {
                d.set("single_file", "1");
                if let Some(n) = media_seg_name {
                    d.set("media_seg_name", n);
                }
            } else {
                io::format_dash_template(&template, "0", start, "m4s").map_err(|m| {
                    Error::Other {
                        stage: Stage::Validate,
                        message: format!("output #{o}: {m}"),
                    }
                })?;
                d.set("media_seg_name", io::DASH_HIDDEN_MEDIA);
            }
            manifests.push(io::ManifestRule {
                path: target.to_string(),
                target: manifest_target
                    .clone()
                    .map(|t| {
                        if t.contains("://") {
                            t
                        } else {
                            resolve(job, &t)
                        }
                    })
                    .unwrap_or_else(|| target.to_string()),
                content_type: "application/dash+xml".into(),
            });
            // FFmpeg deletes segments that left the window (after `extra_window_size` more);
            // Plex's `-delete_removed false` keeps them all (PMS cleans the session up).
            let extra = out
                .format_options
                .get("extra_window_size")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(5);
            let keep_segments = match (delete_removed, window_size) {
                (Some(false), _) => {
                    // dashenc adds this to `window_size` in a C int: keep the sum below
                    // INT_MAX, or it wraps negative and the muxer deletes past its array.
                    let w = i64::from(window_size.unwrap_or(0));
                    let never = (i64::from(i32::MAX) - w - 1).max(0);
                    d.set("extra_window_size", &never.to_string());
                    None
                }
                (_, Some(w)) if *w > 0 && !*single_file => Some(*w as usize + extra),
                _ => None,
            };
            Some(io::IoKind::Dash {
                media_template: template,
                start_number: start,
                representations: 1,
                keep_segments,
            })
        }
    };
    Ok((fmt, d, kind, manifests))
}

pub fn open_input_format(
    url: &str,
    fmt: &str,
    opts: Dictionary,
) -> std::result::Result<format::context::Input, ffmpeg_next::Error> {
    ffi::open_input_as(url, fmt, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn force_kf_expr() {
        assert_eq!(parse_force_kf("expr:gte(t,n_forced*2)"), Some(2.0));
        assert_eq!(parse_force_kf("expr:gte(t, n_forced * 5)"), Some(5.0));
        assert_eq!(parse_force_kf("1,2,3"), None);
    }

    fn sub_info(codec: codec::Id) -> StreamInfo {
        StreamInfo {
            index: 0,
            mtype: media::Type::Subtitle,
            kind: Some(MediaKind::Subtitle),
            attached_pic: false,
            id: 0,
            metadata: Vec::new(),
            pixels: 0,
            channels: 0,
            codec,
        }
    }

    /// Text subtitles convert; bitmap ones (PGS, DVD) to a text codec are refused by name.
    #[test]
    fn subtitle_conversion_text_only() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("o.mkv");
        let octx = format::output(&target).unwrap();
        let mut out = Output::new(target.to_string_lossy(), None);
        out.streams.push(clusterplex_core::ByStream::new(
            "s".parse().unwrap(),
            StreamSettings {
                codec: Some(CodecChoice::Encoder("ass".into())),
                ..Default::default()
            },
        ));
        let job = Job::default();
        let plans = select_streams(
            &job,
            0,
            &out,
            &[vec![sub_info(codec::Id::SUBRIP)]],
            &[],
            &octx,
        )
        .unwrap();
        assert!(!plans[0].copy);
        let plans =
            select_streams(&job, 0, &out, &[vec![sub_info(codec::Id::ASS)]], &[], &octx).unwrap();
        assert!(plans[0].copy);
        for bitmap in [codec::Id::HDMV_PGS_SUBTITLE, codec::Id::DVD_SUBTITLE] {
            let e =
                select_streams(&job, 0, &out, &[vec![sub_info(bitmap)]], &[], &octx).unwrap_err();
            assert!(
                e.contains("is not supported") && e.contains("only text"),
                "{e}"
            );
        }
    }

    /// Plex's burn-in tail `-codec:0 libx264 ... -map 1:s:0 -codec ass`: the unspecified `ass`
    /// does not replace the video encoder.
    #[test]
    fn codec_without_specifier_applies_to_its_kind() {
        let mut out = Output::new("nullfile", Some("null"));
        for (spec, name) in [("0", "libx264"), ("", "ass")] {
            out.streams.push(clusterplex_core::ByStream::new(
                spec.parse().unwrap(),
                StreamSettings {
                    codec: Some(CodecChoice::Encoder(name.into())),
                    ..Default::default()
                },
            ));
        }
        let enc = |c: Option<CodecChoice>| match c {
            Some(CodecChoice::Encoder(e)) => e,
            other => panic!("{other:?}"),
        };
        let video = out.settings_for(|s| out_matches(s, Some(MediaKind::Video), 0, 0));
        let v = codec_of_kind(&out, media::Type::Video, video.codec, |s| {
            out_matches(s, Some(MediaKind::Video), 0, 0)
        });
        assert_eq!(enc(v), "libx264");
        let sub = out.settings_for(|s| out_matches(s, Some(MediaKind::Subtitle), 1, 0));
        let s = codec_of_kind(&out, media::Type::Subtitle, sub.codec, |s| {
            out_matches(s, Some(MediaKind::Subtitle), 1, 0)
        });
        assert_eq!(enc(s), "ass");
    }

    #[test]
    fn hw_names() {
        assert!(is_hw_name("h264_nvenc"));
        assert!(is_hw_name("hevc_cuvid"));
        assert!(!is_hw_name("libx264"));
    }
}
