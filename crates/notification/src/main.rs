//! `foodmesh-notification`: the notification service binary.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    foodmesh_platform::lifecycle::main("notification", foodmesh_notification::Settings::load(), foodmesh_notification::start)
        .await
}
