//! ClusterPlex's engine: runs a [`clusterplex_core::Job`] in-process through libav*
//! (demux, decode, filter, encode, mux) and tonemaps HDR to SDR on the CPU or a CUDA GPU.
//!
//! All `unsafe` in ClusterPlex lives in this crate, each block with a `// SAFETY:` note.

pub mod caps;
pub mod engine;
pub mod error;
pub mod tonemap;

pub use error::{Error, Result, Stage};
