//! Parsers for ffmpeg's option value syntaxes (durations, bit rates, sizes, rates, booleans).

use crate::error::JobError;

fn invalid(option: &str, value: &str) -> JobError {
    JobError::InvalidValue {
        option: option.to_string(),
        value: value.to_string(),
    }
}

/// ffmpeg's duration syntax: `[-][HH:]MM:SS[.m...]` or `[-]S+[.m...][s|ms|us]`, in seconds.
pub fn parse_duration(option: &str, s: &str) -> Result<f64, JobError> {
    let t = s.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    if body.is_empty() {
        return Err(invalid(option, s));
    }
    let secs = if body.contains(':') {
        let parts: Vec<&str> = body.split(':').collect();
        if parts.len() > 3 {
            return Err(invalid(option, s));
        }
        let mut total = 0.0;
        for (i, p) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let ok = !p.is_empty()
                && p.chars().all(|c| c.is_ascii_digit() || (last && c == '.'))
                && p.chars().filter(|&c| c == '.').count() <= 1;
            if !ok {
                return Err(invalid(option, s));
            }
            let v: f64 = p.parse().map_err(|_| invalid(option, s))?;
            total = total * 60.0 + v;
        }
        total
    } else {
        let (num, scale) = if let Some(n) = body.strip_suffix("ms") {
            (n, 1e-3)
        } else if let Some(n) = body.strip_suffix("us") {
            (n, 1e-6)
        } else if let Some(n) = body.strip_suffix('s') {
            (n, 1.0)
        } else {
            (body, 1.0)
        };
        let ok = !num.is_empty()
            && num.chars().all(|c| c.is_ascii_digit() || c == '.')
            && num.chars().filter(|&c| c == '.').count() <= 1
            && num != ".";
        if !ok {
            return Err(invalid(option, s));
        }
        num.parse::<f64>().map_err(|_| invalid(option, s))? * scale
    };
    if !secs.is_finite() {
        return Err(invalid(option, s));
    }
    Ok(if neg { -secs } else { secs })
}

/// A number with ffmpeg's SI suffixes (`256k`, `4M`, `1.5M`, `2Ki`, `1kB`), as an integer.
pub fn parse_si(option: &str, s: &str) -> Result<u64, JobError> {
    let t = s.trim();
    let mut num_end = t.len();
    for (i, c) in t.char_indices() {
        if !(c.is_ascii_digit() || c == '.' || (i == 0 && c == '+')) {
            num_end = i;
            break;
        }
    }
    let (num, mut suffix) = t.split_at(num_end);
    if num.is_empty() || num == "." || num == "+" {
        return Err(invalid(option, s));
    }
    let mut value: f64 = num.parse().map_err(|_| invalid(option, s))?;
    if let Some(c) = suffix.chars().next() {
        let power: i32 = match c {
            'k' | 'K' => 1,
            'M' => 2,
            'G' => 3,
            'T' => 4,
            _ => 0,
        };
        if power > 0 {
            suffix = &suffix[1..];
            let base: f64 = if let Some(rest) = suffix.strip_prefix('i') {
                suffix = rest;
                1024.0
            } else {
                1000.0
            };
            value *= base.powi(power);
        }
    }
    if let Some(rest) = suffix.strip_prefix('B') {
        suffix = rest;
        value *= 8.0;
    }
    if !suffix.is_empty() || !value.is_finite() || value < 0.0 || value > u64::MAX as f64 {
        return Err(invalid(option, s));
    }
    Ok(value.round() as u64)
}

/// `WxH` or one of ffmpeg's size abbreviations.
pub fn parse_size(option: &str, s: &str) -> Result<(u32, u32), JobError> {
    let named = match s {
        "ntsc" => Some((720, 480)),
        "pal" => Some((720, 576)),
        "qvga" => Some((320, 240)),
        "vga" => Some((640, 480)),
        "svga" => Some((800, 600)),
        "xga" => Some((1024, 768)),
        "hd480" => Some((852, 480)),
        "hd720" => Some((1280, 720)),
        "hd1080" => Some((1920, 1080)),
        "2k" => Some((2048, 1080)),
        "uhd2160" => Some((3840, 2160)),
        "4k" => Some((4096, 2160)),
        _ => None,
    };
    if let Some(v) = named {
        return Ok(v);
    }
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| invalid(option, s))?;
    let w: u32 = w.parse().map_err(|_| invalid(option, s))?;
    let h: u32 = h.parse().map_err(|_| invalid(option, s))?;
    if w == 0 || h == 0 {
        return Err(invalid(option, s));
    }
    Ok((w, h))
}

