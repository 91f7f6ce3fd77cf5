//! HDR to SDR tonemapping.
