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

#[cfg(test)]
mod tests {
    use super::*;

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
