//! Generates the gRPC code from `proto/clusterplex.proto` with the system `protoc` (Debian's
//! `protobuf-compiler`, installed by scripts/bootstrap.sh; `PROTOC` overrides the path).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/clusterplex.proto");
    tonic_prost_build::configure()
        // Small call buffers: see `rpc::LeanCodec`.
        .codec_path("crate::rpc::LeanCodec")
        .compile_protos(&["proto/clusterplex.proto"], &["proto"])?;
    Ok(())
}
