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

use super::{mp4, mpegts};

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
    Manifest {
        rule: usize,
        path: String,
    },
    Media {
        path: String,
        segment: bool,
        /// A continuation's init segment or segment header: the bytes already on disk, put
        /// back when libav closes its copy (the earlier segments were written against them).
        preserve: Option<Vec<u8>>,
        /// A continuation's init segment: its index (DASH: the representation, libav opens
        /// them in stream order; HLS fMP4: 0).
        init_rep: Option<usize>,
    },
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
    /// This output carries on a session another job started (see
    /// [`IoHooks::continue_session`]).
    continuation: Option<Continuation>,
}

/// What a continuation keeps from the session it carries on.
struct Continuation {
    /// The session's manifest (DASH MPD, HLS playlist) as the earlier job last wrote it.
    prev_manifest: Option<String>,
    /// Media seconds of the session before this job.
    elapsed: f64,
    /// Segments listed (DASH `window_size`, HLS `hls_list_size`), None = all.
    window: Option<usize>,
    /// Init segments opened so far (DASH: their representation is the open order; HLS fMP4
    /// writes one, for all its tracks).
    inits_opened: usize,
    /// Per init segment (DASH representation; 0 for HLS fMP4), per track: ticks to add to this
    /// job's fragment times so that they are right against the kept init segment (see
    /// [`mp4::init_shifts`]). Known once libav closes its own init segment.
    shift: HashMap<usize, mp4::TrackShifts>,
    /// HLS: how this job's segments continue the earlier job's last one (looked up at the
    /// first segment; `Some(None)` when it cannot be read).
    hls_join: Option<Option<HlsJoin>>,
}

/// How an HLS continuation's segments continue the earlier job's last segment.
#[derive(Clone, Copy)]
enum HlsJoin {
    /// fMP4: the `mfhd` sequence number of the earlier job's last segment.
    Sequence(u64),
    /// MPEG-TS: 90 kHz ticks to add to this job's timestamps so that its first video frame
    /// follows the earlier segment's last one (see `mpegts.rs`).
    Ticks(i64),
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
                continuation: None,
            })),
        }
    }

    /// Marks this output as the continuation of a session that another job started and lost
    /// (after `elapsed` media seconds): init segments and segment headers already on disk are
    /// kept as they are (the earlier segments were written against them; a header written
    /// here would differ, e.g. in its edit list), and DASH manifests keep listing the earlier
    /// segments (read from the MPD on disk) within `window` segments, as one uninterrupted job
    /// would have listed them; HLS playlists likewise (see [`splice_m3u8`]). Media segments
    /// are re-timed to follow the earlier ones (see [`shift_continued_segment`]).
    /// `prev_manifest` is the MPD or playlist as it was before this job opened its output
    /// (opening it truncates it).
    pub fn continue_session(
        &self,
        elapsed: f64,
        window: Option<usize>,
        prev_manifest: Option<String>,
    ) {
        let mut st = lock(&self.state);
        let prev_manifest =
            prev_manifest.filter(|_| matches!(st.kind, IoKind::Dash { .. } | IoKind::Hls { .. }));
        st.continuation = Some(Continuation {
            prev_manifest,
            elapsed,
            window,
            inits_opened: 0,
            shift: HashMap::new(),
            hls_join: None,
        });
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

/// One `<S>` of a SegmentTimeline, expanded: start and duration in the timescale.
type TimelineEntry = (u64, u64);

/// The value of attribute `name` in the tag text `tag` (`name="value"`).
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let i = tag.find(&key)? + key.len();
    let rest = &tag[i..];
    Some(&rest[..rest.find('"')?])
}

/// Each `<Representation id=…>` of an MPD: (id, byte range of its element).
fn representations(mpd: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = mpd[from..].find("<Representation ") {
        let start = from + i;
        let Some(len) = mpd[start..].find("</Representation>") else {
            break;
        };
        let end = start + len + "</Representation>".len();
        let head_end = mpd[start..].find('>').map_or(end, |j| start + j);
        if let Some(id) = attr(&mpd[start..head_end], "id") {
            out.push((id.to_string(), start..end));
        }
        from = end;
    }
    out
}

