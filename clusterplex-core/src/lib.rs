//! ClusterPlex's domain: the transcode job model, the argument parser that builds it, worker
//! selection, the load and capability model, configuration and the gRPC protocol. No FFI.

pub mod capability;
pub mod conn;
pub mod error;
pub mod events;
pub mod job;
pub mod load;
pub mod parse;
pub mod placement;
pub mod plan;
pub mod rpc;

pub use capability::{Capabilities, CapabilityNeeds};
pub use error::JobError;
pub use events::{CancelToken, JobEvent, JobRunner, JobSummary, Progress, RunError, SegmentInfo};
pub use job::*;
