//! Every command line in `tests/corpus/` plans without error, and its plan matches the golden
//! JSON in `tests/golden/`. Regenerate with `UPDATE_GOLDEN=1 cargo test -p clusterplex-core
//! --test corpus_golden` and review the diff.

use std::path::{Path, PathBuf};

use clusterplex_core::{
    CodecChoice, Segmenting,
    plan::{Placement, PlanConfig, plan_args},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn corpus_files() -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    for dir in ["plex", "ffmpeg", "synthetic"] {
        let d = root().join("corpus").join(dir);
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "txt") {
                let stem = p.file_stem().unwrap().to_string_lossy().to_string();
                files.push((format!("{dir}-{stem}"), p));
            }
        }
    }
    files.sort();
    files
}

fn read_argv(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn config() -> PlanConfig {
    PlanConfig {
        pms_ip: Some("192.168.2.1".into()),
        working_dir: Some("/transcode/Transcode/Sessions/plex-transcode-test".into()),
        ..PlanConfig::default()
    }
}

#[test]
fn corpus_matches_golden_plans() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let files = corpus_files();
    assert!(files.len() >= 13, "corpus went missing: {files:?}");
    let mut mismatches = Vec::new();
    for (name, path) in files {
        let argv = read_argv(&path);
        let plan = plan_args(&argv, &config()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let json = serde_json::to_string_pretty(&plan).unwrap() + "\n";
        let golden = root().join("golden").join(format!("{name}.json"));
        if update {
            std::fs::write(&golden, &json).unwrap();
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(g) if g == json => {}
            Ok(_) => mismatches.push(format!("{name}: plan differs from {}", golden.display())),
            Err(e) => mismatches.push(format!("{name}: {}: {e}", golden.display())),
        }
    }
    assert!(
        mismatches.is_empty(),
        "{mismatches:#?}\n(UPDATE_GOLDEN=1 regenerates)"
    );
}

fn plan_of(rel: &str) -> clusterplex_core::plan::Plan {
    plan_args(&read_argv(&root().join("corpus").join(rel)), &config()).unwrap()
}

fn codec(out: &clusterplex_core::Output, spec: &str) -> Option<CodecChoice> {
    out.settings_for(|s| s.is_all() || s.to_string() == spec)
        .codec
}

#[test]
fn plex_dash_first_play() {
    let p = plan_of("plex/01.txt");
    assert_eq!(p.placement, Placement::Remote);
    let job = &p.job;
    assert_eq!(
        job.inputs[0].url,
        "/library/tv/Arcane (2021) {tvdb-371028}/Season 01/Arcane (2021) - S01E07 - The Boy Savior [NF][WEBDL-1080p][AAC 5.1][h265]-FLUX.mkv"
    );
    assert_eq!(job.inputs[0].seek, None);
    assert_eq!(job.outputs.len(), 1);
    assert_eq!(job.outputs[0].format.as_deref(), Some("dash"));
    assert_eq!(codec(&job.outputs[0], "0"), Some(CodecChoice::Copy));
    assert_eq!(
        codec(&job.outputs[0], "1"),
        Some(CodecChoice::Encoder("aac".into()))
    );
    assert!(matches!(
        job.outputs[0].segmenting,
        Some(Segmenting::Dash {
            start_number: 1,
            ..
        })
    ));
    assert_eq!(
        job.plex.session_id.as_deref(),
        Some("f168tc7vl2desp78pov5ktwu")
    );
    assert_eq!(
        job.progress.as_ref().unwrap().plex_url.as_deref(),
        Some(
            "http://192.168.2.1:32499/video/:/transcode/session/f168tc7vl2desp78pov5ktwu/b12394b4-a41e-475d-bf98-4a9e52ad87c5/progress"
        )
    );
    assert_eq!(p.rewritten_urls.len(), 2);
    // The input path is not a URL option and keeps its text even though it is not touched.
    assert!(job.cli_flags.contains_key("nostats"));
}

#[test]
fn plex_two_outputs_with_subtitle_segment_list() {
    let p = plan_of("plex/04.txt");
    let job = &p.job;
    assert_eq!(job.outputs.len(), 2);
    assert_eq!(job.outputs[1].target, "sub-chunk-%05d");
    assert_eq!(
        codec(&job.outputs[1], "0"),
        Some(CodecChoice::Encoder("ass".into()))
    );
    match &job.outputs[1].segmenting {
        Some(Segmenting::Segment {
            segment_time,
            start_number,
            list: Some(list),
            segment_format,
            ..
        }) => {
            assert_eq!((*segment_time, *start_number), (1.0, 0));
            assert_eq!(segment_format.as_deref(), Some("ass"));
            assert_eq!(
                list.target,
                "http://192.168.2.1:32499/video/:/transcode/session/dhm7xktgxzlkzuxhq4hibone/cfd0d52d-e856-43ef-bee9-57fb06a29f39/manifest?stream=subtitles&X-Plex-Http-Pipeline=infinite"
            );
            assert!(list.separate_stream_times && list.unfinished);
            assert_eq!(list.size, 5);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.rewritten_urls.len(), 3);
    assert!(p.uses_eae);
}

#[test]
fn old_plex_global_options_after_output() {
    let p = plan_of("plex/07.txt");
    let job = &p.job;
    assert!(job.timestamps.copyts && job.timestamps.start_at_zero);
    assert!(job.progress.as_ref().unwrap().plex_url.is_some());
    assert!(matches!(
        job.outputs[0].segmenting,
        Some(Segmenting::Dash { time_delta: Some(t), .. }) if t == 0.0625
    ));
    // -vsync cfr after the output is global and applies to every stream.
    let s = job.outputs[0].settings_for(|s| s.to_string() == "0" || s.is_all());
    assert_eq!(s.fps_mode, Some(clusterplex_core::FpsMode::Cfr));
}

#[test]
fn optimize_job_vaapi_needs() {
    let p = plan_of("plex/09.txt");
    assert!(p.needs.hwaccels.contains("vaapi"));
    assert!(p.needs.encoders.contains("hevc_vaapi"));
    assert!(p.needs.filters.contains("scale_vaapi"));
    assert!(p.needs.ten_bit);
    assert_eq!(p.job.outputs[0].format.as_deref(), Some("mp4"));
    let v = p.job.outputs[0].settings_for(|s| s.to_string() == "0" || s.is_all());
    assert_eq!(
        v.encoder_options.get("sei").map(String::as_str),
        Some("-a53_cc")
    );
    assert_eq!(v.frame_rate, Some((24, 1)));
}

#[test]
fn inlineass_becomes_subtitles_filter() {
    for f in ["plex/13.txt", "plex/15.txt"] {
        let p = plan_of(f);
        let g = &p.job.complex_filters[0];
        assert!(g.contains("subtitles=filename="), "{g}");
        assert!(!g.contains("inlineass"), "{g}");
        assert!(p.needs.filters.contains("subtitles"));
        assert_eq!(p.placement, Placement::Remote, "{f}");
    }
    let p = plan_of("plex/15.txt");
    assert_eq!(p.job.inputs[0].decoders[0].spec.id, Some(1));
    assert!(p.job.complex_filters[0].starts_with("[0:#0x01]scale"));
}

#[test]
fn jellyfin_hls_lines() {
    let p = plan_of("ffmpeg/jf-hls-fmp4-cuda-tonemap.txt");
    assert_eq!(p.dialect, clusterplex_core::parse::Dialect::Ffmpeg);
    assert!(p.unsupported.is_empty(), "{:?}", p.unsupported);
    assert!(p.needs.tonemap && p.needs.hwaccels.contains("cuda"));
    let out = &p.job.outputs[0];
    let v = out.settings_for(|s| s.is_all() || s.to_string() == "v" || s.to_string() == "v:0");
    assert_eq!(
        v.filter.as_deref(),
        Some(
            "setparams=color_primaries=bt2020:color_trc=smpte2084:colorspace=bt2020nc,scale_cuda=w=1920:h=800:format=p010,tonemap=bt2390:desat=0:peak=100,format=yuv420p"
        )
    );
    assert!(matches!(
        out.segmenting,
        Some(Segmenting::Hls {
            time: 3.0,
            start_number: 0,
            segment_type: clusterplex_core::HlsSegmentType::Fmp4,
            list_size: 0,
            ..
        })
    ));
    assert!(p.rewrites.iter().any(|r| r.from.contains("tonemap_cuda")));

    let p = plan_of("ffmpeg/jf-hls-ts-zscale-seek.txt");
    assert_eq!(p.job.inputs[0].seek, Some(615.0));
    assert!(matches!(
        p.job.outputs[0].segmenting,
        Some(Segmenting::Hls {
            start_number: 205,
            ..
        })
    ));
    let v = p.job.outputs[0].settings_for(|s| s.is_all() || s.to_string() == "v");
    let f = v.filter.unwrap();
    assert!(
        f.ends_with("tonemap=hable:desat=0:peak=100,format=yuv420p"),
        "{f}"
    );
    assert!(
        f.contains("scale=trunc(min(max(iw\\,ih*a)\\,1920)/2)*2"),
        "{f}"
    );

    let p = plan_of("ffmpeg/jf-hls-opencl-tonemap.txt");
    assert!(p.needs.tonemap);
    let v = p.job.outputs[0]
        .settings_for(|s| s.is_all() || s.to_string() == "v" || s.to_string() == "v:0");
    assert_eq!(
        v.filter.as_deref(),
        Some("scale_vaapi=w=1920:h=1080:format=p010,tonemap=bt2390:desat=0:peak=100,format=nv12")
    );
}

#[test]
fn synthetic_plex_shapes() {
    let p = plan_of("synthetic/plex-hls-ssegment-tonemap.txt");
    assert_eq!(p.job.inputs[0].seek, Some(195.0));
    assert_eq!(p.job.inputs[0].decoders[1].value, "aac");
    assert!(p.needs.tonemap);
    // Plex's linear `[0:0]...[0];[0]tonemap=...[1]` graph becomes the mapped stream's own chain,
    // so the engine runs ClusterPlex's tonemapper (not libavfilter's) on it.
    assert!(p.job.complex_filters.iter().all(|g| !g.contains("tonemap")));
    let v = p.job.outputs[0].settings_for(|s| s.is_all() || s.to_string() == "0");
    assert!(
        v.filter
            .as_deref()
            .is_some_and(|f| f.contains("tonemap=mobius:desat=0")),
        "{v:?}"
    );
    assert!(
        p.rewrites
            .iter()
            .any(|r| r.option.starts_with("-filter_complex"))
    );
    assert!(matches!(
        &p.job.outputs[0].segmenting,
        Some(Segmenting::Segment {
            start_number: 24,
            segment_time: 8.0,
            time_delta: Some(_),
            ..
        })
    ));
    let p = plan_of("synthetic/plex-dash-seek-truehd-eae.txt");
    assert_eq!(p.job.inputs[0].seek, Some(495.0));
    assert_eq!(p.job.plex.skip_to_segment, Some(100));
    assert_eq!(
        codec(&p.job.outputs[0], "1"),
        Some(CodecChoice::Encoder("eac3".into()))
    );
    assert_eq!(p.job.inputs[0].decoders[1].value, "truehd");
    assert!(
        p.rewritten_urls
            .iter()
            .all(|u| u.to.starts_with("http://192.168.2.1:32499/"))
    );
}
