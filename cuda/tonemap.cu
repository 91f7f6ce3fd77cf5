// HDR -> SDR tonemapping kernel: one thread per 2x2 luma block (one output chroma sample).
// Same math as clusterplex-ffmpeg/src/tonemap/reference.rs, in f32: zimg chroma siting,
// BT.2020 Y'CbCr -> R'G'B' -> linear (PQ or HLG) -> curve (max/rgb/lum) -> BT.1886 inverse ->
// BT.709 Y'CbCr (mode itp: curve on ICtCp intensity). Each thread evaluates the 4x3 pixel neighbourhood its chroma taps need.
// The parameter block layout must match `TmParams` in src/tonemap/cuda.rs.
#include "tonemap_compat.h"

struct TmParams {
    int width, height;
    int in_layout;   // 0 = yuv420p10le, 1 = p010le
    int out_format;  // 0 = yuv420p, 1 = nv12, 2 = yuv420p10le, 3 = p010le
    int in_stride[3];
    int out_stride[3];
    int transfer;    // 0 = PQ, 1 = HLG
    int curve;       // 0 clip, 1 linear, 2 gamma, 3 reinhard, 4 hable, 5 mobius, 6 bt2390
    int mode;        // 0 max, 1 rgb, 2 lum, 3 itp
    int dither;
    float in_y_off, in_y_scale, in_c_scale;
    float peak, param, k0, k1, k2, target_nits, desat;
    float out_y_off, out_y_scale, out_c_off, out_c_scale, out_max;
};

#define PQ_M1 0.1593017578125f
#define PQ_M2 78.84375f
#define PQ_C1 0.8359375f
#define PQ_C2 18.8515625f
#define PQ_C3 18.6875f

TM_DEV float pq_eotf(float e) {  // -> nits; extrapolated above 1 like zimg, capped at 1e6 nits
    e = tm_min(tm_max(e, 0.0f), 1.99f);
    float p = tm_pow(e, 1.0f / PQ_M2);
    float num = tm_max(p - PQ_C1, 0.0f);
    float den = tm_max(PQ_C2 - PQ_C3 * p, 1e-30f);
    return tm_min(10000.0f * tm_pow(num / den, 1.0f / PQ_M1), 1e6f);
}

TM_DEV float pq_eotf_ext(float e) {  // -> nits, without the input clamp (ICtCp inverse)
    float p = tm_pow(tm_max(e, 0.0f), 1.0f / PQ_M2);
    float num = tm_max(p - PQ_C1, 0.0f);
    float den = tm_max(PQ_C2 - PQ_C3 * p, 1e-30f);
    return 10000.0f * tm_pow(num / den, 1.0f / PQ_M1);
}

TM_DEV float pq_inv(float nits) {
    float p = tm_pow(tm_max(nits, 0.0f) / 10000.0f, PQ_M1);
    return tm_pow((PQ_C1 + PQ_C2 * p) / (1.0f + PQ_C3 * p), PQ_M2);
}

TM_DEV float hlg_inv_oetf(float e) {
    e = tm_min(tm_max(e, 0.0f), 1.0f);
    return e <= 0.5f ? e * e / 3.0f : (tm_exp((e - 0.55991073f) / 0.17883277f) + 0.28466892f) / 12.0f;
}

TM_DEV float hable(float x) {
    return (x * (x * 0.15f + 0.05f) + 0.004f) / (x * (x * 0.15f + 0.5f) + 0.06f) - 0.02f / 0.3f;
}

TM_DEV float curve(const TmParams& p, float s) {
    s = tm_max(s, 0.0f);
    switch (p.curve) {
    case 0: return tm_min(tm_max(s * p.param, 0.0f), 1.0f);
    case 1: return s * p.param / p.peak;
    case 2: {
        float e = 1.0f / p.param;
        return s > 0.05f ? tm_pow(s / p.peak, e) : s * tm_pow(0.05f / p.peak, e) / 0.05f;
    }
    case 3: return s / (s + p.param) * p.k0;
    case 4: return hable(s) * p.k0;
    case 5: return s <= p.param ? s : p.k2 * (s + p.k0) / (s + p.k1);
    default: {
        float pq_lw = p.k0, max_l = p.k1, ks = p.k2;
        float e1 = tm_min(pq_inv(s * 100.0f) / pq_lw, 1.0f);
        float e2 = e1;
        if (e1 >= ks && ks < 1.0f) {
            float t = (e1 - ks) / (1.0f - ks), t2 = t * t, t3 = t2 * t;
            e2 = (2.0f * t3 - 3.0f * t2 + 1.0f) * ks + (t3 - 2.0f * t2 + t) * (1.0f - ks) +
                 (-2.0f * t3 + 3.0f * t2) * max_l;
        }
        return pq_eotf(e2 * pq_lw) / p.target_nits;
    }
    }
}

