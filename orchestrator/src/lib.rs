//! clusterplex-orchestrator library.
