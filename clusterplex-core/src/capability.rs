//! What a worker can do, and what a job needs. Workers probe their own libav at start and
//! advertise [`Capabilities`]; the planner derives [`CapabilityNeeds`] from a job; placement only
//! considers workers whose capabilities cover the needs.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// A worker's abilities, probed from its libavcodec/libavfilter and hardware at start.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    /// Decoder names (`h264`, `hevc`, `hevc_cuvid`, `h264_nvmpi`...).
    pub decoders: BTreeSet<String>,
    /// Encoder names (`libx264`, `aac`, `h264_nvenc`...).
    pub encoders: BTreeSet<String>,
    /// Filter names (`scale`, `zscale`, `scale_cuda`, and our `tonemap`).
    pub filters: BTreeSet<String>,
    /// Hardware acceleration methods with a usable device (`cuda`, `vaapi`, ...).
    pub hwaccels: BTreeSet<String>,
    /// Demuxers/muxers are assumed present for the common set; list extra ones here.
    pub formats: BTreeSet<String>,
    /// 10-bit decode and processing is possible.
    pub ten_bit: bool,
    /// Tonemap implementations available here (`reference`, `cpu`, `cuda`).
    pub tonemap: BTreeSet<String>,
    /// CPU architecture (`x86_64`, `aarch64`).
    pub arch: String,
}

/// What a job requires of the worker that runs it. `Hash`: the orchestrator caches the
/// workers that cover each distinct set of needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CapabilityNeeds {
    pub decoders: BTreeSet<String>,
    pub encoders: BTreeSet<String>,
    pub filters: BTreeSet<String>,
    pub hwaccels: BTreeSet<String>,
    pub formats: BTreeSet<String>,
    pub ten_bit: bool,
    /// The job tonemaps HDR to SDR (any implementation will do unless `tonemap_impl` says).
    pub tonemap: bool,
    /// A specific tonemap implementation was requested (`impl=cuda`).
    pub tonemap_impl: Option<String>,
}

impl Capabilities {
    /// The needs this worker lacks, as `kind:name` strings; empty when it can run the job.
    pub fn missing(&self, needs: &CapabilityNeeds) -> Vec<String> {
        let mut missing = Vec::new();
        let mut check = |kind: &str, want: &BTreeSet<String>, have: &BTreeSet<String>| {
            for w in want {
                if !have.contains(w) {
                    missing.push(format!("{kind}:{w}"));
                }
            }
        };
        check("decoder", &needs.decoders, &self.decoders);
        check("encoder", &needs.encoders, &self.encoders);
        check("filter", &needs.filters, &self.filters);
        check("hwaccel", &needs.hwaccels, &self.hwaccels);
        check("format", &needs.formats, &self.formats);
        if needs.ten_bit && !self.ten_bit {
            missing.push("10-bit".to_string());
        }
        if needs.tonemap && self.tonemap.is_empty() {
            missing.push("tonemap".to_string());
        }
        if let Some(i) = &needs.tonemap_impl
            && i != "auto"
            && !self.tonemap.contains(i)
        {
            missing.push(format!("tonemap:{i}"));
        }
        missing
    }

    /// True when every need is covered.
    pub fn covers(&self, needs: &CapabilityNeeds) -> bool {
        self.missing(needs).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn covers_and_reports_missing() {
        let caps = Capabilities {
            decoders: set(&["h264", "hevc"]),
            encoders: set(&["libx264", "aac"]),
            filters: set(&["scale", "tonemap"]),
            ten_bit: true,
            tonemap: set(&["cpu", "reference"]),
            ..Default::default()
        };
        let mut needs = CapabilityNeeds {
            decoders: set(&["hevc"]),
            encoders: set(&["libx264"]),
            tonemap: true,
            ten_bit: true,
            ..Default::default()
        };
        assert!(caps.covers(&needs));
        needs.encoders.insert("h264_nvenc".into());
        needs.tonemap_impl = Some("cuda".into());
        assert_eq!(
            caps.missing(&needs),
            vec!["encoder:h264_nvenc", "tonemap:cuda"]
        );
    }
}