TM_DEV float compress_distance(float d, float lim, float thr) {
    if (d <= thr) return d;
    float s = (1.0f - thr) / tm_sqrt(lim - 1.0f);
    return thr + s * (tm_sqrt(d - thr + s * s * 0.25f) - s * 0.5f);
}

TM_DEV float gamut1(float ach, float c, float lim, float thr) {
    float d = compress_distance((ach - c) / ach, lim, thr);
    return tm_min(tm_max(ach - d * ach, 0.0f), 1.0f);
}

// Parabolic gamut compression towards the achromatic axis, then a clip to 0..1 (lum and itp).
TM_DEV void gamut_compress(float* r7, float* g7, float* b7) {
    float ach = tm_max(*r7, tm_max(*g7, *b7));
    if (ach <= 0.0f) {
        *r7 = *g7 = *b7 = 0.0f;
    } else {
        *r7 = gamut1(ach, *r7, 1.147f, 0.815f);
        *g7 = gamut1(ach, *g7, 1.264f, 0.803f);
        *b7 = gamut1(ach, *b7, 1.312f, 0.880f);
    }
}

// mode=itp: linear BT.2020 (1.0 = 100 nits) -> ICtCp (BT.2100), the curve on the intensity I in
// linear light, Ct/Cp scaled by min(I'/I, I/I') (and pulled towards white above `desat`), back to
// linear BT.2020 and then BT.709 with gamut compression. Same steps as reference.rs.
TM_DEV void tonemap_itp(const TmParams& p, float r, float g, float b, float* r7, float* g7, float* b7) {
    r = tm_max(r, 0.0f) * 100.0f;
    g = tm_max(g, 0.0f) * 100.0f;
    b = tm_max(b, 0.0f) * 100.0f;
    float l = pq_inv((1688.0f * r + 2146.0f * g + 262.0f * b) / 4096.0f);
    float m = pq_inv((683.0f * r + 2951.0f * g + 462.0f * b) / 4096.0f);
    float s = pq_inv((99.0f * r + 309.0f * g + 3688.0f * b) / 4096.0f);
    float i = 0.5f * (l + m);
    float ct = (6610.0f * l - 13613.0f * m + 7003.0f * s) / 4096.0f;
    float cp = (17933.0f * l - 17390.0f * m - 543.0f * s) / 4096.0f;
    float out = curve(p, pq_eotf(i) * 0.01f);
    float i2 = pq_inv(out * 100.0f);
    float cs = (i > 1e-9f && i2 > 1e-9f) ? tm_min(i2 / i, i / i2) : 0.0f;
    if (p.desat > 0.0f) cs *= 1.0f / (1.0f + tm_max(out - p.desat, 0.0f));
    ct *= cs;
    cp *= cs;
    // Inverse ICtCp and inverse LMS matrices (numerical inverses of the BT.2100 ones).
    float l2 = pq_eotf_ext(i2 + 0.0086090370f * ct + 0.1110296250f * cp);
    float m2 = pq_eotf_ext(i2 - 0.0086090370f * ct - 0.1110296250f * cp);
    float s2 = pq_eotf_ext(i2 + 0.5600313357f * ct - 0.3206271750f * cp);
    r = (3.4366066943f * l2 - 2.5064521187f * m2 + 0.0698454243f * s2) * 0.01f;
    g = (-0.7913295556f * l2 + 1.9836004518f * m2 - 0.1922708962f * s2) * 0.01f;
    b = (-0.0259498997f * l2 - 0.0989137147f * m2 + 1.1248636144f * s2) * 0.01f;
    *r7 = 1.6604910021f * r - 0.5876411388f * g - 0.0728498633f * b;
    *g7 = -0.1245504745f * r + 1.1328998971f * g - 0.0083494226f * b;
    *b7 = -0.0181507634f * r - 0.1005788980f * g + 1.1187296614f * b;
    gamut_compress(r7, g7, b7);
}

TM_DEV int load16(const tm_u8* base, int off) {
    return (int)base[off] | ((int)base[off + 1] << 8);
}

