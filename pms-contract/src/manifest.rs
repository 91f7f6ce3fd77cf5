//! Parsing of what a transcoder POSTs to `…/manifest`: a DASH MPD (XML) or a segment list CSV.

use serde::{Deserialize, Serialize};

use crate::Error;

/// A parsed manifest body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum ManifestBody {
    Mpd(Mpd),
    Csv {
        rows: Vec<CsvRow>,
    },
    /// The body could not be parsed; the reason.
    Invalid {
        reason: String,
    },
}

impl ManifestBody {
    /// Parses a body: XML when it starts with `<` (after whitespace), CSV otherwise.
    pub fn parse(body: &str) -> Self {
        let parsed = if body.trim_start().starts_with('<') {
            Mpd::parse(body).map(ManifestBody::Mpd)
        } else {
            parse_csv(body).map(|rows| ManifestBody::Csv { rows })
        };
        parsed.unwrap_or_else(|e| ManifestBody::Invalid {
            reason: e.to_string(),
        })
    }

    /// Files the manifest says exist (names relative to the session directory): init segments
    /// and every media segment of the timelines for an MPD; finished rows for a CSV.
    pub fn listed_files(&self) -> Vec<String> {
        match self {
            ManifestBody::Mpd(m) => m.listed_files(),
            ManifestBody::Csv { rows } => rows
                .iter()
                .filter(|r| !r.unfinished)
                .map(|r| r.name.clone())
                .collect(),
            ManifestBody::Invalid { .. } => Vec::new(),
        }
    }
}

/// The parts of a DASH MPD that PMS relies on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mpd {
    /// `type`: `dynamic` while the transcoder runs, `static` at the end.
    pub mpd_type: String,
    pub media_presentation_duration: Option<String>,
    pub representations: Vec<Representation>,
}

/// One `Representation` with its (own or inherited) `SegmentTemplate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Representation {
    pub id: String,
    pub content_type: Option<String>,
    pub initialization: Option<String>,
    pub media: Option<String>,
    /// `startNumber` (1 when absent, as in the DASH spec).
    pub start_number: u64,
    pub timescale: u64,
    /// `(t, d)` of every segment of the `SegmentTimeline`, repeats expanded. `None` when the
    /// template has no timeline (the listed chunks then cannot be derived).
    pub segments: Option<Vec<(u64, u64)>>,
}

impl Mpd {
    /// Parses and checks an MPD: well-formed XML with an `MPD` root.
    pub fn parse(body: &str) -> Result<Self, Error> {
        let doc = roxmltree::Document::parse(body).map_err(|e| Error::Mpd(e.to_string()))?;
        let root = doc.root_element();
        if root.tag_name().name() != "MPD" {
            return Err(Error::Mpd(format!(
                "root element is <{}>, not <MPD>",
                root.tag_name().name()
            )));
        }
        let mut representations = Vec::new();
        for rep in root
            .descendants()
            .filter(|n| n.has_tag_name("Representation"))
        {
            let set = rep
                .parent_element()
                .filter(|p| p.has_tag_name("AdaptationSet"));
            // A template on the Representation wins over one on its AdaptationSet.
            let template = child(rep, "SegmentTemplate")
                .or_else(|| set.and_then(|s| child(s, "SegmentTemplate")));
            let attr = |name: &str| template.and_then(|t| t.attribute(name)).map(str::to_string);
            let num = |name: &str, default: u64| -> Result<u64, Error> {
                match attr(name) {
                    None => Ok(default),
                    Some(v) => v
                        .parse()
                        .map_err(|_| Error::Mpd(format!("{name}=\"{v}\" is not a number"))),
                }
            };
            let segments = match template.and_then(|t| child(t, "SegmentTimeline")) {
                None => None,
                Some(tl) => Some(expand_timeline(tl)?),
            };
            representations.push(Representation {
                id: rep.attribute("id").unwrap_or_default().to_string(),
                content_type: set
                    .and_then(|s| s.attribute("contentType"))
                    .map(str::to_string),
                initialization: attr("initialization"),
                media: attr("media"),
                start_number: num("startNumber", 1)?,
                timescale: num("timescale", 1)?,
                segments,
            });
        }
        Ok(Mpd {
            // The DASH default for a missing `type` is static.
            mpd_type: root.attribute("type").unwrap_or("static").to_string(),
            media_presentation_duration: root
                .attribute("mediaPresentationDuration")
                .map(str::to_string),
            representations,
        })
    }

    /// Every `startNumber` in the manifest.
    pub fn start_numbers(&self) -> Vec<u64> {
        self.representations
            .iter()
            .map(|r| r.start_number)
            .collect()
    }

    /// Init and media segment file names the MPD lists.
    pub fn listed_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.representations {
            if let Some(init) = &r.initialization {
                out.push(expand_template(init, &r.id, None, None));
            }
            if let (Some(media), Some(segs)) = (&r.media, &r.segments) {
                for (i, (t, _)) in segs.iter().enumerate() {
                    out.push(expand_template(
                        media,
                        &r.id,
                        Some(r.start_number + i as u64),
                        Some(*t),
                    ));
                }
            }
        }
        out
    }
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|c| c.has_tag_name(name))
}

