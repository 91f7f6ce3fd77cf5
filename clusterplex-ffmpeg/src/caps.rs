//! What this process's libav can do, as [`Capabilities`] for worker registration: every
//! decoder, encoder and filter compiled in, hardware acceleration types whose device can
//! actually be opened here, 10-bit support and the tonemap implementations.

use std::{collections::BTreeSet, ffi::CStr, ptr};

use clusterplex_core::Capabilities;
use ffmpeg_next::ffi;

/// Probes libavcodec/libavfilter/libavutil of this process.
pub fn probe() -> Capabilities {
    let mut caps = Capabilities {
        arch: std::env::consts::ARCH.to_string(),
        ..Default::default()
    };
    caps.hwaccels = usable_hwaccels();
    let mut opaque: *mut std::ffi::c_void = ptr::null_mut();
    loop {
        // SAFETY: av_codec_iterate walks libavcodec's static codec table; `opaque` is the
        // iteration state it owns, started at null. The returned pointer is static.
        let codec = unsafe { ffi::av_codec_iterate(&mut opaque) };
        if codec.is_null() {
            break;
        }
        // SAFETY: `codec` is a valid static AVCodec; `name` is a static NUL-terminated string.
        let (name, is_encoder, is_decoder, hw) = unsafe {
            (
                CStr::from_ptr((*codec).name).to_string_lossy().into_owned(),
                ffi::av_codec_is_encoder(codec) != 0,
                ffi::av_codec_is_decoder(codec) != 0,
                ((*codec).capabilities as u32
                    & (ffi::AV_CODEC_CAP_HARDWARE | ffi::AV_CODEC_CAP_HYBRID))
                    != 0,
            )
        };
        // Wrappers of hardware codecs (h264_nvenc, hevc_vaapi...) are compiled into distro
        // builds everywhere; advertise them only when their device opened here.
        if hw && !hw_codec_usable(&name, &caps.hwaccels) {
            continue;
        }
        if is_encoder {
            caps.encoders.insert(name.clone());
        }
        if is_decoder {
            caps.decoders.insert(name);
        }
    }
    let mut opaque: *mut std::ffi::c_void = ptr::null_mut();
    loop {
        // SAFETY: as above, over libavfilter's static filter table.
        let filter = unsafe { ffi::av_filter_iterate(&mut opaque) };
        if filter.is_null() {
            break;
        }
        // SAFETY: `filter` is a valid static AVFilter with a static name.
        let name = unsafe {
            CStr::from_ptr((*filter).name)
                .to_string_lossy()
                .into_owned()
        };
        caps.filters.insert(name);
    }
    // Software HEVC/VP9/AV1 decoding and our tonemapper handle 10-bit input.
    caps.ten_bit = caps.decoders.contains("hevc");
    caps.tonemap = ["reference", "cpu"]
        .into_iter()
        .map(str::to_string)
        .collect();
    if caps.hwaccels.contains("cuda") {
        caps.tonemap.insert("cuda".into());
    }
    // The engine's own tonemap stage (not libavfilter's) is always available.
    caps.filters.insert("tonemap".into());
    caps
}

/// Whether a hardware codec's device type is among the usable ones (`*_nvenc`/`*_cuvid` need
/// `cuda`, `*_vaapi` needs `vaapi`, ...).
fn hw_codec_usable(name: &str, usable: &BTreeSet<String>) -> bool {
    let needs = if name.ends_with("_nvenc") || name.ends_with("_cuvid") {
        "cuda"
    } else if let Some((_, suffix)) = name.rsplit_once('_') {
        suffix
    } else {
        return false;
    };
    usable.contains(needs)
}

/// Hardware device types compiled in whose default device opens on this machine.
fn usable_hwaccels() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut t = ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_NONE;
    loop {
        // SAFETY: pure iteration over libavutil's list of compiled-in device types.
        t = unsafe { ffi::av_hwdevice_iterate_types(t) };
        if t == ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_NONE {
            break;
        }
        let mut dev: *mut ffi::AVBufferRef = ptr::null_mut();
        // SAFETY: creates a device context for the default device; on success we own one
        // reference in `dev` and release it right away; on failure `dev` stays null.
        let ok =
            unsafe { ffi::av_hwdevice_ctx_create(&mut dev, t, ptr::null(), ptr::null_mut(), 0) }
                >= 0;
        if ok {
            // SAFETY: `dev` is the reference created above; unref sets it to null.
            unsafe { ffi::av_buffer_unref(&mut dev) };
            // SAFETY: returns a static name for a valid type.
            let name = unsafe { ffi::av_hwdevice_get_type_name(t) };
            if !name.is_null() {
                // SAFETY: static NUL-terminated string from libavutil.
                out.insert(
                    unsafe { CStr::from_ptr(name) }
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn probes_the_system_libav() {
        let caps = super::probe();
        // Debian's FFmpeg 5.1 always has these.
        for d in ["h264", "hevc", "aac"] {
            assert!(caps.decoders.contains(d), "decoder {d}");
        }
        for e in ["libx264", "aac"] {
            assert!(caps.encoders.contains(e), "encoder {e}");
        }
        assert!(caps.filters.contains("scale"));
        assert!(caps.ten_bit);
        assert!(caps.tonemap.contains("cpu"));
        // No GPU on the build machine: no CUDA device may be claimed.
        if !std::path::Path::new("/dev/nvidiactl").exists() {
            assert!(!caps.hwaccels.contains("cuda"));
            assert!(
                !caps.encoders.contains("h264_nvenc"),
                "nvenc claimed without a GPU"
            );
        }
    }
}
