//! Small owning wrappers and accessors for the parts of libav that ffmpeg-next does not expose.
//! Every `unsafe` block in the engine outside `io.rs` lives here.

use std::ffi::CStr;

use ffmpeg_next::{
    Rational,
    codec::{self, Id},
    ffi as sys, filter, format,
};

/// Parameters of a configured video buffersink.
#[derive(Debug, Clone, Copy)]
pub struct VideoSinkParams {
    pub width: u32,
    pub height: u32,
    pub format: format::Pixel,
    pub sample_aspect: Rational,
    pub frame_rate: Rational,
    pub time_base: Rational,
}

/// Reads the negotiated output of a video buffersink (valid once the graph is configured).
pub fn video_sink_params(ctx: &mut filter::Context) -> VideoSinkParams {
    // SAFETY: `p` is a buffersink filter context owned by a configured graph that outlives this
    // call; the av_buffersink_get_* accessors only read fields of its input link.
    unsafe {
        let p = ctx.as_ptr();
        VideoSinkParams {
            width: sys::av_buffersink_get_w(p).max(0) as u32,
            height: sys::av_buffersink_get_h(p).max(0) as u32,
            format: format::Pixel::from(std::mem::transmute::<i32, sys::AVPixelFormat>(
                sys::av_buffersink_get_format(p),
            )),
            sample_aspect: sys::av_buffersink_get_sample_aspect_ratio(p).into(),
            frame_rate: sys::av_buffersink_get_frame_rate(p).into(),
            time_base: sys::av_buffersink_get_time_base(p).into(),
        }
    }
}

/// Parameters of a configured audio buffersink.
#[derive(Debug, Clone, Copy)]
pub struct AudioSinkParams {
    pub rate: u32,
    pub format: format::Sample,
}

pub fn audio_sink_params(ctx: &mut filter::Context) -> AudioSinkParams {
    // SAFETY: as in `video_sink_params`; the sample format integer comes from libavfilter and
    // is a valid AVSampleFormat.
    unsafe {
        let p = ctx.as_ptr();
        AudioSinkParams {
            rate: sys::av_buffersink_get_sample_rate(p).max(0) as u32,
            format: format::Sample::from(std::mem::transmute::<i32, sys::AVSampleFormat>(
                sys::av_buffersink_get_format(p),
            )),
        }
    }
}

/// Copies the buffersink's channel layout (FFmpeg 5.1 `AVChannelLayout`) into an encoder
/// context that has not been opened yet.
pub fn copy_sink_layout_to_encoder(sink: &mut filter::Context, enc: &mut codec::Context) -> bool {
    // SAFETY: both pointers are live and exclusively borrowed; av_buffersink_get_ch_layout fills
    // a layout we own and then copy into the (unopened) codec context, uninitialising ours after.
    unsafe {
        let p = sink.as_ptr();
        let mut layout: sys::AVChannelLayout = std::mem::zeroed();
        if sys::av_buffersink_get_ch_layout(p, &mut layout) < 0 {
            return false;
        }
        let c = enc.as_mut_ptr();
        sys::av_channel_layout_uninit(&mut (*c).ch_layout);
        let ok = sys::av_channel_layout_copy(&mut (*c).ch_layout, &layout) >= 0;
        // Keep the deprecated mirrors in sync; some encoders in 5.1 still read them.
        (*c).channels = layout.nb_channels;
        if layout.order == sys::AVChannelOrder::AV_CHANNEL_ORDER_NATIVE {
            (*c).channel_layout = layout.u.mask;
        }
        sys::av_channel_layout_uninit(&mut layout);
        ok
    }
}

/// A channel layout description (`stereo`, `5.1(side)`) of a decoded audio frame, for the
/// `abuffer` source arguments.
pub fn frame_layout_desc(frame: &ffmpeg_next::Frame) -> Option<String> {
    // SAFETY: the frame is a live decoded audio frame; av_channel_layout_describe writes at most
    // `buf.len()` bytes including the terminating NUL.
    unsafe {
        let f = frame.as_ptr();
        let mut buf = [0 as libc_char; 128];
        let n = sys::av_channel_layout_describe(&(*f).ch_layout, buf.as_mut_ptr(), buf.len());
        if n <= 0 {
            return None;
        }
        Some(CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned())
    }
}

#[allow(non_camel_case_types)]
type libc_char = std::os::raw::c_char;

