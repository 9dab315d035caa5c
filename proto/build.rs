//! Compiles `blindfold/v1/*.proto` into message types, tonic clients and
//! servers, and a file descriptor set (for server reflection), with the
//! vendored `protoc`.

use std::path::PathBuf;

const PROTOS: [&str; 3] = [
    "blindfold/v1/models.proto",
    "blindfold/v1/keys.proto",
    "blindfold/v1/inference.proto",
];

fn main() {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    let protoc = match protoc_bin_vendored::protoc_bin_path() {
        Ok(path) => path,
        Err(e) => panic!("no vendored protoc binary for this host: {e}"),
    };
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    if let Err(e) = tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("blindfold_descriptor.bin"))
        .compile_with_config(config, &PROTOS, &["."])
    {
        panic!("failed to compile the blindfold.v1 protos: {e}");
    }
}
