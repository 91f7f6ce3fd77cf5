//! Custom `io_open`/`io_close2` callbacks for segmenting muxers (dash, hls, segment).
//!
//! Why: libavformat's own segmenters do the cutting, but ClusterPlex must (a) hand manifests
//! to a callback (Plex wants them POSTed), (b) know when each segment file is complete, and
//! (c) number DASH segments from a start number other than 1, which FFmpeg 5.1's dash muxer
//! cannot do. Manifests are therefore captured in memory (dynamic AVIOContext), rewritten when
//! needed, written to disk ourselves and queued as events; media files are opened normally and
//! queued as "segment closed" when libavformat closes them. DASH media segments are written
//! under hidden `cpxtmp-` names and renamed to the requested template with the offset applied.
//!
//! Threading: the callbacks run on the engine thread that drives the muxer; the state is
//! behind a `Mutex` only because the pb-to-state registry is process-global (several engines
//! may run in parallel threads).

use std::{
    collections::HashMap,
    ffi::{CStr, c_char, c_int, c_void},
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard, OnceLock},
};

use ffmpeg_next::ffi as sys;

/// The hidden DASH media template handed to libav; renamed to the user's template.
pub const DASH_HIDDEN_MEDIA: &str = "cpxtmp-$RepresentationID$-$Number%05d$.$ext$";
const DASH_HIDDEN_PREFIX: &str = "cpxtmp-";

/// What kind of segmenter this output is.
#[derive(Debug, Clone)]
pub enum IoKind {
    Dash {
        /// User media template (`chunk-stream$RepresentationID$-$Number%05d$.$ext$`).
        media_template: String,
        start_number: u64,
        /// Number of representations (streams), to group one segment's files.
        representations: usize,
        /// Segments kept on disk (`window_size + extra_window_size`) when old ones must be
        /// deleted (`-delete_removed` true, FFmpeg's behaviour); `None` keeps every segment
        /// (Plex's `-delete_removed false`, or no window). libav cannot delete them itself
        /// because they were renamed away from its hidden names.
        keep_segments: Option<usize>,
    },
    Hls {
        init_name: Option<String>,
        start_number: u64,
    },
    Segment {
        start_number: u64,
        header_name: Option<String>,
        /// Plex's segment-list extensions, when asked for.
        plex_list: Option<PlexList>,
    },
}

/// Plex's additions to the CSV segment list (its FFmpeg fork's `segment.c`): libav writes
/// `name,start,end` rows and these are applied on top.
#[derive(Debug, Clone, Default)]
pub struct PlexList {
    /// `-segment_list_separate_stream_times`: two more columns, the end of the audio and of
    /// the video in that segment (`-1` when the segment has none).
    pub separate_stream_times: bool,
    /// `-segment_list_unfinished`: the segment being written is listed too, `#`-prefixed.
    pub unfinished: bool,
    /// Output file name template (`media-%05d.ts`), to name the unfinished segment.
    pub template: String,
}

/// A manifest file the muxer writes: where libav writes it and where the event says it goes.
#[derive(Debug, Clone)]
pub struct ManifestRule {
    /// Path libav opens (the `.tmp` sibling also matches).
    pub path: String,
    /// Target reported in `JobEvent::Manifest` (a path or a URL).
    pub target: String,
    pub content_type: String,
}

/// Something the callbacks observed, drained by the engine after each muxer call.
#[derive(Debug, Clone)]
pub enum IoEvent {
    Segment {
        number: u64,
        paths: Vec<PathBuf>,
    },
    Manifest {
        target: String,
        content_type: String,
        body: Vec<u8>,
        last: bool,
    },
    Error(String),
}

enum OpenFile {
    Manifest { rule: usize, path: String },
    Media { path: String, segment: bool },
}

