//! Text subtitle conversion (SubRip -> ASS, SubRip -> mov_text, ...), the way the ffmpeg CLI
//! does it: libavcodec's subtitle decoder turns each packet into ASS events, the target text
//! encoder writes them out again. The encoder's `subtitle_header` (the ASS script header that
//! mkv and .ass files carry) comes from the decoder, so styles survive the conversion.

use std::ptr;

use ffmpeg_next::packet::Ref as _;
use ffmpeg_next::{Codec, Packet, Rational, codec, ffi as sys};

use crate::{Error, Result, Stage};

/// The text subtitle codecs libavcodec decodes to ASS events and can encode from them.
pub fn is_text(id: codec::Id) -> bool {
    matches!(
        id,
        codec::Id::SUBRIP
            | codec::Id::SRT
            | codec::Id::ASS
            | codec::Id::SSA
            | codec::Id::WEBVTT
            | codec::Id::MOV_TEXT
            | codec::Id::TEXT
    )
}

/// One decoded subtitle with its display time on the (offset) input timeline.
pub struct Event {
    sub: Sub,
    /// Start, microseconds.
    pub start_us: i64,
    /// End, microseconds.
    pub end_us: i64,
}

/// Owns an `AVSubtitle` filled by the decoder.
struct Sub(sys::AVSubtitle);

impl Drop for Sub {
    fn drop(&mut self) {
        // SAFETY: the AVSubtitle was zeroed or filled by avcodec_decode_subtitle2; freeing a
        // zeroed one is a no-op, and it is freed exactly once (here).
        unsafe { sys::avsubtitle_free(&mut self.0) };
    }
}

/// Decoder + encoder of one converted subtitle stream.
pub struct TextSubConv {
    dec: codec::Context,
    enc: codec::Context,
    in_tb: Rational,
    buf: Vec<u8>,
}

/// Size of the encode buffer (the ffmpeg CLI uses the same bound for one subtitle).
const SUB_BUF: usize = 1 << 20;
const AV_TIME_BASE_Q: Rational = Rational(1, 1_000_000);

impl TextSubConv {
    /// Opens the decoder for `params` (packets in `in_tb`) and `encoder` with the decoder's
    /// subtitle header.
    pub fn open(
        params: codec::Parameters,
        in_tb: Rational,
        encoder: Codec,
        sctx: &str,
    ) -> Result<Self> {
        let in_id = params.id();
        let dcodec = codec::decoder::find(in_id).ok_or_else(|| {
            Error::Unsupported(format!("{sctx}: no decoder for subtitle codec {in_id:?}"))
        })?;
        let mut dec = codec::Context::from_parameters(params).map_err(|e| Error::Av {
            stage: Stage::Decode,
            context: format!("{sctx}: reading subtitle codec parameters"),
            source: e,
        })?;
        // SAFETY: `dec` is a freshly allocated context we own; pkt_timebase is a plain field,
        // and avcodec_open2 is called once with the decoder the context was set up for.
        let r = unsafe {
            (*dec.as_mut_ptr()).pkt_timebase = in_tb.into();
            sys::avcodec_open2(dec.as_mut_ptr(), dcodec.as_ptr(), ptr::null_mut())
        };
        if r < 0 {
            return Err(Error::Av {
                stage: Stage::Decode,
                context: format!("{sctx}: opening subtitle decoder {}", dcodec.name()),
                source: ffmpeg_next::Error::from(r),
            });
        }
        let mut enc = codec::Context::new_with_codec(encoder);
        // SAFETY: both contexts are ours and alive. The header is copied into a buffer from
        // av_mallocz (one spare zero byte, as libavcodec expects a NUL-terminated header) that
        // the encoder context then owns and frees with itself.
        let r = unsafe {
            let e = enc.as_mut_ptr();
            let d = dec.as_ptr();
            (*e).time_base = AV_TIME_BASE_Q.into();
            let n = (*d).subtitle_header_size;
            if !(*d).subtitle_header.is_null() && n > 0 {
                let h = sys::av_mallocz(n as usize + 1) as *mut u8;
                if h.is_null() {
                    return Err(Error::Other {
                        stage: Stage::Encode,
                        message: format!("{sctx}: out of memory for the subtitle header"),
                    });
                }
                ptr::copy_nonoverlapping((*d).subtitle_header, h, n as usize);
                (*e).subtitle_header = h;
                (*e).subtitle_header_size = n;
            }
            sys::avcodec_open2(e, encoder.as_ptr(), ptr::null_mut())
        };
        if r < 0 {
            return Err(Error::Av {
                stage: Stage::Encode,
                context: format!("{sctx}: opening subtitle encoder {}", encoder.name()),
                source: ffmpeg_next::Error::from(r),
            });
        }
        Ok(Self {
            dec,
            enc,
            in_tb,
            buf: vec![0; SUB_BUF],
        })
    }

