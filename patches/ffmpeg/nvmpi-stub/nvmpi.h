/*
 * COMPILE-CHECK STUB -- NOT THE REAL LIBRARY.
 *
 * The C interface of libnvmpi (the wrapper around NVIDIA's Jetson L4T Multimedia API that
 * Jetson FFmpeg builds link against), written down from the API description in
 * shared/reference/tonemap.md section 3 (the original jetson-ffmpeg interface, JetPack 4.x).
 * ClusterPlex uses it only to compile and link-check its FFmpeg nvmpi codec patch on machines
 * without a Jetson. On a Jetson, install the real libnvmpi and its nvmpi.h/nvmpi.pc instead.
 */
#ifndef CLUSTERPLEX_NVMPI_STUB_H
#define CLUSTERPLEX_NVMPI_STUB_H

#include <stdbool.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Opaque per-session handle owned by the library. */
typedef struct nvmpictx nvmpictx;

typedef enum {
    NV_PIX_NV12,
    NV_PIX_YUV420,
} nvPixFormat;

typedef enum {
    NV_VIDEO_CodingUnused,
    NV_VIDEO_CodingH264,
    NV_VIDEO_CodingMPEG4,
    NV_VIDEO_CodingMPEG2,
    NV_VIDEO_CodingVP8,
    NV_VIDEO_CodingVP9,
    NV_VIDEO_CodingHEVC,
} nvCodingType;

typedef struct _NVENCPARAM {
    unsigned int width;
    unsigned int height;
    unsigned int profile;
    unsigned int level;
    unsigned int bitrate;
    unsigned int peak_bitrate;
    char enableLossless;
    char mode_vbr;
    char insert_spspps_idr;
    unsigned int iframe_interval;
    unsigned int idr_interval;
    unsigned int fps_n;
    unsigned int fps_d;
    int capture_num;
    unsigned int max_b_frames;
    unsigned int refs;
    unsigned int qmax;
    unsigned int qmin;
    unsigned int hw_preset_type;
} nvEncParam;

typedef struct _NVPACKET {
    unsigned long flags;
    unsigned long payload_size;
    unsigned char *payload;
    unsigned long pts;
} nvPacket;

typedef struct _NVFRAME {
    unsigned long flags;
    unsigned long payload_size[3];
    unsigned char *payload[3];
    unsigned int linesize[3];
    nvPixFormat type;
    unsigned int width;
    unsigned int height;
    time_t timestamp;
} nvFrame;

nvmpictx *nvmpi_create_decoder(nvCodingType codingType, nvPixFormat pixFormat);
int nvmpi_decoder_put_packet(nvmpictx *ctx, nvPacket *packet);
int nvmpi_decoder_get_frame(nvmpictx *ctx, nvFrame *frame, bool wait);
int nvmpi_decoder_close(nvmpictx *ctx);

nvmpictx *nvmpi_create_encoder(nvCodingType codingType, nvEncParam *param);
int nvmpi_encoder_put_frame(nvmpictx *ctx, nvFrame *frame);
int nvmpi_encoder_get_packet(nvmpictx *ctx, nvPacket *packet);
int nvmpi_encoder_close(nvmpictx *ctx);

#ifdef __cplusplus
}
#endif

#endif /* CLUSTERPLEX_NVMPI_STUB_H */
