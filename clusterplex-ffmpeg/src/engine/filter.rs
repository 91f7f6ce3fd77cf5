//! libavfilter graphs (simple per-stream chains and `-filter_complex` graphs), and the split
//! of a chain around a `tonemap` filter into graph -> [`ToneStage`] -> graph.

use ffmpeg_next::{Frame, Rational, filter, format, media};

use super::{ffi, tonemap_hook::ToneStage};
use crate::{Error, Result, Stage};

/// What a buffer source is fed with, taken from the first frame that reaches it.
#[derive(Debug, Clone)]
pub enum SourceDesc {
    Video {
        width: u32,
        height: u32,
        format: format::Pixel,
        time_base: Rational,
        sar: Rational,
        frame_rate: Option<Rational>,
    },
    Audio {
        rate: u32,
        format: format::Sample,
        layout: String,
        time_base: Rational,
    },
}

impl SourceDesc {
    /// Describes `frame`, which arrives with timestamps in `time_base`.
    pub fn of_frame(
        kind: media::Type,
        frame: &Frame,
        time_base: Rational,
        frame_rate: Option<Rational>,
    ) -> Self {
        // SAFETY-free: reading through ffmpeg-next's typed views of the same frame.
        match kind {
            media::Type::Audio => {
                // SAFETY: not needed; `Frame` exposes the raw pointer and the typed accessors
                // are implemented on the audio view, which we reconstruct by reference.
                let a = audio_view(frame);
                let layout = ffi::frame_layout_desc(frame)
                    .unwrap_or_else(|| format!("{}c", ffi::frame_channels(frame).max(1)));
                SourceDesc::Audio {
                    rate: a.0,
                    format: a.1,
                    layout,
                    time_base,
                }
            }
            _ => {
                let v = video_view(frame);
                SourceDesc::Video {
                    width: v.0,
                    height: v.1,
                    format: v.2,
                    time_base,
                    sar: v.3,
                    frame_rate,
                }
            }
        }
    }

    fn filter_and_args(&self) -> (&'static str, String) {
        match self {
            SourceDesc::Video {
                width,
                height,
                format,
                time_base,
                sar,
                frame_rate,
            } => {
                let pix: ffmpeg_next::ffi::AVPixelFormat = (*format).into();
                let sar = if sar.numerator() <= 0 || sar.denominator() <= 0 {
                    Rational::new(1, 1)
                } else {
                    *sar
                };
                let mut args = format!(
                    "video_size={width}x{height}:pix_fmt={}:time_base={}/{}:pixel_aspect={}/{}",
                    pix as i32,
                    time_base.numerator(),
                    time_base.denominator().max(1),
                    sar.numerator(),
                    sar.denominator()
                );
                if let Some(fr) = frame_rate.filter(|r| r.numerator() > 0 && r.denominator() > 0) {
                    args.push_str(&format!(
                        ":frame_rate={}/{}",
                        fr.numerator(),
                        fr.denominator()
                    ));
                }
                ("buffer", args)
            }
            SourceDesc::Audio {
                rate,
                format,
                layout,
                time_base,
            } => (
                "abuffer",
                format!(
                    "time_base={}/{}:sample_rate={rate}:sample_fmt={}:channel_layout={layout}",
                    time_base.numerator(),
                    time_base.denominator().max(1),
                    format.name()
                ),
            ),
        }
    }
}

fn video_view(frame: &Frame) -> (u32, u32, format::Pixel, Rational) {
    // Typed accessors live on frame::Video; build a borrowed view without copying.
    // SAFETY: `frame` is a live video frame; we read plain fields only.
    unsafe {
        let f = frame.as_ptr();
        (
            (*f).width.max(0) as u32,
            (*f).height.max(0) as u32,
            format::Pixel::from(std::mem::transmute::<i32, ffmpeg_next::ffi::AVPixelFormat>(
                (*f).format,
            )),
            (*f).sample_aspect_ratio.into(),
        )
    }
}

fn audio_view(frame: &Frame) -> (u32, format::Sample) {
    // SAFETY: `frame` is a live audio frame; we read plain fields only.
    unsafe {
        let f = frame.as_ptr();
        (
            (*f).sample_rate.max(0) as u32,
            format::Sample::from(
                std::mem::transmute::<i32, ffmpeg_next::ffi::AVSampleFormat>((*f).format),
            ),
        )
    }
}

/// A configured libavfilter graph with named sources and sinks.
pub struct LavfiGraph {
    graph: filter::Graph,
    sources: Vec<String>,
    sinks: Vec<String>,
    pub sink_kinds: Vec<media::Type>,
    sink_eof: Vec<bool>,
}

