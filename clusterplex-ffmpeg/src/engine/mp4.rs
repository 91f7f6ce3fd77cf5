//! The few ISO BMFF boxes a DASH or HLS fMP4 continuation must read or adjust (see `io.rs`):
//! the track starts an init segment's edit lists encode, and the times and sequence number of
//! a fragment. Plain byte work on files libav has just closed; no libav state involved.

use std::path::Path;

/// Boxes as (type, payload range, whole-box range) at `data[range]`.
fn boxes(data: &[u8], range: std::ops::Range<usize>) -> Vec<([u8; 4], std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut off = range.start;
    while off + 8 <= range.end {
        let size = u32::from_be_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]);
        let kind = [data[off + 4], data[off + 5], data[off + 6], data[off + 7]];
        let (header, size) = match size {
            1 if off + 16 <= range.end => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[off + 8..off + 16]);
                (16, u64::from_be_bytes(b) as usize)
            }
            0 => (8, range.end - off),
            n => (8, n as usize),
        };
        if size < header || off + size > range.end {
            break;
        }
        out.push((kind, off + header..off + size));
        off += size;
    }
    out
}

fn child(
    data: &[u8],
    range: std::ops::Range<usize>,
    kind: &[u8; 4],
) -> Option<std::ops::Range<usize>> {
    boxes(data, range)
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, r)| r)
}

fn be32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

