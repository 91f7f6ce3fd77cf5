//! Placement planning: where a parsed job may run, what a worker needs to run it, and the
//! callback URLs rewritten so a worker reaches PMS.
//!
//! Rules, in order (the first that applies keeps the job on the PMS host, run by the original
//! transcoder):
//! 1. `TRANSCODE_OPERATING_MODE=local`.
//! 2. Options the engine cannot honour (`ParsedArgs::unsupported`).
//! 3. Credits detection (working directory contains `PlexCreditsDetection`).
//! 4. EasyAudioEncoder jobs when `TRANSCODE_EAE_LOCALLY` is true.
//! 5. Loopback callback URLs with no PMS address to point them at (`PMS_IP` unset).
//!
//! Otherwise the job may run remotely, on a worker whose capabilities cover [`CapabilityNeeds`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{
    capability::CapabilityNeeds,
    error::JobError,
    job::{Job, Segmenting},
    parse::{
        Dialect, IgnoredOption, ParsedArgs, Rewrite, parse_args,
        urls::{UrlTarget, rewrite_loopback},
    },
};

/// `TRANSCODE_OPERATING_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatingMode {
    /// Only the original transcoder on the PMS host.
    Local,
    /// Only workers; never local.
    Remote,
    /// Remote first, local when the orchestrator is unreachable, rejects, or the job fails.
    #[default]
    Both,
}

impl std::str::FromStr for OperatingMode {
    type Err = JobError;
    fn from_str(s: &str) -> Result<Self, JobError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" => Ok(Self::Local),
            "remote" => Ok(Self::Remote),
            "both" => Ok(Self::Both),
            _ => Err(JobError::BadSetting {
                name: "TRANSCODE_OPERATING_MODE".into(),
                reason: format!("`{s}` is not one of local, remote, both"),
            }),
        }
    }
}

impl std::fmt::Display for OperatingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Local => "local",
            Self::Remote => "remote",
            Self::Both => "both",
        })
    }
}

/// Parses a ClusterPlex boolean setting: true/1/yes/on, false/0/no/off (any case); anything
/// else is an error rather than a guess (ClusterPlex's Node shim treated "false" as true).
pub fn parse_setting_bool(name: &str, value: &str) -> Result<bool, JobError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(JobError::BadBool {
            name: name.into(),
            value: value.into(),
        }),
    }
}

/// What the planner needs to know about the PMS host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanConfig {
    pub mode: OperatingMode,
    /// `PMS_IP`: where workers reach PMS. `None`: callback URLs cannot be rewritten.
    pub pms_ip: Option<String>,
    /// `PMS_PORT` (Plex's own port, 32400), the port loopback URLs carry.
    pub pms_port: u16,
    /// `LOCAL_RELAY_ENABLED`: callbacks go through the relay on the PMS host.
    pub local_relay_enabled: bool,
    /// `LOCAL_RELAY_PORT` (32499).
    pub local_relay_port: u16,
    /// `TRANSCODE_EAE_LOCALLY`.
    pub transcode_eae_locally: bool,
    /// The transcoder's working directory (Plex's session directory).
    pub working_dir: Option<PathBuf>,
}

impl Default for PlanConfig {
    fn default() -> Self {
        Self {
            mode: OperatingMode::Both,
            pms_ip: None,
            pms_port: 32400,
            local_relay_enabled: true,
            local_relay_port: 32499,
            transcode_eae_locally: false,
            working_dir: None,
        }
    }
}

/// Where the job runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Placement {
    /// The original transcoder on the PMS host, for `reason`.
    Local { reason: String },
    /// A worker chosen by the orchestrator (falling back to local in `both` mode).
    Remote,
}

/// A callback URL pointed away from loopback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlRewrite {
    /// `-progressurl`, `-manifest_name`, `-segment_list`.
    pub option: String,
    pub from: String,
    pub to: String,
}

/// The plan for one transcoder invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub placement: Placement,
    pub dialect: Dialect,
    /// The job as a worker will run it (URLs rewritten).
    pub job: Job,
    pub needs: CapabilityNeeds,
    pub unsupported: Vec<String>,
    pub ignored: Vec<IgnoredOption>,
    /// Codec names and filters that were mapped; the `from` side is the original text.
    pub rewrites: Vec<Rewrite>,
    pub rewritten_urls: Vec<UrlRewrite>,
    pub uses_eae: bool,
    pub warnings: Vec<String>,
    /// The argv exactly as received (what runs locally).
    pub original_args: Vec<String>,
}

/// Parses and plans `args` (argv without the program name).
pub fn plan_args(args: &[String], config: &PlanConfig) -> Result<Plan, JobError> {
    let parsed = parse_args(args)?;
    Ok(plan(parsed, args, config))
}

