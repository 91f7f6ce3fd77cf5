//! The few ISO BMFF boxes a DASH continuation must read or adjust (see `io.rs`): the track
//! start an init segment's edit list encodes, and the times and sequence number of a
//! fragment. Plain byte work on files libav has just closed; no libav state involved.

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

/// Where the first track of an init segment starts, in its own timescale: the empty edits
/// of its edit list minus the first real edit's media time (how libav's mp4 muxer records a
/// track's first timestamp); 0 without an edit list.
pub fn track_start(init: &[u8]) -> Option<i64> {
    let moov = child(init, 0..init.len(), b"moov")?;
    let movie_ts = timescale(init, &child(init, moov.clone(), b"mvhd")?)?;
    let trak = child(init, moov, b"trak")?;
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

/// Adds `shift` ticks to the fragment times (`sidx` earliest presentation time, every
/// `traf`'s `tfdt`) of a media segment and sets its `mfhd` sequence number to `sequence`.
pub fn shift_fragment(data: &mut [u8], shift: i64, sequence: u64) -> Result<(), String> {
    let add = |v: u64| -> Result<u64, String> {
        v.checked_add_signed(shift)
            .ok_or_else(|| format!("fragment time {v} cannot move by {shift}"))
    };
    for (kind, r) in boxes(data, 0..data.len()) {
        match &kind {
            b"sidx" => {
                let version = data[r.start];
                let at = r.start + 12;
                if version == 1 {
                    let v = add(be64(data, at).ok_or("short sidx")?)?;
                    data[at..at + 8].copy_from_slice(&v.to_be_bytes());
                } else {
                    let v = add(u64::from(be32(data, at).ok_or("short sidx")?))?;
                    let v = u32::try_from(v).map_err(|_| "sidx time overflows 32 bits")?;
                    data[at..at + 4].copy_from_slice(&v.to_be_bytes());
                }
            }
            b"moof" => {
                for (k, rr) in boxes(data, r.clone()) {
                    if &k == b"mfhd" {
                        let seq = u32::try_from(sequence).unwrap_or(u32::MAX);
                        data[rr.start + 4..rr.start + 8].copy_from_slice(&seq.to_be_bytes());
                    }
                    if &k != b"traf" {
                        continue;
                    }
                    let Some(tfdt) = child(data, rr, b"tfdt") else {
                        continue;
                    };
                    let at = tfdt.start + 4;
                    if data[tfdt.start] == 1 {
                        let v = add(be64(data, at).ok_or("short tfdt")?)?;
                        data[at..at + 8].copy_from_slice(&v.to_be_bytes());
                    } else {
                        let v = add(u64::from(be32(data, at).ok_or("short tfdt")?))?;
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
pub fn shift_fragment_file(path: &Path, shift: i64, sequence: u64) -> Result<(), String> {
    let mut data = std::fs::read(path).map_err(|e| e.to_string())?;
    shift_fragment(&mut data, shift, sequence)?;
    std::fs::write(path, data).map_err(|e| e.to_string())
}