impl LavfiGraph {
    /// Builds `spec` with sources (`name`, desc) and sinks (`name`, kind). In `spec` the
    /// sources and sinks are referred to by their names as labels; a simple chain without
    /// labels is connected to the single source and sink.
    pub fn build(
        spec: &str,
        sources: &[(String, SourceDesc)],
        sinks: &[(String, media::Type)],
        threads: Option<u32>,
        ctx: &str,
    ) -> Result<Self> {
        let err = |what: &str, e: ffmpeg_next::Error| Error::Av {
            stage: Stage::Filter,
            context: format!("{ctx}: {what} (graph `{spec}`)"),
            source: e,
        };
        let mut graph = filter::Graph::new();
        if let Some(t) = threads {
            // SAFETY: plain field of a graph we own, before configuration.
            unsafe { (*graph.as_mut_ptr()).nb_threads = t as i32 };
        }
        for (name, desc) in sources {
            let (fname, args) = desc.filter_and_args();
            let f =
                filter::find(fname).ok_or_else(|| Error::Unsupported(format!("filter {fname}")))?;
            graph
                .add(&f, name, &args)
                .map_err(|e| err(&format!("creating {fname} source {args}"), e))?;
        }
        for (name, kind) in sinks {
            let fname = if *kind == media::Type::Audio {
                "abuffersink"
            } else {
                "buffersink"
            };
            let f =
                filter::find(fname).ok_or_else(|| Error::Unsupported(format!("filter {fname}")))?;
            graph
                .add(&f, name, "")
                .map_err(|e| err("creating sink", e))?;
        }
        {
            let mut parser = filter::graph::Parser::new(&mut graph);
            for (name, _) in sources {
                parser = parser
                    .output(name, 0)
                    .map_err(|e| err("linking source", e))?;
            }
            for (name, _) in sinks {
                parser = parser.input(name, 0).map_err(|e| err("linking sink", e))?;
            }
            parser.parse(spec).map_err(|e| err("parsing", e))?;
        }
        graph.validate().map_err(|e| err("configuring", e))?;
        Ok(LavfiGraph {
            graph,
            sources: sources.iter().map(|s| s.0.clone()).collect(),
            sinks: sinks.iter().map(|s| s.0.clone()).collect(),
            sink_kinds: sinks.iter().map(|s| s.1).collect(),
            sink_eof: vec![false; sinks.len()],
        })
    }

    pub fn push(&mut self, source: usize, frame: &Frame) -> Result<()> {
        let name = &self.sources[source];
        let mut ctx = self
            .graph
            .get(name)
            .ok_or_else(|| other(format!("no source {name}")))?;
        ctx.source().add(frame).map_err(|e| Error::Av {
            stage: Stage::Filter,
            context: format!("feeding filter source {name}"),
            source: e,
        })
    }

    /// Signals end of stream on a source.
    pub fn close(&mut self, source: usize) -> Result<()> {
        let name = &self.sources[source];
        let mut ctx = self
            .graph
            .get(name)
            .ok_or_else(|| other(format!("no source {name}")))?;
        match ctx.source().flush() {
            Ok(()) | Err(ffmpeg_next::Error::Eof) => Ok(()),
            Err(e) => Err(Error::Av {
                stage: Stage::Filter,
                context: format!("closing {name}"),
                source: e,
            }),
        }
    }

    /// Pulls every available frame from sink `sink` into `out`. `samples`: fixed audio frame
    /// size for encoders that need one.
    pub fn pull(&mut self, sink: usize, samples: Option<u32>, out: &mut Vec<Frame>) -> Result<()> {
        let name = self.sinks[sink].clone();
        let mut ctx = self
            .graph
            .get(&name)
            .ok_or_else(|| other(format!("no sink {name}")))?;
        loop {
            let mut f = ffi::new_frame();
            let r = match samples {
                Some(n) => ctx.sink().samples(&mut f, n as usize),
                None => ctx.sink().frame(&mut f),
            };
            match r {
                Ok(()) => out.push(f),
                Err(ffmpeg_next::Error::Eof) => {
                    self.sink_eof[sink] = true;
                    return Ok(());
                }
                Err(ffmpeg_next::Error::Other { errno }) if errno == libc_eagain() => return Ok(()),
                Err(e) => {
                    return Err(Error::Av {
                        stage: Stage::Filter,
                        context: format!("pulling from {name}"),
                        source: e,
                    });
                }
            }
        }
    }