/// A frame rate: `24`, `30000/1001`, `29.97`, `ntsc`, `pal`, `film`.
pub fn parse_rate(option: &str, s: &str) -> Result<(u32, u32), JobError> {
    let named = match s {
        "ntsc" => Some((30000, 1001)),
        "pal" => Some((25, 1)),
        "film" => Some((24, 1)),
        "ntsc-film" => Some((24000, 1001)),
        _ => None,
    };
    if let Some(v) = named {
        return Ok(v);
    }
    let rate = if let Some((n, d)) = s.split_once(['/', ':']) {
        let n: u32 = n.parse().map_err(|_| invalid(option, s))?;
        let d: u32 = d.parse().map_err(|_| invalid(option, s))?;
        (n, d)
    } else if let Ok(n) = s.parse::<u32>() {
        (n, 1)
    } else {
        let f: f64 = s.parse().map_err(|_| invalid(option, s))?;
        if !f.is_finite() || f <= 0.0 || f > 1e6 {
            return Err(invalid(option, s));
        }
        // Three decimals are enough for every broadcast rate (29.97, 23.976, 59.94).
        let den = 1000u32;
        ((f * den as f64).round() as u32, den)
    };
    if rate.0 == 0 || rate.1 == 0 {
        return Err(invalid(option, s));
    }
    Ok(rate)
}

/// Booleans as ffmpeg AVOptions and ClusterPlex settings write them.
pub fn parse_bool(option: &str, s: &str) -> Result<bool, JobError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(option, s)),
    }
}

/// An unsigned integer.
pub fn parse_uint<T: std::str::FromStr>(option: &str, s: &str) -> Result<T, JobError> {
    s.trim().parse().map_err(|_| invalid(option, s))
}

/// A finite float.
pub fn parse_float(option: &str, s: &str) -> Result<f64, JobError> {
    let v: f64 = s.trim().parse().map_err(|_| invalid(option, s))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(invalid(option, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("ss", "495").unwrap(), 495.0);
        assert_eq!(parse_duration("ss", "00:01:02.5").unwrap(), 62.5);
        assert_eq!(parse_duration("ss", "1:30").unwrap(), 90.0);
        assert_eq!(parse_duration("ss", "1500ms").unwrap(), 1.5);
        assert_eq!(parse_duration("ss", "-2.5").unwrap(), -2.5);
        for bad in ["", "abc", "1:2:3:4", "1..2", "-", "1e400"] {
            assert!(parse_duration("ss", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn si_numbers() {
        assert_eq!(parse_si("b", "256k").unwrap(), 256_000);
        assert_eq!(parse_si("b", "4M").unwrap(), 4_000_000);
        assert_eq!(parse_si("b", "1.5M").unwrap(), 1_500_000);
        assert_eq!(parse_si("b", "2Ki").unwrap(), 2048);
        assert_eq!(parse_si("b", "7616000").unwrap(), 7_616_000);
        assert!(parse_si("b", "fast").is_err());
        assert!(parse_si("b", "").is_err());
    }

    #[test]
    fn sizes_rates_bools() {
        assert_eq!(parse_size("s", "1280x720").unwrap(), (1280, 720));
        assert_eq!(parse_size("s", "hd1080").unwrap(), (1920, 1080));
        assert!(parse_size("s", "0x720").is_err());
        assert_eq!(parse_rate("r", "30000/1001").unwrap(), (30000, 1001));
        assert_eq!(parse_rate("r", "24").unwrap(), (24, 1));
        assert_eq!(parse_rate("r", "29.97").unwrap(), (29970, 1000));
        assert!(parse_rate("r", "0").is_err());
        assert!(parse_bool("x", "Off").is_ok_and(|b| !b));
        assert!(parse_bool("x", "YES").unwrap());
        assert!(parse_bool("x", "maybe").is_err());
    }
}
