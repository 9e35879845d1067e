//! Generates the master's RPC code from `proto/` (needs `protoc`: Debian's
//! `protobuf-compiler`, which `.ci/run` installs).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .compile_protos(
            &[
                "proto/moonlab/store/v1/master.proto",
                "proto/moonlab/replay/v1/worker.proto",
            ],
            &["proto"],
        )
        .map_err(|e| {
            format!("compiling proto/ (is protoc installed? apt install protobuf-compiler): {e}")
        })?;
    Ok(())
}
