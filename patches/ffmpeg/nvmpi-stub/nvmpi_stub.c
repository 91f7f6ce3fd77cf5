/*
 * COMPILE-CHECK STUB -- NOT THE REAL LIBRARY.
 * Every entry point fails, so an FFmpeg linked against this stub reports "cannot open the
 * Jetson codec" at run time instead of pretending to decode or encode.
 */
#include <stddef.h>

#include "nvmpi.h"

nvmpictx *nvmpi_create_decoder(nvCodingType codingType, nvPixFormat pixFormat)
{
    (void)codingType;
    (void)pixFormat;
    return NULL;
}

int nvmpi_decoder_put_packet(nvmpictx *ctx, nvPacket *packet)
{
    (void)ctx;
    (void)packet;
    return -1;
}

int nvmpi_decoder_get_frame(nvmpictx *ctx, nvFrame *frame, bool wait)
{
    (void)ctx;
    (void)frame;
    (void)wait;
    return -1;
}

int nvmpi_decoder_close(nvmpictx *ctx)
{
    (void)ctx;
    return -1;
}

nvmpictx *nvmpi_create_encoder(nvCodingType codingType, nvEncParam *param)
{
    (void)codingType;
    (void)param;
    return NULL;
}

int nvmpi_encoder_put_frame(nvmpictx *ctx, nvFrame *frame)
{
    (void)ctx;
    (void)frame;
    return -1;
}

int nvmpi_encoder_get_packet(nvmpictx *ctx, nvPacket *packet)
{
    (void)ctx;
    (void)packet;
    return -1;
}

int nvmpi_encoder_close(nvmpictx *ctx)
{
    (void)ctx;
    return -1;
}
