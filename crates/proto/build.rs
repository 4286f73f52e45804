//! Generates the Rust code for every contract under `proto/` with the protoc
//! shipped by `protoc-bin-vendored`, so a fresh machine needs no system protoc.
use std::{env, io, path::PathBuf, process::Command};

fn main() -> io::Result<()> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("../../proto");
    let protos = [
        "foodmesh/common/v1/common.proto",
        "foodmesh/order/v1/order_service.proto",
        "foodmesh/order/v1/events.proto",
        "foodmesh/order/v1/circuit_service.proto",
        "foodmesh/payment/v1/payment_service.proto",
        "foodmesh/payment/v1/events.proto",
        "foodmesh/payment/v1/fault_service.proto",
        "foodmesh/store/v1/store_service.proto",
        "foodmesh/store/v1/events.proto",
        "foodmesh/notification/v1/notification_service.proto",
    ]
    .map(|p| root.join(p));
    let well_known = protoc_bin_vendored::include_path().map_err(io::Error::other)?;
    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(io::Error::other)?;
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let descriptor = out_dir.join("foodmesh_descriptor.bin");

    // The standard error details every error carries, as descriptors only
    // (tonic-types has the Rust types): reflection serves them so that grpcurl
    // can decode a status's details.
    let third_party = root.join("../third_party/googleapis");
    let details = out_dir.join("error_details_descriptor.bin");
    let compiled = Command::new(&protoc)
        .arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", details.display()))
        .arg("-I")
        .arg(&third_party)
        .arg("-I")
        .arg(&well_known)
        .arg("google/rpc/error_details.proto")
        .status()?;
    if !compiled.success() {
        return Err(io::Error::other(format!("protoc failed on google/rpc/error_details.proto: {compiled}")));
    }
    println!("cargo:rerun-if-changed={}", third_party.display());

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().file_descriptor_set_path(descriptor).compile_with_config(
        config,
        &protos,
        &[root.clone(), well_known],
    )?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
