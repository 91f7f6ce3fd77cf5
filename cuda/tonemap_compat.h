// Lets cuda/tonemap.cu compile both as CUDA device code (clang -x cuda, no CUDA SDK headers)
// and as plain host C++ (the tests run the very same kernel on the CPU).
#pragma once

#if defined(__CUDA_ARCH__)
// ---- device (clang CUDA, -nocudainc -nocudalib) ----
#define TM_KERNEL extern "C" __attribute__((global))
#define TM_DEV static __attribute__((device)) inline
typedef unsigned char tm_u8;
typedef unsigned short tm_u16;
TM_DEV int tm_block_x() { return __nvvm_read_ptx_sreg_ctaid_x(); }
TM_DEV int tm_block_y() { return __nvvm_read_ptx_sreg_ctaid_y(); }
TM_DEV int tm_block_dim_x() { return __nvvm_read_ptx_sreg_ntid_x(); }
TM_DEV int tm_block_dim_y() { return __nvvm_read_ptx_sreg_ntid_y(); }
TM_DEV int tm_thread_x() { return __nvvm_read_ptx_sreg_tid_x(); }
TM_DEV int tm_thread_y() { return __nvvm_read_ptx_sreg_tid_y(); }
// Hardware approximations (ex2.approx/lg2.approx: ~2 ulp), fine for 8/10-bit output.
TM_DEV float tm_exp2(float x) { return __nvvm_ex2_approx_f(x); }
TM_DEV float tm_log2(float x) { return __nvvm_lg2_approx_f(x); }
TM_DEV float tm_sqrt(float x) { return __nvvm_sqrt_rn_f(x); }
TM_DEV float tm_floor(float x) { return __nvvm_floor_f(x); }
#else
// ---- host C++ ----
#include <math.h>
#include <stdint.h>
#define TM_KERNEL static inline
#define TM_DEV static inline
typedef uint8_t tm_u8;
typedef uint16_t tm_u16;
struct tm_host_index { int bx, by, bdx, bdy, tx, ty; };
static thread_local tm_host_index tm_idx;
TM_DEV int tm_block_x() { return tm_idx.bx; }
TM_DEV int tm_block_y() { return tm_idx.by; }
TM_DEV int tm_block_dim_x() { return tm_idx.bdx; }
TM_DEV int tm_block_dim_y() { return tm_idx.bdy; }
TM_DEV int tm_thread_x() { return tm_idx.tx; }
TM_DEV int tm_thread_y() { return tm_idx.ty; }
TM_DEV float tm_exp2(float x) { return exp2f(x); }
TM_DEV float tm_log2(float x) { return log2f(x); }
TM_DEV float tm_sqrt(float x) { return sqrtf(x); }
TM_DEV float tm_floor(float x) { return floorf(x); }
#endif

TM_DEV float tm_min(float a, float b) { return a < b ? a : b; }
TM_DEV float tm_max(float a, float b) { return a > b ? a : b; }
TM_DEV int tm_clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }
TM_DEV float tm_pow(float x, float y) { return x > 0.0f ? tm_exp2(y * tm_log2(x)) : 0.0f; }
TM_DEV float tm_exp(float x) { return tm_exp2(x * 1.4426950408889634f); }