/// Plans an already parsed argv.
pub fn plan(parsed: ParsedArgs, args: &[String], config: &PlanConfig) -> Plan {
    let ParsedArgs {
        mut job,
        dialect,
        unsupported,
        ignored,
        rewrites,
        uses_eae,
        hw_devices,
        warnings,
    } = parsed;
    if job.working_dir.is_none() {
        job.working_dir = config.working_dir.clone();
    }
    let rewritten_urls = rewrite_urls(&mut job, config);
    let needs = needs(&job, &hw_devices);
    let loopback_left = has_loopback_urls(&job, config.pms_port);
    let credits = job
        .working_dir
        .as_ref()
        .is_some_and(|d| d.to_string_lossy().contains("PlexCreditsDetection"));
    let placement = if config.mode == OperatingMode::Local {
        Placement::Local {
            reason: "TRANSCODE_OPERATING_MODE=local".into(),
        }
    } else if !unsupported.is_empty() {
        Placement::Local {
            reason: format!("unsupported options: {}", unsupported.join("; ")),
        }
    } else if credits {
        Placement::Local {
            reason: "credits detection (working directory contains PlexCreditsDetection)".into(),
        }
    } else if uses_eae && config.transcode_eae_locally {
        Placement::Local {
            reason: "EasyAudioEncoder job and TRANSCODE_EAE_LOCALLY=true".into(),
        }
    } else if loopback_left {
        Placement::Local {
            reason: "callback URLs point at loopback and PMS_IP is not set".into(),
        }
    } else {
        Placement::Remote
    };
    Plan {
        placement,
        dialect,
        job,
        needs,
        unsupported,
        ignored,
        rewrites,
        rewritten_urls,
        uses_eae,
        warnings,
        original_args: args.to_vec(),
    }
}

fn url_target(config: &PlanConfig) -> Option<UrlTarget> {
    let host = config.pms_ip.clone().filter(|h| !h.trim().is_empty())?;
    Some(if config.local_relay_enabled {
        // The relay on the PMS host speaks plain HTTP and forwards to loopback PMS, which
        // then accepts the callbacks as local.
        UrlTarget {
            host,
            port: config.local_relay_port,
            scheme: Some("http".into()),
        }
    } else {
        UrlTarget {
            host,
            port: config.pms_port,
            scheme: None,
        }
    })
}

/// Rewrites loopback URLs, and only those in the URL-bearing options.
fn rewrite_urls(job: &mut Job, config: &PlanConfig) -> Vec<UrlRewrite> {
    let mut done = Vec::new();
    let Some(target) = url_target(config) else {
        return done;
    };
    let mut apply = |option: &str, url: &mut String| {
        if let Some(new) = rewrite_loopback(url, config.pms_port, &target) {
            done.push(UrlRewrite {
                option: option.into(),
                from: url.clone(),
                to: new.clone(),
            });
            *url = new;
        }
    };
    if let Some(u) = job.progress.as_mut().and_then(|p| p.plex_url.as_mut()) {
        apply("-progressurl", u);
    }
    for out in &mut job.outputs {
        match out.segmenting.as_mut() {
            Some(Segmenting::Dash {
                manifest_target: Some(m),
                ..
            }) => apply("-manifest_name", m),
            Some(Segmenting::Segment { list: Some(l), .. }) => {
                apply("-segment_list", &mut l.target)
            }
            _ => {}
        }
    }
    done
}

fn has_loopback_urls(job: &Job, pms_port: u16) -> bool {
    let probe = UrlTarget {
        host: "x".into(),
        port: 1,
        scheme: None,
    };
    let is_loop = |u: &str| rewrite_loopback(u, pms_port, &probe).is_some();
    job.progress
        .as_ref()
        .and_then(|p| p.plex_url.as_deref())
        .is_some_and(is_loop)
        || job.outputs.iter().any(|o| match &o.segmenting {
            Some(Segmenting::Dash {
                manifest_target: Some(m),
                ..
            }) => is_loop(m),
            Some(Segmenting::Segment { list: Some(l), .. }) => is_loop(&l.target),
            _ => false,
        })
}

fn is_ten_bit_text(s: &str) -> bool {
    let s = s.to_ascii_lowercase();
    s.contains("p010")
        || s.contains("10le")
        || s.contains("10be")
        || s.contains("main10")
        || s.contains("p016")
}