fn expand_timeline(tl: roxmltree::Node<'_, '_>) -> Result<Vec<(u64, u64)>, Error> {
    let mut out = Vec::new();
    let mut next_t = 0u64;
    for s in tl.children().filter(|c| c.has_tag_name("S")) {
        let get = |name: &str| -> Result<Option<i64>, Error> {
            s.attribute(name)
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| Error::Mpd(format!("<S {name}=\"{v}\"> is not a number")))
                })
                .transpose()
        };
        let d = get("d")?.ok_or_else(|| Error::Mpd("<S> without d".into()))?;
        if d <= 0 {
            return Err(Error::Mpd(format!("<S d=\"{d}\"> is not positive")));
        }
        if let Some(t) = get("t")? {
            next_t = t.max(0) as u64;
        }
        // r = -1 means "until the next S or the period end": count the one segment we know of.
        let repeats = get("r")?.unwrap_or(0).max(0);
        for _ in 0..=repeats {
            out.push((next_t, d as u64));
            next_t += d as u64;
        }
    }
    Ok(out)
}

/// Expands a DASH template (`$RepresentationID$`, `$Number%05d$`, `$Time$`, `$$`).
pub fn expand_template(
    template: &str,
    rep_id: &str,
    number: Option<u64>,
    time: Option<u64>,
) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('$') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let token = &after[..end];
        let (name, width) = match token.split_once('%') {
            Some((n, fmt)) => (
                n,
                fmt.trim_start_matches('0')
                    .trim_end_matches('d')
                    .parse::<usize>()
                    .unwrap_or(0),
            ),
            None => (token, 0),
        };
        match (name, number, time) {
            ("", _, _) => out.push('$'),
            ("RepresentationID", _, _) => out.push_str(rep_id),
            ("Number", Some(n), _) => out.push_str(&format!("{n:0width$}")),
            ("Time", _, Some(t)) => out.push_str(&format!("{t:0width$}")),
            _ => {
                out.push('$');
                out.push_str(token);
                out.push('$');
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// One row of a segment list CSV (`name,start,end[,end_audio,end_video]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CsvRow {
    pub name: String,
    pub start: f64,
    pub end: f64,
    /// The 4th and 5th columns (`-segment_list_separate_stream_times 1`), `-1` when absent.
    pub end_audio: Option<f64>,
    pub end_video: Option<f64>,
    /// The row started with `#` (`-segment_list_unfinished 1`: the segment in progress).
    pub unfinished: bool,
}

/// Parses segment list CSV. Every non-empty line must have 3 or 5 columns of the same count,
/// numeric times with `start <= end`, and only the last row may be unfinished (`#`).
pub fn parse_csv(body: &str) -> Result<Vec<CsvRow>, Error> {
    let mut rows = Vec::new();
    let mut columns = None;
    for (i, raw) in body.lines().enumerate() {
        let line_no = i + 1;
        let bad = |reason: String| Error::Csv {
            line: line_no,
            reason,
        };
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let (unfinished, line) = match line.strip_prefix('#') {
            Some(l) => (true, l),
            None => (false, line),
        };
        let (name, rest) =
            split_name(line).ok_or_else(|| bad(format!("no columns in {line:?}")))?;
        if name.is_empty() {
            return Err(bad("empty segment name".into()));
        }
        let times: Vec<&str> = rest.split(',').collect();
        let n = times.len() + 1;
        if n != 3 && n != 5 {
            return Err(bad(format!("{n} columns, expected 3 or 5")));
        }
        if *columns.get_or_insert(n) != n {
            return Err(bad(format!(
                "{n} columns after rows of {}",
                columns.unwrap_or(0)
            )));
        }
        let mut nums = Vec::new();
        for t in &times {
            nums.push(
                t.trim()
                    .parse::<f64>()
                    .map_err(|_| bad(format!("{t:?} is not a number")))?,
            );
        }
        if nums.iter().any(|v| !v.is_finite()) || nums[0] > nums[1] {
            return Err(bad(format!("bad times {rest:?}")));
        }
        rows.push(CsvRow {
            name: name.to_string(),
            start: nums[0],
            end: nums[1],
            end_audio: nums.get(2).copied(),
            end_video: nums.get(3).copied(),
            unfinished,
        });
    }
    if let Some(pos) = rows.iter().position(|r| r.unfinished)
        && pos + 1 != rows.len()
    {
        return Err(Error::Csv {
            line: pos + 1,
            reason: "an unfinished (#) row that is not the last".into(),
        });
    }
    Ok(rows)
}

/// Splits the first CSV field (possibly quoted, as libavformat quotes names with commas).
fn split_name(line: &str) -> Option<(&str, &str)> {
    if let Some(q) = line.strip_prefix('"') {
        let end = q.find('"')?;
        let rest = q[end + 1..].strip_prefix(',')?;
        Some((&q[..end], rest))
    } else {
        line.split_once(',')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_expansion() {
        assert_eq!(
            expand_template(
                "chunk-stream$RepresentationID$-$Number%05d$.m4s",
                "1",
                Some(42),
                None
            ),
            "chunk-stream1-00042.m4s"
        );
        assert_eq!(
            expand_template("init-stream$RepresentationID$.m4s", "0", None, None),
            "init-stream0.m4s"
        );
        assert_eq!(expand_template("t$Time$-$$", "0", None, Some(7)), "t7-$");
    }

    #[test]
    fn csv_rows() {
        let rows = parse_csv(
            "media-00001.ts,0.000000,8.000000,7.9,8.0\n#media-00002.ts,8.000000,9.5,-1,9.5\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows[1].unfinished);
        assert_eq!(rows[0].end_video, Some(8.0));
        assert!(parse_csv("a,1,2\nb,2,3,4,5\n").is_err());
        assert!(parse_csv("#a,1,2\nb,2,3\n").is_err());
        assert!(parse_csv("a,3,2\n").is_err());
        assert!(parse_csv("a,1\n").is_err());
    }
}
