//! Facts about the probed input streams, as Plex's `stream` / `streamDetail` callbacks want
//! them (keys and order from the transcoder contract, Part 1 a) 3).
//!
//! Why here: only the engine holds the opened (probed) inputs; the worker turns these into
//! PUTs. Values are plain text so the wire needs no per-key types.

use std::ffi::{CStr, c_char};

use clusterplex_core::events::InputStream;
use ffmpeg_next::{Rational, ffi as sys, format, media};

/// Every audio and video stream of one opened input.
pub fn input_streams(input: usize, ctx: &format::context::Input) -> Vec<InputStream> {
    let mut out = Vec::new();
    for st in ctx.streams() {
        let kind = match st.parameters().medium() {
            media::Type::Video => "video",
            media::Type::Audio => "audio",
            _ => continue,
        };
        let par = st.parameters();
        // SAFETY: codecpar of a live stream of a live input context; read-only plain fields.
        let p = unsafe { &*par.as_ptr() };
        // Attached pictures (cover art) are not playable video; Plex lists only real streams.
        // SAFETY: the AVStream pointer is live for the lifetime of `ctx`.
        let disposition = unsafe { (*st.as_ptr()).disposition };
        if kind == "video" && disposition & sys::AV_DISPOSITION_ATTACHED_PIC != 0 {
            continue;
        }
        let codec = par.id().name().to_string();
        let mut d: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, v: String| d.push((k.to_string(), v));
        if p.bit_rate > 0 {
            put("bitrate", p.bit_rate.to_string());
        }
        if p.profile >= 0 {
            // SAFETY: avcodec_profile_name returns a static string or null.
            let name = unsafe { cstr(sys::avcodec_profile_name(p.codec_id, p.profile)) };
            if let Some(n) = name {
                put("profile", n);
            }
        }
        if let Some(lang) = st.metadata().get("language") {
            put("language", lang.to_string());
        }
        if kind == "video" {
            put("width", p.width.to_string());
            put("height", p.height.to_string());
            use sys::AVFieldOrder::*;
            let interlaced = match p.field_order {
                AV_FIELD_TT | AV_FIELD_BB | AV_FIELD_TB | AV_FIELD_BT => Some(1),
                AV_FIELD_PROGRESSIVE => Some(0),
                _ => None,
            };
            if let Some(v) = interlaced {
                put("interlaced", v.to_string());
            }
            let sar = st.parameters_sar(p.sample_aspect_ratio);
            if sar.numerator() > 0 && sar.denominator() > 0 {
                put("sar", format!("{}:{}", sar.numerator(), sar.denominator()));
            }
            if p.level > 0 {
                put("level", p.level.to_string());
            }
            let fr = pick_rate(st.avg_frame_rate(), st.rate());
            if let Some(f) = fr {
                put("frameRate", format!("{f:.3}"));
            }
            // closedCaptions is only known after decoding (a codec-context property), so it is
            // left out rather than guessed.
        } else {
            let ch = p.ch_layout.nb_channels;
            if ch > 0 {
                put("channels", ch.to_string());
                let mut buf = [0 as c_char; 64];
                // SAFETY: describe writes at most buf.len() bytes, NUL-terminated, into buf.
                let n = unsafe {
                    sys::av_channel_layout_describe(&p.ch_layout, buf.as_mut_ptr(), buf.len())
                };
                if n > 0 {
                    // SAFETY: NUL-terminated by av_channel_layout_describe.
                    if let Some(l) = unsafe { cstr(buf.as_ptr()) } {
                        put("layout", l);
                    }
                }
            }
            if p.sample_rate > 0 {
                put("sampleRate", p.sample_rate.to_string());
            }
            let bits = if p.bits_per_raw_sample > 0 {
                p.bits_per_raw_sample
            } else {
                p.bits_per_coded_sample
            };
            if bits > 0 {
                put("bitDepth", bits.to_string());
            }
        }
        put(
            "disp_default",
            u8::from(disposition & sys::AV_DISPOSITION_DEFAULT != 0).to_string(),
        );
        put(
            "disp_forced",
            u8::from(disposition & sys::AV_DISPOSITION_FORCED != 0).to_string(),
        );
        // SAFETY: as above; `id` is a plain field.
        let id = unsafe { (*st.as_ptr()).id };
        out.push(InputStream {
            input,
            index: st.index(),
            id: u64::try_from(id).unwrap_or(0),
            kind: kind.into(),
            codec,
            details: d,
        });
    }
    out
}

trait SarOf {
    fn parameters_sar(&self, r: sys::AVRational) -> Rational;
}

impl SarOf for format::stream::Stream<'_> {
    /// The stream's SAR when the container sets one, else the codec's.
    fn parameters_sar(&self, r: sys::AVRational) -> Rational {
        // SAFETY: live stream pointer; plain field.
        let s = unsafe { (*self.as_ptr()).sample_aspect_ratio };
        if s.num > 0 && s.den > 0 {
            Rational(s.num, s.den)
        } else {
            Rational(r.num, r.den)
        }
    }
}

fn pick_rate(avg: Rational, r: Rational) -> Option<f64> {
    [avg, r]
        .into_iter()
        .find(|q| q.numerator() > 0 && q.denominator() > 0)
        .map(|q| q.numerator() as f64 / q.denominator() as f64)
}

/// # Safety
/// `p` is null or a NUL-terminated string valid for the call.
unsafe fn cstr(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: per the contract above.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Half of one frame of `st` in microseconds: a video frame at its average (or real) frame
/// rate, an audio frame of `frame_size` samples (1024 when unknown); at least 1 ms. Used as
/// the tolerance when a copied packet is compared with a resume point that was computed in
/// seconds and may have been rounded a little past it.
pub fn half_frame_us(st: &format::stream::Stream) -> i64 {
    let par = st.parameters();
    // SAFETY: codecpar of a live stream; read-only plain fields.
    let p = unsafe { &*par.as_ptr() };
    let frame_us = match par.medium() {
        media::Type::Video => {
            let r = Some(st.avg_frame_rate())
                .filter(|r| r.numerator() > 0 && r.denominator() > 0)
                .or(Some(st.rate()).filter(|r| r.numerator() > 0 && r.denominator() > 0));
            r.map_or(0.0, |r| 1e6 / f64::from(r))
        }
        media::Type::Audio if p.sample_rate > 0 => {
            let n = if p.frame_size > 0 { p.frame_size } else { 1024 };
            f64::from(n) * 1e6 / f64::from(p.sample_rate)
        }
        _ => 0.0,
    };
    ((frame_us / 2.0) as i64).max(1000)
}
