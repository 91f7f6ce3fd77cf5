//! The worker: runs jobs locally (`clusterplex-worker run`) or as a cluster agent.

pub mod agent;
pub mod local_run;
pub mod plex;