/// The start number and the expanded timeline of one Representation element, with the byte
/// range of the `<SegmentTimeline>` contents.
fn timeline(rep: &str) -> Option<(u64, Vec<TimelineEntry>, std::ops::Range<usize>)> {
    let tpl = rep.find("<SegmentTemplate ")?;
    let tpl_head = &rep[tpl..tpl + rep[tpl..].find('>')?];
    let start: u64 = attr(tpl_head, "startNumber").unwrap_or("1").parse().ok()?;
    let open = rep.find("<SegmentTimeline>")? + "<SegmentTimeline>".len();
    let close = open + rep[open..].find("</SegmentTimeline>")?;
    let mut entries = Vec::new();
    let mut next_t = 0u64;
    for s in rep[open..close].split("<S ").skip(1) {
        let tag = format!(" {}", &s[..s.find("/>")?]);
        let d: u64 = attr(&tag, "d")?.parse().ok()?;
        let mut t: u64 = match attr(&tag, "t") {
            Some(t) => t.parse().ok()?,
            None => next_t,
        };
        let r: i64 = attr(&tag, "r").map_or(Ok(0), str::parse).ok()?;
        for _ in 0..=r.max(0) {
            entries.push((t, d));
            t += d;
        }
        next_t = t;
    }
    Some((start, entries, open..close))
}

/// SegmentTimeline contents for `entries` (the way dashenc writes them: `t` on the first
/// entry and after a discontinuity, runs of equal durations as `r`), indented like `indent`.
fn timeline_xml(entries: &[TimelineEntry], indent: &str) -> String {
    let mut out = String::new();
    let mut i = 0;
    let mut expected: Option<u64> = None;
    while i < entries.len() {
        let (t, d) = entries[i];
        let mut run = 1;
        while i + run < entries.len() && entries[i + run] == (t + d * run as u64, d) {
            run += 1;
        }
        out.push_str(&format!("\n{indent}<S "));
        if expected != Some(t) {
            out.push_str(&format!("t=\"{t}\" "));
        }
        out.push_str(&format!("d=\"{d}\" "));
        if run > 1 {
            out.push_str(&format!("r=\"{}\" ", run - 1));
        }
        out.push_str("/>");
        expected = Some(t + d * run as u64);
        i += run;
    }
    // Close on the line of `</SegmentTimeline>`, one level out.
    out.push('\n');
    out.push_str(indent.strip_suffix('\t').unwrap_or(indent));
    out
}

/// An xs:duration as dashenc writes it (`PT1H2M3.4S`) in seconds.
fn parse_pt(v: &str) -> Option<f64> {
    let mut rest = v.strip_prefix("PT")?;
    let mut secs = 0.0;
    for (unit, mul) in [('H', 3600.0), ('M', 60.0), ('S', 1.0)] {
        if let Some(i) = rest.find(unit) {
            secs += rest[..i].parse::<f64>().ok()? * mul;
            rest = &rest[i + 1..];
        }
    }
    rest.is_empty().then_some(secs)
}

