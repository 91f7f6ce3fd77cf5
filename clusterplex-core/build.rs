//! Generates the gRPC code from `proto/clusterplex.proto` with the system `protoc` (Debian's
//! `protobuf-compiler`, installed by scripts/bootstrap.sh; `PROTOC` overrides the path).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/clusterplex.proto");
    tonic_prost_build::configure().compile_protos(&["proto/clusterplex.proto"], &["proto"])?;
    Ok(())
}