/// What a worker must have to run `job`: [`crate::placement::needs_of`] (codecs, hwaccel,
/// tonemap) plus what the parser knows beyond the job model: every filter by name, devices from
/// `-init_hw_device`, 10-bit processing, a requested tonemap implementation, unusual muxers.
pub fn needs(job: &Job, hw_devices: &[String]) -> CapabilityNeeds {
    let mut n = crate::placement::needs_of(job);
    for dev in hw_devices {
        n.hwaccels.insert(dev.clone());
    }
    let mut graphs: Vec<&str> = job.complex_filters.iter().map(String::as_str).collect();
    for out in &job.outputs {
        for s in &out.streams {
            let v = &s.value;
            if let Some(f) = &v.filter {
                graphs.push(f);
            }
            if v.pix_fmt.as_deref().is_some_and(is_ten_bit_text)
                || v.profile.as_deref().is_some_and(is_ten_bit_text)
            {
                n.ten_bit = true;
            }
        }
        if let Some(f) = &out.format {
            const COMMON: &[&str] = &[
                "dash", "hls", "segment", "ssegment", "mp4", "mov", "matroska", "webm", "mpegts",
                "null", "ass", "adts", "mp3", "flac", "ogg", "wav", "srt", "webvtt",
            ];
            if !COMMON.contains(&f.as_str()) {
                n.formats.insert(f.clone());
            }
        }
    }
    for g in graphs {
        if is_ten_bit_text(g) {
            n.ten_bit = true;
        }
        for f in crate::parse::filters::parse_graph(g).into_iter().flatten() {
            if f.name.is_empty() {
                continue;
            }
            if f.name == "tonemap" {
                n.tonemap = true;
                // HDR sources are 10-bit.
                n.ten_bit = true;
                for part in crate::parse::filters::split_top(&f.args, ':') {
                    if let Some(i) = part.strip_prefix("impl=")
                        && i != "auto"
                    {
                        n.tonemap_impl = Some(i.to_string());
                    }
                }
            }
            n.filters.insert(f.name);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    const PLEX: &str = "-codec:1 eac3_eae -eae_prefix:1 abc_ -i /m/a.mkv -progressurl http://127.0.0.1:32400/video/:/transcode/session/abc/u1/progress -map 0:0 -codec:0 copy -map 0:1 -codec:1 aac -f dash -skip_to_segment 4 -manifest_name http://127.0.0.1:32400/video/:/transcode/session/abc/u1/manifest dash";

    #[test]
    fn bools_are_parsed_strictly() {
        for t in ["true", "1", "YES", "on"] {
            assert!(parse_setting_bool("X", t).unwrap());
        }
        for f in ["false", "0", "No", "OFF"] {
            assert!(!parse_setting_bool("X", f).unwrap());
        }
        assert!(parse_setting_bool("X", "nope").is_err());
        assert!(parse_setting_bool("X", "").is_err());
    }

    #[test]
    fn placement_rules() {
        let remote = PlanConfig {
            pms_ip: Some("192.168.2.1".into()),
            ..Default::default()
        };
        let p = plan_args(&argv(PLEX), &remote).unwrap();
        assert_eq!(p.placement, Placement::Remote);
        assert_eq!(p.rewritten_urls.len(), 2);
        assert!(
            p.rewritten_urls
                .iter()
                .all(|u| u.to.starts_with("http://192.168.2.1:32499/"))
        );
        assert!(p.needs.decoders.contains("eac3") && p.needs.encoders.contains("aac"));

        let eae = PlanConfig {
            transcode_eae_locally: true,
            ..remote.clone()
        };
        assert!(matches!(
            plan_args(&argv(PLEX), &eae).unwrap().placement,
            Placement::Local { .. }
        ));

        let credits = PlanConfig {
            working_dir: Some("/tmp/PlexCreditsDetection-12/x".into()),
            ..remote.clone()
        };
        assert!(matches!(
            plan_args(&argv(PLEX), &credits).unwrap().placement,
            Placement::Local { reason } if reason.contains("credits")
        ));

        let no_ip = PlanConfig::default();
        assert!(matches!(
            plan_args(&argv(PLEX), &no_ip).unwrap().placement,
            Placement::Local { .. }
        ));

        let local = PlanConfig {
            mode: OperatingMode::Local,
            ..remote.clone()
        };
        assert!(matches!(
            plan_args(&argv(PLEX), &local).unwrap().placement,
            Placement::Local { .. }
        ));

        let odd = format!("-frobnicate 3 {PLEX}");
        assert!(matches!(
            plan_args(&argv(&odd), &remote).unwrap().placement,
            Placement::Local { reason } if reason.contains("-frobnicate 3")
        ));

        let direct = PlanConfig {
            local_relay_enabled: false,
            ..remote
        };
        let p = plan_args(&argv(PLEX), &direct).unwrap();
        assert!(
            p.rewritten_urls
                .iter()
                .all(|u| u.to.starts_with("http://192.168.2.1:32400/"))
        );
    }
}
