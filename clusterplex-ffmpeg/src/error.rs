//! The engine crate's error type. One enum for the whole crate; each variant says which stage
//! (and, where one is at fault, which stream) failed.

use thiserror::Error;

/// Errors from the engine and the tonemapper.
#[derive(Debug, Error)]
pub enum Error {
    /// The job failed validation before any work started.
    #[error("invalid job: {0}")]
    InvalidJob(#[from] clusterplex_core::JobError),
    /// A libav call failed in a given stage.
    #[error("{stage}: {context}: {source}")]
    Av {
        stage: Stage,
        context: String,
        #[source]
        source: ffmpeg_next::Error,
    },
    /// Something the engine does not support (unknown codec, filter, format).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The job was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// File-system trouble outside libav (creating directories, writing manifests).
    #[error("io: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Anything else, with a stage.
    #[error("{stage}: {message}")]
    Other { stage: Stage, message: String },
}

/// The pipeline stage an error happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Validate,
    OpenInput,
    Decode,
    Filter,
    Tonemap,
    Encode,
    Mux,
    Cuda,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Validate => "validate",
            Stage::OpenInput => "open_input",
            Stage::Decode => "decode",
            Stage::Filter => "filter",
            Stage::Tonemap => "tonemap",
            Stage::Encode => "encode",
            Stage::Mux => "mux",
            Stage::Cuda => "cuda",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The stage name used in `RunError` and logs.
    pub fn stage(&self) -> &'static str {
        match self {
            Error::InvalidJob(_) => "validate",
            Error::Av { stage, .. } | Error::Other { stage, .. } => stage.as_str(),
            Error::Unsupported(_) => "unsupported",
            Error::Cancelled => "cancelled",
            Error::Io { .. } => "io",
        }
    }
}

impl From<Error> for clusterplex_core::RunError {
    fn from(e: Error) -> Self {
        if matches!(e, Error::Cancelled) {
            clusterplex_core::RunError::cancelled()
        } else {
            clusterplex_core::RunError::new(e.stage(), e.to_string())
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
