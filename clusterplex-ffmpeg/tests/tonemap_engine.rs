//! End-to-end: real HDR10 HEVC made with the ffmpeg CLI, decoded with libav, tonemapped.
//! 1. `TonemapStage::process` on decoded frames: side-data peak, output tags, pixels vs reference.
//! 2. `clusterplex-worker run -- -i hdr10.mkv -vf tonemap=bt2390 -c:v libx264 out.mp4` gives an
//!    SDR file tagged BT.709 (that one lives in worker/tests/local_run.rs, next to the binary).

use std::path::{Path, PathBuf};
use std::process::Command;

use clusterplex_ffmpeg::tonemap::{Impl, TonemapOptions, TonemapStage};
use ffmpeg_next as ff;

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 0.5 s 320x180 HDR10 HEVC clip with mastering display and MaxCLL=1000 SEI.
fn hdr10_clip(dir: &Path) -> PathBuf {
    let path = dir.join("hdr10.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=320x180:r=24:d=0.5",
        "-vf",
        "zscale=tin=bt709:min=bt709:pin=bt709:rin=tv:t=smpte2084:m=bt2020nc:p=bt2020:r=tv:npl=1000:dither=none,format=yuv420p10le",
        "-c:v",
        "libx265",
        "-preset",
        "ultrafast",
        "-crf",
        "18",
        "-pix_fmt",
        "yuv420p10le",
        "-x265-params",
        "log-level=error:hdr10=1:repeat-headers=1:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50):max-cll=1000,400",
        path.to_str().unwrap(),
    ]);
    path
}

fn decode_all(path: &Path) -> Vec<ff::frame::Video> {
    ff::init().unwrap();
    let mut ictx = ff::format::input(path).unwrap();
    let st = ictx.streams().best(ff::media::Type::Video).unwrap();
    let idx = st.index();
    let mut dec = ff::codec::context::Context::from_parameters(st.parameters())
        .unwrap()
        .decoder()
        .video()
        .unwrap();
    let mut frames = Vec::new();
    let mut f = ff::frame::Video::empty();
    for (s, pkt) in ictx.packets() {
        if s.index() == idx {
            dec.send_packet(&pkt).unwrap();
            while dec.receive_frame(&mut f).is_ok() {
                frames.push(f.clone());
            }
        }
    }
    dec.send_eof().unwrap();
    while dec.receive_frame(&mut f).is_ok() {
        frames.push(f.clone());
    }
    frames
}

#[test]
fn stage_tonemaps_decoded_hdr10_frames() {
    let dir = tempfile::tempdir().unwrap();
    let frames = decode_all(&hdr10_clip(dir.path()));
    assert_eq!(frames.len(), 12);
    let f0 = &frames[0];
    assert_eq!(f0.format(), ff::format::Pixel::YUV420P10LE);
    assert_eq!(
        f0.color_transfer_characteristic(),
        ff::util::color::TransferCharacteristic::SMPTE2084
    );
    // MaxCLL = 1000 nits -> peak 10 (FFmpeg's convention).
    assert_eq!(clusterplex_ffmpeg::tonemap::frame_peak(f0), Some(10.0));

    let mut opts: TonemapOptions = "bt2390".parse().unwrap();
    opts.imp = Impl::Cpu;
    let mut cpu = TonemapStage::new(&opts).unwrap();
    opts.imp = Impl::Reference;
    let mut reference = TonemapStage::new(&opts).unwrap();
    for f in &frames[..3] {
        let a = cpu.process(f).unwrap();
        let b = reference.process(f).unwrap();
        assert_eq!(a.format(), ff::format::Pixel::YUV420P);
        assert_eq!((a.width(), a.height()), (320, 180));
        assert_eq!(a.color_primaries(), ff::util::color::Primaries::BT709);
        assert_eq!(
            a.color_transfer_characteristic(),
            ff::util::color::TransferCharacteristic::BT709
        );
        assert_eq!(a.color_space(), ff::util::color::Space::BT709);
        assert_eq!(a.color_range(), ff::util::color::Range::MPEG);
        assert_eq!(a.pts(), f.pts());
        let (ya, yb) = (a.data(0), b.data(0));
        let s = a.stride(0);
        let mut maxd = 0;
        let mut sum = 0u64;
        for y in 0..180 {
            for x in 0..320 {
                maxd = maxd.max(ya[y * s + x].abs_diff(yb[y * s + x]));
                sum += ya[y * s + x] as u64;
            }
        }
        assert!(maxd <= 2, "cpu vs reference max |dY| {maxd}");
        // SDR white was mastered at 1000 nits = the peak: the picture must be bright, not the
        // ~50% grey an un-tonemapped PQ signal would give.
        let mean = sum as f64 / (320.0 * 180.0);
        assert!(mean > 90.0 && mean < 200.0, "mean luma {mean}");
    }
    // nv12 / 10-bit output options give those formats.
    for (fmt, px) in [
        ("nv12", ff::format::Pixel::NV12),
        ("p010", ff::format::Pixel::P010LE),
        ("yuv420p10le", ff::format::Pixel::YUV420P10LE),
    ] {
        let mut st =
            TonemapStage::new(&format!("hable:impl=cpu:format={fmt}").parse().unwrap()).unwrap();
        assert_eq!(st.process(f0).unwrap().format(), px);
    }
    // SDR input is refused with a clear error.
    let mut sdr = f0.clone();
    sdr.set_color_transfer_characteristic(ff::util::color::TransferCharacteristic::BT709);
    let e = cpu
        .process(&sdr)
        .err()
        .expect("SDR input must fail")
        .to_string();
    assert!(e.contains("PQ"), "{e}");
    let mut wrong = ff::frame::Video::new(ff::format::Pixel::YUV420P, 64, 64);
    wrong.set_color_transfer_characteristic(ff::util::color::TransferCharacteristic::SMPTE2084);
    assert!(
        cpu.process(&wrong)
            .err()
            .expect("8-bit input must fail")
            .to_string()
            .contains("pixel format")
    );
}