/// Seconds as dashenc's `write_time` formats them.
fn format_pt(secs: f64) -> String {
    let tenths = (secs.max(0.0) * 10.0).floor() as u64;
    let (s, f) = (tenths / 10, tenths % 10);
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::from("PT");
    if h > 0 {
        out.push_str(&format!("{h}H"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}M"));
    }
    out.push_str(&format!("{s}.{f}S"));
    out
}

/// A continuation's MPD (`ours`, its segments numbered from where the session resumed) with
/// the earlier job's segments (from `prev`, its last MPD) listed before its own, within
/// `window` segments, so that PMS sees the one session it started: per representation the
/// earlier timeline entries numbered below ours, then ours; `startNumber` moves back to the
/// first one listed, and a final `mediaPresentationDuration` covers the `elapsed` seconds
/// before this job too. Representations without a timeline are left alone.
pub fn splice_mpd(prev: &str, ours: &str, elapsed: f64, window: Option<usize>) -> String {
    let prev_reps: HashMap<String, (u64, Vec<TimelineEntry>)> = representations(prev)
        .into_iter()
        .filter_map(|(id, r)| timeline(&prev[r]).map(|(n, e, _)| (id, (n, e))))
        .collect();
    let mut out = String::with_capacity(ours.len() + 256);
    let mut copied = 0;
    for (id, range) in representations(ours) {
        let rep = &ours[range.clone()];
        let (Some((start, entries, tl)), Some((prev_start, prev_entries))) =
            (timeline(rep), prev_reps.get(&id))
        else {
            continue;
        };
        let earlier = prev_entries
            .iter()
            .enumerate()
            .filter(|(i, _)| prev_start + (*i as u64) < start)
            .map(|(_, e)| *e);
        let mut all: Vec<TimelineEntry> = earlier.chain(entries.iter().copied()).collect();
        let earlier_n = all.len() - entries.len();
        let mut first = start - earlier_n as u64;
        if let Some(w) = window
            && all.len() > w
        {
            let cut = all.len() - w;
            all.drain(..cut);
            first += cut as u64;
        }
        let indent: String = {
            let before = &rep[..tl.start];
            let line = before.rfind('\n').map_or(before, |i| &before[i + 1..]);
            let ws: String = line.chars().take_while(|c| c.is_whitespace()).collect();
            format!("{ws}\t")
        };
        let mut new_rep = String::with_capacity(rep.len() + 128);
        new_rep.push_str(&rep[..tl.start]);
        new_rep.push_str(&timeline_xml(&all, &indent));
        new_rep.push_str(&rep[tl.end..]);
        let new_rep = new_rep.replacen(
            &format!(" startNumber=\"{start}\""),
            &format!(" startNumber=\"{first}\""),
            1,
        );
        out.push_str(&ours[copied..range.start]);
        out.push_str(&new_rep);
        copied = range.end;
    }
    out.push_str(&ours[copied..]);
    let key = "mediaPresentationDuration=\"";
    if let Some(i) = out.find(key) {
        let v0 = i + key.len();
        if let Some(len) = out[v0..].find('"')
            && let Some(d) = parse_pt(&out[v0..v0 + len])
        {
            out.replace_range(v0..v0 + len, &format_pt(d + elapsed));
        }
    }
    out
}

/// Makes a continuation's just-closed media segment `path` join the earlier job's: DASH and
/// HLS fMP4 fragments move in time against the kept init segment and get the `mfhd` sequence
/// number one uninterrupted job would have written; HLS MPEG-TS segments move by the earlier
/// job's `avoid_negative_ts` shift (see [`hls_join`]). Nothing to do outside continuations.
fn shift_continued_segment(st: &mut State, path: &str) {
    let Some(c) = &st.continuation else {
        return;
    };
    let name = basename(path.strip_suffix(".tmp").unwrap_or(path));
    let (init, sequence) = match &st.kind {
        IoKind::Dash { start_number, .. } => {
            let Some((rep, n, _)) = parse_hidden(name) else {
                return;
            };
            let Ok(r) = rep.parse::<usize>() else {
                return;
            };
            (r, Some(n + start_number - 1))
        }
        IoKind::Hls { start_number, .. } => {
            let fmp4 = c.shift.contains_key(&0);
            let start_number = *start_number;
            let join = match c.hls_join {
                Some(j) => j,
                None => {
                    let j = hls_join(st, start_number, path, fmp4);
                    if let Some(c) = &mut st.continuation {
                        c.hls_join = Some(j);
                    }
                    j
                }
            };
            match join {
                Some(HlsJoin::Ticks(t)) if !fmp4 => {
                    if t != 0
                        && let Err(e) = mpegts::shift_file(Path::new(path), t)
                    {
                        st.events.push(IoEvent::Error(format!("{path}: {e}")));
                    }
                    return;
                }
                Some(HlsJoin::Sequence(b)) if fmp4 => (0, Some(b + st.closed_segments + 1)),
                _ if fmp4 => (0, None),
                _ => return,
            }
        }
        IoKind::Segment { .. } => return,
    };
    let shifts = st
        .continuation
        .as_ref()
        .and_then(|c| c.shift.get(&init).cloned())
        .unwrap_or_default();
    if let Err(e) = mp4::shift_fragment_file(Path::new(path), &shifts, sequence) {
        st.events.push(IoEvent::Error(format!("{path}: {e}")));
    }
}

/// How this HLS continuation's first segment (`first`, just closed) continues the segment
/// numbered `start_number - 1` (the earlier job's last before it, found through the earlier
/// playlist): fMP4 counts on its `mfhd` sequence number; MPEG-TS moves by the difference
/// between where that segment's video ends and where ours starts, which is libav's
/// `avoid_negative_ts` shift of the earlier job (no more than a second, else nothing moves).
fn hls_join(st: &State, start_number: u64, first: &str, fmp4: bool) -> Option<HlsJoin> {
    let prev = st.continuation.as_ref()?.prev_manifest.as_ref()?;
    let playlist = Path::new(&st.manifests.first()?.path);
    let list = M3u8::parse(prev);
    let i = usize::try_from(start_number.checked_sub(1)?.checked_sub(list.sequence)?).ok()?;
    let uri = list.entries.get(i)?.lines().last()?;
    let file = match playlist.parent() {
        Some(dir) if !uri.starts_with('/') => dir.join(uri),
        _ => PathBuf::from(uri),
    };
    let earlier = std::fs::read(file).ok()?;
    if fmp4 {
        return mp4::sequence_number(&earlier).map(|s| HlsJoin::Sequence(u64::from(s)));
    }
    let ours = mpegts::video_start(&std::fs::read(first).ok()?)?;
    let ticks = mpegts::video_end(&earlier)? - ours;
    (ticks.abs() <= 90_000).then_some(HlsJoin::Ticks(ticks))
}

/// An HLS media playlist as hlsenc writes it: the header up to the first segment, each
/// segment's lines (its tags, then its URI), and what follows the last URI.
struct M3u8<'a> {
    header: Vec<&'a str>,
    sequence: u64,
    target_duration: u64,
    entries: Vec<String>,
    footer: Vec<&'a str>,
}

