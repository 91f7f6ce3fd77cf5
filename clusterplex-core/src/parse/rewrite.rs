//! Filter rewrites: HDR tonemap chains to ClusterPlex's `tonemap`, and Plex's `inlineass` to
//! libav's `subtitles`.
//!
//! Tonemap chains recognised (each within one filter chain; labels are kept):
//! - FFmpeg/Jellyfin software: `zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,
//!   tonemap=tonemap=hable:desat=0:peak=100,zscale=t=bt709:m=bt709:r=tv,format=yuv420p`
//! - Jellyfin CUDA / OpenCL / VAAPI: `tonemap_cuda=...`, `hwupload,tonemap_opencl=...,hwdownload`,
//!   `tonemap_vaapi=...`, and jellyfin-ffmpeg's `tonemapx=...`
//! - Plex: `format=p010,tonemap=mobius`
//!
//! The tonemap filter and its colour-conversion helpers (`zscale` without a size, `format`,
//! `hwupload`/`hwdownload`/`hwmap` around it) become one `tonemap=<curve>[:param=][:desat=]
//! [:peak=][:mode=][:impl=]`, followed by `format=<fmt>` when the chain asked for an output pixel
//! format. The engine runs its own fast tonemap (CPU or CUDA).

use super::{
    Rewrite,
    filters::{FilterText, parse_graph, render_graph},
};
use crate::job::{Job, MapSource, StreamSpecifier};

const TONEMAP_CORES: &[&str] = &[
    "tonemap",
    "tonemap_cuda",
    "tonemap_opencl",
    "tonemap_vaapi",
    "tonemapx",
];

/// Splits filter arguments into (key, value) pairs; positional ones get key `None`.
fn split_args(args: &str) -> Vec<(Option<String>, String)> {
    super::filters::split_top(args, ':')
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (Some(k.trim().to_string()), v.to_string()),
            None => (None, p),
        })
        .collect()
}

fn arg<'a>(pairs: &'a [(Option<String>, String)], keys: &[&str]) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k.as_deref().is_some_and(|k| keys.contains(&k)))
        .map(|(_, v)| v.as_str())
}

fn zscale_resizes(f: &FilterText) -> bool {
    split_args(&f.args).iter().any(|(k, _)| {
        matches!(
            k.as_deref(),
            Some("w" | "h" | "width" | "height" | "s" | "size")
        )
    })
}

fn is_pre_helper(f: &FilterText) -> bool {
    match f.name.as_str() {
        "zscale" => !zscale_resizes(f),
        "format" | "hwupload" | "hwupload_cuda" | "hwmap" => true,
        _ => false,
    }
}

fn is_post_helper(f: &FilterText) -> bool {
    match f.name.as_str() {
        "zscale" => !zscale_resizes(f),
        "format" | "hwdownload" | "hwmap" => true,
        _ => false,
    }
}

/// The pixel format a `format=` filter asks for (`format=yuv420p`, `format=pix_fmts=a|b`).
fn format_value(f: &FilterText) -> Option<String> {
    let pairs = split_args(&f.args);
    let v = arg(&pairs, &["pix_fmts"]).or_else(|| pairs.first().map(|(_, v)| v.as_str()))?;
    (!v.is_empty()).then(|| v.to_string())
}

