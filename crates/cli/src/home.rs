//! The local mesh's home directory (`.foodmesh` by default): signing keys,
//! every service's SQLite file, NATS's JetStream store, logs, and the
//! endpoints of the running mesh for the other commands.
//!
//! ```text
//! .foodmesh/
//!   keys/jwt.pem  keys/jwt.pub.pem   the local signing key pair (Ed25519)
//!   data/<service>.db                 each service's database
//!   nats/                             JetStream's store
//!   logs/<process>.log                every process's output
//!   mesh.json                         the endpoints of the running mesh
//! ```

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use foodmesh_platform::auth::{Principal, TokenIssuer, generate_keypair};
use serde::{Deserialize, Serialize};

/// The claims of locally issued tokens; the services' defaults expect them.
pub const ISSUER: &str = "foodmesh-local";
/// See [`ISSUER`].
pub const AUDIENCE: &str = "foodmesh";
/// See [`ISSUER`].
pub const KEY_ID: &str = "local";

/// Where the running mesh listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoints {
    /// order's gRPC address.
    pub order: String,
    /// payment's gRPC address.
    pub payment: String,
    /// store's gRPC address.
    pub store: String,
    /// notification's gRPC address.
    pub notification: String,
    /// NATS URL.
    pub nats: String,
    /// order's own address when it runs behind the local Envoy (`up --mesh`):
    /// operator services per replica, which the gateway does not route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_direct: Option<String>,
    /// payment's own address behind the local Envoy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_direct: Option<String>,
    /// The local Envoy's admin interface (stats, clusters), with `up --mesh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_admin: Option<String>,
}

/// Refuses an address that is not on loopback: the load generator and the
/// operator commands only ever talk to a local mesh.
pub fn ensure_loopback(addr: &str, who: &str) -> Result<()> {
    if !addr.starts_with("127.") && !addr.starts_with("localhost") && !addr.starts_with("[::1]") {
        bail!("{who} only talk to loopback endpoints, not {addr}");
    }
    Ok(())
}

/// The home directory.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The home at `root` (created if missing).
    pub fn open(root: &Path) -> Result<Self> {
        for dir in ["keys", "data", "nats", "logs"] {
            std::fs::create_dir_all(root.join(dir)).with_context(|| format!("cannot create {}", root.join(dir).display()))?;
        }
        let root = root.canonicalize()?;
        Ok(Self { root })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path inside it.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// The public key file the services verify tokens with; creates the key
    /// pair on first use.
    pub fn ensure_keys(&self) -> Result<PathBuf> {
        let (private, public) = (self.path("keys/jwt.pem"), self.path("keys/jwt.pub.pem"));
        if !private.exists() || !public.exists() {
            let (private_pem, public_pem) = generate_keypair()?;
            write_private(&private, &private_pem)?;
            std::fs::write(&public, public_pem)?;
        }
        Ok(public)
    }

    /// Signs tokens with the local key.
    pub fn issuer(&self) -> Result<TokenIssuer> {
        let pem = std::fs::read(self.path("keys/jwt.pem"))
            .with_context(|| format!("no signing key in {}: run `foodmesh up` first", self.root.display()))?;
        Ok(TokenIssuer::from_private_pem(&pem, KEY_ID, ISSUER, AUDIENCE)?)
    }

    /// `Bearer <token>` for `principal`, valid for 12 hours.
    pub fn bearer(&self, principal: &Principal) -> Result<String> {
        Ok(format!("Bearer {}", self.issuer()?.issue(principal, Duration::from_secs(12 * 3600))?))
    }

    /// Records the running mesh's endpoints.
    pub fn write_endpoints(&self, endpoints: &Endpoints) -> Result<()> {
        std::fs::write(self.path("mesh.json"), serde_json::to_string_pretty(endpoints)?)?;
        Ok(())
    }

    /// The running mesh's endpoints.
    pub fn endpoints(&self) -> Result<Endpoints> {
        let path = self.path("mesh.json");
        if !path.exists() {
            bail!("no mesh is running from {} (start one with `foodmesh up`)", self.root.display());
        }
        Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
    }

    /// Forgets the endpoints (the mesh stopped).
    pub fn clear_endpoints(&self) {
        let _ = std::fs::remove_file(self.path("mesh.json"));
    }
}

fn write_private(path: &Path, pem: &str) -> Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(pem.as_bytes())?;
    Ok(())
}
