// Host build of the CUDA kernel: runs tonemap_kernel over the same grid on the CPU so the tests
// can compare the kernel's arithmetic with the reference implementation.
#include "tonemap.cu"

extern "C" void clusterplex_tonemap_host_run(const tm_u8* in0, const tm_u8* in1, const tm_u8* in2, tm_u8* out0,
                                             tm_u8* out1, tm_u8* out2, const TmParams* p) {
    const int bdx = 32, bdy = 8;
    int cw = p->width / 2, ch = p->height / 2;
    int gx = (cw + bdx - 1) / bdx, gy = (ch + bdy - 1) / bdy;
    for (int by = 0; by < gy; by++)
        for (int bx = 0; bx < gx; bx++)
            for (int ty = 0; ty < bdy; ty++)
                for (int tx = 0; tx < bdx; tx++) {
                    tm_idx = tm_host_index{bx, by, bdx, bdy, tx, ty};
                    tonemap_kernel(in0, in1, in2, out0, out1, out2, *p);
                }
}