TM_DEV float load_y(const TmParams& p, const tm_u8* in0, int x, int y) {
    int v = load16(in0, y * p.in_stride[0] + 2 * x);
    v = p.in_layout == 1 ? (v >> 6) : (v & 1023);
    return ((float)v - p.in_y_off) / p.in_y_scale;
}

TM_DEV void load_c(const TmParams& p, const tm_u8* in1, const tm_u8* in2, int i, int j, float* cb, float* cr) {
    int u, v;
    if (p.in_layout == 1) {
        int o = j * p.in_stride[1] + 4 * i;
        u = load16(in1, o) >> 6;
        v = load16(in1, o + 2) >> 6;
    } else {
        u = load16(in1, j * p.in_stride[1] + 2 * i) & 1023;
        v = load16(in2, j * p.in_stride[2] + 2 * i) & 1023;
    }
    *cb = ((float)u - 512.0f) / p.in_c_scale;
    *cr = ((float)v - 512.0f) / p.in_c_scale;
}

// zimg siting: chroma co-sited with even luma columns, centred between luma rows.
TM_DEV void chroma_at(const TmParams& p, const tm_u8* in1, const tm_u8* in2, int x, int y, float* cb, float* cr) {
    int cw = p.width / 2, ch = p.height / 2;
    int j = y >> 1;
    int j0 = tm_clampi((y & 1) ? j + 1 : j - 1, 0, ch - 1);
    int i = x >> 1;
    int i1 = tm_clampi(i + 1, 0, cw - 1);
    float b0, r0, b1, r1, b2, r2, b3, r3;
    load_c(p, in1, in2, i, j, &b0, &r0);
    load_c(p, in1, in2, i, j0, &b1, &r1);
    float cb_a = 0.75f * b0 + 0.25f * b1, cr_a = 0.75f * r0 + 0.25f * r1;
    if (x & 1) {
        load_c(p, in1, in2, i1, j, &b2, &r2);
        load_c(p, in1, in2, i1, j0, &b3, &r3);
        float cb_b = 0.75f * b2 + 0.25f * b3, cr_b = 0.75f * r2 + 0.25f * r3;
        *cb = 0.5f * (cb_a + cb_b);
        *cr = 0.5f * (cr_a + cr_b);
    } else {
        *cb = cb_a;
        *cr = cr_a;
    }
}

// One pixel: returns BT.709 Y' (normalised), Cb, Cr.
TM_DEV void tm_pixel(const TmParams& p, const tm_u8* in0, const tm_u8* in1, const tm_u8* in2, int x, int y,
                     float* oy, float* ocb, float* ocr) {
    float yn = load_y(p, in0, x, y), cb, cr;
    chroma_at(p, in1, in2, x, y, &cb, &cr);
    // BT.2020 Y'CbCr -> R'G'B'
    float r = yn + 1.4746f * cr;
    float b = yn + 1.8814f * cb;
    float g = (yn - 0.2627f * r - 0.0593f * b) / 0.678f;
    // -> linear, 1.0 = 100 nits
    if (p.transfer == 1) {
        r = hlg_inv_oetf(r); g = hlg_inv_oetf(g); b = hlg_inv_oetf(b);
        float ys = 0.2627f * r + 0.678f * g + 0.0593f * b;
        float sc = 10.0f * tm_pow(tm_max(ys, 0.0f), 0.2f);
        r *= sc; g *= sc; b *= sc;
    } else {
        r = pq_eotf(r) * 0.01f; g = pq_eotf(g) * 0.01f; b = pq_eotf(b) * 0.01f;
    }
    // BT.2020 -> BT.709 primaries
    float r7 = 1.6604910021f * r - 0.5876411388f * g - 0.0728498633f * b;
    float g7 = -0.1245504745f * r + 1.1328998971f * g - 0.0083494226f * b;
    float b7 = -0.0181507634f * r - 0.1005788980f * g + 1.1187296614f * b;
    if (p.mode == 1) {
        r7 = tm_min(curve(p, r7), 1.0f); g7 = tm_min(curve(p, g7), 1.0f); b7 = tm_min(curve(p, b7), 1.0f);
    } else if (p.mode == 2) {
        float l = tm_max(0.2126f * r7 + 0.7152f * g7 + 0.0722f * b7, 1e-6f);
        float k = curve(p, l) / l;
        r7 *= k; g7 *= k; b7 *= k;
        gamut_compress(&r7, &g7, &b7);
    } else if (p.mode == 3) {
        tonemap_itp(p, r, g, b, &r7, &g7, &b7);
    } else {
        if (p.desat > 0.0f) {
            float luma = 0.2627f * r7 + 0.678f * g7 + 0.0593f * b7;
            float ob = tm_max(luma - p.desat, 1e-6f) / tm_max(luma, 1e-6f);
            r7 = (1.0f - ob) * r7 + ob * luma;
            g7 = (1.0f - ob) * g7 + ob * luma;
            b7 = (1.0f - ob) * b7 + ob * luma;
        }
        float sig = tm_max(tm_max(r7, tm_max(g7, b7)), 1e-6f);
        float k = curve(p, sig) / sig;
        r7 *= k; g7 *= k; b7 *= k;
    }
    // BT.1886 inverse EOTF, then BT.709 Y'CbCr
    r7 = tm_pow(r7, 1.0f / 2.4f); g7 = tm_pow(g7, 1.0f / 2.4f); b7 = tm_pow(b7, 1.0f / 2.4f);
    float yy = 0.2126f * r7 + 0.7152f * g7 + 0.0722f * b7;
    *oy = yy;
    *ocb = (b7 - yy) / 1.8556f;
    *ocr = (r7 - yy) / 1.5748f;
}

