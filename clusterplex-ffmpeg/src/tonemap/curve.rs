//! Tone curves: map scene-linear signal `s` (1.0 = 100 nits) with a known peak to display-linear
//! output (1.0 = SDR white). Formulas follow FFmpeg's vf_tonemap (hable, reinhard, mobius, ...)
//! and ITU-R BT.2390 (EETF in the PQ domain).

use super::math::{REFERENCE_WHITE, hable, pq_eotf, pq_inv_eotf};

/// The curve family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// No compression; values above 1.0 are clipped later (`param` scales first).
    Clip,
    /// `s * param / peak`.
    Linear,
    /// `(s/peak)^(1/param)` with FFmpeg's linear toe below 0.05.
    Gamma,
    /// `s/(s+o) * (peak+o)/peak` with `o = (1-param)/param`.
    Reinhard,
    /// John Hable's filmic curve, `h(s)/h(peak)`.
    Hable,
    /// Identity up to `param`, then a Möbius transform that reaches 1.0 at the peak.
    Mobius,
    /// ITU-R BT.2390 EETF (Hermite knee in the PQ domain).
    Bt2390,
}

impl Curve {
    pub fn name(self) -> &'static str {
        match self {
            Curve::Clip => "clip",
            Curve::Linear => "linear",
            Curve::Gamma => "gamma",
            Curve::Reinhard => "reinhard",
            Curve::Hable => "hable",
            Curve::Mobius => "mobius",
            Curve::Bt2390 => "bt2390",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "clip" | "none" => Curve::Clip,
            "linear" => Curve::Linear,
            "gamma" => Curve::Gamma,
            "reinhard" => Curve::Reinhard,
            "hable" => Curve::Hable,
            "mobius" => Curve::Mobius,
            "bt2390" | "bt.2390" => Curve::Bt2390,
            _ => return None,
        })
    }

    /// All curves, for tests and benchmarks.
    pub const ALL: [Curve; 7] = [
        Curve::Clip,
        Curve::Linear,
        Curve::Gamma,
        Curve::Reinhard,
        Curve::Hable,
        Curve::Mobius,
        Curve::Bt2390,
    ];
}

/// A curve with its constants resolved for one peak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneCurve {
    pub curve: Curve,
    /// Source peak, linear (1.0 = 100 nits).
    pub peak: f64,
    /// The curve's parameter after FFmpeg's defaulting/transformation:
    /// clip/linear: scale; gamma: exponent; reinhard: offset o; mobius: knee j; bt2390: knee k.
    pub param: f64,
    /// BT.2390 target peak in nits (SDR white of the output).
    pub target_nits: f64,
    // Precomputed constants.
    k0: f64,
    k1: f64,
    k2: f64,
}

impl ToneCurve {
    /// `param = None` takes the curve's default (FFmpeg's: gamma 1.8, reinhard 0.5, mobius 0.3,
    /// linear/clip 1.0; bt2390 knee 0.5 as in the spec).
    pub fn new(curve: Curve, param: Option<f64>, peak: f64, target_nits: f64) -> Self {
        let peak = if peak.is_finite() && peak > 0.0 {
            peak
        } else {
            1.0
        };
        let param = match curve {
            Curve::Gamma => param.unwrap_or(1.8),
            Curve::Reinhard => {
                let p = param.unwrap_or(0.5).clamp(1e-6, 1.0);
                (1.0 - p) / p
            }
            Curve::Mobius => param.unwrap_or(0.3),
            Curve::Bt2390 => param.unwrap_or(0.5).clamp(0.0, 2.0),
            Curve::Clip | Curve::Linear | Curve::Hable => param.unwrap_or(1.0),
        };
        let target_nits = if target_nits > 0.0 {
            target_nits
        } else {
            REFERENCE_WHITE
        };
        let mut c = ToneCurve {
            curve,
            peak,
            param,
            target_nits,
            k0: 0.0,
            k1: 0.0,
            k2: 0.0,
        };
        match curve {
            Curve::Hable => c.k0 = 1.0 / hable(peak),
            Curve::Reinhard => c.k0 = (peak + param) / peak,
            Curve::Mobius => {
                let j = param;
                c.k0 = -j * j * (peak - 1.0) / (j * j - 2.0 * j + peak);
                c.k1 = (j * j - 2.0 * j * peak + peak) / (peak - 1.0).max(1e-6);
                c.k2 = (c.k1 * c.k1 + 2.0 * c.k1 * j + j * j) / (c.k1 - c.k0);
            }
            Curve::Bt2390 => {
                let pq_lw = pq_inv_eotf(peak * REFERENCE_WHITE);
                let max_l = (pq_inv_eotf(target_nits) / pq_lw).min(1.0);
                c.k0 = pq_lw;
                c.k1 = max_l;
                c.k2 = ((1.0 + param) * max_l - param).clamp(0.0, 1.0);
            }
            _ => {}
        }
        c
    }

    /// The mobius constants (a, b, scale) and the bt2390 constants (PQ(Lw), maxL, KS) are exposed
    /// for the CUDA parameter block.
    pub fn constants(&self) -> [f64; 3] {
        [self.k0, self.k1, self.k2]
    }

    /// Maps linear `s` (1.0 = 100 nits) to output (1.0 = SDR white).
    pub fn apply(&self, s: f64) -> f64 {
        let s = s.max(0.0);
        match self.curve {
            Curve::Clip => (s * self.param).clamp(0.0, 1.0),
            Curve::Linear => s * self.param / self.peak,
            Curve::Gamma => {
                let e = 1.0 / self.param;
                if s > 0.05 {
                    (s / self.peak).powf(e)
                } else {
                    s * (0.05 / self.peak).powf(e) / 0.05
                }
            }
            Curve::Reinhard => s / (s + self.param) * self.k0,
            Curve::Hable => hable(s) * self.k0,
            Curve::Mobius => {
                if s <= self.param {
                    s
                } else {
                    self.k2 * (s + self.k0) / (s + self.k1)
                }
            }
            Curve::Bt2390 => {
                let (pq_lw, max_l, ks) = (self.k0, self.k1, self.k2);
                if pq_lw <= 0.0 {
                    return s;
                }
                let e1 = (pq_inv_eotf(s * REFERENCE_WHITE) / pq_lw).min(1.0);
                let e2 = if e1 < ks || ks >= 1.0 {
                    e1
                } else {
                    let t = (e1 - ks) / (1.0 - ks);
                    let (t2, t3) = (t * t, t * t * t);
                    (2.0 * t3 - 3.0 * t2 + 1.0) * ks
                        + (t3 - 2.0 * t2 + t) * (1.0 - ks)
                        + (-2.0 * t3 + 3.0 * t2) * max_l
                };
                pq_eotf(e2 * pq_lw) / self.target_nits
            }
        }
    }
}
