//! Scalar f64 colour math shared by every implementation (the reference uses it per pixel, the
//! CPU path builds its tables from it, the CUDA path gets its constants from it).
//! Constants and formulas: docs/tonemap.md and the team's reference notes (tonemap.md §1).

/// PQ (SMPTE ST 2084) constants.
pub const PQ_M1: f64 = 2610.0 / 16384.0;
pub const PQ_M2: f64 = 2523.0 / 4096.0 * 128.0;
pub const PQ_C1: f64 = 3424.0 / 4096.0;
pub const PQ_C2: f64 = 2413.0 / 4096.0 * 32.0;
pub const PQ_C3: f64 = 2392.0 / 4096.0 * 32.0;

/// HLG (ARIB STD-B67) constants.
pub const HLG_A: f64 = 0.178_832_77;
pub const HLG_B: f64 = 0.284_668_92;
pub const HLG_C: f64 = 0.559_910_73;

/// Linear 1.0 = this many nits (FFmpeg's `npl=100` convention).
pub const REFERENCE_WHITE: f64 = 100.0;
/// HLG nominal display peak in nits (BT.2100 reference display; FFmpeg's default HLG peak 10).
pub const HLG_PEAK_NITS: f64 = 1000.0;

/// BT.2020 luma coefficients (Kr, Kg, Kb).
pub const BT2020_LUMA: [f64; 3] = [0.2627, 0.6780, 0.0593];
/// BT.709 luma coefficients (Kr, Kg, Kb).
pub const BT709_LUMA: [f64; 3] = [0.2126, 0.7152, 0.0722];

/// Linear-light BT.2020 -> BT.709 (D65), from the primaries.
pub const BT2020_TO_BT709: [[f64; 3]; 3] = [
    [1.660_491_002_1, -0.587_641_138_8, -0.072_849_863_3],
    [-0.124_550_474_5, 1.132_899_897_1, -0.008_349_422_6],
    [-0.018_150_763_4, -0.100_578_898_0, 1.118_729_661_4],
];

/// PQ EOTF: non-linear E' -> nits. Like zimg, values above 1 are extrapolated (chroma
/// interpolation between saturated colours produces them), not clipped.
pub fn pq_eotf(e: f64) -> f64 {
    let p = e.max(0.0).powf(1.0 / PQ_M2);
    let num = (p - PQ_C1).max(0.0);
    let den = (PQ_C2 - PQ_C3 * p).max(f32::MIN_POSITIVE as f64);
    10000.0 * (num / den).powf(1.0 / PQ_M1)
}

/// PQ inverse EOTF: nits -> E' in 0..1.
pub fn pq_inv_eotf(nits: f64) -> f64 {
    let p = (nits.max(0.0) / 10000.0).powf(PQ_M1);
    ((PQ_C1 + PQ_C2 * p) / (1.0 + PQ_C3 * p)).powf(PQ_M2)
}

/// HLG inverse OETF: E' in 0..1 -> scene linear E in 0..1.
pub fn hlg_inv_oetf(e: f64) -> f64 {
    let e = e.max(0.0);
    if e <= 0.5 {
        e * e / 3.0
    } else {
        ((e - HLG_C) / HLG_A).exp().mul_add(1.0, HLG_B) / 12.0
    }
}

/// HLG OETF: scene linear E in 0..1 -> E'.
pub fn hlg_oetf(e: f64) -> f64 {
    let e = e.max(0.0);
    if e <= 1.0 / 12.0 {
        (3.0 * e).sqrt()
    } else {
        HLG_A * (12.0 * e - HLG_B).ln() + HLG_C
    }
}

/// BT.2100 HLG system gamma for a display peak `lw` in nits.
pub fn hlg_gamma(lw: f64) -> f64 {
    1.2 + 0.42 * (lw / 1000.0).log10()
}

/// BT.1886 inverse EOTF as zimg applies it for `t=bt709` (display-referred): max(L,0)^(1/2.4)
/// (not clipped above 1: out-of-range values reach the integer conversion, which clamps).
pub fn bt1886_inv(l: f64) -> f64 {
    l.max(0.0).powf(1.0 / 2.4)
}

/// Hable's filmic curve (FFmpeg's constants, no exposure bias).
pub fn hable(x: f64) -> f64 {
    let (a, b, c, d, e, f) = (0.15, 0.50, 0.10, 0.20, 0.02, 0.30);
    (x * (x * a + b * c) + d * e) / (x * (x * a + b) + d * f) - e / f
}

