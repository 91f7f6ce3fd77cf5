//! Which files a job may touch on this worker: inputs only under `MEDIA_ROOTS`, outputs only
//! under the job's working directory and `TRANSCODE_ROOTS`. Paths are canonicalised, so `..`
//! and symlinks cannot escape a root.

use std::path::{Component, Path, PathBuf};

use clusterplex_core::Job;

/// The path rules of one worker. Empty root lists mean "no restriction" for that side.
#[derive(Debug, Clone, Default)]
pub struct PathPolicy {
    media_roots: Vec<PathBuf>,
    transcode_roots: Vec<PathBuf>,
    allow_urls: bool,
}

impl PathPolicy {
    /// Canonicalises the roots (they must exist).
    pub fn new(
        media_roots: &[PathBuf],
        transcode_roots: &[PathBuf],
        allow_urls: bool,
    ) -> anyhow::Result<Self> {
        let canon = |roots: &[PathBuf], what: &str| -> anyhow::Result<Vec<PathBuf>> {
            roots
                .iter()
                .filter(|r| !r.as_os_str().is_empty())
                .map(|r| {
                    r.canonicalize()
                        .map_err(|e| anyhow::anyhow!("{what} `{}`: {e}", r.display()))
                })
                .collect()
        };
        Ok(Self {
            media_roots: canon(media_roots, "MEDIA_ROOTS")?,
            transcode_roots: canon(transcode_roots, "TRANSCODE_ROOTS")?,
            allow_urls,
        })
    }

