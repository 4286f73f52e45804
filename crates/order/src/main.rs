//! `foodmesh-order`: the order service binary.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    foodmesh_platform::lifecycle::main("order", foodmesh_order::Settings::load(), foodmesh_order::start).await
}
