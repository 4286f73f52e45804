//! The database handle every service uses: SQLite (embedded default) or
//! PostgreSQL, chosen by the URL, through sqlx's `Any` driver so that one SQL
//! text serves both. Statements use `$1` placeholders (SQLite accepts them),
//! integers are 64-bit, times are microseconds, payloads are blobs.
//!
//! SQLite allows one writer at a time. Rather than letting writers collide and
//! retry on `SQLITE_BUSY`, a SQLite database gets a writer pool of exactly one
//! connection (writes queue in the pool, in order) and a separate pool of
//! readers, which WAL lets run beside the writer. PostgreSQL uses one pool for
//! both.

use std::{path::Path, str::FromStr, time::Duration};

use serde::Deserialize;
use sqlx::{
    Any, AnyConnection, AnyPool, Executor, Transaction,
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::{MigrateError, Migrator},
};

use crate::config::Secret;

/// Where a service keeps its data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path/to/file.db` (created if missing) or `postgres://user:pass@host/db`.
    pub url: Secret<String>,
    /// The most connections to PostgreSQL, or SQLite readers.
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing.
    #[serde(deserialize_with = "crate::config::millis", rename = "acquire_timeout_ms")]
    pub acquire_timeout: Duration,
    /// SQLite's `synchronous` setting. FULL syncs the WAL on every commit, so a
    /// committed transaction survives power loss; NORMAL survives a process
    /// crash only, and is faster.
    #[serde(default = "default_synchronous")]
    pub sqlite_synchronous: String,
    /// SQLite only: how much of the file each connection reads through a
    /// memory map, in MiB; 0 reads with plain read calls. A file that grows
    /// makes every connection drop and redo its map at its next transaction
    /// (an munmap with a TLB flush on every core), so while the file grows
    /// under load, a map costs more than it saves.
    #[serde(default)]
    pub sqlite_mmap_mib: u64,
}

fn default_synchronous() -> String {
    "FULL".to_owned()
}

/// The database engine behind a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Why the database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names neither SQLite nor PostgreSQL.
    #[error("unsupported database URL scheme (expected sqlite:// or postgres://)")]
    UnsupportedScheme,
    /// The SQLite file's directory could not be created.
    #[error("cannot create the directory of the SQLite file: {0}")]
    CreateDir(std::io::Error),
    /// sqlx refused the URL or the connection.
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    /// A migration failed.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
}

/// The two sets of migrations of a service, one per engine.
#[derive(Debug)]
pub struct Migrations {
    /// For SQLite.
    pub sqlite: Migrator,
    /// For PostgreSQL.
    pub postgres: Migrator,
}

/// Outbox and inbox tables, shared by every service; versions below 100.
/// Services number their own migrations from 100.
fn platform_migrations() -> Migrations {
    Migrations { sqlite: sqlx::migrate!("migrations/sqlite"), postgres: sqlx::migrate!("migrations/postgres") }
}

/// A connection to one service's database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Database {
    writer: AnyPool,
    reader: AnyPool,
    backend: Backend,
}