/// Channel count of a decoded audio frame.
pub fn frame_channels(frame: &ffmpeg_next::Frame) -> u32 {
    // SAFETY: reading a plain field of a live frame.
    unsafe { (*frame.as_ptr()).ch_layout.nb_channels.max(0) as u32 }
}

/// Names of all registered encoders (or decoders) for a codec id, e.g. every H.264 encoder.
pub fn codec_names(id: Id, encoders: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut opaque: *mut std::ffi::c_void = std::ptr::null_mut();
    let want: sys::AVCodecID = id.into();
    loop {
        // SAFETY: av_codec_iterate walks libavcodec's static codec table; `opaque` is its
        // iteration cursor, initialised to NULL as documented. Returned pointers are static.
        let c = unsafe { sys::av_codec_iterate(&mut opaque) };
        if c.is_null() {
            break;
        }
        // SAFETY: `c` is a non-null pointer to a static AVCodec.
        unsafe {
            let is_enc = sys::av_codec_is_encoder(c) != 0;
            if (*c).id == want && is_enc == encoders {
                out.push(CStr::from_ptr((*c).name).to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// Copies colour tags of a frame (primaries, transfer, matrix, range) into an encoder context
/// before it is opened, so HDR/SDR tags survive transcoding.
pub fn copy_frame_colors(frame: &ffmpeg_next::Frame, enc: &mut codec::Context) {
    // SAFETY: both are live; plain enum fields are copied into an unopened codec context.
    unsafe {
        let f = frame.as_ptr();
        let c = enc.as_mut_ptr();
        (*c).color_primaries = (*f).color_primaries;
        (*c).color_trc = (*f).color_trc;
        (*c).colorspace = (*f).colorspace;
        (*c).color_range = (*f).color_range;
        (*c).chroma_sample_location = (*f).chroma_location;
    }
}

/// Sets `AV_CODEC_FLAG_GLOBAL_HEADER` etc. through the flags field.
pub fn add_codec_flags(enc: &mut codec::Context, flags: i32) {
    // SAFETY: a plain integer field of an unopened codec context.
    unsafe {
        (*enc.as_mut_ptr()).flags |= flags;
    }
}

/// Sets the encoder's time base and frame rate.
pub fn set_codec_rates(
    enc: &mut codec::Context,
    time_base: Rational,
    frame_rate: Option<Rational>,
) {
    // SAFETY: plain fields of an unopened codec context.
    unsafe {
        let c = enc.as_mut_ptr();
        (*c).time_base = time_base.into();
        if let Some(r) = frame_rate {
            (*c).framerate = r.into();
        }
    }
}

/// The audio encoder's frame size, and whether it accepts any frame size.
pub fn audio_frame_size(enc: &codec::Context) -> (u32, bool) {
    // SAFETY: reading fields of an opened codec context and its static codec description.
    unsafe {
        let c = enc.as_ptr();
        let variable = !(*c).codec.is_null()
            && ((*(*c).codec).capabilities & sys::AV_CODEC_CAP_VARIABLE_FRAME_SIZE as i32) != 0;
        ((*c).frame_size.max(0) as u32, variable)
    }
}

/// Whether the output format wants global headers (mp4, mkv, dash...).
pub fn format_wants_global_header(octx: &format::context::Output) -> bool {
    octx.format().flags().contains(format::Flags::GLOBAL_HEADER)
}

/// The output format's default codec for a media type.
pub fn default_codec(octx: &format::context::Output, kind: ffmpeg_next::media::Type) -> Id {
    // SAFETY: `oformat` of a live output context points to a static AVOutputFormat.
    unsafe {
        let f = (*octx.as_ptr()).oformat;
        if f.is_null() {
            return Id::None;
        }
        let id = match kind {
            ffmpeg_next::media::Type::Video => (*f).video_codec,
            ffmpeg_next::media::Type::Audio => (*f).audio_codec,
            ffmpeg_next::media::Type::Subtitle => (*f).subtitle_codec,
            _ => sys::AVCodecID::AV_CODEC_ID_NONE,
        };
        id.into()
    }
}

/// Current write position of the output's main AVIOContext (bytes written), 0 for NOFILE
/// muxers.
pub fn output_bytes(octx: &format::context::Output) -> u64 {
    // SAFETY: `pb` is either null or the live AVIOContext owned by the output context; reading
    // `pos` and the buffer pointers does not modify it.
    unsafe {
        let pb = (*octx.as_ptr()).pb;
        if pb.is_null() {
            return 0;
        }
        let pending = (*pb).buf_ptr.offset_from((*pb).buffer).max(0) as i64;
        ((*pb).pos + pending).max(0) as u64
    }
}

/// Resets the codec tag of an output stream so the muxer picks its own (`-c copy` from mkv to
/// mp4), or sets the one given with `-tag`.
pub fn set_stream_codec_tag(octx: &mut format::context::Output, index: usize, tag: Option<&str>) {
    let value = tag
        .filter(|t| t.len() == 4)
        .map(|t| {
            let b = t.as_bytes();
            u32::from(b[0])
                | (u32::from(b[1]) << 8)
                | (u32::from(b[2]) << 16)
                | (u32::from(b[3]) << 24)
        })
        .unwrap_or(0);
    // SAFETY: `index` is a valid stream index of this live output context (checked by caller
    // through ffmpeg-next's stream_mut), and codecpar is always allocated for a stream.
    unsafe {
        let ctx = octx.as_mut_ptr();
        if index < (*ctx).nb_streams as usize {
            let st = *(*ctx).streams.add(index);
            (*(*st).codecpar).codec_tag = value;
        }
    }
}

/// Creates a hardware device context (`-hwaccel cuda`, `-init_hw_device`); the returned buffer
/// reference is owned and freed on drop.
pub struct HwDevice(*mut sys::AVBufferRef);

// SAFETY: an AVBufferRef to a hardware device context is reference counted and thread safe in
// libavutil; we only ever hand out new references to it.
unsafe impl Send for HwDevice {}

impl HwDevice {
    pub fn open(kind: &str, device: Option<&str>) -> Result<Self, String> {
        let cname = std::ffi::CString::new(kind).map_err(|e| e.to_string())?;
        // SAFETY: av_hwdevice_find_type_by_name only reads the NUL-terminated name.
        let ty = unsafe { sys::av_hwdevice_find_type_by_name(cname.as_ptr()) };
        if ty == sys::AVHWDeviceType::AV_HWDEVICE_TYPE_NONE {
            return Err(format!("unknown hardware device type `{kind}`"));
        }
        let cdev = device
            .map(std::ffi::CString::new)
            .transpose()
            .map_err(|e| e.to_string())?;
        let mut buf: *mut sys::AVBufferRef = std::ptr::null_mut();
        // SAFETY: `buf` receives a new reference on success; the device string is either null or
        // a valid C string living across the call.
        let ret = unsafe {
            sys::av_hwdevice_ctx_create(
                &mut buf,
                ty,
                cdev.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                std::ptr::null_mut(),
                0,
            )
        };
        if ret < 0 || buf.is_null() {
            return Err(format!(
                "cannot open {kind} device{}: {}",
                device.map(|d| format!(" `{d}`")).unwrap_or_default(),
                ffmpeg_next::Error::from(ret)
            ));
        }
        Ok(HwDevice(buf))
    }

    /// Attaches a new reference of the device to an unopened decoder context.
    pub fn attach(&self, dec: &mut codec::Context) {
        // SAFETY: av_buffer_ref adds a reference that the codec context then owns and frees.
        unsafe {
            (*dec.as_mut_ptr()).hw_device_ctx = sys::av_buffer_ref(self.0);
        }
    }
}

impl Drop for HwDevice {
    fn drop(&mut self) {
        // SAFETY: we own exactly one reference.
        unsafe { sys::av_buffer_unref(&mut self.0) }
    }
}

/// If `frame` lives in GPU memory, downloads it into a software frame.
pub fn download_if_hw(
    frame: &ffmpeg_next::Frame,
) -> Result<Option<ffmpeg_next::Frame>, ffmpeg_next::Error> {
    // SAFETY: reading `hw_frames_ctx` of a live frame; av_hwframe_transfer_data writes into a
    // freshly allocated frame we own, and av_frame_copy_props copies metadata between them.
    unsafe {
        let f = frame.as_ptr();
        if (*f).hw_frames_ctx.is_null() {
            return Ok(None);
        }
        let mut out = ffmpeg_next::Frame::empty();
        let ret = sys::av_hwframe_transfer_data(out.as_mut_ptr(), f, 0);
        if ret < 0 {
            return Err(ffmpeg_next::Error::from(ret));
        }
        sys::av_frame_copy_props(out.as_mut_ptr(), f);
        Ok(Some(out))
    }
}

/// Picture type to force on a frame before encoding (`I` at segment boundaries, `NONE`
/// otherwise so the decoder's types are not passed through).
pub fn set_forced_keyframe(frame: &mut ffmpeg_next::Frame, key: bool) {
    // SAFETY: plain field of a frame we exclusively own.
    unsafe {
        (*frame.as_mut_ptr()).pict_type = if key {
            sys::AVPictureType::AV_PICTURE_TYPE_I
        } else {
            sys::AVPictureType::AV_PICTURE_TYPE_NONE
        };
    }
}

/// Width, height and channel count from codec parameters.
pub fn params_dims(p: &codec::Parameters) -> (u32, u32, u32) {
    // SAFETY: codec parameters of a live stream; plain fields.
    unsafe {
        let c = p.as_ptr();
        (
            (*c).width.max(0) as u32,
            (*c).height.max(0) as u32,
            (*c).ch_layout.nb_channels.max(0) as u32,
        )
    }
}

/// Looks up a demuxer by name (`-f` before `-i`).
pub fn find_input_format(name: &str) -> Option<format::Input> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: av_find_input_format reads the NUL-terminated name and returns a static pointer
    // or null.
    let p = unsafe { sys::av_find_input_format(c.as_ptr()) };
    if p.is_null() {
        None
    } else {
        // SAFETY: `p` points to a static AVInputFormat.
        Some(unsafe { format::Input::wrap(p as *mut _) })
    }
}

/// An empty frame to receive into.
pub fn new_frame() -> ffmpeg_next::Frame {
    // SAFETY: Frame::empty allocates a blank AVFrame (av_frame_alloc); it is only unsafe in
    // ffmpeg-next because the untyped frame can be misused as a typed one, which we never do
    // without checking the media type of its producer.
    unsafe { ffmpeg_next::Frame::empty() }
}

/// The input's start time in microseconds, when known.
pub fn input_start_time(ctx: &format::context::Input) -> Option<i64> {
    // SAFETY: plain field of a live, opened input context.
    let t = unsafe { (*ctx.as_ptr()).start_time };
    (t != sys::AV_NOPTS_VALUE).then_some(t)
}

/// Opens an input with a forced demuxer (`-f fmt -i url`) and probes its streams.
pub fn open_input_as(
    url: &str,
    fmt: &str,
    opts: ffmpeg_next::Dictionary,
) -> Result<format::context::Input, ffmpeg_next::Error> {
    let f = find_input_format(fmt).ok_or(ffmpeg_next::Error::DemuxerNotFound)?;
    let curl = std::ffi::CString::new(url).map_err(|_| ffmpeg_next::Error::InvalidData)?;
    let mut ps: *mut sys::AVFormatContext = std::ptr::null_mut();
    // SAFETY: avformat_open_input allocates `ps` on success (and frees it on failure); the
    // dictionary is consumed and replaced as documented; then the context is owned by the
    // returned wrapper which closes it on drop.
    unsafe {
        let mut d = opts.disown();
        let ret = sys::avformat_open_input(&mut ps, curl.as_ptr(), f.as_ptr(), &mut d);
        ffmpeg_next::Dictionary::own(d);
        if ret < 0 {
            return Err(ffmpeg_next::Error::from(ret));
        }
        let ret = sys::avformat_find_stream_info(ps, std::ptr::null_mut());
        if ret < 0 {
            sys::avformat_close_input(&mut ps);
            return Err(ffmpeg_next::Error::from(ret));
        }
        Ok(format::context::Input::wrap(ps))
    }
}

/// Codec contexts handed to a helper thread only to be freed.
///
/// Why: closing a frame-threaded encoder (x264 at slower presets) joins its worker threads,
/// which can take several frame times; on cancel the engine must return within 200 ms, so the
/// contexts are moved, not shared, to a thread that frees them.
#[allow(dead_code)] // The fields are only held to be dropped on the other thread.
pub struct FreeElsewhere(
    pub Vec<codec::encoder::Encoder>,
    pub Vec<codec::decoder::Opened>,
);

// SAFETY: ownership of the contexts moves to the freeing thread; after the move no other thread
// holds a pointer to them, and libavcodec contexts are not tied to the thread that made them.
unsafe impl Send for FreeElsewhere {}

impl FreeElsewhere {
    pub fn spawn(self) {
        let spawned = std::thread::Builder::new()
            .name("cpx-free".into())
            .spawn(move || drop(self));
        // If no thread can be made, the contexts were dropped with the closure: fine, just slower.
        let _ = spawned;
    }
}