/// Rewrites one chain's tonemap (if any). Returns the rewrite record.
fn rewrite_tonemap_chain(chain: &mut Vec<FilterText>) -> Option<Rewrite> {
    let core = chain
        .iter()
        .position(|f| TONEMAP_CORES.contains(&f.name.as_str()))?;
    let mut start = core;
    // Labels between filters end a chain in practice; only walk over unlabelled neighbours.
    while start > 0 && is_pre_helper(&chain[start - 1]) && chain[start].inputs.is_empty() {
        start -= 1;
    }
    let mut end = core;
    while end + 1 < chain.len() && is_post_helper(&chain[end + 1]) && chain[end].outputs.is_empty()
    {
        end += 1;
    }
    let f = &chain[core];
    let pairs = split_args(&f.args);
    let curve = pairs
        .iter()
        .find(|(k, _)| k.is_none())
        .map(|(_, v)| v.as_str())
        .or_else(|| arg(&pairs, &["tonemap"]))
        .unwrap_or("none")
        .to_string();
    let mut text = format!("tonemap={curve}");
    for (out_key, keys) in [
        ("param", &["param"][..]),
        ("desat", &["desat"][..]),
        ("peak", &["peak"][..]),
        ("mode", &["mode", "tonemap_mode"][..]),
        ("impl", &["impl"][..]),
    ] {
        if let Some(v) = arg(&pairs, keys) {
            text.push_str(&format!(":{out_key}={v}"));
        }
    }
    let mut out_fmt = None;
    if f.name != "tonemap" {
        out_fmt = arg(&pairs, &["format"]).map(str::to_string);
    }
    for helper in &chain[core + 1..=end] {
        if helper.name == "format" {
            out_fmt = format_value(helper);
        }
    }
    let original: Vec<String> = chain[start..=end].iter().map(FilterText::render).collect();
    let original = original.join(",");
    let mut replacement = vec![FilterText {
        inputs: chain[start].inputs.clone(),
        name: "tonemap".into(),
        args: text.trim_start_matches("tonemap=").to_string(),
        outputs: Vec::new(),
    }];
    if let Some(fmt) = out_fmt {
        replacement.push(FilterText {
            inputs: Vec::new(),
            name: "format".into(),
            args: fmt,
            outputs: Vec::new(),
        });
    }
    if let Some(last) = replacement.last_mut() {
        last.outputs = chain[end].outputs.clone();
    }
    let rendered: Vec<String> = replacement.iter().map(FilterText::render).collect();
    let rendered = rendered.join(",");
    chain.splice(start..=end, replacement);
    (rendered != original).then(|| Rewrite {
        option: String::new(),
        from: original,
        to: rendered,
        reason: "HDR tonemap chain replaced by ClusterPlex's tonemap filter".into(),
    })
}

/// Rewrites a graph; returns the new text, the rewrites made, and problems that make the graph
/// unsupported.
pub fn rewrite_graph(graph: &str, _job: &Job) -> (String, Vec<Rewrite>, Vec<String>) {
    let mut chains = parse_graph(graph);
    let mut rewrites = Vec::new();
    let problems = Vec::new();
    for chain in &mut chains {
        if let Some(r) = rewrite_tonemap_chain(chain) {
            rewrites.push(r);
        }
    }
    if rewrites.is_empty() {
        // Keep the user's exact text (spacing, quoting) when nothing changed.
        return (graph.to_string(), rewrites, problems);
    }
    (render_graph(&chains), rewrites, problems)
}

/// Escapes a value for a filter option inside a filter graph: once for the option parser
/// (`:` separates options) and once for the graph parser (`,;[]` separate filters and pads).
pub fn escape_filter_value(v: &str) -> String {
    let mut level1 = String::new();
    for c in v.chars() {
        if matches!(c, '\\' | '\'' | ':') {
            level1.push('\\');
        }
        level1.push(c);
    }
    let mut level2 = String::new();
    for c in level1.chars() {
        if matches!(c, '\\' | '\'' | '[' | ']' | ',' | ';') {
            level2.push('\\');
        }
        level2.push(c);
    }
    level2
}

/// Replaces Plex's `inlineass` filter (which draws the subtitle stream chosen by
/// `-map_inlineass F:s:N`) with libav's `subtitles` filter reading the same stream from the same
/// input file. Plex's `overrides` become `force_style`, the directory of `font_path` becomes
/// `fontsdir`; Plex's `font_size`, `font_scale`, `outline`, `shadow` are in Plex's own units and
/// are left to the subtitle styles.
pub fn apply_inlineass(job: &mut Job, rewrites: &mut Vec<Rewrite>, unsupported: &mut Vec<String>) {
    let source = job.outputs.iter().find_map(|o| o.map_inlineass.clone());
    let mut graphs: Vec<(String, &mut String)> = Vec::new();
    for (i, g) in job.complex_filters.iter_mut().enumerate() {
        graphs.push((format!("-filter_complex #{i}"), g));
    }
    for (o, out) in job.outputs.iter_mut().enumerate() {
        for s in &mut out.streams {
            if let Some(f) = s.value.filter.as_mut() {
                graphs.push((format!("-filter (output {o})"), f));
            }
        }
    }
    let inputs = &job.inputs;
    let copyts = job.timestamps.copyts;
    for (location, graph) in graphs {
        let mut chains = parse_graph(graph);
        let mut changed = false;
        for chain in &mut chains {
            for f in chain.iter_mut() {
                if f.name != "inlineass" {
                    continue;
                }
                let Some(src) = source.as_deref() else {
                    unsupported.push(format!("{location}: inlineass without -map_inlineass"));
                    continue;
                };
                match subtitles_args(src, &f.args, inputs, copyts) {
                    Ok(args) => {
                        let from = f.render();
                        f.name = "subtitles".into();
                        f.args = args;
                        rewrites.push(Rewrite {
                            option: location.clone(),
                            from,
                            to: f.render(),
                            reason: format!(
                                "Plex's inlineass burn-in of -map_inlineass {src} done by libav's subtitles filter"
                            ),
                        });
                        changed = true;
                    }
                    Err(why) => unsupported.push(format!("{location}: inlineass: {why}")),
                }
            }
        }
        if changed {
            *graph = render_graph(&chains);
        }
    }
}

