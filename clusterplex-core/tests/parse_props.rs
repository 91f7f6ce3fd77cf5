//! Property tests: arbitrary argv (option-like and random tokens) never panics, and parsing
//! stays fast; a successful parse always yields a job that validates and round-trips as JSON.

use std::time::{Duration, Instant};

use clusterplex_core::{
    Job,
    parse::parse_args,
    plan::{PlanConfig, plan_args},
};
use proptest::prelude::*;

fn token() -> impl Strategy<Value = String> {
    let opts = prop::sample::select(vec![
        "-i",
        "-ss",
        "-t",
        "-map",
        "-c",
        "-codec:0",
        "-codec:#0x01",
        "-c:v",
        "-b:1",
        "-crf:0",
        "-vf",
        "-af",
        "-filter_complex",
        "-f",
        "-progressurl",
        "-manifest_name",
        "-segment_list",
        "-skip_to_segment",
        "-eae_prefix:1",
        "-map_inlineass",
        "-metadata:s:1",
        "-hls_time",
        "-start_number",
        "-seg_duration",
        "-y",
        "-nostats",
        "-loglevel",
        "-vsync",
        "-s",
        "-r",
        "-hwaccel",
        "-noaccurate_seek",
        "-x264opts:0",
        "-segment_list_type",
        "-frobnicate",
    ]);
    let values = prop::sample::select(vec![
        "dash",
        "hls",
        "segment",
        "copy",
        "eac3_eae",
        "aac_lc",
        "0:0",
        "[0]",
        "0:a:0?",
        "1:s:0",
        "-1",
        "5",
        "256k",
        "1280x720",
        "30000/1001",
        "00:01:02.5",
        "[0:1]aresample=osr=48000[0]",
        "[1]inlineass=overrides=A=1,B=2[2]",
        "zscale=t=linear,format=gbrpf32le,tonemap=tonemap=hable:desat=0,format=yuv420p",
        "http://127.0.0.1:32400/video/:/transcode/session/abc/def/progress",
        "out.mp4",
        "/media/a b [c] {d}.mkv",
        "",
        "-",
        "#0x01",
        "::",
        "[",
        "]",
        "'",
        "\\",
    ]);
    prop_oneof![
        3 => opts.prop_map(str::to_string),
        3 => values.prop_map(str::to_string),
        1 => ".{0,12}",
        1 => "-[a-z_:#0-9]{1,10}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_and_terminates_quickly(args in prop::collection::vec(token(), 0..40)) {
        let start = Instant::now();
        let parsed = parse_args(&args);
        let config = PlanConfig { pms_ip: Some("10.0.0.2".into()), ..Default::default() };
        let planned = plan_args(&args, &config);
        // A generous bound: a hang or quadratic blow-up would miss it by orders of magnitude.
        prop_assert!(start.elapsed() < Duration::from_secs(2));
        prop_assert_eq!(parsed.is_ok(), planned.is_ok());
        if let Ok(p) = parsed {
            prop_assert!(p.job.validate().is_ok());
            let json = serde_json::to_string(&p.job).unwrap();
            let back: Job = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, p.job);
        }
    }

    #[test]
    fn output_targets_and_input_paths_survive(path in "[ -~]{1,40}", target in "[a-z]{1,8}\\.mkv") {
        prop_assume!(!path.starts_with('-') && !target.starts_with('-'));
        let args = vec!["-i".to_string(), path.clone(), "-c".into(), "copy".into(), target.clone()];
        let p = parse_args(&args).unwrap();
        prop_assert_eq!(&p.job.inputs[0].url, &path);
        prop_assert_eq!(&p.job.outputs[0].target, &target);
    }
}
