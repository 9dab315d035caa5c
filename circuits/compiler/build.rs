//! Compiles `proto/onnx.proto` (our ONNX reading subset) with prost-build,
//! using the vendored `protoc` so no system protobuf compiler is needed.

use std::path::PathBuf;

fn main() {
    let proto = PathBuf::from("proto/onnx.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-changed=build.rs");

    let protoc = match protoc_bin_vendored::protoc_bin_path() {
        Ok(path) => path,
        Err(e) => panic!("no vendored protoc binary for this host: {e}"),
    };

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    if let Err(e) = config.compile_protos(&[&proto], &[PathBuf::from("proto")]) {
        panic!("failed to compile {}: {e}", proto.display());
    }
}