    pub fn sink_ctx(&mut self, sink: usize) -> Option<filter::Context> {
        let name = self.sinks[sink].clone();
        self.graph.get(&name)
    }
}

pub fn libc_eagain() -> i32 {
    11
}

fn other(message: String) -> Error {
    Error::Other {
        stage: Stage::Filter,
        message,
    }
}

/// Splits a filter chain at top-level commas (not inside quotes, brackets or after `\`).
pub fn split_chain(chain: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = false;
    let mut depth = 0i32;
    let mut esc = false;
    for c in chain.chars() {
        if esc {
            cur.push(c);
            esc = false;
            continue;
        }
        match c {
            '\\' => {
                esc = true;
                cur.push(c);
            }
            '\'' => {
                quote = !quote;
                cur.push(c);
            }
            '[' if !quote => {
                depth += 1;
                cur.push(c);
            }
            ']' if !quote => {
                depth -= 1;
                cur.push(c);
            }
            ',' if !quote && depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Name of one filter (`scale=640:360` -> `scale`, `[in]tonemap=x[out]` -> `tonemap`).
pub fn filter_name(f: &str) -> &str {
    let mut s = f.trim();
    while let Some(rest) = s.strip_prefix('[') {
        s = rest.split_once(']').map(|x| x.1).unwrap_or("").trim_start();
    }
    let end = s.find(['=', '@', '[', ' ']).unwrap_or(s.len());
    &s[..end]
}

/// A chain split around `tonemap`: (before, tonemap arguments, after). `None` when the chain
/// has no top-level tonemap filter.
pub fn split_tonemap(chain: &str) -> Option<(String, String, String)> {
    let parts = split_chain(chain);
    let i = parts.iter().position(|p| filter_name(p) == "tonemap")?;
    let args = parts[i]
        .split_once('=')
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Some((parts[..i].join(","), args, parts[i + 1..].join(",")))
}

/// One stage of a per-stream pipeline.
enum PipeStage {
    Lavfi {
        spec: String,
        graph: Option<LavfiGraph>,
        eof: bool,
    },
    Tone(Box<ToneStage>),
}

/// A per-stream filter pipeline: one or more libavfilter graphs, with the tonemapper between
/// them when the chain contains `tonemap`. The last stage is always a graph (it carries the
/// format/scale filters the encoder needs).
pub struct Pipeline {
    kind: media::Type,
    stages: Vec<PipeStage>,
    threads: Option<u32>,
    ctx: String,
    /// Time base of frames entering the pipeline.
    in_tb: Rational,
    in_rate: Option<Rational>,
    /// Fixed audio frame size for the final sink, once the encoder is open.
    pub samples: Option<u32>,
}

impl Pipeline {
    /// `user`: the user's chain (may be empty); `tail`: filters the engine appends (format,
    /// scale, fps, aformat).
    pub fn new(
        kind: media::Type,
        user: &str,
        tail: &str,
        in_tb: Rational,
        in_rate: Option<Rational>,
        threads: Option<u32>,
        ctx: String,
    ) -> Result<Self> {
        let null = if kind == media::Type::Audio {
            "anull"
        } else {
            "null"
        };
        let join = |a: &str, b: &str| -> String {
            match (a.trim().is_empty(), b.trim().is_empty()) {
                (true, true) => null.to_string(),
                (false, true) => a.to_string(),
                (true, false) => b.to_string(),
                (false, false) => format!("{a},{b}"),
            }
        };
        let mut stages = Vec::new();
        let mut rest = user.to_string();
        // Every top-level tonemap splits the chain.
        while let Some((before, args, after)) = (kind == media::Type::Video)
            .then(|| split_tonemap(&rest))
            .flatten()
        {
            if !before.is_empty() {
                stages.push(PipeStage::Lavfi {
                    spec: before,
                    graph: None,
                    eof: false,
                });
            }
            let opts = args;
            stages.push(PipeStage::Tone(Box::new(ToneStage::new(&opts).map_err(
                |e| match e {
                    Error::Unsupported(m) => Error::Unsupported(format!("{ctx}: {m}")),
                    other => other,
                },
            )?)));
            rest = after;
        }
        stages.push(PipeStage::Lavfi {
            spec: join(&rest, tail),
            graph: None,
            eof: false,
        });
        Ok(Pipeline {
            kind,
            stages,
            threads,
            ctx,
            in_tb,
            in_rate,
            samples: None,
        })
    }

    /// Whether the final graph is configured (its sink parameters are known).
    pub fn final_sink(&mut self) -> Option<filter::Context> {
        match self.stages.last_mut() {
            Some(PipeStage::Lavfi { graph: Some(g), .. }) => g.sink_ctx(0),
            _ => None,
        }
    }

    /// Time base of the frames the pipeline outputs (once configured).
    pub fn out_time_base(&mut self) -> Option<Rational> {
        self.final_sink().map(|mut s| s.sink().time_base())
    }

    /// Pushes a frame (or, with `None`, end of stream) through every stage except the final
    /// pull, which the caller does with [`Pipeline::pull`] once its encoder is ready.
    pub fn push(&mut self, frame: Option<&Frame>) -> Result<()> {
        let n = self.stages.len();
        let mut cur: Vec<Frame> = Vec::new();
        let mut eof = frame.is_none();
        let mut first = true;
        let mut tb = self.in_tb;
        let mut rate = self.in_rate;
        for (i, stage) in self.stages.iter_mut().enumerate() {
            let inputs: Vec<Option<&Frame>> = if first {
                vec![frame]
            } else {
                cur.iter().map(Some).chain(eof.then_some(None)).collect()
            };
            first = false;
            let mut next = Vec::new();
            let last = i + 1 == n;
            match stage {
                PipeStage::Lavfi {
                    spec,
                    graph,
                    eof: geof,
                } => {
                    for f in inputs {
                        match f {
                            Some(f) => {
                                if graph.is_none() {
                                    let desc = SourceDesc::of_frame(self.kind, f, tb, rate);
                                    *graph = Some(LavfiGraph::build(
                                        spec,
                                        &[("in".to_string(), desc)],
                                        &[("out".to_string(), self.kind)],
                                        self.threads,
                                        &self.ctx,
                                    )?);
                                }
                                if let Some(g) = graph.as_mut() {
                                    g.push(0, f)?;
                                }
                            }
                            None => {
                                if !*geof {
                                    *geof = true;
                                    if let Some(g) = graph.as_mut() {
                                        g.close(0)?;
                                    }
                                }
                            }
                        }
                    }
                    if let Some(g) = graph.as_mut()
                        && !last
                    {
                        g.pull(0, None, &mut next)?;
                        if let Some(mut s) = g.sink_ctx(0) {
                            tb = s.sink().time_base();
                            let p = ffi::video_sink_params(&mut s);
                            rate = Some(p.frame_rate).filter(|r| r.numerator() > 0);
                        }
                    }
                }
                PipeStage::Tone(t) => {
                    for f in inputs.into_iter().flatten() {
                        let v = ffmpeg_next::frame::Video::from(clone_frame(f));
                        let mut out = t.process(&v)?;
                        out.set_pts(f.pts());
                        next.push(clone_frame(&out));
                    }
                }
            }
            cur = next;
            if eof && !last {
                // EOF propagates after the stage's remaining frames.
                eof = true;
            }
        }
        Ok(())
    }

    /// Pulls finished frames from the final graph.
    pub fn pull(&mut self, out: &mut Vec<Frame>) -> Result<()> {
        let samples = self.samples;
        if let Some(PipeStage::Lavfi { graph: Some(g), .. }) = self.stages.last_mut() {
            g.pull(0, samples, out)?;
        }
        Ok(())
    }

    pub fn kind(&self) -> media::Type {
        self.kind
    }
}

fn clone_frame(f: &Frame) -> Frame {
    let mut out = ffi::new_frame();
    // SAFETY: av_frame_ref makes `out` a new reference to the same buffers; `out` is empty.
    unsafe {
        ffmpeg_next::ffi::av_frame_ref(out.as_mut_ptr(), f.as_ptr());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_split_respects_quotes_and_brackets() {
        assert_eq!(
            split_chain("scale=640:360,format=yuv420p"),
            vec!["scale=640:360", "format=yuv420p"]
        );
        assert_eq!(
            split_chain("drawtext=text='a,b',null"),
            vec!["drawtext=text='a,b'", "null"]
        );
        assert_eq!(filter_name("[0:v]scale=1:2"), "scale");
        assert_eq!(filter_name("tonemap"), "tonemap");
    }

    #[test]
    fn tonemap_split() {
        let (b, a, c) =
            split_tonemap("zscale=t=linear,tonemap=bt2390:peak=10,format=yuv420p").unwrap();
        assert_eq!(b, "zscale=t=linear");
        assert_eq!(a, "bt2390:peak=10");
        assert_eq!(c, "format=yuv420p");
        assert!(split_tonemap("scale=1:1").is_none());
        let (b, a, c) = split_tonemap("tonemap").unwrap();
        assert!(b.is_empty() && a.is_empty() && c.is_empty());
    }
}
