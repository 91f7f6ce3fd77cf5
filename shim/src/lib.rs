//! clusterplex-shim library.
