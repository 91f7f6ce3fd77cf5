//! libav frame glue: reads the signal description and side data, and exposes the planes.

use ffmpeg_next::format::Pixel;
use ffmpeg_next::frame::Video;
use ffmpeg_next::frame::side_data::Type as SideType;
use ffmpeg_next::util::color;

use super::OutputFormat;
use super::image::{DstImage, InputLayout, Signal, SrcImage, Transfer};
use super::math::REFERENCE_WHITE;
use crate::error::{Error, Result, Stage};

fn rational(b: &[u8], off: usize) -> Option<f64> {
    let n = i32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?);
    let d = i32::from_ne_bytes(b.get(off + 4..off + 8)?.try_into().ok()?);
    (d != 0).then(|| n as f64 / d as f64)
}

/// The frame's peak from side data like FFmpeg's `ff_determine_signal_peak`: MaxCLL/100, else
/// mastering max luminance/100; `None` when neither is present.
pub fn side_data_peak(frame: &Video) -> Option<f64> {
    if let Some(sd) = frame.side_data(SideType::ContentLightLevel) {
        // AVContentLightMetadata { unsigned MaxCLL; unsigned MaxFALL; }
        let b = sd.data();
        if let Some(cll) = b
            .get(0..4)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_ne_bytes)
            && cll > 0
        {
            return Some(f64::from(cll) / REFERENCE_WHITE);
        }
    }
    if let Some(sd) = frame.side_data(SideType::MasteringDisplayMetadata) {
        // AVMasteringDisplayMetadata: 8 AVRationals of primaries/white point, then min_luminance
        // (offset 64), max_luminance (72), has_primaries (80), has_luminance (84).
        let b = sd.data();
        let has_lum = b
            .get(84..88)
            .and_then(|s| s.try_into().ok())
            .map(i32::from_ne_bytes)
            .unwrap_or(0);
        if has_lum != 0
            && let Some(max) = rational(b, 72).filter(|m| *m > 0.0)
        {
            return Some(max / REFERENCE_WHITE);
        }
    }
    None
}

/// Transfer, range and peak of an HDR frame.
pub fn signal_of(frame: &Video) -> Result<Signal> {
    let transfer = match frame.color_transfer_characteristic() {
        color::TransferCharacteristic::SMPTE2084 => Transfer::Pq,
        color::TransferCharacteristic::ARIB_STD_B67 => Transfer::Hlg,
        color::TransferCharacteristic::Unspecified | color::TransferCharacteristic::Reserved0 => {
            tracing::debug!("tonemap: untagged transfer, assuming PQ");
            Transfer::Pq
        }
        other => {
            return Err(Error::Unsupported(format!(
                "tonemap input must be PQ (smpte2084) or HLG (arib-std-b67), frame is tagged {other:?}"
            )));
        }
    };
    let full_range = frame.color_range() == color::Range::JPEG;
    let default = match transfer {
        Transfer::Pq => Signal::pq(),
        Transfer::Hlg => Signal::hlg(),
    };
    let peak = side_data_peak(frame).unwrap_or(default.peak);
    Ok(Signal {
        transfer,
        full_range,
        peak,
    })
}

/// The input planes of a software frame.
pub fn src_image(frame: &Video) -> Result<SrcImage<'_>> {
    let layout = match frame.format() {
        Pixel::YUV420P10LE => InputLayout::Yuv420p10,
        Pixel::P010LE => InputLayout::P010,
        other => {
            return Err(Error::Unsupported(format!(
                "tonemap input pixel format {other:?}; expected yuv420p10le or p010le (convert with format=)"
            )));
        }
    };
    let n = frame.planes();
    let plane = |i: usize| if i < n { frame.data(i) } else { &[][..] };
    let stride = |i: usize| if i < n { frame.stride(i) } else { 0 };
    Ok(SrcImage {
        width: frame.width() as usize,
        height: frame.height() as usize,
        layout,
        planes: [plane(0), plane(1), plane(2)],
        strides: [stride(0), stride(1), stride(2)],
    })
}

/// A new output frame with the SDR colour tags and the input's timing.
pub fn new_output(frame: &Video, format: OutputFormat) -> Result<Video> {
    let (w, h) = (frame.width(), frame.height());
    if w == 0 || h == 0 {
        return Err(Error::Other {
            stage: Stage::Tonemap,
            message: "empty input frame".into(),
        });
    }
    let mut out = Video::new(format.pixel(), w, h);
    out.set_color_primaries(color::Primaries::BT709);
    out.set_color_transfer_characteristic(color::TransferCharacteristic::BT709);
    out.set_color_space(color::Space::BT709);
    out.set_color_range(color::Range::MPEG);
    out.set_pts(frame.pts());
    Ok(out)
}

/// Mutable views of all planes of an output frame.
pub fn dst_image(frame: &mut Video, format: OutputFormat) -> DstImage<'_> {
    let n = frame.planes().min(3);
    let mut raw = [(std::ptr::null_mut::<u8>(), 0usize); 3];
    let mut strides = [0usize; 3];
    for (i, r) in raw.iter_mut().enumerate().take(n) {
        strides[i] = frame.stride(i);
        let d = frame.data_mut(i);
        *r = (d.as_mut_ptr(), d.len());
    }
    let mk = |(p, len): (*mut u8, usize)| -> &mut [u8] {
        if p.is_null() {
            &mut []
        } else {
            // SAFETY: each pointer/length pair comes from `data_mut` of a distinct plane of
            // `frame`, which AVFrame allocates as disjoint buffers; the returned slices borrow
            // `frame` mutably (lifetime tied to it), so nothing else can alias them.
            unsafe { std::slice::from_raw_parts_mut(p, len) }
        }
    };
    DstImage {
        format,
        planes: [mk(raw[0]), mk(raw[1]), mk(raw[2])],
        strides,
    }
}
