//! SIMD lanes for the fused tonemap kernel ([`super::fused`]): the few vector operations it needs,
//! behind one trait implemented for AVX2 + FMA (8 lanes), SSE4.1 (4 lanes, no FMA: the Celeron
//! J4125 has none, so `mul_add` is a multiply then an add) and NEON (4 lanes).
//!
//! The kernel is written once, generic over [`Lanes`]; every method here is `#[inline(always)]`
//! so the whole kernel inlines into one `#[target_feature]` entry point per ISA, where the
//! intrinsics then inline too (no calls in the hot loop; checked on the release binary).
//!
//! A value of an implementing type is the proof that the CPU has the ISA: it can only be made by
//! `new_unchecked` (unsafe, for code already running under the matching `#[target_feature]`) or
//! `detect`. That is what makes the intrinsic calls inside the methods sound.

/// N lanes of f32 and i32.
///
/// Semantics every implementation keeps (the unit tests check them against scalar code):
/// `min(a, b)` / `max(a, b)` return `b` when `a` is NaN (`b` is never NaN in the kernel);
/// `mul_add(a, b, c)` is `a * b + c`, fused or not; `recip` is within 3e-7 relative;
/// `trunc_i` truncates toward zero (inputs are in range); `pick8` reads the low 3 bits of each
/// index; shifts are per 32-bit lane.
pub(super) trait Lanes: Copy {
    /// Lanes per vector (4 or 8; divides 8 and 16).
    const N: usize;
    type F: Copy;
    type I: Copy;
    /// A per-lane mask from a float compare.
    type M: Copy;
    /// An 8-entry f32 table, ready for [`Lanes::pick8`].
    type T8: Copy;
    /// Table indices, prepared once for several [`Lanes::pick8`] with the same indices.
    type X8: Copy;

    fn splat(self, v: f32) -> Self::F;
    fn splat_i(self, v: i32) -> Self::I;
    /// # Safety
    /// `p` is valid for reading N f32.
    unsafe fn load(self, p: *const f32) -> Self::F;
    /// # Safety
    /// `p` is valid for writing N f32.
    unsafe fn store(self, p: *mut f32, v: Self::F);
    /// # Safety
    /// `p` is valid for writing N i32.
    #[cfg(test)]
    unsafe fn store_i(self, p: *mut i32, v: Self::I);
    /// N little-endian u16, zero-extended.
    /// # Safety
    /// `p` is valid for reading 2N bytes (any alignment).
    unsafe fn load_u16(self, p: *const u8) -> Self::I;
    /// N little-endian u32.
    /// # Safety
    /// `p` is valid for reading 4N bytes (any alignment).
    unsafe fn load_u32(self, p: *const u8) -> Self::I;
    /// 16 values clamped to 0..=255 (NaN to 0), truncated, as 16 bytes.
    /// # Safety
    /// `v` is valid for reading 16 f32, `out` for writing 16 bytes.
    unsafe fn store_u8x16(self, out: *mut u8, v: *const f32);