struct State {
    kind: IoKind,
    manifests: Vec<ManifestRule>,
    events: Vec<IoEvent>,
    open: HashMap<usize, OpenFile>,
    /// Segments closed so far (HLS/segment numbering).
    closed_segments: u64,
    /// DASH: (libav's final path, our final path, number).
    pending_renames: Vec<(PathBuf, PathBuf, u64)>,
    /// DASH: files of a segment number seen so far.
    dash_groups: HashMap<u64, Vec<PathBuf>>,
    bytes_closed: u64,
    finalizing: bool,
    /// Segment outputs with Plex's list extensions: (is video, start, end) of every audio and
    /// video packet muxed and not yet accounted to a listed segment.
    packets: Vec<(bool, f64, f64)>,
    /// Per-stream end columns already computed, by segment name (rows repeat in every list
    /// window and must not change).
    row_ends: HashMap<String, (f64, f64)>,
    /// Seconds libav shifted the muxed timestamps by (found at the first list row).
    packet_shift: f64,
    /// DASH segments on disk, oldest first, for `keep_segments`.
    dash_on_disk: std::collections::VecDeque<Vec<PathBuf>>,
}

/// Owns the callback state of one output; must outlive the AVFormatContext it is attached to
/// (the engine drops the context first).
pub struct IoHooks {
    state: Box<Mutex<State>>,
}

fn registry() -> &'static Mutex<HashMap<usize, usize>> {
    static R: OnceLock<Mutex<HashMap<usize, usize>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn strip_file_proto(url: &str) -> &str {
    url.strip_prefix("file:").unwrap_or(url)
}

impl IoHooks {
    pub fn new(kind: IoKind, manifests: Vec<ManifestRule>) -> Self {
        IoHooks {
            state: Box::new(Mutex::new(State {
                kind,
                manifests,
                events: Vec::new(),
                open: HashMap::new(),
                closed_segments: 0,
                pending_renames: Vec::new(),
                dash_groups: HashMap::new(),
                bytes_closed: 0,
                finalizing: false,
                packets: Vec::new(),
                row_ends: HashMap::new(),
                packet_shift: 0.0,
                dash_on_disk: Default::default(),
            })),
        }
    }

    /// Installs the callbacks on an output context before its header is written.
    pub fn install(&self, octx: &mut ffmpeg_next::format::context::Output) {
        let ptr: *const Mutex<State> = &*self.state;
        // SAFETY: the context is live and not yet writing; `ptr` points into a Box that the
        // engine keeps alive until after the context is freed (field order in `OutFile`).
        unsafe {
            let s = octx.as_mut_ptr();
            (*s).opaque = ptr as *mut c_void;
            (*s).io_open = Some(io_open);
            (*s).io_close2 = Some(io_close2);
        }
    }

    /// Marks the trailer phase: manifests written from now on are the last ones.
    pub fn set_finalizing(&self) {
        lock(&self.state).finalizing = true;
    }

    /// Performs pending DASH renames and returns queued events.
    pub fn drain(&self) -> Vec<IoEvent> {
        let mut st = lock(&self.state);
        apply_renames(&mut st);
        if st.finalizing {
            // Whatever is still grouped is complete now.
            let mut rest: Vec<(u64, Vec<PathBuf>)> = st.dash_groups.drain().collect();
            rest.sort_by_key(|(n, _)| *n);
            for (number, paths) in rest {
                st.events.push(IoEvent::Segment { number, paths });
            }
        }
        std::mem::take(&mut st.events)
    }

    /// Records a muxed audio or video packet (seconds on the muxer's timeline), for Plex's
    /// per-stream segment list columns.
    pub fn note_packet(&self, video: bool, start: f64, end: f64) {
        let mut st = lock(&self.state);
        if let IoKind::Segment {
            plex_list: Some(p), ..
        } = &st.kind
            && p.separate_stream_times
        {
            let shift = st.packet_shift;
            st.packets.push((video, start + shift, end + shift));
        }
    }

    /// Bytes of files closed so far.
    pub fn bytes_closed(&self) -> u64 {
        lock(&self.state).bytes_closed
    }
}

impl Drop for IoHooks {
    fn drop(&mut self) {
        let me = &*self.state as *const Mutex<State> as usize;
        lock(registry()).retain(|_, v| *v != me);
    }
}