    /// Ok when every input and output of `job` is allowed; otherwise the reason.
    pub fn check(&self, job: &Job) -> Result<(), String> {
        let work_dir = match &job.working_dir {
            Some(d) => {
                let d = d
                    .canonicalize()
                    .map_err(|e| format!("working directory `{}`: {e}", d.display()))?;
                if !self.transcode_roots.is_empty() && !under_any(&d, &self.transcode_roots) {
                    return Err(format!(
                        "working directory `{}` is outside TRANSCODE_ROOTS",
                        d.display()
                    ));
                }
                Some(d)
            }
            None => None,
        };
        for input in &job.inputs {
            match classify(&input.url) {
                Target::Url => {
                    if !self.allow_urls {
                        return Err(format!(
                            "input `{}` is a URL and ALLOW_URLS is off",
                            input.url
                        ));
                    }
                }
                Target::Special => {}
                Target::Path(p) => {
                    let p = resolve(p, work_dir.as_deref());
                    let c = p
                        .canonicalize()
                        .map_err(|e| format!("input `{}`: {e}", p.display()))?;
                    if !self.media_roots.is_empty() && !under_any(&c, &self.media_roots) {
                        return Err(format!("input `{}` is outside MEDIA_ROOTS", input.url));
                    }
                }
            }
        }
        for output in &job.outputs {
            match classify(&output.target) {
                Target::Url => {
                    if !self.allow_urls {
                        return Err(format!(
                            "output `{}` is a URL and ALLOW_URLS is off",
                            output.target
                        ));
                    }
                }
                Target::Special => {}
                Target::Path(p) => {
                    let p = resolve(p, work_dir.as_deref());
                    let c = canonical_for_write(&p)
                        .map_err(|e| format!("output `{}`: {e}", p.display()))?;
                    let in_work = work_dir.as_deref().is_some_and(|w| c.starts_with(w));
                    if !self.transcode_roots.is_empty()
                        && !in_work
                        && !under_any(&c, &self.transcode_roots)
                    {
                        return Err(format!(
                            "output `{}` is outside the job's working directory and TRANSCODE_ROOTS",
                            output.target
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

enum Target<'a> {
    Url,
    /// `pipe:`, `-`, `/dev/null`, lavfi graphs: no file is touched.
    Special,
    Path(&'a Path),
}

fn classify(s: &str) -> Target<'_> {
    if s == "-" || s.starts_with("pipe:") || s == "/dev/null" {
        return Target::Special;
    }
    if let Some(rest) = s.strip_prefix("file:") {
        return Target::Path(Path::new(rest));
    }
    if let Some((scheme, _)) = s.split_once("://")
        && !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-')
    {
        return Target::Url;
    }
    Target::Path(Path::new(s))
}

fn resolve(p: &Path, work_dir: Option<&Path>) -> PathBuf {
    match work_dir {
        Some(w) if p.is_relative() => w.join(p),
        _ => p.to_path_buf(),
    }
}

fn under_any(p: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| p.starts_with(r))
}

/// The canonical form of a file that may not exist yet: canonicalise the nearest existing
/// ancestor and append the rest, refusing `..` in the part that does not exist (it cannot be
/// resolved safely).
fn canonical_for_write(p: &Path) -> std::io::Result<PathBuf> {
    if let Ok(c) = p.canonicalize() {
        return Ok(c);
    }
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    if p.components().any(|c| c == Component::ParentDir) && !rest.is_empty() {
        // `a/new/../../x`: `..` after a missing directory.
        let tail = PathBuf::from_iter(rest.iter().rev());
        if tail.components().any(|c| c == Component::ParentDir) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "`..` in a path that does not exist",
            ));
        }
    }
    let mut c = if existing.as_os_str().is_empty() {
        std::env::current_dir()?
    } else {
        existing.canonicalize()?
    };
    for name in rest.iter().rev() {
        c.push(name);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clusterplex_core::{Input, Output};

    fn job(input: &str, output: &str, wd: Option<&Path>) -> Job {
        Job {
            inputs: vec![Input::new(input)],
            outputs: vec![Output::new(output, None)],
            working_dir: wd.map(Path::to_path_buf),
            ..Default::default()
        }
    }

    #[test]
    fn inputs_must_be_under_media_roots_and_outputs_under_transcode_roots() {
        let t = tempfile::tempdir().unwrap();
        let media = t.path().join("media");
        let trans = t.path().join("transcode");
        let session = trans.join("session-1");
        let other = t.path().join("other");
        for d in [&media, &session, &other] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(media.join("a.mkv"), b"x").unwrap();
        std::fs::write(other.join("secret.mkv"), b"x").unwrap();
        std::os::unix::fs::symlink(other.join("secret.mkv"), media.join("link.mkv")).unwrap();
        let pol = PathPolicy::new(
            std::slice::from_ref(&media),
            std::slice::from_ref(&trans),
            false,
        )
        .unwrap();
        let ok_in = media.join("a.mkv");
        let ok_in = ok_in.to_str().unwrap();

        assert_eq!(pol.check(&job(ok_in, "out.mp4", Some(&session))), Ok(()));
        assert_eq!(
            pol.check(&job(ok_in, "dash/chunk-%05d.m4s", Some(&session))),
            Ok(())
        );
        assert_eq!(pol.check(&job(ok_in, "pipe:1", None)), Ok(()));

        let dotdot = format!("{}/../other/secret.mkv", media.display());
        let e = pol
            .check(&job(&dotdot, "out.mp4", Some(&session)))
            .unwrap_err();
        assert!(e.contains("outside MEDIA_ROOTS"), "{e}");
        let link = media.join("link.mkv");
        let e = pol
            .check(&job(link.to_str().unwrap(), "out.mp4", Some(&session)))
            .unwrap_err();
        assert!(e.contains("outside MEDIA_ROOTS"), "{e}");
        let e = pol
            .check(&job(
                ok_in,
                other.join("x.mp4").to_str().unwrap(),
                Some(&session),
            ))
            .unwrap_err();
        assert!(e.contains("outside the job's working directory"), "{e}");
        let e = pol
            .check(&job(ok_in, "../../other/x.mp4", Some(&session)))
            .unwrap_err();
        assert!(e.contains("outside"), "{e}");
        let e = pol.check(&job(ok_in, "out.mp4", Some(&other))).unwrap_err();
        assert!(e.contains("working directory"), "{e}");
        let e = pol
            .check(&job(
                "http://example.invalid/a.mkv",
                "out.mp4",
                Some(&session),
            ))
            .unwrap_err();
        assert!(e.contains("ALLOW_URLS"), "{e}");
        let e = pol
            .check(&job(
                media.join("missing.mkv").to_str().unwrap(),
                "out.mp4",
                Some(&session),
            ))
            .unwrap_err();
        assert!(e.contains("missing.mkv"), "{e}");

        let open = PathPolicy::new(&[], &[], true).unwrap();
        assert_eq!(
            open.check(&job(
                "http://example.invalid/a.mkv",
                "out.mp4",
                Some(&other)
            )),
            Ok(())
        );
    }
}