/// Applies a 3x3 matrix.
pub fn mat3(m: &[[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    [
        m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
        m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
        m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
    ]
}

/// Inverts a 3x3 matrix (used for the ICtCp inverses; the matrices are well conditioned).
pub fn mat3_inv(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let inv = 1.0 / det;
    [
        [
            (m[1][1] * m[2][2] - m[1][2] * m[2][1]) * inv,
            (m[0][2] * m[2][1] - m[0][1] * m[2][2]) * inv,
            (m[0][1] * m[1][2] - m[0][2] * m[1][1]) * inv,
        ],
        [
            (m[1][2] * m[2][0] - m[1][0] * m[2][2]) * inv,
            (m[0][0] * m[2][2] - m[0][2] * m[2][0]) * inv,
            (m[0][2] * m[1][0] - m[0][0] * m[1][2]) * inv,
        ],
        [
            (m[1][0] * m[2][1] - m[1][1] * m[2][0]) * inv,
            (m[0][1] * m[2][0] - m[0][0] * m[2][1]) * inv,
            (m[0][0] * m[1][1] - m[0][1] * m[1][0]) * inv,
        ],
    ]
}

/// YCbCr (normalised, Y 0..1, C -0.5..0.5) -> R'G'B' for luma coefficients `k`.
pub fn ycbcr_to_rgb(k: [f64; 3], y: f64, cb: f64, cr: f64) -> [f64; 3] {
    let r = y + 2.0 * (1.0 - k[0]) * cr;
    let b = y + 2.0 * (1.0 - k[2]) * cb;
    let g = (y - k[0] * r - k[2] * b) / k[1];
    [r, g, b]
}

/// R'G'B' -> YCbCr (normalised) for luma coefficients `k`.
pub fn rgb_to_ycbcr(k: [f64; 3], rgb: [f64; 3]) -> [f64; 3] {
    let y = k[0] * rgb[0] + k[1] * rgb[1] + k[2] * rgb[2];
    let cb = (rgb[2] - y) / (2.0 * (1.0 - k[2]));
    let cr = (rgb[0] - y) / (2.0 * (1.0 - k[0]));
    [y, cb, cr]
}

/// ICtCp (BT.2100): BT.2020 linear RGB -> LMS.
pub const RGB2020_TO_LMS: [[f64; 3]; 3] = [
    [1688.0 / 4096.0, 2146.0 / 4096.0, 262.0 / 4096.0],
    [683.0 / 4096.0, 2951.0 / 4096.0, 462.0 / 4096.0],
    [99.0 / 4096.0, 309.0 / 4096.0, 3688.0 / 4096.0],
];
/// ICtCp (BT.2100): PQ-coded L'M'S' -> ICtCp.
pub const LMS_TO_ICTCP: [[f64; 3]; 3] = [
    [0.5, 0.5, 0.0],
    [6610.0 / 4096.0, -13613.0 / 4096.0, 7003.0 / 4096.0],
    [17933.0 / 4096.0, -17390.0 / 4096.0, -543.0 / 4096.0],
];

/// ACES-style parabolic gamut compression of one distance: identity below `thr`, C1 at `thr`,
/// maps `lim` to 1.
pub fn compress_distance(d: f64, lim: f64, thr: f64) -> f64 {
    if d <= thr {
        return d;
    }
    let s = (1.0 - thr) / (lim - 1.0).sqrt();
    thr + s * ((d - thr + s * s / 4.0).sqrt() - s / 2.0)
}

/// Cyan/magenta/yellow distance limits for [`gamut_compress`] (the ACES reference gamut
/// compression defaults: a distance at the limit lands on the gamut boundary).
pub const GAMUT_LIMITS: [f64; 3] = [1.147, 1.264, 1.312];
/// Distances below these thresholds are left alone.
pub const GAMUT_THRESHOLDS: [f64; 3] = [0.815, 0.803, 0.880];

/// Pulls out-of-gamut linear RGB towards the achromatic axis (the max component), then clamps to 0..1.
pub fn gamut_compress(rgb: [f64; 3]) -> [f64; 3] {
    let ach = rgb[0].max(rgb[1]).max(rgb[2]);
    if ach <= 0.0 {
        return [0.0; 3];
    }
    let mut out = [0.0; 3];
    for c in 0..3 {
        let d = (ach - rgb[c]) / ach;
        let d = compress_distance(d, GAMUT_LIMITS[c], GAMUT_THRESHOLDS[c]);
        out[c] = (ach - d * ach).clamp(0.0, 1.0);
    }
    out
}