fn subtitles_args(
    src: &str,
    plex_args: &str,
    inputs: &[crate::job::Input],
    copyts: bool,
) -> Result<String, String> {
    let map = super::parse_map(src).map_err(|e| e.to_string())?;
    let MapSource::Input { input, spec } = map.source else {
        return Err(format!("-map_inlineass {src} is not an input stream"));
    };
    let Some(file) = inputs.get(input) else {
        return Err(format!(
            "-map_inlineass {src} names input {input}, which does not exist"
        ));
    };
    let si = match spec {
        StreamSpecifier {
            kind: Some(crate::job::MediaKind::Subtitle),
            index,
            ..
        } if spec.program.is_none() && spec.id.is_none() && spec.metadata.is_none() => {
            index.unwrap_or(0)
        }
        _ => {
            return Err(format!(
                "-map_inlineass {src}: only `F:s:N` specifiers can be mapped"
            ));
        }
    };
    if file.seek.is_some() && !copyts {
        // The subtitles filter renders by frame timestamp; after an input seek without
        // -copyts those start at 0 and the subtitles would be early.
        return Err("input seek without -copyts shifts subtitle timing".into());
    }
    let mut args = format!("filename={}:si={si}", escape_filter_value(&file.url));
    let pairs = split_args(plex_args);
    if let Some(style) = arg(&pairs, &["overrides"]) {
        args.push_str(&format!(":force_style={}", escape_filter_value(style)));
    }
    if let Some((dir, _)) = arg(&pairs, &["font_path"]).and_then(|f| f.rsplit_once('/'))
        && !dir.is_empty()
    {
        args.push_str(&format!(":fontsdir={}", escape_filter_value(dir)));
    }
    Ok(args)
}

/// Turns each `-filter_complex` graph that contains `tonemap` and is really one linear chain
/// (`[0:0]a,b[x];[x]c[y]` with `[y]` mapped once) into the equivalent per-stream filter of the
/// mapped output stream (`-map 0:0 -filter:N a,b,c`). Plex sends its HDR chain this way; the
/// engine runs ClusterPlex's tonemapper inside per-stream chains, whereas complex graphs go to
/// libavfilter as they are (where `tonemap` would be FFmpeg's slow float filter). Graphs of any
/// other shape are left alone.
pub fn inline_tonemap_graphs(job: &mut Job, rewrites: &mut Vec<Rewrite>) {
    let mut g = 0;
    while g < job.complex_filters.len() {
        let graph = job.complex_filters[g].clone();
        match linear_chain(&graph).and_then(|c| inline_chain(job, c)) {
            Some((output, stream)) => {
                job.complex_filters.remove(g);
                rewrites.push(Rewrite {
                    option: format!("-filter_complex #{g}"),
                    from: graph,
                    to: format!("-filter:{stream} on output #{output}"),
                    reason: "a linear graph with tonemap runs as a per-stream chain, so \
                             ClusterPlex's tonemapper handles it"
                        .into(),
                });
            }
            None => g += 1,
        }
    }
}

/// A linear graph with a tonemap: (input file, stream specifier, filter chain, output label).
struct LinearChain {
    input: usize,
    spec: StreamSpecifier,
    chain: String,
    label: String,
}