    fn add(self, a: Self::F, b: Self::F) -> Self::F;
    fn sub(self, a: Self::F, b: Self::F) -> Self::F;
    fn mul(self, a: Self::F, b: Self::F) -> Self::F;
    fn div(self, a: Self::F, b: Self::F) -> Self::F;
    /// a * b + c.
    fn mul_add(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// c - a * b.
    fn neg_mul_add(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    fn min(self, a: Self::F, b: Self::F) -> Self::F;
    fn max(self, a: Self::F, b: Self::F) -> Self::F;
    /// 1 / d, an estimate refined by Newton steps (cheaper than a divide).
    fn recip(self, d: Self::F) -> Self::F;
    /// a <= b (false for NaN).
    fn le(self, a: Self::F, b: Self::F) -> Self::M;
    /// m ? t : f, per lane.
    fn select(self, m: Self::M, t: Self::F, f: Self::F) -> Self::F;
    fn trunc_i(self, a: Self::F) -> Self::I;
    fn to_f(self, a: Self::I) -> Self::F;
    fn cast_i(self, a: Self::F) -> Self::I;
    fn cast_f(self, a: Self::I) -> Self::F;
    fn and_i(self, a: Self::I, b: Self::I) -> Self::I;
    fn or_i(self, a: Self::I, b: Self::I) -> Self::I;
    fn sub_i(self, a: Self::I, b: Self::I) -> Self::I;
    fn min_i(self, a: Self::I, b: Self::I) -> Self::I;
    fn max_i(self, a: Self::I, b: Self::I) -> Self::I;
    /// Logical shift right by K (1..=31).
    fn shr_u<const K: i32>(self, a: Self::I) -> Self::I;
    /// Arithmetic shift right by K (1..=31).
    fn shr_s<const K: i32>(self, a: Self::I) -> Self::I;
    /// Logical shift right by a run-time count (0..=31).
    fn shr_u_var(self, a: Self::I, k: u32) -> Self::I;
    fn table8(self, t: &[f32; 8]) -> Self::T8;
    fn index8(self, i: Self::I) -> Self::X8;
    /// t[i & 7] per lane.
    fn pick8(self, t: Self::T8, i: Self::X8) -> Self::F;
    /// base[i] per lane.
    /// # Safety
    /// Every lane of `i` is a valid index from `base`.
    unsafe fn gather(self, base: *const f32, i: Self::I) -> Self::F;
    /// Interleaves a and b: (a0 b0 a1 b1 ..., the second half of that).
    fn zip(self, a: Self::F, b: Self::F) -> (Self::F, Self::F);
    /// Sums of adjacent pairs: (a0 + a1, a2 + a3, ..., b0 + b1, b2 + b3, ...).
    fn pair_sums(self, a: Self::F, b: Self::F) -> Self::F;
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{Avx2, Sse4};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Lanes;
    use std::arch::x86_64::*;

    /// AVX2 + FMA, 8 lanes.
    #[derive(Clone, Copy)]
    pub(in super::super) struct Avx2(());

    impl Avx2 {
        /// # Safety
        /// The CPU has AVX2 and FMA.
        #[inline(always)]
        pub(in super::super) unsafe fn new_unchecked() -> Self {
            Avx2(())
        }

        #[cfg(test)]
        pub(in super::super) fn detect() -> Option<Self> {
            (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
                .then_some(Avx2(()))
        }
    }

    /// SSE4.1, 4 lanes; no FMA (mul then add).
    #[derive(Clone, Copy)]
    pub(in super::super) struct Sse4(());

    impl Sse4 {
        /// # Safety
        /// The CPU has SSE4.1.
        #[inline(always)]
        pub(in super::super) unsafe fn new_unchecked() -> Self {
            Sse4(())
        }

        #[cfg(test)]
        pub(in super::super) fn detect() -> Option<Self> {
            is_x86_feature_detected!("sse4.1").then_some(Sse4(()))
        }
    }

    // Every `unsafe` block in the two impls below calls intrinsics of the ISA the value proves
    // (see the module doc); pointer arguments are the callers' promise (`# Safety` above).
    impl Lanes for Avx2 {
        const N: usize = 8;
        type F = __m256;
        type I = __m256i;
        type M = __m256;
        type T8 = __m256;
        type X8 = __m256i;

        #[inline(always)]
        fn splat(self, v: f32) -> __m256 {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_set1_ps(v) }
        }
        #[inline(always)]
        fn splat_i(self, v: i32) -> __m256i {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_set1_epi32(v) }
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> __m256 {
            // SAFETY: AVX2 + FMA; `p` is the caller's promise.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, v: __m256) {
            // SAFETY: AVX2 + FMA; `p` is the caller's promise.
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[cfg(test)]
        #[inline(always)]
        unsafe fn store_i(self, p: *mut i32, v: __m256i) {
            // SAFETY: AVX2 + FMA; `p` is the caller's promise.
            unsafe { _mm256_storeu_si256(p as *mut __m256i, v) }
        }
        #[inline(always)]
        unsafe fn load_u16(self, p: *const u8) -> __m256i {
            // SAFETY: AVX2 + FMA; `p` is the caller's promise (16 bytes).
            unsafe { _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)) }
        }
        #[inline(always)]
        unsafe fn load_u32(self, p: *const u8) -> __m256i {
            // SAFETY: AVX2 + FMA; `p` is the caller's promise (32 bytes).
            unsafe { _mm256_loadu_si256(p as *const __m256i) }
        }
        #[inline(always)]
        unsafe fn store_u8x16(self, out: *mut u8, v: *const f32) {
            // SAFETY: AVX2 + FMA; `v` and `out` are the caller's promise.
            unsafe {
                let (zero, mx) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0));
                let a = _mm256_loadu_ps(v);
                let b = _mm256_loadu_ps(v.add(8));
                let a = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(a, zero), mx));
                let b = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(b, zero), mx));
                // packs work per 128-bit lane: fix the order with a permute.
                let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(a, b));
                let bytes =
                    _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
                _mm_storeu_si128(out as *mut __m128i, bytes);
            }
        }
        #[inline(always)]
        fn add(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        fn div(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_div_ps(a, b) }
        }
        #[inline(always)]
        fn mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn neg_mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_fnmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn min(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_min_ps(a, b) }
        }
        #[inline(always)]
        fn max(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        fn recip(self, d: __m256) -> __m256 {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe {
                let r0 = _mm256_rcp_ps(d);
                _mm256_mul_ps(r0, _mm256_fnmadd_ps(d, r0, _mm256_set1_ps(2.0)))
            }
        }
        #[inline(always)]
        fn le(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_cmp_ps::<_CMP_LE_OQ>(a, b) }
        }
        #[inline(always)]
        fn select(self, m: __m256, t: __m256, f: __m256) -> __m256 {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_blendv_ps(f, t, m) }
        }
        #[inline(always)]
        fn trunc_i(self, a: __m256) -> __m256i {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_cvttps_epi32(a) }
        }
        #[inline(always)]
        fn to_f(self, a: __m256i) -> __m256 {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_cvtepi32_ps(a) }
        }
        #[inline(always)]
        fn cast_i(self, a: __m256) -> __m256i {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_castps_si256(a) }
        }
        #[inline(always)]
        fn cast_f(self, a: __m256i) -> __m256 {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_castsi256_ps(a) }
        }
        #[inline(always)]
        fn and_i(self, a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_and_si256(a, b) }
        }
        #[inline(always)]
        fn or_i(self, a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_or_si256(a, b) }
        }
        #[inline(always)]
        fn sub_i(self, a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_sub_epi32(a, b) }
        }
        #[inline(always)]
        fn min_i(self, a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_min_epi32(a, b) }
        }
        #[inline(always)]
        fn max_i(self, a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_max_epi32(a, b) }
        }
        #[inline(always)]
        fn shr_u<const K: i32>(self, a: __m256i) -> __m256i {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_srli_epi32::<K>(a) }
        }
        #[inline(always)]
        fn shr_s<const K: i32>(self, a: __m256i) -> __m256i {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_srai_epi32::<K>(a) }
        }
        #[inline(always)]
        fn shr_u_var(self, a: __m256i, k: u32) -> __m256i {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_srl_epi32(a, _mm_cvtsi32_si128(k as i32)) }
        }
        #[inline(always)]
        fn table8(self, t: &[f32; 8]) -> __m256 {
            // SAFETY: AVX2 + FMA; reads the 8 f32 of `t`.
            unsafe { _mm256_loadu_ps(t.as_ptr()) }
        }
        #[inline(always)]
        fn index8(self, i: __m256i) -> __m256i {
            // vpermps reads the low 3 bits itself.
            i
        }
        #[inline(always)]
        fn pick8(self, t: __m256, i: __m256i) -> __m256 {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe { _mm256_permutevar8x32_ps(t, i) }
        }
        #[inline(always)]
        unsafe fn gather(self, base: *const f32, i: __m256i) -> __m256 {
            // SAFETY: AVX2 + FMA; the indices are the caller's promise.
            unsafe { _mm256_i32gather_ps::<4>(base, i) }
        }
        #[inline(always)]
        fn zip(self, a: __m256, b: __m256) -> (__m256, __m256) {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe {
                // Per 128-bit lane: lo = a0 b0 a1 b1 | a4 b4 a5 b5, hi = a2 b2 a3 b3 | a6 b6 a7 b7.
                let lo = _mm256_unpacklo_ps(a, b);
                let hi = _mm256_unpackhi_ps(a, b);
                (
                    _mm256_permute2f128_ps::<0x20>(lo, hi),
                    _mm256_permute2f128_ps::<0x31>(lo, hi),
                )
            }
        }
        #[inline(always)]
        fn pair_sums(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: AVX2 + FMA (the value's proof).
            unsafe {
                // hadd works per 128-bit lane: a01 a23 b01 b23 | a45 a67 b45 b67.
                let s = _mm256_hadd_ps(a, b);
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(s)))
            }
        }
    }

    impl Lanes for Sse4 {
        const N: usize = 4;
        type F = __m128;
        type I = __m128i;
        type M = __m128;
        /// The table's bytes, entries 0..4 and 4..8 (for `pshufb`).
        type T8 = (__m128i, __m128i);
        /// `pshufb` controls for the low and the high half of the table: the bytes of entry
        /// i & 7 in the half that holds it, bit 7 set (a zero byte) in the other.
        type X8 = (__m128i, __m128i);

        #[inline(always)]
        fn splat(self, v: f32) -> __m128 {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_set1_ps(v) }
        }
        #[inline(always)]
        fn splat_i(self, v: i32) -> __m128i {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_set1_epi32(v) }
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> __m128 {
            // SAFETY: SSE4.1; `p` is the caller's promise.
            unsafe { _mm_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, v: __m128) {
            // SAFETY: SSE4.1; `p` is the caller's promise.
            unsafe { _mm_storeu_ps(p, v) }
        }
        #[cfg(test)]
        #[inline(always)]
        unsafe fn store_i(self, p: *mut i32, v: __m128i) {
            // SAFETY: SSE4.1; `p` is the caller's promise.
            unsafe { _mm_storeu_si128(p as *mut __m128i, v) }
        }
        #[inline(always)]
        unsafe fn load_u16(self, p: *const u8) -> __m128i {
            // SAFETY: SSE4.1; `p` is the caller's promise (8 bytes).
            unsafe { _mm_cvtepu16_epi32(_mm_loadl_epi64(p as *const __m128i)) }
        }
        #[inline(always)]
        unsafe fn load_u32(self, p: *const u8) -> __m128i {
            // SAFETY: SSE4.1; `p` is the caller's promise (16 bytes).
            unsafe { _mm_loadu_si128(p as *const __m128i) }
        }
        #[inline(always)]
        unsafe fn store_u8x16(self, out: *mut u8, v: *const f32) {
            // SAFETY: SSE4.1; `v` and `out` are the caller's promise.
            unsafe {
                let (zero, mx) = (_mm_setzero_ps(), _mm_set1_ps(255.0));
                let q = |k: usize| {
                    _mm_cvttps_epi32(_mm_min_ps(_mm_max_ps(_mm_loadu_ps(v.add(4 * k)), zero), mx))
                };
                let lo = _mm_packus_epi32(q(0), q(1));
                let hi = _mm_packus_epi32(q(2), q(3));
                _mm_storeu_si128(out as *mut __m128i, _mm_packus_epi16(lo, hi));
            }
        }
        #[inline(always)]
        fn add(self, a: __m128, b: __m128) -> __m128 {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m128, b: __m128) -> __m128 {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m128, b: __m128) -> __m128 {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_mul_ps(a, b) }
        }
        #[inline(always)]
        fn div(self, a: __m128, b: __m128) -> __m128 {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_div_ps(a, b) }
        }
        #[inline(always)]
        fn mul_add(self, a: __m128, b: __m128, c: __m128) -> __m128 {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_add_ps(_mm_mul_ps(a, b), c) }
        }
        #[inline(always)]
        fn neg_mul_add(self, a: __m128, b: __m128, c: __m128) -> __m128 {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_sub_ps(c, _mm_mul_ps(a, b)) }
        }
        #[inline(always)]
        fn min(self, a: __m128, b: __m128) -> __m128 {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_min_ps(a, b) }
        }
        #[inline(always)]
        fn max(self, a: __m128, b: __m128) -> __m128 {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_max_ps(a, b) }
        }
        #[inline(always)]
        fn recip(self, d: __m128) -> __m128 {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe {
                let r0 = _mm_rcp_ps(d);
                _mm_mul_ps(r0, _mm_sub_ps(_mm_set1_ps(2.0), _mm_mul_ps(d, r0)))
            }
        }
        #[inline(always)]
        fn le(self, a: __m128, b: __m128) -> __m128 {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_cmple_ps(a, b) }
        }
        #[inline(always)]
        fn select(self, m: __m128, t: __m128, f: __m128) -> __m128 {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_blendv_ps(f, t, m) }
        }
        #[inline(always)]
        fn trunc_i(self, a: __m128) -> __m128i {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_cvttps_epi32(a) }
        }
        #[inline(always)]
        fn to_f(self, a: __m128i) -> __m128 {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_cvtepi32_ps(a) }
        }
        #[inline(always)]
        fn cast_i(self, a: __m128) -> __m128i {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_castps_si128(a) }
        }
        #[inline(always)]
        fn cast_f(self, a: __m128i) -> __m128 {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_castsi128_ps(a) }
        }
        #[inline(always)]
        fn and_i(self, a: __m128i, b: __m128i) -> __m128i {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_and_si128(a, b) }
        }
        #[inline(always)]
        fn or_i(self, a: __m128i, b: __m128i) -> __m128i {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_or_si128(a, b) }
        }
        #[inline(always)]
        fn sub_i(self, a: __m128i, b: __m128i) -> __m128i {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_sub_epi32(a, b) }
        }
        #[inline(always)]
        fn min_i(self, a: __m128i, b: __m128i) -> __m128i {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_min_epi32(a, b) }
        }
        #[inline(always)]
        fn max_i(self, a: __m128i, b: __m128i) -> __m128i {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_max_epi32(a, b) }
        }
        #[inline(always)]
        fn shr_u<const K: i32>(self, a: __m128i) -> __m128i {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_srli_epi32::<K>(a) }
        }
        #[inline(always)]
        fn shr_s<const K: i32>(self, a: __m128i) -> __m128i {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_srai_epi32::<K>(a) }
        }
        #[inline(always)]
        fn shr_u_var(self, a: __m128i, k: u32) -> __m128i {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { _mm_srl_epi32(a, _mm_cvtsi32_si128(k as i32)) }
        }
        #[inline(always)]
        fn table8(self, t: &[f32; 8]) -> (__m128i, __m128i) {
            // SAFETY: SSE4.1; reads the 8 f32 of `t`.
            unsafe {
                let p = t.as_ptr() as *const __m128i;
                (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1)))
            }
        }
        #[inline(always)]
        fn index8(self, i: __m128i) -> (__m128i, __m128i) {
            // SAFETY: SSE4.1 (the value's proof; pshufb is SSSE3, which SSE4.1 implies).
            unsafe {
                // Byte b = 4(i & 7) + 0, 1, 2, 3 of the 32-byte table for each lane: the lane's
                // low byte broadcast to its 4 bytes, plus 0x03020100. b + 0x70 keeps b's low
                // nibble and sets bit 7 for b >= 16; b + 0xf0 (b - 16) sets it for b < 16.
                let q = _mm_slli_epi32::<2>(_mm_and_si128(i, _mm_set1_epi32(7)));
                let bcast = _mm_setr_epi8(0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12);
                let b = _mm_shuffle_epi8(q, bcast);
                (
                    _mm_add_epi8(b, _mm_set1_epi32(0x7372_7170)),
                    _mm_add_epi8(b, _mm_set1_epi32(0xf3f2_f1f0_u32 as i32)),
                )
            }
        }
        #[inline(always)]
        fn pick8(self, t: (__m128i, __m128i), (lo, hi): (__m128i, __m128i)) -> __m128 {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe {
                _mm_castsi128_ps(_mm_or_si128(
                    _mm_shuffle_epi8(t.0, lo),
                    _mm_shuffle_epi8(t.1, hi),
                ))
            }
        }
        #[inline(always)]
        unsafe fn gather(self, base: *const f32, i: __m128i) -> __m128 {
            // SAFETY: SSE4.1; the indices are the caller's promise.
            unsafe {
                let at = |k: i32| *base.add(k as usize);
                _mm_setr_ps(
                    at(_mm_cvtsi128_si32(i)),
                    at(_mm_extract_epi32::<1>(i)),
                    at(_mm_extract_epi32::<2>(i)),
                    at(_mm_extract_epi32::<3>(i)),
                )
            }
        }
        #[inline(always)]
        fn zip(self, a: __m128, b: __m128) -> (__m128, __m128) {
            // SAFETY: SSE4.1 (the value's proof).
            unsafe { (_mm_unpacklo_ps(a, b), _mm_unpackhi_ps(a, b)) }
        }
        #[inline(always)]
        fn pair_sums(self, a: __m128, b: __m128) -> __m128 {
            // SAFETY: SSE4.1 (the value's proof; haddps is SSE3).
            unsafe { _mm_hadd_ps(a, b) }
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub(super) use arm::Neon;

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::Lanes;
    use std::arch::aarch64::*;

    /// NEON (the aarch64 baseline), 4 lanes.
    #[derive(Clone, Copy)]
    pub(in super::super) struct Neon(());

    impl Neon {
        /// # Safety
        /// The CPU has NEON (every aarch64 Linux target does).
        #[inline(always)]
        pub(in super::super) unsafe fn new_unchecked() -> Self {
            Neon(())
        }

        #[cfg(test)]
        pub(in super::super) fn detect() -> Option<Self> {
            std::arch::is_aarch64_feature_detected!("neon").then_some(Neon(()))
        }
    }

    // Every `unsafe` block below calls NEON intrinsics (the value's proof); pointer arguments
    // are the callers' promise (`# Safety` on the trait).
    impl Lanes for Neon {
        const N: usize = 4;
        type F = float32x4_t;
        type I = int32x4_t;
        type M = uint32x4_t;
        type T8 = uint8x16x2_t;
        /// Byte indices into the 32-byte table.
        type X8 = uint8x16_t;

        #[inline(always)]
        fn splat(self, v: f32) -> float32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vdupq_n_f32(v) }
        }
        #[inline(always)]
        fn splat_i(self, v: i32) -> int32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vdupq_n_s32(v) }
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> float32x4_t {
            // SAFETY: NEON; `p` is the caller's promise.
            unsafe { vld1q_f32(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, v: float32x4_t) {
            // SAFETY: NEON; `p` is the caller's promise.
            unsafe { vst1q_f32(p, v) }
        }
        #[cfg(test)]
        #[inline(always)]
        unsafe fn store_i(self, p: *mut i32, v: int32x4_t) {
            // SAFETY: NEON; `p` is the caller's promise.
            unsafe { vst1q_s32(p, v) }
        }
        #[inline(always)]
        unsafe fn load_u16(self, p: *const u8) -> int32x4_t {
            // SAFETY: NEON; `p` is the caller's promise (8 bytes, read as bytes: any alignment).
            unsafe { vreinterpretq_s32_u32(vmovl_u16(vreinterpret_u16_u8(vld1_u8(p)))) }
        }
        #[inline(always)]
        unsafe fn load_u32(self, p: *const u8) -> int32x4_t {
            // SAFETY: NEON; `p` is the caller's promise (16 bytes, read as bytes).
            unsafe { vreinterpretq_s32_u8(vld1q_u8(p)) }
        }
        #[inline(always)]
        unsafe fn store_u8x16(self, out: *mut u8, v: *const f32) {
            // SAFETY: NEON; `v` and `out` are the caller's promise.
            unsafe {
                let (zero, mx) = (vdupq_n_f32(0.0), vdupq_n_f32(255.0));
                // maxnm first: NaN becomes 0, as on x86.
                let q = |k: usize| {
                    let x = vminq_f32(vmaxnmq_f32(vld1q_f32(v.add(4 * k)), zero), mx);
                    vmovn_u32(vcvtq_u32_f32(x))
                };
                let lo = vcombine_u16(q(0), q(1));
                let hi = vcombine_u16(q(2), q(3));
                vst1q_u8(out, vcombine_u8(vmovn_u16(lo), vmovn_u16(hi)));
            }
        }
        #[inline(always)]
        fn add(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vaddq_f32(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vsubq_f32(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vmulq_f32(a, b) }
        }
        #[inline(always)]
        fn div(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vdivq_f32(a, b) }
        }
        #[inline(always)]
        fn mul_add(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vfmaq_f32(c, a, b) }
        }
        #[inline(always)]
        fn neg_mul_add(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vfmsq_f32(c, a, b) }
        }
        #[inline(always)]
        fn min(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
            // SAFETY: NEON (the value's proof). minnm: a NaN `a` gives `b`, as minps does.
            unsafe { vminnmq_f32(a, b) }
        }
        #[inline(always)]
        fn max(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
            // SAFETY: NEON (the value's proof). maxnm: a NaN `a` gives `b`, as maxps does.
            unsafe { vmaxnmq_f32(a, b) }
        }
        #[inline(always)]
        fn recip(self, d: float32x4_t) -> float32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe {
                // The estimate has 8 bits: two Newton steps.
                let r = vrecpeq_f32(d);
                let r = vmulq_f32(r, vrecpsq_f32(d, r));
                vmulq_f32(r, vrecpsq_f32(d, r))
            }
        }
        #[inline(always)]
        fn le(self, a: float32x4_t, b: float32x4_t) -> uint32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vcleq_f32(a, b) }
        }
        #[inline(always)]
        fn select(self, m: uint32x4_t, t: float32x4_t, f: float32x4_t) -> float32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vbslq_f32(m, t, f) }
        }
        #[inline(always)]
        fn trunc_i(self, a: float32x4_t) -> int32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vcvtq_s32_f32(a) }
        }
        #[inline(always)]
        fn to_f(self, a: int32x4_t) -> float32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vcvtq_f32_s32(a) }
        }
        #[inline(always)]
        fn cast_i(self, a: float32x4_t) -> int32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vreinterpretq_s32_f32(a) }
        }
        #[inline(always)]
        fn cast_f(self, a: int32x4_t) -> float32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vreinterpretq_f32_s32(a) }
        }
        #[inline(always)]
        fn and_i(self, a: int32x4_t, b: int32x4_t) -> int32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vandq_s32(a, b) }
        }
        #[inline(always)]
        fn or_i(self, a: int32x4_t, b: int32x4_t) -> int32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vorrq_s32(a, b) }
        }
        #[inline(always)]
        fn sub_i(self, a: int32x4_t, b: int32x4_t) -> int32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vsubq_s32(a, b) }
        }
        #[inline(always)]
        fn min_i(self, a: int32x4_t, b: int32x4_t) -> int32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vminq_s32(a, b) }
        }
        #[inline(always)]
        fn max_i(self, a: int32x4_t, b: int32x4_t) -> int32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vmaxq_s32(a, b) }
        }
        #[inline(always)]
        fn shr_u<const K: i32>(self, a: int32x4_t) -> int32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vreinterpretq_s32_u32(vshrq_n_u32::<K>(vreinterpretq_u32_s32(a))) }
        }
        #[inline(always)]
        fn shr_s<const K: i32>(self, a: int32x4_t) -> int32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vshrq_n_s32::<K>(a) }
        }
        #[inline(always)]
        fn shr_u_var(self, a: int32x4_t, k: u32) -> int32x4_t {
            // SAFETY: NEON (the value's proof). ushl by a negative count shifts right.
            unsafe {
                vreinterpretq_s32_u32(vshlq_u32(
                    vreinterpretq_u32_s32(a),
                    vdupq_n_s32(-(k as i32)),
                ))
            }
        }
        #[inline(always)]
        fn table8(self, t: &[f32; 8]) -> uint8x16x2_t {
            // SAFETY: NEON; reads the 32 bytes of `t`.
            unsafe {
                let p = t.as_ptr() as *const u8;
                uint8x16x2_t(vld1q_u8(p), vld1q_u8(p.add(16)))
            }
        }
        #[inline(always)]
        fn index8(self, i: int32x4_t) -> uint8x16_t {
            // SAFETY: NEON (the value's proof).
            unsafe {
                // Bytes 4(i & 7) + 0, 1, 2, 3 of the table for each lane.
                let q = vandq_u32(vreinterpretq_u32_s32(i), vdupq_n_u32(7));
                let b = vmlaq_u32(vdupq_n_u32(0x0302_0100), q, vdupq_n_u32(0x0404_0404));
                vreinterpretq_u8_u32(b)
            }
        }
        #[inline(always)]
        fn pick8(self, t: uint8x16x2_t, i: uint8x16_t) -> float32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vreinterpretq_f32_u8(vqtbl2q_u8(t, i)) }
        }
        #[inline(always)]
        unsafe fn gather(self, base: *const f32, i: int32x4_t) -> float32x4_t {
            // SAFETY: NEON; the indices are the caller's promise.
            unsafe {
                let at = |k: i32| *base.add(k as usize);
                let v = [
                    at(vgetq_lane_s32::<0>(i)),
                    at(vgetq_lane_s32::<1>(i)),
                    at(vgetq_lane_s32::<2>(i)),
                    at(vgetq_lane_s32::<3>(i)),
                ];
                vld1q_f32(v.as_ptr())
            }
        }
        #[inline(always)]
        fn zip(self, a: float32x4_t, b: float32x4_t) -> (float32x4_t, float32x4_t) {
            // SAFETY: NEON (the value's proof).
            unsafe { (vzip1q_f32(a, b), vzip2q_f32(a, b)) }
        }
        #[inline(always)]
        fn pair_sums(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
            // SAFETY: NEON (the value's proof).
            unsafe { vpaddq_f32(a, b) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Lanes;

    /// The lanes of a float vector.
    fn f<S: Lanes>(s: S, v: S::F) -> Vec<f32> {
        let mut o = [0f32; 8];
        // SAFETY: `o` holds 8 >= N f32.
        unsafe { s.store(o.as_mut_ptr(), v) };
        o[..S::N].to_vec()
    }

    fn i<S: Lanes>(s: S, v: S::I) -> Vec<i32> {
        let mut o = [0i32; 8];
        // SAFETY: `o` holds 8 >= N i32.
        unsafe { s.store_i(o.as_mut_ptr(), v) };
        o[..S::N].to_vec()
    }

    fn ld<S: Lanes>(s: S, v: &[f32]) -> S::F {
        assert!(v.len() >= S::N);
        // SAFETY: `v` holds at least N f32.
        unsafe { s.load(v.as_ptr()) }
    }

    fn ld_i<S: Lanes>(s: S, v: &[i32]) -> S::I {
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert!(b.len() >= 4 * S::N);
        // SAFETY: `b` holds at least 4N bytes.
        unsafe { s.load_u32(b.as_ptr()) }
    }

    /// Every operation against its scalar definition, on inputs that include negatives, zero,
    /// NaN (as the first operand of min/max) and values whose lanes differ.
    fn check<S: Lanes>(s: S) {
        let n = S::N;
        let xs: Vec<f32> = vec![-2.5, 0.0, 1.25, 3.0e3, 7.75, -0.0, 0.3, 1.0e-5, 42.0, -7.0];
        let ys: Vec<f32> = vec![1.5, -1.0, 1.25, 2.0, 0.5, 4.0, -0.3, 3.0, 0.25, 8.0];
        for off in 0..=2 {
            let (xa, ya) = (&xs[off..off + n], &ys[off..off + n]);
            let (a, b) = (ld(s, xa), ld(s, ya));
            let c = s.splat(0.75);
            let lanes = |g: &dyn Fn(f32, f32) -> f32| -> Vec<f32> {
                xa.iter().zip(ya).map(|(x, y)| g(*x, *y)).collect()
            };
            assert_eq!(f(s, s.add(a, b)), lanes(&|x, y| x + y));
            assert_eq!(f(s, s.sub(a, b)), lanes(&|x, y| x - y));
            assert_eq!(f(s, s.mul(a, b)), lanes(&|x, y| x * y));
            assert_eq!(f(s, s.div(a, b)), lanes(&|x, y| x / y));
            for (got, want) in f(s, s.mul_add(a, b, c))
                .iter()
                .zip(lanes(&|x, y| x * y + 0.75))
            {
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{got} {want}"
                );
            }
            for (got, want) in f(s, s.neg_mul_add(a, b, c))
                .iter()
                .zip(lanes(&|x, y| 0.75 - x * y))
            {
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{got} {want}"
                );
            }
            assert_eq!(f(s, s.min(a, b)), lanes(&|x, y| if x < y { x } else { y }));
            assert_eq!(f(s, s.max(a, b)), lanes(&|x, y| if x > y { x } else { y }));
            for (got, y) in f(s, s.recip(b)).iter().zip(ya) {
                assert!((got * y - 1.0).abs() < 3e-7, "recip({y}) = {got}");
            }
            let le = s.select(s.le(a, b), s.splat(1.0), s.splat(0.0));
            assert_eq!(f(s, le), lanes(&|x, y| if x <= y { 1.0 } else { 0.0 }));
            let (lo, hi) = s.zip(a, b);
            let want: Vec<f32> = xa.iter().zip(ya).flat_map(|(x, y)| [*x, *y]).collect();
            assert_eq!([f(s, lo), f(s, hi)].concat(), want);
            let want: Vec<f32> = xa
                .chunks(2)
                .chain(ya.chunks(2))
                .map(|p| p[0] + p[1])
                .collect();
            assert_eq!(f(s, s.pair_sums(a, b)), want);
            // Conversions and bits.
            let t = s.trunc_i(a);
            assert_eq!(i(s, t), xa.iter().map(|x| *x as i32).collect::<Vec<_>>());
            assert_eq!(
                f(s, s.to_f(t)),
                xa.iter().map(|x| *x as i32 as f32).collect::<Vec<_>>()
            );
            let bits = s.cast_i(a);
            assert_eq!(
                i(s, bits),
                xa.iter().map(|x| x.to_bits() as i32).collect::<Vec<_>>()
            );
            assert_eq!(f(s, s.cast_f(bits)), xa.to_vec());
        }
        // NaN as the first operand of min/max gives the second.
        let nan = ld(s, &[f32::NAN; 8]);
        assert_eq!(f(s, s.max(nan, s.splat(2.0))), vec![2.0; n]);
        assert_eq!(f(s, s.min(nan, s.splat(-2.0))), vec![-2.0; n]);
        assert_eq!(
            f(
                s,
                s.select(s.le(nan, s.splat(1.0)), s.splat(1.0), s.splat(0.0))
            ),
            vec![0.0; n]
        );
        // Integer operations.
        let ia: Vec<i32> = vec![-5, 0x7f80_0000, 17, -1, 1 << 30, 3, -100_000, 9];
        let ib: Vec<i32> = vec![3, 12, -17, 5, 7, -3, 100, 0x00ff_00ff];
        let (a, b) = (ld_i(s, &ia), ld_i(s, &ib));
        let lanes = |g: &dyn Fn(i32, i32) -> i32| -> Vec<i32> {
            ia.iter().zip(&ib).take(n).map(|(x, y)| g(*x, *y)).collect()
        };
        assert_eq!(i(s, s.and_i(a, b)), lanes(&|x, y| x & y));
        assert_eq!(i(s, s.or_i(a, b)), lanes(&|x, y| x | y));
        assert_eq!(i(s, s.sub_i(a, b)), lanes(&|x, y| x.wrapping_sub(y)));
        assert_eq!(i(s, s.min_i(a, b)), lanes(&|x, y| x.min(y)));
        assert_eq!(i(s, s.max_i(a, b)), lanes(&|x, y| x.max(y)));
        assert_eq!(
            i(s, s.shr_u::<23>(a)),
            lanes(&|x, _| ((x as u32) >> 23) as i32)
        );
        assert_eq!(i(s, s.shr_s::<15>(a)), lanes(&|x, _| x >> 15));
        for k in [0u32, 6] {
            assert_eq!(
                i(s, s.shr_u_var(a, k)),
                lanes(&|x, _| ((x as u32) >> k) as i32)
            );
        }
        assert_eq!(i(s, s.splat_i(-9)), vec![-9; n]);
        // Loads of packed integers.
        let bytes: Vec<u8> = (0..64u32).map(|k| (k * 37 + 11) as u8).collect();
        for off in [0usize, 1, 3] {
            // SAFETY: 2N and 4N bytes from `off` are inside `bytes`.
            let (u16s, u32s) = unsafe {
                (
                    s.load_u16(bytes.as_ptr().add(off)),
                    s.load_u32(bytes.as_ptr().add(off)),
                )
            };
            let p = &bytes[off..];
            let w16: Vec<i32> = (0..n)
                .map(|k| u16::from_le_bytes([p[2 * k], p[2 * k + 1]]) as i32)
                .collect();
            let w32: Vec<i32> = (0..n)
                .map(|k| i32::from_le_bytes([p[4 * k], p[4 * k + 1], p[4 * k + 2], p[4 * k + 3]]))
                .collect();
            assert_eq!(i(s, u16s), w16);
            assert_eq!(i(s, u32s), w32);
        }
        // The 8-entry table and the gather.
        let tab: [f32; 8] = [0.5, -1.0, 2.25, 3.0, -4.5, 5.0, 6.125, 7.0];
        let t8 = s.table8(&tab);
        let idx: Vec<i32> = vec![7, 0, 13, 4, 2, 6, 1, 11];
        for off in 0..=8 - n {
            let iv = ld_i(s, &idx[off..]);
            let want: Vec<f32> = idx[off..off + n]
                .iter()
                .map(|k| tab[(k & 7) as usize])
                .collect();
            assert_eq!(f(s, s.pick8(t8, s.index8(iv))), want);
            let masked = s.and_i(iv, s.splat_i(7));
            // SAFETY: indices are masked to 0..8, inside `tab`.
            assert_eq!(f(s, unsafe { s.gather(tab.as_ptr(), masked) }), want);
        }
        // The 8-bit store: clamp, truncate, NaN to 0.
        let v: Vec<f32> = (0..16)
            .map(|k| match k {
                3 => f32::NAN,
                _ => k as f32 * 23.7 - 40.0,
            })
            .collect();
        let mut out = [0u8; 16];
        // SAFETY: 16 f32 in, 16 bytes out.
        unsafe { s.store_u8x16(out.as_mut_ptr(), v.as_ptr()) };
        let want: Vec<u8> = v
            .iter()
            .map(|x| {
                if x.is_nan() {
                    0
                } else {
                    x.clamp(0.0, 255.0) as u8
                }
            })
            .collect();
        assert_eq!(out.to_vec(), want);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_ops_match_scalar() {
        if let Some(s) = super::Avx2::detect() {
            check(s);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sse4_ops_match_scalar() {
        if let Some(s) = super::Sse4::detect() {
            check(s);
        }
    }

    #[cfg(target_arch = "aarch64")]
    #[test]
    fn neon_ops_match_scalar() {
        if let Some(s) = super::Neon::detect() {
            check(s);
        }
    }
}