fn be64(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

/// The timescale of a full box `mvhd` / `mdhd` payload.
fn timescale(d: &[u8], payload: &std::ops::Range<usize>) -> Option<u64> {
    let version = *d.get(payload.start)?;
    let at = payload.start + if version == 1 { 20 } else { 12 };
    be32(d, at).map(u64::from).filter(|t| *t > 0)
}

/// Where one track starts in its own timescale: the empty edits of its edit list minus the
/// first real edit's media time (how libav's mp4 muxer records a track's first timestamp); 0
/// without an edit list.
fn trak_start(init: &[u8], trak: std::ops::Range<usize>, movie_ts: u64) -> Option<i64> {
    let mdia = child(init, trak.clone(), b"mdia")?;
    let track_ts = timescale(init, &child(init, mdia, b"mdhd")?)?;
    let Some(edts) = child(init, trak, b"edts") else {
        return Some(0);
    };
    let elst = child(init, edts, b"elst")?;
    let version = *init.get(elst.start)?;
    let count = be32(init, elst.start + 4)?;
    let (entry, mut at) = (if version == 1 { 20 } else { 12 }, elst.start + 8);
    let mut empty: u64 = 0;
    for _ in 0..count {
        let (dur, media) = if version == 1 {
            (be64(init, at)?, be64(init, at + 8)? as i64)
        } else {
            (
                u64::from(be32(init, at)?),
                i64::from(be32(init, at + 4)? as i32),
            )
        };
        if media == -1 {
            empty += dur;
        } else {
            let empty_ticks = (empty as u128 * track_ts as u128 / movie_ts as u128) as i64;
            return Some(empty_ticks - media);
        }
        at += entry;
    }
    Some(0)
}

/// The `track_ID` of a `tkhd` payload.
fn track_id(d: &[u8], tkhd: &std::ops::Range<usize>) -> Option<u32> {
    let version = *d.get(tkhd.start)?;
    be32(d, tkhd.start + if version == 1 { 20 } else { 12 })
}

/// Where every track of an init segment starts, by `track_ID`, in the track's timescale
/// (see [`trak_start`]). A DASH init segment has one track; an HLS fMP4 one has them all.
pub fn track_starts(init: &[u8]) -> Option<TrackShifts> {
    let moov = child(init, 0..init.len(), b"moov")?;
    let movie_ts = timescale(init, &child(init, moov.clone(), b"mvhd")?)?;
    let mut out = TrackShifts::new();
    for (kind, trak) in boxes(init, moov) {
        if &kind != b"trak" {
            continue;
        }
        let id = track_id(init, &child(init, trak.clone(), b"tkhd")?)?;
        out.insert(id, trak_start(init, trak, movie_ts)?);
    }
    (!out.is_empty()).then_some(out)
}

/// Ticks per `track_ID`.
pub type TrackShifts = std::collections::HashMap<u32, i64>;

/// What a continuation's fragments must move by so that they are right against the init
/// segment it kept (`kept`) rather than the one libav wrote for it (`new`): libav writes
/// fragment times relative to each track's first timestamp and puts that start in the init
/// segment's edit list, so every track moves by the difference of the two starts.
pub fn init_shifts(kept: &[u8], new: &[u8]) -> Option<TrackShifts> {
    let (kept, new) = (track_starts(kept)?, track_starts(new)?);
    Some(
        new.iter()
            .filter_map(|(id, s_new)| kept.get(id).map(|s_old| (*id, s_new - s_old)))
            .collect(),
    )
}

/// The `mfhd` sequence number of the first fragment of a media segment.
pub fn sequence_number(data: &[u8]) -> Option<u32> {
    let moof = child(data, 0..data.len(), b"moof")?;
    let mfhd = child(data, moof, b"mfhd")?;
    be32(data, mfhd.start + 4)
}

/// Adds to the fragment times (`sidx` earliest presentation time, every `traf`'s `tfdt`) of a
/// media segment the ticks `shifts` gives for their track (`sidx` reference_ID, `tfhd`
/// track_ID; tracks not in it stay) and sets its `mfhd` sequence number to `sequence` (when
/// given).
pub fn shift_fragment(
    data: &mut [u8],
    shifts: &TrackShifts,
    sequence: Option<u64>,
) -> Result<(), String> {
    let add = |v: u64, shift: i64| -> Result<u64, String> {
        v.checked_add_signed(shift)
            .ok_or_else(|| format!("fragment time {v} cannot move by {shift}"))
    };
    let shift_of = |id: Option<u32>| id.and_then(|id| shifts.get(&id).copied()).unwrap_or(0);
    for (kind, r) in boxes(data, 0..data.len()) {
        match &kind {
            b"sidx" => {
                let shift = shift_of(be32(data, r.start + 4));
                let version = data[r.start];
                let at = r.start + 12;
                if version == 1 {
                    let v = add(be64(data, at).ok_or("short sidx")?, shift)?;
                    data[at..at + 8].copy_from_slice(&v.to_be_bytes());
                } else {
                    let v = add(u64::from(be32(data, at).ok_or("short sidx")?), shift)?;
                    let v = u32::try_from(v).map_err(|_| "sidx time overflows 32 bits")?;
                    data[at..at + 4].copy_from_slice(&v.to_be_bytes());
                }
            }
            b"moof" => {
                for (k, rr) in boxes(data, r.clone()) {
                    if &k == b"mfhd"
                        && let Some(sequence) = sequence
                    {
                        let seq = u32::try_from(sequence).unwrap_or(u32::MAX);
                        data[rr.start + 4..rr.start + 8].copy_from_slice(&seq.to_be_bytes());
                    }
                    if &k != b"traf" {
                        continue;
                    }
                    let shift = shift_of(
                        child(data, rr.clone(), b"tfhd").and_then(|h| be32(data, h.start + 4)),
                    );
                    let Some(tfdt) = child(data, rr, b"tfdt") else {
                        continue;
                    };
                    let at = tfdt.start + 4;
                    if data[tfdt.start] == 1 {
                        let v = add(be64(data, at).ok_or("short tfdt")?, shift)?;
                        data[at..at + 8].copy_from_slice(&v.to_be_bytes());
                    } else {
                        let v = add(u64::from(be32(data, at).ok_or("short tfdt")?), shift)?;
                        let v = u32::try_from(v).map_err(|_| "tfdt overflows 32 bits")?;
                        data[at..at + 4].copy_from_slice(&v.to_be_bytes());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// [`shift_fragment`] on a file.
pub fn shift_fragment_file(
    path: &Path,
    shifts: &TrackShifts,
    sequence: Option<u64>,
) -> Result<(), String> {
    let mut data = std::fs::read(path).map_err(|e| e.to_string())?;
    shift_fragment(&mut data, shifts, sequence)?;
    std::fs::write(path, data).map_err(|e| e.to_string())
}