fn linear_chain(graph: &str) -> Option<LinearChain> {
    let chains = parse_graph(graph);
    if !chains.iter().flatten().any(|f| f.name == "tonemap") {
        return None;
    }
    // Every chain: one input label on its first filter, one output label on its last, none
    // in between.
    let mut links: Vec<(String, String, Vec<FilterText>)> = Vec::new();
    for chain in chains {
        let (first, last) = (chain.first()?, chain.last()?);
        let inner_labels = chain.iter().enumerate().any(|(i, f)| {
            (i > 0 && !f.inputs.is_empty()) || (i + 1 < chain.len() && !f.outputs.is_empty())
        });
        if first.inputs.len() != 1 || last.outputs.len() != 1 || inner_labels {
            return None;
        }
        links.push((first.inputs[0].clone(), last.outputs[0].clone(), chain));
    }
    // The head reads an input stream (`N:spec`); each next chain reads the previous output.
    let head = links
        .iter()
        .position(|(i, _, _)| parse_stream_label(i).is_some())?;
    let (input, spec) = parse_stream_label(&links[head].0)?;
    let mut order = vec![links.remove(head)];
    while !links.is_empty() {
        let want = &order.last()?.1;
        let next = links.iter().position(|(i, _, _)| i == want)?;
        order.push(links.remove(next));
    }
    let label = order.last()?.1.clone();
    let filters: Vec<String> = order
        .into_iter()
        .flat_map(|(_, _, chain)| chain)
        .map(|mut f| {
            f.inputs.clear();
            f.outputs.clear();
            f.render()
        })
        .collect();
    Some(LinearChain {
        input,
        spec,
        chain: filters.join(","),
        label,
    })
}

/// `0:0`, `0:v:0`, `0:#0x101` -> (file, specifier). A bare `0` is not a single stream.
fn parse_stream_label(label: &str) -> Option<(usize, StreamSpecifier)> {
    let (file, spec) = label.split_once(':')?;
    let input = file.parse().ok()?;
    let spec: StreamSpecifier = spec.parse().ok()?;
    (spec.index.is_some() || spec.id.is_some()).then_some((input, spec))
}

/// Replaces the one map of `c.label` by a map of the input stream and gives that output stream
/// the chain. Returns (output index, output stream index), or `None` when the label is not
/// mapped exactly once or the stream's position in its output cannot be known before probing.
fn inline_chain(job: &mut Job, c: LinearChain) -> Option<(usize, usize)> {
    use crate::job::{ByStream, StreamSettings};
    let is_label =
        |m: &crate::job::StreamMap| matches!(&m.source, MapSource::Label(l) if *l == c.label);
    let uses: Vec<(usize, usize)> = job
        .outputs
        .iter()
        .enumerate()
        .flat_map(|(o, out)| {
            out.maps
                .iter()
                .enumerate()
                .filter(|(_, m)| is_label(m))
                .map(move |(k, _)| (o, k))
        })
        .collect();
    let &[(o, k)] = uses.as_slice() else {
        return None;
    };
    let out = &mut job.outputs[o];
    // Each earlier map must produce exactly one stream for `k` to be this stream's index.
    let single = |m: &crate::job::StreamMap| {
        !m.negative
            && !m.optional
            && match &m.source {
                MapSource::Label(_) => true,
                MapSource::Input { spec, .. } => spec.index.is_some() || spec.id.is_some(),
            }
    };
    if out.maps[..k].iter().any(|m| !single(m)) || out.maps[k].negative {
        return None;
    }
    out.maps[k].source = MapSource::Input {
        input: c.input,
        spec: c.spec,
    };
    out.streams.push(ByStream::new(
        StreamSpecifier::index(k),
        StreamSettings {
            filter: Some(c.chain),
            ..Default::default()
        },
    ));
    Some((o, k))
}

// ------------------------------------------------------------------ resuming the original argv

