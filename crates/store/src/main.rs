//! `foodmesh-store`: the store service binary.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    foodmesh_platform::lifecycle::main("store", foodmesh_store::Settings::load(), foodmesh_store::start).await
}
