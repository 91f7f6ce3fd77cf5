//! The MPEG-TS timestamps an HLS mpegts continuation must read or move (see `io.rs`): libav's
//! muxer shifts a job's timestamps by its first negative one (`avoid_negative_ts`, e.g. the
//! AAC encoder's priming at the start of a session), which a continuation resuming mid-way
//! does not have, so its segments would land that much early. Plain byte work on 188-byte
//! packets of files libav has just closed; no libav state involved.

use std::path::Path;

const PACKET: usize = 188;
/// PTS/DTS/PCR base wrap (33 bits).
const WRAP: i64 = 1 << 33;

/// Where each packet's PES timestamps (PTS, and DTS when present) and PCR lie.
struct Stamps {
    /// (byte offset of a 5-byte PTS/DTS field, PES stream_id)
    pes: Vec<(usize, u8)>,
    /// byte offsets of 6-byte PCR fields
    pcr: Vec<usize>,
}

fn scan(data: &[u8]) -> Option<Stamps> {
    if data.is_empty() || !data.len().is_multiple_of(PACKET) {
        return None;
    }
    let mut s = Stamps {
        pes: Vec::new(),
        pcr: Vec::new(),
    };
    for at in (0..data.len()).step_by(PACKET) {
        let p = &data[at..at + PACKET];
        if p[0] != 0x47 {
            return None;
        }
        let pusi = p[1] & 0x40 != 0;
        let afc = (p[3] >> 4) & 3;
        let mut payload = 4;
        if afc & 2 != 0 {
            let len = usize::from(p[4]);
            if len > 0 && p[5] & 0x10 != 0 && len >= 7 {
                s.pcr.push(at + 6);
            }
            payload = 5 + len;
        }
        if afc & 1 == 0 || !pusi || payload + 19 > PACKET {
            continue;
        }
        let pes = &p[payload..];
        // A PES start code with the optional header ('10' marker bits).
        if pes[..3] != [0, 0, 1] || pes[6] & 0xC0 != 0x80 {
            continue;
        }
        let flags = pes[7] >> 6;
        if flags & 2 != 0 {
            s.pes.push((at + payload + 9, pes[3]));
        }
        if flags == 3 {
            s.pes.push((at + payload + 14, pes[3]));
        }
    }
    Some(s)
}

fn read_ts(b: &[u8]) -> i64 {
    (i64::from((b[0] >> 1) & 7) << 30)
        | (i64::from(b[1]) << 22)
        | (i64::from(b[2] >> 1) << 15)
        | (i64::from(b[3]) << 7)
        | i64::from(b[4] >> 1)
}

fn write_ts(b: &mut [u8], v: i64) {
    // Keep the prefix nibble and the marker bits.
    b[0] = (b[0] & 0xF1) | (((v >> 30) & 7) as u8) << 1;
    b[1] = (v >> 22) as u8;
    b[2] = (((v >> 15) & 0x7F) as u8) << 1 | 1;
    b[3] = (v >> 7) as u8;
    b[4] = ((v & 0x7F) as u8) << 1 | 1;
}

/// The PTS values (90 kHz) of the video PES packets (stream ids 0xE0-0xEF) of a segment.
fn video_pts(data: &[u8]) -> Option<Vec<i64>> {
    let s = scan(data)?;
    let mut out = Vec::new();
    let mut last_at = None;
    for (at, id) in s.pes {
        // The DTS of a packet follows its PTS: keep the first field of each PES header.
        if last_at.is_some_and(|l: usize| at == l + 5) {
            continue;
        }
        last_at = Some(at);
        if (0xE0..=0xEF).contains(&id) {
            out.push(read_ts(&data[at..at + 5]));
        }
    }
    Some(out)
}

/// Where the video of a segment ends (90 kHz): its last presented frame's PTS plus one frame
/// (the smallest step between its frames).
pub fn video_end(data: &[u8]) -> Option<i64> {
    let mut pts = video_pts(data)?;
    pts.sort_unstable();
    let step = pts
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0)
        .min()?;
    Some(pts.last()? + step)
}

/// Where the video of a segment starts (90 kHz): its first presented frame's PTS.
pub fn video_start(data: &[u8]) -> Option<i64> {
    video_pts(data)?.into_iter().min()
}

/// Adds `shift` ticks (90 kHz) to every PES PTS/DTS and PCR of an MPEG-TS file.
pub fn shift_file(path: &Path, shift: i64) -> Result<(), String> {
    let mut data = std::fs::read(path).map_err(|e| e.to_string())?;
    let s = scan(&data).ok_or("not an MPEG-TS file")?;
    for (at, _) in s.pes {
        let v = (read_ts(&data[at..at + 5]) + shift).rem_euclid(WRAP);
        write_ts(&mut data[at..at + 5], v);
    }
    for at in s.pcr {
        let b = &data[at..at + 6];
        let base = (i64::from(b[0]) << 25)
            | (i64::from(b[1]) << 17)
            | (i64::from(b[2]) << 9)
            | (i64::from(b[3]) << 1)
            | i64::from(b[4] >> 7);
        let v = (base + shift).rem_euclid(WRAP);
        data[at] = (v >> 25) as u8;
        data[at + 1] = (v >> 17) as u8;
        data[at + 2] = (v >> 9) as u8;
        data[at + 3] = (v >> 1) as u8;
        data[at + 4] = (data[at + 4] & 0x7F) | (((v & 1) as u8) << 7);
    }
    std::fs::write(path, data).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for v in [0i64, 1, 900_000, (1 << 33) - 1, 0x1_2345_6789] {
            let mut b = [0x21u8, 0, 1, 0, 1];
            write_ts(&mut b, v);
            assert_eq!(read_ts(&b), v);
            assert_eq!(b[0] & 0xF1, 0x21, "prefix and marker kept");
            assert_eq!(b[2] & 1, 1);
            assert_eq!(b[4] & 1, 1);
        }
    }
}