TM_DEV void store(const TmParams& p, tm_u8* base, int off, int code) {
    if (p.out_format >= 2) {
        if (p.out_format == 3) code <<= 6;
        base[off] = (tm_u8)(code & 255);
        base[off + 1] = (tm_u8)(code >> 8);
    } else {
        base[off] = (tm_u8)code;
    }
}

TM_DEV int quant(const TmParams& p, float v) {
    float q = tm_min(tm_max(tm_floor(v), 0.0f), p.out_max);
    return (int)q;
}

TM_DEV float bayer8(int x, int y) {
    const unsigned char m[64] = {0,  32, 8,  40, 2,  34, 10, 42, 48, 16, 56, 24, 50, 18, 58, 26,
                                 12, 44, 4,  36, 14, 46, 6,  38, 60, 28, 52, 20, 62, 30, 54, 22,
                                 3,  35, 11, 43, 1,  33, 9,  41, 51, 19, 59, 27, 49, 17, 57, 25,
                                 15, 47, 7,  39, 13, 45, 5,  37, 63, 31, 55, 23, 61, 29, 53, 21};
    return ((float)m[(y & 7) * 8 + (x & 7)] + 0.5f) / 64.0f;
}

TM_KERNEL void tonemap_kernel(const tm_u8* in0, const tm_u8* in1, const tm_u8* in2, tm_u8* out0, tm_u8* out1,
                              tm_u8* out2, TmParams p) {
    int bx = tm_block_x() * tm_block_dim_x() + tm_thread_x();
    int by = tm_block_y() * tm_block_dim_y() + tm_thread_y();
    if (bx >= p.width / 2 || by >= p.height / 2) return;
    int bps = p.out_format >= 2 ? 2 : 1;
    float cb_acc = 0.0f, cr_acc = 0.0f;
    for (int dy = -1; dy <= 2; dy++) {
        int yy = tm_clampi(2 * by + dy, 0, p.height - 1);
        float wy = (dy == -1 || dy == 2) ? 0.125f : 0.375f;
        for (int dx = -1; dx <= 1; dx++) {
            int xx = tm_clampi(2 * bx + dx, 0, p.width - 1);
            float wx = dx == 0 ? 0.5f : 0.25f;
            float oy, ocb, ocr;
            tm_pixel(p, in0, in1, in2, xx, yy, &oy, &ocb, &ocr);
            cb_acc += wx * wy * ocb;
            cr_acc += wx * wy * ocr;
            if (dy >= 0 && dy <= 1 && dx >= 0) {
                float t = p.dither ? bayer8(xx, yy) : 0.5f;
                store(p, out0, yy * p.out_stride[0] + bps * xx, quant(p, p.out_y_off + p.out_y_scale * oy + t));
            }
        }
        // Column 2bx+1 is also needed for Y of the right-hand pixels; it is the dx = +1 tap.
    }
    int u = quant(p, p.out_c_off + p.out_c_scale * cb_acc + 0.5f);
    int v = quant(p, p.out_c_off + p.out_c_scale * cr_acc + 0.5f);
    if (p.out_format == 1 || p.out_format == 3) {
        int o = by * p.out_stride[1] + 2 * bps * bx;
        store(p, out1, o, u);
        store(p, out1, o + bps, v);
    } else {
        store(p, out1, by * p.out_stride[1] + bps * bx, u);
        store(p, out2, by * p.out_stride[2] + bps * bx, v);
    }
}