    /// The output stream's codec parameters (extradata included: mkv's ASS header, mov_text's
    /// sample description).
    pub fn parameters(&self) -> Result<codec::Parameters> {
        let mut p = codec::Parameters::new();
        // SAFETY: `p` owns a fresh AVCodecParameters; the encoder context is open and alive.
        let r = unsafe { sys::avcodec_parameters_from_context(p.as_mut_ptr(), self.enc.as_ptr()) };
        if r < 0 {
            return Err(Error::Av {
                stage: Stage::Mux,
                context: "subtitle encoder parameters".into(),
                source: ffmpeg_next::Error::from(r),
            });
        }
        Ok(p)
    }

    /// Decodes one packet (timestamps in the input time base). `Ok(None)`: nothing to show.
    pub fn decode(
        &mut self,
        pkt: &Packet,
    ) -> std::result::Result<Option<Event>, ffmpeg_next::Error> {
        // SAFETY: an all-zero AVSubtitle is the documented empty state.
        let mut sub = Sub(unsafe { std::mem::zeroed() });
        let mut got = 0;
        // SAFETY: the decoder is open; the packet is a valid AVPacket that the decoder only
        // reads; `sub` and `got` are valid for writes.
        let r = unsafe {
            sys::avcodec_decode_subtitle2(
                self.dec.as_mut_ptr(),
                &mut sub.0,
                &mut got,
                pkt.as_ptr() as *mut sys::AVPacket,
            )
        };
        if r < 0 {
            return Err(ffmpeg_next::Error::from(r));
        }
        if got == 0 || sub.0.num_rects == 0 {
            return Ok(None);
        }
        let base = if sub.0.pts != sys::AV_NOPTS_VALUE {
            sub.0.pts
        } else {
            match pkt.pts().or(pkt.dts()) {
                Some(t) => super::rescale(t, self.in_tb, AV_TIME_BASE_Q),
                None => return Ok(None),
            }
        };
        // Like ffmpeg: fold the display offsets into the start time.
        let start_us = base + i64::from(sub.0.start_display_time) * 1000;
        let end_ms = if sub.0.end_display_time == u32::MAX {
            // Unknown end (no packet duration): show until the packet's stated duration or 5 s.
            let d = super::rescale(pkt.duration(), self.in_tb, Rational(1, 1000));
            if d > 0 { d } else { 5000 }
        } else {
            i64::from(
                sub.0
                    .end_display_time
                    .saturating_sub(sub.0.start_display_time),
            )
        };
        Ok(Some(Event {
            sub,
            start_us,
            end_us: start_us + end_ms * 1000,
        }))
    }

    /// Encodes `ev` shown from `start_us` to `end_us` (microseconds on the output timeline).
    /// Returns the packet in microseconds (`None` when the encoder wrote nothing).
    pub fn encode(
        &mut self,
        mut ev: Event,
        start_us: i64,
        end_us: i64,
        sctx: &str,
    ) -> Result<Option<Packet>> {
        let dur_ms = ((end_us - start_us) / 1000).clamp(0, i64::from(u32::MAX - 1));
        ev.sub.0.pts = start_us;
        ev.sub.0.start_display_time = 0;
        ev.sub.0.end_display_time = dur_ms as u32;
        // SAFETY: the encoder is open; `buf` is writable for its whole length; the subtitle
        // is a decoder-filled AVSubtitle that the encoder only reads.
        let n = unsafe {
            sys::avcodec_encode_subtitle(
                self.enc.as_mut_ptr(),
                self.buf.as_mut_ptr(),
                self.buf.len() as i32,
                &ev.sub.0,
            )
        };
        if n < 0 {
            return Err(Error::Av {
                stage: Stage::Encode,
                context: format!("{sctx}: encoding a subtitle"),
                source: ffmpeg_next::Error::from(n),
            });
        }
        if n == 0 {
            return Ok(None);
        }
        let mut pkt = Packet::copy(&self.buf[..n as usize]);
        pkt.set_pts(Some(start_us));
        pkt.set_dts(Some(start_us));
        pkt.set_duration(dur_ms * 1000);
        Ok(Some(pkt))
    }
}
