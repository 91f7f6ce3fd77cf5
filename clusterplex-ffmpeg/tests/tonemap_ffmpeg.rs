//! Quality against FFmpeg: the `reference` implementation must reproduce the stock
//! `zscale,tonemap,zscale` chain (Y PSNR >= 60 dB) on an HDR10 picture and on a stress pattern,
//! both made here with the ffmpeg CLI. Also runs `cpu` on the same inputs against `reference`.

mod tonemap_support;

use std::path::Path;
use std::process::Command;

use clusterplex_ffmpeg::tonemap::image::OwnedImage;
use clusterplex_ffmpeg::tonemap::{InputLayout, OutputFormat, Signal, TonemapOptions};
use tonemap_support::*;

const W: usize = 320;
const H: usize = 180;
const FRAMES: usize = 3;

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

/// Makes `FRAMES` raw P010 frames of PQ BT.2020 video from an SDR lavfi source.
/// `pin` is the primaries the source is *declared* as: bt709 gives ordinary HDR10 content,
/// bt2020 turns fully saturated source colours into BT.2020 primaries (stress).
fn make_hdr(dir: &Path, name: &str, lavfi: &str, pin: &str, npl: u32) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.p010"));
    let vf = format!(
        "zscale=tin=bt709:min=bt709:pin={pin}:rin=tv:t=smpte2084:m=bt2020nc:p=bt2020:r=tv:npl={npl}:dither=none,format=p010le"
    );
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        lavfi,
        "-frames:v",
        &FRAMES.to_string(),
        "-vf",
        &vf,
        "-f",
        "rawvideo",
        path.to_str().unwrap(),
    ]);
    path
}

/// FFmpeg's chain on the raw frames, 8-bit yuv420p out.
fn ffmpeg_chain(dir: &Path, input: &Path, curve: &str) -> Vec<u8> {
    let out = dir.join(format!(
        "{}-{curve}.yuv",
        input.file_stem().unwrap().to_string_lossy()
    ));
    let vf = format!(
        "setparams=range=tv:color_primaries=bt2020:color_trc=smpte2084:colorspace=bt2020nc,\
zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=tonemap={curve}:desat=0:peak=10,\
zscale=t=bt709:m=bt709:r=tv,format=yuv420p"
    );
    let size = format!("{W}x{H}");
    ffmpeg(&[
        "-f",
        "rawvideo",
        "-pix_fmt",
        "p010le",
        "-s",
        &size,
        "-r",
        "24",
        "-i",
        input.to_str().unwrap(),
        "-vf",
        &vf,
        "-f",
        "rawvideo",
        out.to_str().unwrap(),
    ]);
    std::fs::read(out).unwrap()
}

fn frames_of(raw: &[u8]) -> Vec<OwnedImage> {
    let fsz = W * H * 3;
    assert_eq!(raw.len(), fsz * FRAMES);
    raw.chunks_exact(fsz)
        .map(|f| OwnedImage {
            width: W,
            height: H,
            planes: [f[..W * H * 2].to_vec(), f[W * H * 2..].to_vec(), Vec::new()],
            strides: [W * 2, W * 2, 0],
        })
        .collect()
}

fn check(name: &str, input: &Path, dir: &Path) {
    let frames = frames_of(&std::fs::read(input).unwrap());
    for curve in ["hable", "reinhard", "mobius"] {
        let ff = ffmpeg_chain(dir, input, curve);
        let o: TonemapOptions = format!("{curve}:desat=0:peak=10").parse().unwrap();
        for (i, f) in frames.iter().enumerate() {
            let r = run(Which::Reference, &o, f, InputLayout::P010, Signal::pq());
            let ffy: Vec<u16> = ff[i * W * H * 3 / 2..][..W * H]
                .iter()
                .map(|v| *v as u16)
                .collect();
            let ry = plane(&r, OutputFormat::Yuv420p, 0);
            let (p, md) = psnr(&ry, &ffy, 255.0);
            if std::env::var("TM_DEBUG").is_ok() {
                for y in (0..H).step_by(6) {
                    let row: Vec<String> = (0..W)
                        .step_by(16)
                        .map(|x| format!("{:+}", ry[y * W + x] as i32 - ffy[y * W + x] as i32))
                        .collect();
                    eprintln!("y={y:3} {}", row.join(" "));
                }
            }
            eprintln!(
                "{name} {curve} frame {i}: reference vs ffmpeg Y PSNR {p:.1} dB, max |dY| {md}"
            );
            assert!(p >= 60.0, "{name} {curve} frame {i}: Y PSNR {p:.1} dB < 60");
            for (k, off) in [(1usize, W * H), (2, W * H * 5 / 4)] {
                let ffc: Vec<u16> = ff[i * W * H * 3 / 2 + off..][..W * H / 4]
                    .iter()
                    .map(|v| *v as u16)
                    .collect();
                let (pc, mdc) = psnr(&plane(&r, OutputFormat::Yuv420p, k), &ffc, 255.0);
                eprintln!("{name} {curve} frame {i}: C{k} PSNR {pc:.1} dB, max |d| {mdc}");
                assert!(pc >= 50.0, "{name} {curve} frame {i}: C{k} PSNR {pc:.1}");
            }
            for which in all_impls().into_iter().filter(|w| *w != Which::Reference) {
                let c = run(which, &o, f, InputLayout::P010, Signal::pq());
                let (p, md) = psnr(&plane(&c, OutputFormat::Yuv420p, 0), &ry, 255.0);
                assert!(
                    p >= 50.0 && md <= 2,
                    "{name} {curve} {which:?} vs reference: Y PSNR {p:.1}, max |dY| {md}"
                );
            }
        }
    }
}

#[test]
fn reference_matches_ffmpeg_on_hdr10_picture() {
    let dir = tempfile::tempdir().unwrap();
    let input = make_hdr(
        dir.path(),
        "testsrc2",
        &format!("testsrc2=s={W}x{H}:r=24"),
        "bt709",
        1000,
    );
    check("testsrc2", &input, dir.path());
}

#[test]
fn reference_matches_ffmpeg_on_stress_pattern() {
    let dir = tempfile::tempdir().unwrap();
    // Left to right: a neutral ramp on top; saturated primaries/secondaries (declared BT.2020)
    // with brightness rising left to right below; SDR white = 10000 nits.
    let src = format!(
        "color=black:s={W}x{H}:r=24,format=gbrp,geq=\
r='if(lt(Y,H/4),X*255/W,if(lt(mod(floor(Y*6/H),3),1),X*255/W,0))':\
g='if(lt(Y,H/4),X*255/W,if(eq(mod(floor(Y*6/H),3),1),X*255/W,if(gt(Y,H*5/6),X*255/W,0)))':\
b='if(lt(Y,H/4),X*255/W,if(eq(mod(floor(Y*6/H),3),2),X*255/W,if(between(Y,H/2,H*2/3),X*255/W,0)))'"
    );
    let input = make_hdr(dir.path(), "stress", &src, "bt2020", 10000);
    check("stress", &input, dir.path());
}