impl<'a> M3u8<'a> {
    fn parse(body: &'a str) -> Self {
        let mut m = M3u8 {
            header: Vec::new(),
            sequence: 0,
            target_duration: 0,
            entries: Vec::new(),
            footer: Vec::new(),
        };
        // Tags that belong to the segment after them (the rest before the first segment is
        // the playlist's header).
        const SEGMENT_TAGS: [&str; 4] = [
            "#EXTINF:",
            "#EXT-X-DISCONTINUITY",
            "#EXT-X-PROGRAM-DATE-TIME:",
            "#EXT-X-BYTERANGE:",
        ];
        let mut pending: Vec<&str> = Vec::new();
        for line in body.lines() {
            if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                m.sequence = v.trim().parse().unwrap_or(0);
            }
            if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                m.target_duration = v.trim().parse().unwrap_or(0);
            }
            if !line.is_empty() && !line.starts_with('#') {
                pending.push(line);
                m.entries.push(pending.join("\n"));
                pending.clear();
            } else if m.entries.is_empty()
                && pending.is_empty()
                && !SEGMENT_TAGS.iter().any(|t| line.starts_with(t))
            {
                m.header.push(line);
            } else {
                pending.push(line);
            }
        }
        m.footer = pending;
        m
    }
}

/// A continuation's HLS playlist (`ours`, its segments numbered from where the session
/// resumed) with the earlier job's segments (from `prev`, its last playlist) listed before its
/// own, within `window` segments, as one uninterrupted job would have listed them: the earlier
/// entries numbered below ours (with their own durations), then ours; `#EXT-X-MEDIA-SEQUENCE`
/// moves back to the first one listed and `#EXT-X-TARGETDURATION` covers both.
pub fn splice_m3u8(prev: &str, ours: &str, window: Option<usize>) -> String {
    let (p, o) = (M3u8::parse(prev), M3u8::parse(ours));
    let earlier = p
        .entries
        .iter()
        .enumerate()
        .filter(|(i, _)| p.sequence + (*i as u64) < o.sequence)
        .map(|(_, e)| e.clone());
    let mut all: Vec<String> = earlier.chain(o.entries.iter().cloned()).collect();
    let mut first = o
        .sequence
        .saturating_sub((all.len() - o.entries.len()) as u64);
    if let Some(w) = window
        && all.len() > w
    {
        let cut = all.len() - w;
        all.drain(..cut);
        first += cut as u64;
    }
    let mut out = String::with_capacity(prev.len() + ours.len());
    for line in &o.header {
        if line.starts_with("#EXT-X-MEDIA-SEQUENCE:") {
            out.push_str(&format!("#EXT-X-MEDIA-SEQUENCE:{first}"));
        } else if line.starts_with("#EXT-X-TARGETDURATION:") {
            let t = o.target_duration.max(p.target_duration);
            out.push_str(&format!("#EXT-X-TARGETDURATION:{t}"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    for e in all
        .iter()
        .map(String::as_str)
        .chain(o.footer.iter().copied())
    {
        out.push_str(e);
        out.push('\n');
    }
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
        let name = basename(&path);
        let stem = name.strip_suffix(".tmp").unwrap_or(name);
        let (segment, header) = match &st.kind {
            // Besides its media segments dashenc writes only init segments (and, with
            // `hls_playlist`, playlists, which are not headers).
            IoKind::Dash { .. } => (
                stem.starts_with(DASH_HIDDEN_PREFIX),
                !stem.ends_with(".m3u8"),
            ),
            IoKind::Hls { init_name, .. } => {
                let init = Some(stem) == init_name.as_deref().map(basename) || stem == "init.mp4";
                (!stem.ends_with(".m3u8") && !init, init)
            }
            IoKind::Segment { header_name, .. } => {
                let header = Some(stem) == header_name.as_deref().map(basename);
                (!header, header)
            }
        };
        // Read before opening: opening for write truncates the file.
        let preserve = if st.continuation.is_some() && header && !segment {
            std::fs::read(path.strip_suffix(".tmp").unwrap_or(&path)).ok()
        } else {
            None
        };
        let segmenter = !matches!(st.kind, IoKind::Segment { .. });
        let init_rep = match &mut st.continuation {
            Some(c) if segmenter && header && !segment => {
                c.inits_opened += 1;
                Some(c.inits_opened - 1)
            }
            _ => None,
        };
        // SAFETY: plain forwarding.
        ret = unsafe { default_open(s, pb, url, flags, options) };
        OpenFile::Media {
            path,
            segment,
            preserve,
            init_rep,
        }
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
                } => {
                    let ours = rewrite_mpd(
                        &String::from_utf8_lossy(&body),
                        media_template,
                        *start_number,
                    );
                    match &st.continuation {
                        Some(Continuation {
                            prev_manifest: Some(prev),
                            elapsed,
                            window,
                            ..
                        }) => splice_mpd(prev, &ours, *elapsed, *window),
                        _ => ours,
                    }
                    .into_bytes()
                }
                IoKind::Hls { .. } => match &st.continuation {
                    Some(Continuation {
                        prev_manifest: Some(prev),
                        window,
                        ..
                    }) => splice_m3u8(prev, &String::from_utf8_lossy(&body), *window).into_bytes(),
                    _ => body,
                },
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
        OpenFile::Media {
            path,
            segment,
            preserve,
            init_rep,
        } => {
            let mut p = pb;
            // SAFETY: a file AVIOContext opened by avio_open2 in io_open.
            let ret = unsafe { sys::avio_closep(&mut p) };
            if let (Some(old), Some(r), Ok(new)) = (&preserve, init_rep, std::fs::read(&path))
                && let Some(shifts) = mp4::init_shifts(old, &new)
                && let Some(c) = &mut st.continuation
            {
                c.shift.insert(r, shifts);
            }
            if segment && ret >= 0 {
                shift_continued_segment(&mut st, &path);
            }
            if let Some(bytes) = preserve
                && let Err(e) = std::fs::write(&path, bytes)
            {
                st.events
                    .push(IoEvent::Error(format!("keeping the session's {path}: {e}")));
            }
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

#[cfg(test)]
mod splice_tests {
    use super::*;

    const PREV: &str = r#"<MPD type="dynamic">
	<Period id="0" start="PT0.0S">
		<AdaptationSet id="0" contentType="video">
			<Representation id="0" mimeType="video/mp4">
				<SegmentTemplate timescale="16000" initialization="init-stream$RepresentationID$.m4s" media="chunk-stream$RepresentationID$-$Number%05d$.m4s" startNumber="1">
					<SegmentTimeline>
						<S t="336" d="32000" r="2" />
					</SegmentTimeline>
				</SegmentTemplate>
			</Representation>
		</AdaptationSet>
	</Period>
</MPD>
"#;
    const OURS: &str = r#"<MPD type="static"
	mediaPresentationDuration="PT6.0S">
	<Period id="0" start="PT0.0S">
		<AdaptationSet id="0" contentType="video">
			<Representation id="0" mimeType="video/mp4">
				<SegmentTemplate timescale="16000" initialization="init-stream$RepresentationID$.m4s" media="chunk-stream$RepresentationID$-$Number%05d$.m4s" startNumber="3">
					<SegmentTimeline>
						<S t="64336" d="32000" />
						<S d="31000" />
					</SegmentTimeline>
				</SegmentTemplate>
			</Representation>
		</AdaptationSet>
	</Period>
</MPD>
"#;

    #[test]
    fn earlier_segments_are_listed_before_the_continuations() {
        let out = splice_mpd(PREV, OURS, 4.021, Some(5));
        assert!(out.contains("startNumber=\"1\""), "{out}");
        assert!(
            out.contains("mediaPresentationDuration=\"PT10.0S\""),
            "{out}"
        );
        assert!(
            out.contains(
                "<SegmentTimeline>\n\t\t\t\t\t\t<S t=\"336\" d=\"32000\" r=\"2\" />\n\t\t\t\t\t\t<S d=\"31000\" />\n\t\t\t\t\t</SegmentTimeline>"
            ),
            "{out}"
        );
        // A window of 3 drops the oldest: segments 2 (earlier job), 3 and 4 (this one).
        let out = splice_mpd(PREV, OURS, 4.021, Some(3));
        assert!(out.contains("startNumber=\"2\""), "{out}");
        assert!(
            out.contains("<S t=\"32336\" d=\"32000\" r=\"1\" />"),
            "{out}"
        );
        assert_eq!(format_pt(3725.46), "PT1H2M5.4S");
        assert_eq!(parse_pt("PT1H2M5.4S"), Some(3725.4));
    }
}

#[cfg(test)]
mod m3u8_tests {
    use super::*;

    const PREV: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"i.mp4\"\n#EXTINF:2.000000,\ns0.mp4\n#EXTINF:2.000000,\ns1.mp4\n#EXTINF:2.000000,\ns2.mp4\n#EXTINF:0.500000,\ns3.mp4\n#EXT-X-ENDLIST\n";
    const OURS: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-MAP:URI=\"i.mp4\"\n#EXTINF:2.500000,\ns3.mp4\n#EXTINF:1.000000,\ns4.mp4\n";

    #[test]
    fn earlier_segments_are_listed_before_the_continuations() {
        let out = splice_m3u8(PREV, OURS, None);
        assert_eq!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"i.mp4\"\n#EXTINF:2.000000,\ns0.mp4\n#EXTINF:2.000000,\ns1.mp4\n#EXTINF:2.000000,\ns2.mp4\n#EXTINF:2.500000,\ns3.mp4\n#EXTINF:1.000000,\ns4.mp4\n"
        );
        // `-hls_list_size 3`: the oldest leave the window and the media sequence follows.
        let out = splice_m3u8(PREV, OURS, Some(3));
        assert!(out.contains("#EXT-X-MEDIA-SEQUENCE:2\n"), "{out}");
        assert!(!out.contains("s1.mp4"), "{out}");
        assert!(
            out.contains("#EXTINF:2.000000,\ns2.mp4\n#EXTINF:2.500000,\ns3.mp4\n"),
            "{out}"
        );
        // The final playlist keeps its end tag after the segments.
        let ended = format!("{OURS}#EXT-X-ENDLIST\n");
        assert!(splice_m3u8(PREV, &ended, None).ends_with("s4.mp4\n#EXT-X-ENDLIST\n"));
    }
}
