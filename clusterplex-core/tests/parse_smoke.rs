//! Parser checks on real Plex command lines and hand-written ffmpeg ones.

use clusterplex_core::{
    CodecChoice, MapSource, Segmenting,
    parse::{Dialect, parse_args},
};

fn corpus(name: &str) -> Vec<String> {
    let path = format!(
        "{}/tests/corpus/plex/{name}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn argv(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

#[test]
fn plex_dash_with_eae() {
    let p = parse_args(&corpus("03")).unwrap();
    assert_eq!(p.dialect, Dialect::Plex);
    assert!(p.uses_eae);
    assert!(p.unsupported.is_empty(), "{:?}", p.unsupported);
    let job = &p.job;
    assert_eq!(job.inputs.len(), 1);
    assert!(
        job.inputs[0]
            .url
            .contains("[NF][WEBDL-1080p][EAC3 5.1][x264]-FLUX.mkv")
    );
    assert!(!job.inputs[0].accurate_seek);
    let dec: Vec<_> = job.inputs[0]
        .decoders
        .iter()
        .map(|d| (d.spec.to_string(), d.value.clone()))
        .collect();
    assert_eq!(
        dec,
        vec![
            ("0".to_string(), "h264".to_string()),
            ("1".to_string(), "eac3".to_string())
        ]
    );
    assert_eq!(
        job.plex.session_id.as_deref(),
        Some("rjxs6hicly0309zlenq6iq25")
    );
    assert_eq!(job.plex.skip_to_segment, Some(1));
    let out = &job.outputs[0];
    assert_eq!(out.target, "dash");
    match out.segmenting.as_ref().unwrap() {
        Segmenting::Dash {
            seg_duration,
            start_number,
            manifest_target,
            delete_removed,
            ..
        } => {
            assert_eq!(*seg_duration, 5.0);
            assert_eq!(*start_number, 1);
            assert!(
                manifest_target
                    .as_deref()
                    .unwrap()
                    .ends_with("manifest?X-Plex-Http-Pipeline=infinite")
            );
            assert_eq!(*delete_removed, Some(false));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(out.maps[1].source, MapSource::Label("0".into()));
    let a = out.settings_for(|s| s.to_string() == "1");
    assert_eq!(a.codec, Some(CodecChoice::Encoder("aac".into())));
    assert_eq!(a.bitrate, Some(256_000));
    assert_eq!(a.metadata.get("language").map(String::as_str), Some("eng"));
}

#[test]
fn every_corpus_file_parses() {
    for n in ["01", "03", "04", "07", "09", "13", "15"] {
        let p = parse_args(&corpus(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
        println!(
            "{n}: unsupported={:?} rewrites={:?} warnings={:?}",
            p.unsupported, p.rewrites, p.warnings
        );
    }
}

#[test]
fn plain_ffmpeg_subset() {
    let p = parse_args(&argv(&[
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostats",
        "-y",
        "-ss",
        "12.5",
        "-i",
        "in put.mkv",
        "-map",
        "0:v:0",
        "-map",
        "0:a:0?",
        "-c:v",
        "libx264",
        "-crf",
        "20",
        "-preset",
        "fast",
        "-vf",
        "scale=640:-2",
        "-acodec",
        "aac",
        "-b:a",
        "128k",
        "-af",
        "volume=2",
        "-s",
        "640x360",
        "-r",
        "30000/1001",
        "-pix_fmt",
        "yuv420p",
        "-t",
        "3",
        "-f",
        "hls",
        "-hls_time",
        "3",
        "-hls_segment_type",
        "fmp4",
        "-start_number",
        "7",
        "out.m3u8",
    ]))
    .unwrap();
    assert_eq!(p.dialect, Dialect::Ffmpeg);
    assert!(p.unsupported.is_empty(), "{:?}", p.unsupported);
    assert_eq!(p.job.inputs[0].seek, Some(12.5));
    let out = &p.job.outputs[0];
    assert_eq!(out.duration, Some(3.0));
    assert!(out.maps[1].optional);
    match out.segmenting.as_ref().unwrap() {
        Segmenting::Hls {
            time,
            start_number,
            segment_type,
            ..
        } => {
            assert_eq!((*time, *start_number), (3.0, 7));
            assert_eq!(*segment_type, clusterplex_core::HlsSegmentType::Fmp4);
        }
        other => panic!("{other:?}"),
    }
    let v = out.settings_for(|s| s.kind.is_none() || s.to_string() == "v");
    assert_eq!(v.codec, Some(CodecChoice::Encoder("libx264".into())));
    assert_eq!(v.crf, Some(20.0));
    assert_eq!(v.filter.as_deref(), Some("scale=640:-2"));
    assert_eq!(v.size, Some((640, 360)));
    assert_eq!(v.frame_rate, Some((30000, 1001)));
    assert!(p.job.cli_flags.contains_key("loglevel"));
}
