//! The in-process transcode engine.