/// Formats a DASH template (`$RepresentationID$`, `$Number$`, `$Number%05d$`, `$ext$`, `$$`).
pub fn format_dash_template(t: &str, rep: &str, number: u64, ext: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = t;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = after.find('$') else {
            return Err(format!("unterminated `$` in DASH template `{t}`"));
        };
        let id = &after[..j];
        match id {
            "" => out.push('$'),
            "RepresentationID" => out.push_str(rep),
            "ext" => out.push_str(ext),
            "Number" => out.push_str(&number.to_string()),
            _ if id.starts_with("Number%") => {
                let spec = &id["Number%".len()..];
                let width: usize = spec
                    .trim_end_matches('d')
                    .trim_start_matches('0')
                    .parse()
                    .unwrap_or(0);
                out.push_str(&format!("{number:0width$}"));
            }
            _ => {
                return Err(format!(
                    "DASH template identifier `${id}$` is not supported"
                ));
            }
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses a hidden DASH name `cpxtmp-<rep>-<number>.<ext>`.
fn parse_hidden(name: &str) -> Option<(String, u64, String)> {
    let rest = name.strip_prefix(DASH_HIDDEN_PREFIX)?;
    let (rep, rest) = rest.split_once('-')?;
    let (num, ext) = rest.split_once('.')?;
    Some((rep.to_string(), num.parse().ok()?, ext.to_string()))
}

/// Rewrites libav's MPD: hidden media names and template back to the user's, and the start
/// number.
fn rewrite_mpd(body: &str, template: &str, start: u64) -> String {
    // libav substitutes `$ext$` in the template it writes to the MPD.
    let hidden_stem = DASH_HIDDEN_MEDIA.trim_end_matches("$ext$");
    let mut s = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(i) = rest.find(hidden_stem) {
        s.push_str(&rest[..i]);
        let after = &rest[i + hidden_stem.len()..];
        let end = after.find(['"', '<', ' ', '\n']).unwrap_or(after.len());
        let ext = &after[..end];
        s.push_str(&template.replace("$ext$", ext));
        rest = &after[end..];
    }
    s.push_str(rest);
    if start != 1 {
        s = s.replace(" startNumber=\"1\"", &format!(" startNumber=\"{start}\""));
    }
    // SegmentList (use_template=0) lists concrete names.
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(i) = rest.find(DASH_HIDDEN_PREFIX) {
        out.push_str(&rest[..i]);
        let cand = &rest[i..];
        let end = cand.find(['"', '<', ' ', '\n']).unwrap_or(cand.len());
        match parse_hidden(&cand[..end]) {
            Some((rep, n, ext)) => {
                let name = format_dash_template(template, &rep, n + start - 1, &ext)
                    .unwrap_or_else(|_| cand[..end].to_string());
                out.push_str(&name);
            }
            None => out.push_str(&cand[..end]),
        }
        rest = &cand[end..];
    }
    out.push_str(rest);
    out
}

fn apply_renames(st: &mut State) {
    let reps = match &st.kind {
        IoKind::Dash {
            representations, ..
        } => (*representations).max(1),
        _ => 1,
    };
    let mut still = Vec::new();
    for (from, to, number) in std::mem::take(&mut st.pending_renames) {
        if !from.exists() {
            still.push((from, to, number));
            continue;
        }
        match std::fs::rename(&from, &to) {
            Ok(()) => {
                let group = st.dash_groups.entry(number).or_default();
                group.push(to);
                if group.len() >= reps {
                    let paths = st.dash_groups.remove(&number).unwrap_or_default();
                    prune_dash(st, &paths);
                    st.events.push(IoEvent::Segment { number, paths });
                }
            }
            Err(e) => st.events.push(IoEvent::Error(format!(
                "renaming {} to {}: {e}",
                from.display(),
                to.display()
            ))),
        }
    }
    st.pending_renames = still;
}

/// Deletes the oldest DASH segments beyond `keep_segments`, as FFmpeg's dash muxer does with
/// `window_size` + `extra_window_size`.
fn prune_dash(st: &mut State, done: &[PathBuf]) {
    let IoKind::Dash {
        keep_segments: Some(keep),
        ..
    } = st.kind
    else {
        return;
    };
    st.dash_on_disk.push_back(done.to_vec());
    while st.dash_on_disk.len() > keep {
        for p in st.dash_on_disk.pop_front().unwrap_or_default() {
            if let Err(e) = std::fs::remove_file(&p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                st.events.push(IoEvent::Error(format!(
                    "removing old segment {}: {e}",
                    p.display()
                )));
            }
        }
    }
}

/// Formats an image2-style output template (`media-%05d.ts`, `%d`) with `n`.
pub fn format_numbered(template: &str, n: u64) -> String {
    let Some(i) = template.find('%') else {
        return template.to_string();
    };
    let rest = &template[i + 1..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    match rest[digits.len()..].strip_prefix('d') {
        Some(after) => {
            let width: usize = digits.trim_start_matches('0').parse().unwrap_or(0);
            format!("{}{n:0width$}{after}", &template[..i])
        }
        None => template.to_string(),
    }
}

/// Applies Plex's list extensions to a CSV list libav wrote (`name,start,end` rows).
fn plex_csv(st: &mut State, rules: &PlexList, body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body).into_owned();
    let mut out = String::with_capacity(text.len() * 2);
    let mut last_end = None;
    let col = |v: f64| {
        if v < 0.0 {
            "-1".to_string()
        } else {
            format!("{v:.6}")
        }
    };
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut parts = line.rsplitn(3, ',');
        let (end, start, name) = (parts.next(), parts.next(), parts.next());
        let (Some(end), Some(start), Some(name)) = (end, start, name) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let (Ok(start), Ok(end)) = (start.parse::<f64>(), end.parse::<f64>()) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        out.push_str(line);
        if rules.separate_stream_times {
            let (a, v) = match st.row_ends.get(name) {
                Some(x) => *x,
                None => {
                    // libav may shift all timestamps after we saw them (avoid_negative_ts with
                    // AAC priming): the first row starts at the first packet, which gives the
                    // shift.
                    if st.row_ends.is_empty() {
                        let first = st.packets.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
                        if first.is_finite() {
                            let shift = start - first;
                            for p in &mut st.packets {
                                p.1 += shift;
                                p.2 += shift;
                            }
                            st.packet_shift = shift;
                        }
                    }
                    // A packet belongs to the segment its start falls in; the last segment
                    // (written with the trailer) takes everything left.
                    let last = st.finalizing;
                    let inside = |t: f64| t >= start - 1e-6 && (last || t < end - 1e-6);
                    let mut ends = (-1.0f64, -1.0f64);
                    for &(video, t, e) in &st.packets {
                        if inside(t) {
                            let slot = if video { &mut ends.1 } else { &mut ends.0 };
                            *slot = slot.max(e);
                        }
                    }
                    st.packets.retain(|&(_, t, _)| t >= end - 1e-6);
                    st.row_ends.insert(name.to_string(), ends);
                    ends
                }
            };
            out.push_str(&format!(",{},{}", col(a), col(v)));
        }
        out.push('\n');
        last_end = Some(end);
    }
    if rules.unfinished
        && !st.finalizing
        && let IoKind::Segment { start_number, .. } = st.kind
    {
        // libav writes the list while ending a segment, before closing its file: the one in
        // progress is the next number, starting where the last listed one ended.
        let next = start_number + st.closed_segments + 1;
        let start = last_end.unwrap_or(0.0);
        let name = basename(&format_numbered(&rules.template, next)).to_string();
        out.push_str(&format!("#{name},{start:.6},{start:.6}"));
        if rules.separate_stream_times {
            out.push_str(",-1,-1");
        }
        out.push('\n');
    }
    out.into_bytes()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Default open, as libavformat's own `io_open_default` does for writing/reading files.
///
/// # Safety
/// `s`, `pb` and `url` come straight from libavformat and are valid for the call.
unsafe fn default_open(
    s: *mut sys::AVFormatContext,
    pb: *mut *mut sys::AVIOContext,
    url: *const c_char,
    flags: c_int,
    options: *mut *mut sys::AVDictionary,
) -> c_int {
    // SAFETY: forwarded arguments as documented for avio_open2; the interrupt callback lives in
    // the context.
    unsafe { sys::avio_open2(pb, url, flags, &(*s).interrupt_callback, options) }
}

unsafe extern "C" fn io_open(
    s: *mut sys::AVFormatContext,
    pb: *mut *mut sys::AVIOContext,
    url: *const c_char,
    flags: c_int,
    options: *mut *mut sys::AVDictionary,
) -> c_int {
    // SAFETY: libavformat passes a live context; `opaque` is either null (a nested context that
    // did not inherit it) or the state pointer installed by `IoHooks::install`.
    let state_ptr = unsafe { (*s).opaque } as *const Mutex<State>;
    let write = flags & sys::AVIO_FLAG_WRITE as c_int != 0;
    if state_ptr.is_null() || url.is_null() || !write {
        // SAFETY: plain forwarding.
        return unsafe { default_open(s, pb, url, flags, options) };
    }
    // SAFETY: `url` is a NUL-terminated string from libavformat; `state_ptr` is live (see above).
    let (url_s, state) = unsafe {
        (
            CStr::from_ptr(url).to_string_lossy().into_owned(),
            &*state_ptr,
        )
    };
    let path = strip_file_proto(&url_s).to_string();
    let mut st = lock(state);
    apply_renames(&mut st);
    let manifest = st
        .manifests
        .iter()
        .position(|m| path == m.path || path.strip_suffix(".tmp") == Some(m.path.as_str()));
    let ret;
    let entry = if let Some(rule) = manifest {
        // SAFETY: `pb` is a valid out-pointer; the dynamic buffer is freed in io_close2.
        ret = unsafe { sys::avio_open_dyn_buf(pb) };
        OpenFile::Manifest { rule, path }
    } else {
        // SAFETY: plain forwarding.
        ret = unsafe { default_open(s, pb, url, flags, options) };
        let name = basename(&path);
        let stem = name.strip_suffix(".tmp").unwrap_or(name);
        let segment = match &st.kind {
            IoKind::Dash { .. } => stem.starts_with(DASH_HIDDEN_PREFIX),
            IoKind::Hls { init_name, .. } => {
                !stem.ends_with(".m3u8")
                    && Some(stem) != init_name.as_deref().map(basename)
                    && stem != "init.mp4"
            }
            IoKind::Segment { header_name, .. } => {
                Some(stem) != header_name.as_deref().map(basename)
            }
        };
        OpenFile::Media { path, segment }
    };
    if ret >= 0 {
        // SAFETY: on success `*pb` is the new context.
        let key = unsafe { *pb } as usize;
        st.open.insert(key, entry);
        lock(registry()).insert(key, state_ptr as usize);
    }
    ret
}

unsafe extern "C" fn io_close2(_s: *mut sys::AVFormatContext, pb: *mut sys::AVIOContext) -> c_int {
    if pb.is_null() {
        return 0;
    }
    let owner = lock(registry()).remove(&(pb as usize));
    let Some(state_addr) = owner else {
        // Not ours: close it the way libavformat's default does.
        let mut p = pb;
        // SAFETY: an AVIOContext opened by avio_open2 elsewhere; avio_closep frees it.
        return unsafe { sys::avio_closep(&mut p) };
    };
    // SAFETY: the registry only holds pointers of live `IoHooks` states (removed on drop).
    let state = unsafe { &*(state_addr as *const Mutex<State>) };
    let mut st = lock(state);
    let Some(entry) = st.open.remove(&(pb as usize)) else {
        let mut p = pb;
        // SAFETY: as above.
        return unsafe { sys::avio_closep(&mut p) };
    };
    match entry {
        OpenFile::Manifest { rule, path } => {
            let mut buf: *mut u8 = std::ptr::null_mut();
            // SAFETY: `pb` is the dynamic buffer opened in io_open; avio_close_dyn_buf frees the
            // context and hands us `size` bytes that we copy and then av_free.
            let body = unsafe {
                let size = sys::avio_close_dyn_buf(pb, &mut buf);
                let v = if buf.is_null() || size <= 0 {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(buf, size as usize).to_vec()
                };
                sys::av_free(buf as *mut c_void);
                v
            };
            let body = match &st.kind {
                IoKind::Dash {
                    media_template,
                    start_number,
                    ..
                } => rewrite_mpd(
                    &String::from_utf8_lossy(&body),
                    media_template,
                    *start_number,
                )
                .into_bytes(),
                IoKind::Segment {
                    plex_list: Some(rules),
                    ..
                } if st.manifests[rule].content_type == "text/csv" => {
                    let rules = rules.clone();
                    plex_csv(&mut st, &rules, &body)
                }
                _ => body,
            };
            if let Err(e) = std::fs::write(&path, &body) {
                st.events
                    .push(IoEvent::Error(format!("writing manifest {path}: {e}")));
                return sys::AVERROR_EXTERNAL;
            }
            let last = st.finalizing
                && match &st.kind {
                    IoKind::Dash { .. } => contains(&body, b"type=\"static\""),
                    IoKind::Hls { .. } => contains(&body, b"#EXT-X-ENDLIST"),
                    IoKind::Segment { .. } => true,
                };
            let r = &st.manifests[rule];
            let ev = IoEvent::Manifest {
                target: r.target.clone(),
                content_type: r.content_type.clone(),
                body,
                last,
            };
            st.events.push(ev);
            0
        }
        OpenFile::Media { path, segment } => {
            let mut p = pb;
            // SAFETY: a file AVIOContext opened by avio_open2 in io_open.
            let ret = unsafe { sys::avio_closep(&mut p) };
            let final_path = path.strip_suffix(".tmp").unwrap_or(&path).to_string();
            st.bytes_closed += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if segment && ret >= 0 {
                match st.kind.clone() {
                    IoKind::Dash {
                        media_template,
                        start_number,
                        ..
                    } => {
                        let dir = Path::new(&final_path)
                            .parent()
                            .map(Path::to_path_buf)
                            .unwrap_or_default();
                        if let Some((rep, n, ext)) = parse_hidden(basename(&final_path)) {
                            let number = n + start_number - 1;
                            match format_dash_template(&media_template, &rep, number, &ext) {
                                Ok(name) => st.pending_renames.push((
                                    PathBuf::from(&final_path),
                                    dir.join(name),
                                    number,
                                )),
                                Err(e) => st.events.push(IoEvent::Error(e)),
                            }
                        }
                        // Without a `.tmp` stage libav does not rename: do it now.
                        if !path.ends_with(".tmp") {
                            apply_renames(&mut st);
                        }
                    }
                    IoKind::Hls { start_number, .. } | IoKind::Segment { start_number, .. } => {
                        let number = start_number + st.closed_segments;
                        st.closed_segments += 1;
                        st.events.push(IoEvent::Segment {
                            number,
                            paths: vec![PathBuf::from(final_path)],
                        });
                    }
                }
            }
            ret
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dash_templates() {
        let t = "chunk-stream$RepresentationID$-$Number%05d$.$ext$";
        assert_eq!(
            format_dash_template(t, "0", 100, "m4s").unwrap(),
            "chunk-stream0-00100.m4s"
        );
        assert_eq!(
            format_dash_template("a$Number$$$", "1", 7, "x").unwrap(),
            "a7$"
        );
        assert!(format_dash_template("$Time$", "0", 1, "m4s").is_err());
        assert_eq!(
            parse_hidden("cpxtmp-1-00003.m4s"),
            Some(("1".into(), 3, "m4s".into()))
        );
    }

    #[test]
    fn mpd_rewrite() {
        let body = String::from(
            "<SegmentTemplate timescale=\"1000\" initialization=\"init-stream$RepresentationID$.m4s\" media=\"cpxtmp-$RepresentationID$-$Number%05d$.m4s\" startNumber=\"1\">\n<S t=\"0\"/><BaseURL>cpxtmp-0-00002.m4s</BaseURL>",
        );
        let out = rewrite_mpd(
            &body,
            "chunk-stream$RepresentationID$-$Number%05d$.$ext$",
            100,
        );
        assert!(out.contains("media=\"chunk-stream$RepresentationID$-$Number%05d$.m4s\""));
        assert!(out.contains("startNumber=\"100\""));
        assert!(out.contains("chunk-stream0-00101.m4s"));
        assert!(!out.contains("cpxtmp"));
    }
}