/// Seconds as a compact argv value (`495.5`, `12`).
fn secs_arg(v: f64) -> String {
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// True when `args[i]` is most likely the value of the option before it.
fn is_option_value(args: &[String], i: usize) -> bool {
    i > 0 && {
        let prev = &args[i - 1];
        prev.len() > 1
            && prev.starts_with('-')
            && !prev[1..].starts_with(|c: char| c.is_ascii_digit() || c == '.')
    }
}

/// The original transcoder's argv, rewritten to carry a segmented session on from segment
/// `next_segment`, `elapsed` media seconds after where `args` started: what
/// [`Job::resume_at`] does to a job, done to the command line, because the fallback runs
/// Plex's own transcoder with Plex's own options. Every input's `-ss` grows by `elapsed` (added
/// when missing; `-noaccurate_seek` is dropped so the first new frame is the boundary), input
/// and output `-t` shrink, without `-copyts` `-itsoffset` keeps the output timeline continuous,
/// and the segment numbering (`-skip_to_segment`, `-segment_start_number`, `-start_number`)
/// continues: the first output at `next_segment`, other segmented outputs (e.g. Plex's 1 s
/// subtitle segments beside 5 s DASH) at their own start plus the segments `elapsed` covers.
/// Everything else is left byte for byte.
pub fn resume_argv(
    args: &[String],
    next_segment: u64,
    elapsed: f64,
) -> Result<Vec<String>, crate::JobError> {
    use crate::{JobError, job::Segmenting};
    let parsed = super::parse_args(args)?;
    let job = &parsed.job;
    // The job model's own rules: every output segmented, a sane position.
    job.resume_at(next_segment, elapsed)?;
    let not_resumable = |output| JobError::NotResumable { output };
    let dur = |o: &str, v: &str| super::values::parse_duration(o, v);
    let inputs: Vec<usize> = (0..args.len().saturating_sub(1))
        .filter(|&k| args[k] == "-i")
        .collect();
    if inputs.len() != job.inputs.len() {
        return Err(not_resumable(0));
    }
    let after_inputs = inputs.last().map_or(0, |k| k + 2);
    let mut targets = Vec::new();
    let mut cursor = after_inputs;
    for (o, out) in job.outputs.iter().enumerate() {
        let pos = (cursor..args.len())
            .find(|&i| args[i] == out.target && !is_option_value(args, i))
            .ok_or(not_resumable(o))?;
        targets.push(pos);
        cursor = pos + 1;
    }
    let first_len = job.outputs.first().and_then(|o| segment_len(&o.segmenting));
    let number_for = |o: usize| -> u64 {
        if o == 0 {
            return next_segment;
        }
        let out = &job.outputs[o];
        let start = match &out.segmenting {
            Some(Segmenting::Segment { start_number, .. })
            | Some(Segmenting::Hls { start_number, .. }) => *start_number,
            Some(Segmenting::Dash { .. }) => job.plex.skip_to_segment.unwrap_or(1),
            None => 0,
        };
        match (segment_len(&out.segmenting), first_len) {
            (Some(len), Some(first)) if (len - first).abs() < 1e-9 => next_segment,
            (Some(len), _) => start + (elapsed / len).round() as u64,
            _ => next_segment,
        }
    };
    let copyts = job.timestamps.copyts;
    let mut res: Vec<String> = Vec::with_capacity(args.len() + 8);
    let mut j = 0;
    for &ip in &inputs {
        let (mut seek, mut offset) = (false, false);
        while j < ip {
            let a = args[j].as_str();
            match a {
                "-noaccurate_seek" if elapsed > 0.0 => {}
                "-ss" | "-t" | "-itsoffset" if j + 1 < ip => {
                    let v = dur(&a[1..], &args[j + 1])?;
                    let nv = match a {
                        "-ss" => {
                            seek = true;
                            v + elapsed
                        }
                        "-t" => (v - elapsed).max(0.0),
                        _ if !copyts => {
                            offset = true;
                            v + elapsed
                        }
                        _ => v,
                    };
                    res.push(a.to_string());
                    res.push(secs_arg(nv));
                    j += 2;
                    continue;
                }
                _ => res.push(args[j].clone()),
            }
            j += 1;
        }
        if elapsed > 0.0 {
            if !seek {
                res.extend(["-ss".to_string(), secs_arg(elapsed)]);
            }
            if !copyts && !offset {
                res.extend(["-itsoffset".to_string(), secs_arg(elapsed)]);
            }
        }
        res.extend([args[ip].clone(), args[ip + 1].clone()]);
        j = ip + 2;
    }
    let skip_anywhere = args.iter().any(|a| a == "-skip_to_segment");
    let mut numbered = vec![false; job.outputs.len()];
    // Output groups end at their target; options after the last output are global (Plex).
    let ends: Vec<usize> = targets.iter().copied().chain([args.len()]).collect();
    for (o, &end) in ends.iter().enumerate() {
        let owner = o.min(job.outputs.len().saturating_sub(1));
        while j < end {
            let a = args[j].as_str();
            match a {
                "-t" if j + 1 < end => {
                    let v = dur("t", &args[j + 1])?;
                    res.extend([a.to_string(), secs_arg((v - elapsed).max(0.0))]);
                    j += 2;
                    continue;
                }
                "-skip_to_segment" if j + 1 < end => {
                    res.extend([a.to_string(), next_segment.to_string()]);
                    j += 2;
                    continue;
                }
                "-segment_start_number" | "-start_number" if j + 1 < end => {
                    res.extend([a.to_string(), number_for(owner).to_string()]);
                    numbered[owner] = true;
                    j += 2;
                    continue;
                }
                _ => res.push(args[j].clone()),
            }
            j += 1;
        }
        if o < job.outputs.len() {
            let missing = match &job.outputs[o].segmenting {
                Some(Segmenting::Dash { .. }) if !skip_anywhere => Some("-skip_to_segment"),
                Some(Segmenting::Segment { .. }) if !numbered[o] => Some("-segment_start_number"),
                Some(Segmenting::Hls { .. }) if !numbered[o] => Some("-start_number"),
                _ => None,
            };
            if let Some(opt) = missing {
                res.extend([opt.to_string(), number_for(o).to_string()]);
            }
            res.push(args[end].clone());
            j = end + 1;
        }
    }
    Ok(res)
}

fn segment_len(s: &Option<crate::job::Segmenting>) -> Option<f64> {
    use crate::job::Segmenting;
    match s {
        Some(Segmenting::Segment { segment_time, .. }) => Some(*segment_time),
        Some(Segmenting::Hls { time, .. }) => Some(*time),
        Some(Segmenting::Dash { seg_duration, .. }) => Some(*seg_duration),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    fn value_of(args: &[String], opt: &str) -> Vec<String> {
        args.windows(2)
            .filter(|w| w[0] == opt)
            .map(|w| w[1].clone())
            .collect()
    }

    #[test]
    fn resume_plex_dash_adds_seek_and_continues_numbering() {
        let args = corpus(include_str!("../../tests/corpus/plex/01.txt"));
        let out = resume_argv(&args, 7, 30.0).unwrap();
        // Seek added before the input, accurate; numbering carries on.
        assert_eq!(value_of(&out, "-ss"), vec!["30"]);
        assert!(!out.iter().any(|a| a == "-noaccurate_seek"));
        assert_eq!(value_of(&out, "-skip_to_segment"), vec!["7"]);
        let i = out.iter().position(|a| a == "-i").unwrap();
        assert_eq!(out[i - 2], "-ss");
        // -copyts keeps the timeline: no -itsoffset. Everything else is untouched.
        assert!(!out.iter().any(|a| a == "-itsoffset"));
        let strip = |v: &[String]| -> Vec<String> {
            v.iter()
                .filter(|a| *a != "-noaccurate_seek")
                .cloned()
                .collect()
        };
        let mut expected = strip(&args);
        let si = expected
            .iter()
            .position(|a| a == "-skip_to_segment")
            .unwrap();
        expected[si + 1] = "7".into();
        let mut got = strip(&out);
        let gi = got.iter().position(|a| a == "-ss").unwrap();
        got.drain(gi..gi + 2);
        assert_eq!(got, expected);
        // The rewritten argv still plans to the same outputs.
        let p = super::super::parse_args(&out).unwrap();
        assert_eq!(p.job.inputs[0].seek, Some(30.0));
        assert_eq!(p.job.plex.skip_to_segment, Some(7));
    }

    #[test]
    fn resume_adds_to_an_existing_seek_and_numbers_side_outputs_by_their_length() {
        // Plex DASH (5 s) with the 1 s ASS subtitle segment side-output.
        let args = corpus(include_str!("../../tests/corpus/plex/04.txt"));
        let out = resume_argv(&args, 3, 10.0).unwrap();
        assert_eq!(value_of(&out, "-skip_to_segment"), vec!["3"]);
        assert_eq!(value_of(&out, "-segment_start_number"), vec!["10"]);
        // A seek that was there grows.
        let seek = corpus(include_str!(
            "../../tests/corpus/synthetic/plex-dash-seek-truehd-eae.txt"
        ));
        let before: f64 = value_of(&seek, "-ss")[0].parse().unwrap();
        let out = resume_argv(&seek, 12, 4.5).unwrap();
        let after: f64 = value_of(&out, "-ss")[0].parse().unwrap();
        assert!((after - before - 4.5).abs() < 1e-9);
    }

    #[test]
    fn resume_without_copyts_shifts_timestamps_and_numbers_hls() {
        let args = corpus(
            "-i\nin.mkv\n-t\n20\n-c:v\nlibx264\n-f\nhls\n-hls_time\n2\n-start_number\n0\nout.m3u8",
        );
        let out = resume_argv(&args, 5, 10.0).unwrap();
        assert_eq!(
            out,
            corpus(
                "-ss\n10\n-itsoffset\n10\n-i\nin.mkv\n-t\n10\n-c:v\nlibx264\n-f\nhls\n-hls_time\n2\n-start_number\n5\nout.m3u8"
            )
        );
        // A missing numbering option is added before the output.
        let args = corpus("-i\nin.mkv\n-f\nsegment\n-segment_time\n1\nm-%05d.ts");
        let out = resume_argv(&args, 4, 4.0).unwrap();
        assert_eq!(
            &out[out.len() - 3..],
            ["-segment_start_number", "4", "m-%05d.ts"]
        );
    }

    #[test]
    fn single_file_outputs_cannot_resume() {
        let args = corpus("-i\nin.mkv\n-c:v\nlibx264\nout.mp4");
        assert!(matches!(
            resume_argv(&args, 2, 3.0),
            Err(crate::JobError::NotResumable { output: 0 })
        ));
    }

    fn rw(g: &str) -> String {
        rewrite_graph(g, &Job::default()).0
    }

    #[test]
    fn zscale_chain() {
        let g = "[0:v]zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=tonemap=hable:desat=0:peak=100,zscale=t=bt709:m=bt709:r=tv,format=yuv420p[v]";
        assert_eq!(
            rw(g),
            "[0:v]tonemap=hable:desat=0:peak=100,format=yuv420p[v]"
        );
    }

    #[test]
    fn scaling_zscale_is_kept() {
        let g =
            "zscale=w=1280:h=720,zscale=t=linear,format=gbrpf32le,tonemap=mobius,format=yuv420p";
        assert_eq!(rw(g), "zscale=w=1280:h=720,tonemap=mobius,format=yuv420p");
    }

    #[test]
    fn cuda_and_opencl() {
        assert_eq!(
            rw(
                "setparams=color_trc=smpte2084,scale_cuda=w=1920:h=800:format=p010,tonemap_cuda=format=yuv420p:p=bt709:t=bt709:m=bt709:tonemap=bt2390:peak=100:desat=0"
            ),
            "setparams=color_trc=smpte2084,scale_cuda=w=1920:h=800:format=p010,tonemap=bt2390:desat=0:peak=100,format=yuv420p"
        );
        assert_eq!(
            rw(
                "hwupload,tonemap_opencl=format=nv12:p=bt709:t=bt709:m=bt709:tonemap=hable:peak=100:desat=0:threshold=0.2,hwdownload,format=nv12"
            ),
            "tonemap=hable:desat=0:peak=100,format=nv12"
        );
    }

    #[test]
    fn plex_mobius_and_untouched_graphs() {
        assert_eq!(
            rw("[0:0]format=p010,tonemap=mobius[1]"),
            "[0:0]tonemap=mobius[1]"
        );
        let plain = "[0:1] aresample=async=1:ochl='stereo':rematrix_maxval=0.000000dB:osr=96000[0]";
        assert_eq!(rw(plain), plain);
    }

    #[test]
    fn escaping_survives_two_levels() {
        assert_eq!(
            escape_filter_value("/a b/[x]:y,z"),
            "/a b/\\[x\\]\\\\:y\\,z"
        );
        assert_eq!(escape_filter_value("it's"), "it\\\\\\'s");
    }
}