impl Database {
    /// Prepares the pools without connecting: the service starts, reports
    /// NOT_SERVING, and connects (and migrates) in the background.
    pub fn connect_lazy(settings: &DatabaseSettings) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let url = settings.url.expose();
        if url.starts_with("sqlite:") {
            Self::sqlite(url, settings)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = pool_options(settings).max_connections(settings.max_connections).connect_lazy(url)?;
            Ok(Self { writer: pool.clone(), reader: pool, backend: Backend::Postgres })
        } else {
            Err(DbError::UnsupportedScheme)
        }
    }

    fn sqlite(url: &str, settings: &DatabaseSettings) -> Result<Self, DbError> {
        let mut url = url.to_owned();
        let path = url.trim_start_matches("sqlite:").trim_start_matches("//").split('?').next().unwrap_or_default().to_owned();
        if let Some(dir) = Path::new(&path).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(DbError::CreateDir)?;
        }
        if !url.contains("mode=") {
            url.push_str(if url.contains('?') { "&mode=rwc" } else { "?mode=rwc" });
        }
        let options = AnyConnectOptions::from_str(&url)?;
        let synchronous = match settings.sqlite_synchronous.to_ascii_uppercase().as_str() {
            "NORMAL" => "NORMAL",
            "OFF" => "OFF",
            _ => "FULL",
        };
        let mmap_bytes = settings.sqlite_mmap_mib * 1024 * 1024;
        let with_pragmas = move |pool: AnyPoolOptions| {
            pool.after_connect(move |conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; it is a property of
                    // the file and is set again harmlessly on every connection.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    // `synchronous` is one of three fixed words, never input.
                    conn.execute(sqlx::AssertSqlSafe(format!("PRAGMA synchronous = {synchronous}"))).await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    // A number, never input. Each connection caches up to 4 MiB of pages.
                    conn.execute(sqlx::AssertSqlSafe(format!("PRAGMA mmap_size = {mmap_bytes}"))).await?;
                    conn.execute("PRAGMA cache_size = -4096").await?;
                    // Checkpoints run in the background (`run_maintenance`); this
                    // only bounds the WAL if that falls behind (16 MiB).
                    conn.execute("PRAGMA wal_autocheckpoint = 4000").await?;
                    Ok(())
                })
            })
        };
        let writer = with_pragmas(pool_options(settings).max_connections(1)).connect_lazy_with(options.clone());
        let reader =
            with_pragmas(pool_options(settings).max_connections(settings.max_connections.max(1))).connect_lazy_with(options);
        Ok(Self { writer, reader, backend: Backend::Sqlite })
    }

    /// The engine.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool for statements that write.
    pub fn writer(&self) -> &AnyPool {
        &self.writer
    }

    /// The pool for reads; on SQLite these never wait for the writer.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    /// One round trip to the database (the health watchdog's check).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.reader).await.map(|_| ())
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        self.writer.begin().await
    }

    /// Applies the platform's migrations (outbox, inbox) and the service's.
    pub async fn migrate(&self, service: &Migrations) -> Result<(), DbError> {
        let platform = platform_migrations();
        let (platform, service) = match self.backend {
            Backend::Sqlite => (platform.sqlite, &service.sqlite),
            Backend::Postgres => (platform.postgres, &service.postgres),
        };
        let all = platform.iter().chain(service.iter()).cloned().collect();
        Migrator::with_migrations(all).run(&self.writer).await?;
        Ok(())
    }

    /// Background upkeep until `stop`. On SQLite: checkpoints the WAL into
    /// the database file from a reader connection every 250 ms (PASSIVE: it
    /// never blocks the writer), so commits do not pay for checkpoints and the
    /// WAL stays small. Nothing to do on PostgreSQL.
    pub async fn run_maintenance(self, stop: tokio_util::sync::CancellationToken) {
        if self.backend != Backend::Sqlite {
            return;
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&self.reader).await {
                tracing::debug!(error = %err, "WAL checkpoint skipped");
            }
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

fn pool_options(settings: &DatabaseSettings) -> AnyPoolOptions {
    AnyPoolOptions::new().acquire_timeout(settings.acquire_timeout).min_connections(0)
}

/// Placeholders for statements built at run time: multi-row inserts and
/// updates, `IN` lists.
///
/// Each placeholder stands for one value, and values are bound in the order
/// their placeholders appear. SQLite gets anonymous `?`: for a numbered or
/// named parameter SQLite looks the name up by a linear search on every bind,
/// which makes a statement with hundreds of `$n` quadratic (seen in profiles
/// of multi-row inserts). PostgreSQL gets `$1, $2, ...`.
#[derive(Debug, Clone)]
pub struct Params {
    numbered: bool,
    count: usize,
}

impl Params {
    /// Placeholders in the style of the engine behind `conn`.
    pub fn new(conn: &AnyConnection) -> Self {
        Self { numbered: conn.backend_name() != "SQLite", count: 0 }
    }

    /// The placeholder of the next value.
    pub fn value(&mut self) -> String {
        self.count += 1;
        if self.numbered { format!("${}", self.count) } else { "?".to_owned() }
    }

    /// `n` placeholders separated by commas.
    pub fn list(&mut self, n: usize) -> String {
        (0..n).map(|_| self.value()).collect::<Vec<_>>().join(", ")
    }

    /// `(` `n` placeholders `)`: one row of a `VALUES` list.
    pub fn row(&mut self, n: usize) -> String {
        format!("({})", self.list(n))
    }

    /// `rows` rows of `n` placeholders each, comma-separated.
    pub fn rows(&mut self, rows: usize, n: usize) -> String {
        (0..rows).map(|_| self.row(n)).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_placeholders_count_in_order_of_appearance() {
        let mut p = Params { numbered: true, count: 0 };
        assert_eq!(p.value(), "$1");
        assert_eq!(p.rows(2, 2), "($2, $3), ($4, $5)");
        assert_eq!(p.list(0), "");
        let mut anonymous = Params { numbered: false, count: 0 };
        assert_eq!(anonymous.row(3), "(?, ?, ?)");
    }
}
