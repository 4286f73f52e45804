//! Envoy as a child process: started on a rendered configuration, ready when
//! its admin interface says LIVE, and read through that interface's stats.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::{Child, Command},
};

/// How long Envoy may take to become LIVE.
pub const LIVE_WITHIN: Duration = Duration::from_secs(20);

/// Envoy's command line for the configuration at `config_path`. Several
/// Envoys may run on one machine (tests in parallel, a local mesh beside
/// them): no shared-memory hot restart between them, one worker thread.
pub fn args(config_path: &Path) -> Vec<String> {
    let config = config_path.display().to_string();
    ["-c", &config, "--disable-hot-restart", "--concurrency", "1", "--log-level", "warn"].map(str::to_owned).to_vec()
}

/// Whether the Envoy whose admin interface is on `admin_port` says LIVE.
pub async fn is_live(admin_port: u16) -> bool {
    admin_get(admin_port, "/ready").await.is_ok_and(|body| body.trim() == "LIVE")
}

/// A running Envoy; killed when dropped.
#[derive(Debug)]
pub struct Envoy {
    child: Child,
    admin_port: u16,
    /// Its log file.
    pub log_path: PathBuf,
}

impl Envoy {
    /// Starts `binary` with `config` (written to `dir`), logging to `dir`, and
    /// waits until it is LIVE.
    pub async fn start(binary: &Path, config: &Value, admin_port: u16, dir: &Path) -> std::io::Result<Envoy> {
        let config_path = dir.join("envoy.json");
        let log_path = dir.join("envoy.log");
        std::fs::write(&config_path, serde_json::to_vec_pretty(config)?)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut command = Command::new(binary);
        command.args(args(&config_path)).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        let child = command.spawn()?;
        let mut envoy = Envoy { child, admin_port, log_path };
        let started = Instant::now();
        while !is_live(admin_port).await {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                let log = std::fs::read_to_string(&envoy.log_path).unwrap_or_default();
                return Err(std::io::Error::other(format!("envoy exited ({status}):\n{log}")));
            }
            if started.elapsed() > LIVE_WITHIN {
                return Err(std::io::Error::other(format!("envoy did not become LIVE within {LIVE_WITHIN:?}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(envoy)
    }

    /// GETs `path` from the admin interface; the body.
    pub async fn admin(&self, path: &str) -> std::io::Result<String> {
        admin_get(self.admin_port, path).await
    }

    /// A counter or gauge, e.g. `cluster.payment-v1.upstream_rq_total`; 0 if absent.
    pub async fn stat(&self, name: &str) -> u64 {
        stat(self.admin_port, name).await
    }
}

/// A counter or gauge of the Envoy whose admin interface is on `admin_port`;
/// 0 if absent or unreachable.
pub async fn stat(admin_port: u16, name: &str) -> u64 {
    let text = admin_get(admin_port, &format!("/stats?filter=^{name}$")).await.unwrap_or_default();
    text.lines().find_map(|line| line.strip_prefix(&format!("{name}: ")).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

/// A plain HTTP/1.1 GET (`Connection: close`) on loopback: the admin interface needs no more.
pub async fn admin_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .map_err(|_| std::io::Error::other("admin interface did not answer"))??;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response.as_str(), ""));
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Ok(body.to_owned());
    }
    // Chunked: size line in hex, the chunk, CRLF; a zero size ends it.
    let (mut rest, mut out) = (body, String::new());
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    Ok(out)
}
