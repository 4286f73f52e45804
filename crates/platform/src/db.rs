//! The database handle every service uses: SQLite (embedded default) or
//! PostgreSQL, chosen by the URL, through sqlx's `Any` driver so that one SQL
//! text serves both. Statements use `$1` placeholders (SQLite accepts them),
//! integers are 64-bit, times are microseconds, payloads are blobs.
//!
//! SQLite allows one writer at a time. Rather than letting writers collide and
//! retry on `SQLITE_BUSY`, a SQLite database gets a writer pool of exactly one
//! connection and a separate pool of readers, which WAL lets run beside the
//! writer. Writers take turns on that connection, and a write a caller is
//! waiting for goes before background work (see [`Urgency`]). PostgreSQL
//! uses one pool for both, without turns.

use std::{
    collections::VecDeque,
    ops::{Deref, DerefMut},
    path::Path,
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Deserialize;
use sqlx::{
    Any, AnyConnection, AnyPool, Executor,
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::{MigrateError, Migrator},
    pool::PoolConnection,
};
// sqlx does not re-export the trait its `Transaction` is built on; the
// writer needs it to keep its connection across turns (see `Writer`).
use sqlx_core::transaction::TransactionManager;
// Tokio's clock, which a test can pause and advance.
use tokio::{sync::oneshot, time::Instant};

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
    /// No connection could be made; the error of one made directly.
    #[error("cannot connect to the database: {0}")]
    Unreachable(#[source] sqlx::Error),
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
    /// SQLite's turns on the one writer; `None` on PostgreSQL.
    turns: Option<Arc<Turns>>,
}

/// Who waits for a write, which decides its turn on SQLite's one writer.
///
/// A customer's request waits for its write; an event consumer, the outbox
/// relay or a sweep can wait a few milliseconds without anyone noticing.
/// First come first served, a request queued behind consumer batches and
/// relay rounds and waited for each: at 500 orders/s PlaceOrder's writes
/// waited 27-34 ms at p99 for the writer, against 4-8 ms for the writes
/// themselves (docs/benchmarks.md). So requests go first, and background work
/// goes first only once it has waited [`BACKGROUND_MAX_WAIT`], which keeps it
/// from starving when requests never stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// A caller is waiting for this write (an RPC).
    Request,
    /// Nobody waits for it right now (consumers, relays, sweeps, upkeep).
    Background,
}

/// How long background work waits at most while requests keep coming.
pub const BACKGROUND_MAX_WAIT: Duration = Duration::from_millis(20);

/// Told how long each use of SQLite's one writer waited for its turn and
/// how long it held it, by urgency. This is where a request's write waits
/// behind background transactions, so operators see it as two histograms
/// (`platform::metrics`).
pub trait WriterObserver: Send + Sync + std::fmt::Debug {
    /// A turn was granted after `waited`.
    fn waited(&self, urgency: Urgency, waited: Duration);
    /// A turn was given up after being held for `held`.
    fn held(&self, urgency: Urgency, held: Duration);
}

/// The queue for SQLite's writer: who holds it and who waits, by urgency.
#[derive(Debug, Default)]
struct Turns {
    state: Mutex<TurnState>,
    observer: std::sync::OnceLock<Arc<dyn WriterObserver>>,
    /// The writer connection between turns, passed on by the last (see [`Writer`]).
    parked: Mutex<Option<PoolConnection<Any>>>,
}

#[derive(Debug, Default)]
struct TurnState {
    held: bool,
    requests: VecDeque<oneshot::Sender<Turn>>,
    background: VecDeque<(Instant, oneshot::Sender<Turn>)>,
}

/// The right to use the writer; passed on to the next in line when dropped.
#[derive(Debug)]
struct Turn {
    turns: Option<Arc<Turns>>,
    urgency: Urgency,
    /// When it was granted.
    since: Instant,
}

impl Turn {
    fn new(turns: &Arc<Turns>, urgency: Urgency) -> Self {
        Self { turns: Some(turns.clone()), urgency, since: Instant::now() }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(turns) = self.turns.take() {
            if let Some(observer) = turns.observer.get() {
                observer.held(self.urgency, self.since.elapsed());
            }
            turns.pass();
        }
    }
}

impl Turns {
    fn parked(&self) -> std::sync::MutexGuard<'_, Option<PoolConnection<Any>>> {
        // Only the holder of the turn touches it, a take or a put at a time.
        self.parked.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TurnState> {
        // The state is a flag and two queues, consistent after every
        // statement: a panic elsewhere cannot leave it half-changed.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn take(self: &Arc<Self>, urgency: Urgency) -> Result<Turn, sqlx::Error> {
        let asked = Instant::now();
        let turn = self.wait_for_turn(urgency).await?;
        if let Some(observer) = self.observer.get() {
            observer.waited(urgency, asked.elapsed());
        }
        Ok(turn)
    }

    async fn wait_for_turn(self: &Arc<Self>, urgency: Urgency) -> Result<Turn, sqlx::Error> {
        let waiting = {
            let mut state = self.state();
            if !state.held {
                state.held = true;
                return Ok(Turn::new(self, urgency));
            }
            let (sender, receiver) = oneshot::channel();
            match urgency {
                Urgency::Request => state.requests.push_back(sender),
                Urgency::Background => state.background.push_back((Instant::now(), sender)),
            }
            receiver
        };
        // A turn sent to a waiter that is gone is dropped with its channel,
        // which passes it on: cancelling a wait loses no turn.
        waiting.await.map_err(|_| sqlx::Error::PoolClosed)
    }

    /// Hands the writer to the next in line, or marks it free.
    fn pass(self: &Arc<Self>) {
        loop {
            let next = {
                let mut state = self.state();
                let starved = state.background.front().is_some_and(|(since, _)| since.elapsed() >= BACKGROUND_MAX_WAIT);
                // Starved background work is not empty, so it goes next.
                let next = if starved { None } else { state.requests.pop_front().map(|s| (Urgency::Request, s)) };
                match next.or_else(|| state.background.pop_front().map(|(_, s)| (Urgency::Background, s))) {
                    Some(next) => next,
                    None => {
                        state.held = false;
                        return;
                    }
                }
            };
            let (urgency, next) = next;
            match next.send(Turn::new(self, urgency)) {
                Ok(()) => return,
                // That waiter gave up; its turn goes to the next, not through Drop.
                Err(mut unclaimed) => unclaimed.turns = None,
            }
        }
    }
}

/// A use of the writer, holding its turn until dropped: the inside of
/// [`WriteTx`] and [`WriteConn`].
///
/// On SQLite the writer connection goes from turn to turn instead of back to
/// the pool: sqlx tests every connection given back to a pool with a ping, a
/// round trip to the connection's thread, and with one writer the next turn
/// waited for that ping (and for the task sqlx spawns to run it) before it
/// could begin. A connection is passed on only after a commit or rollback went
/// through, which shows it works; after anything else (an error, a dropped
/// transaction, statements outside a transaction) it goes back to the pool,
/// which tests it as before.
#[derive(Debug)]
struct Writer {
    /// `Some` until dropped.
    conn: Option<PoolConnection<Any>>,
    /// A transaction was begun and has not ended.
    open: bool,
    /// The connection ended a transaction cleanly: the next turn may take it.
    sound: bool,
    // Declared after the connection, so dropped after it is parked or given back.
    turn: Turn,
}

/// sqlx's transaction statements for the Any driver: `BEGIN`, `COMMIT` and
/// `ROLLBACK` as each backend spells them.
type Tm = <Any as sqlx::Database>::TransactionManager;

impl Deref for Writer {
    type Target = AnyConnection;
    fn deref(&self) -> &Self::Target {
        self.conn.as_ref().expect("the connection is present until the writer is dropped")
    }
}

impl DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.conn.as_mut().expect("the connection is present until the writer is dropped")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        if self.open {
            // Queued on the connection, before anything the next user sends.
            <Tm as TransactionManager>::start_rollback(&mut conn);
        }
        match self.turn.turns.as_ref() {
            Some(turns) if self.sound && !self.open => *turns.parked() = Some(conn),
            // Back to the pool, which pings it first.
            _ => drop(conn),
        }
    }
}

/// A write transaction holding the writer's turn until it ends. Dropped
/// without [`WriteTx::commit`], it rolls back.
#[derive(Debug)]
pub struct WriteTx(Writer);

/// The writer connection outside a transaction (each statement commits on
/// its own), holding the writer's turn until dropped.
#[derive(Debug)]
pub struct WriteConn(Writer);

impl WriteTx {
    /// Commits, then gives up the turn.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        <Tm as TransactionManager>::commit(&mut self.0).await?;
        self.0.open = false;
        self.0.sound = true;
        Ok(())
    }

    /// Rolls back, then gives up the turn.
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        <Tm as TransactionManager>::rollback(&mut self.0).await?;
        self.0.open = false;
        self.0.sound = true;
        Ok(())
    }
}

/// Both wrappers lend the writer's connection for statements.
macro_rules! lends_the_connection {
    ($($wrapper:ty),*) => {$(
        impl Deref for $wrapper {
            type Target = AnyConnection;
            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }

        impl DerefMut for $wrapper {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.0
            }
        }
    )*};
}
lends_the_connection!(WriteTx, WriteConn);

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
            Ok(Self { writer: pool.clone(), reader: pool, backend: Backend::Postgres, turns: None })
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
        // sqlx pings a pooled connection before lending it (and again when it
        // comes back, which the writer avoids by keeping its connection from
        // turn to turn: see `Writer`). A SQLite connection is a thread in this
        // process, not a socket that can be cut, so the check only costs a
        // round trip to that thread on every use.
        let sqlite_pool = || pool_options(settings).test_before_acquire(false);
        let writer = with_pragmas(sqlite_pool().max_connections(1)).connect_lazy_with(options.clone());
        let reader = with_pragmas(sqlite_pool().max_connections(settings.max_connections.max(1))).connect_lazy_with(options);
        Ok(Self { writer, reader, backend: Backend::Sqlite, turns: Some(Arc::default()) })
    }

    /// The engine.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool for reads; on SQLite these never wait for the writer.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    /// One round trip to the database (the health watchdog's check).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.reader).await.map(|_| ())
    }

    /// Reports every turn on SQLite's writer to `observer` from now on (the
    /// first observer stays; nothing on PostgreSQL, which has no turns).
    pub fn observe_writer(&self, observer: Arc<dyn WriterObserver>) {
        if let Some(turns) = &self.turns {
            let _ = turns.observer.set(observer);
        }
    }

    /// Waits for the writer's turn (SQLite) and starts a write transaction.
    pub async fn begin(&self, urgency: Urgency) -> Result<WriteTx, sqlx::Error> {
        let mut writer = self.writer_turn(urgency).await?;
        <Tm as TransactionManager>::begin(&mut writer, None).await?;
        writer.open = true;
        Ok(WriteTx(writer))
    }

    /// Waits for the writer's turn (SQLite) and takes the writer connection,
    /// for statements that each commit on their own, or for reading what was
    /// just written.
    pub async fn write(&self, urgency: Urgency) -> Result<WriteConn, sqlx::Error> {
        Ok(WriteConn(self.writer_turn(urgency).await?))
    }

    /// Waits for the writer's turn (SQLite), then takes the connection the
    /// last turn passed on, or one from the pool.
    async fn writer_turn(&self, urgency: Urgency) -> Result<Writer, sqlx::Error> {
        let turn = self.turn(urgency).await?;
        let passed_on = turn.turns.as_ref().and_then(|turns| turns.parked().take());
        let conn = match passed_on {
            Some(conn) => conn,
            None => self.writer.acquire().await?,
        };
        Ok(Writer { conn: Some(conn), open: false, sound: false, turn })
    }

    async fn turn(&self, urgency: Urgency) -> Result<Turn, sqlx::Error> {
        match &self.turns {
            Some(turns) => turns.take(urgency).await,
            None => Ok(Turn { turns: None, urgency, since: Instant::now() }),
        }
    }

    /// Applies the platform's migrations (outbox, inbox) and the service's.
    pub async fn migrate(&self, service: &Migrations) -> Result<(), DbError> {
        let platform = platform_migrations();
        let (platform, service) = match self.backend {
            Backend::Sqlite => (platform.sqlite, &service.sqlite),
            Backend::Postgres => (platform.postgres, &service.postgres),
        };
        let all = platform.iter().chain(service.iter()).cloned().collect();
        // On the writer's turn. The migrator takes its connection from the
        // pool, so the one parked between turns (see `Writer`) goes back first.
        let turn = self.turn(Urgency::Background).await?;
        drop(turn.turns.as_ref().and_then(|turns| turns.parked().take()));
        let migrated = Migrator::with_migrations(all).run(&self.writer).await;
        drop(turn);
        match migrated {
            Err(MigrateError::Execute(err)) => Err(match self.explain(err).await {
                DbError::Sqlx(err) => MigrateError::Execute(err).into(),
                unreachable => unreachable,
            }),
            other => other.map_err(Into::into),
        }
    }

    /// `err`, or why no connection can be made when `err` is the pool's
    /// timeout. The pool reports only that it timed out (its own connect
    /// errors are logged at debug level), which leaves an operator guessing
    /// between a refused connection, an unknown host and a wrong password;
    /// one direct connection names the cause. No password is in it: sqlx
    /// never prints the URL.
    pub async fn explain(&self, err: sqlx::Error) -> DbError {
        if !matches!(err, sqlx::Error::PoolTimedOut) {
            return DbError::Sqlx(err);
        }
        match self.connect_error().await {
            Some(cause) => DbError::Unreachable(cause),
            None => DbError::Sqlx(err),
        }
    }

    /// The error of one connection made directly, outside the pools (closed
    /// at once if it works); `None` if it connects or takes over 5 s.
    pub async fn connect_error(&self) -> Option<sqlx::Error> {
        use sqlx::{ConnectOptions as _, Connection as _};
        match tokio::time::timeout(Duration::from_secs(5), self.writer.connect_options().connect()).await {
            Ok(Err(cause)) => Some(cause),
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                None
            }
            Err(_) => None,
        }
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
        // The pool waits for every connection lent out, the parked writer too.
        let parked = self.turns.as_ref().and_then(|turns| turns.parked().take());
        drop(parked);
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
/// Such a statement is prepared anew for every shape (its number of rows or
/// values) that is not among the connection's cached statements, and sqlx
/// keeps 100 per connection (the `Any` driver offers no way to raise that for
/// SQLite). With one shape per batch size, a service's batches crowded each
/// other out: in a 10-second run at 500 orders/s, order prepared 1,447
/// statements and store 1,350, and preparing was 4.5 % of the machine's CPU.
/// So the shapes are powers of two. Where a repeated value or row changes
/// nothing (an `IN` list; an update's source rows; an insert whose
/// `ON CONFLICT DO NOTHING` covers every key the repeated row collides on),
/// the list is padded to the next power of two with its last value or row
/// ([`Params::in_list`], [`Params::padded_rows`], bound with [`padded`]);
/// otherwise the rows go in [`batches`].
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

    /// The placeholders of an `IN` list of `n` values: as many as
    /// [`padded`] binds for them.
    pub fn in_list(&mut self, n: usize) -> String {
        self.list(padded_len(n))
    }

    /// [`Params::rows`] for `rows` rows padded as [`padded`] pads them.
    pub fn padded_rows(&mut self, rows: usize, n: usize) -> String {
        self.rows(padded_len(rows), n)
    }
}

/// `n` rounded up to a power of two (0 stays 0): the length of a padded list.
pub fn padded_len(n: usize) -> usize {
    if n == 0 { 0 } else { n.next_power_of_two() }
}

/// The values of an `IN` list (or the rows of a statement), then the last one
/// again until there are [`padded_len`]: as many as [`Params::in_list`] and
/// [`Params::padded_rows`] make placeholders for. A value repeated in an `IN`
/// list matches no more rows than it did once.
pub fn padded<T>(values: &[T]) -> impl Iterator<Item = &T> {
    let pad = padded_len(values.len()) - values.len();
    values.iter().chain(std::iter::repeat_n(values.last(), pad).flatten())
}

/// `items` in consecutive batches whose lengths are powers of two, longest
/// first, none longer than `max` (itself a power of two): 13 rows go as 8, 4
/// and 1. A statement over a batch then has one of few shapes (see
/// [`Params`]); the price is a statement or two more per call.
pub fn batches<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    debug_assert!(max.is_power_of_two(), "batches of at most {max}: not a power of two");
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        // The largest power of two that fits both what is left and `max`.
        let len = 1 << rest.len().min(max).ilog2();
        let (batch, tail) = rest.split_at(len);
        rest = tail;
        Some(batch)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes a turn at `urgency` in a task that records `label` when it gets
    /// it, holds it for `hold`, and gives it up.
    fn queue(
        turns: &Arc<Turns>,
        urgency: Urgency,
        label: &'static str,
        hold: Duration,
        order: &Arc<Mutex<Vec<&'static str>>>,
    ) -> tokio::task::JoinHandle<()> {
        let (turns, order) = (turns.clone(), order.clone());
        tokio::spawn(async move {
            let _turn = turns.take(urgency).await.expect("a turn");
            order.lock().expect("order lock").push(label);
            tokio::time::sleep(hold).await;
        })
    }

    /// A fresh SQLite database in `dir` with one table of names.
    async fn sqlite_with_names(dir: &tempfile::TempDir) -> Database {
        let settings = DatabaseSettings {
            url: Secret::new(format!("sqlite://{}", dir.path().join("turns.db").display())),
            max_connections: 2,
            acquire_timeout: Duration::from_secs(5),
            sqlite_synchronous: "FULL".to_owned(),
            sqlite_mmap_mib: 0,
        };
        let db = Database::connect_lazy(&settings).expect("settings");
        let mut conn = db.write(Urgency::Background).await.expect("writer");
        conn.execute("CREATE TABLE names (name TEXT NOT NULL)").await.expect("table");
        drop(conn);
        db
    }

    async fn insert(tx: &mut WriteTx, name: &str) {
        sqlx::query("INSERT INTO names (name) VALUES ($1)").bind(name).execute(&mut **tx).await.expect("insert");
    }

    async fn names(db: &Database) -> Vec<String> {
        sqlx::query_scalar("SELECT name FROM names ORDER BY name").fetch_all(db.reader()).await.expect("names")
    }

    fn parked(db: &Database) -> bool {
        db.turns.as_ref().expect("SQLite has turns").parked().is_some()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_committed_writer_goes_to_the_next_turn_and_a_dropped_transaction_leaves_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = sqlite_with_names(&dir).await;
        assert!(!parked(&db), "statements outside a transaction give the writer back to the pool");

        let mut tx = db.begin(Urgency::Request).await.expect("begin");
        insert(&mut tx, "a").await;
        tx.commit().await.expect("commit");
        assert!(parked(&db), "a commit passes the writer on");

        // The next turn takes it; dropped without a commit, its writes are gone
        // and the connection goes back to the pool.
        let mut tx = db.begin(Urgency::Request).await.expect("begin");
        assert!(!parked(&db), "the turn holds it");
        insert(&mut tx, "b").await;
        drop(tx);
        assert!(!parked(&db), "a dropped transaction is not passed on");

        let mut tx = db.begin(Urgency::Background).await.expect("begin after a dropped transaction");
        insert(&mut tx, "c").await;
        tx.rollback().await.expect("rollback");
        assert!(parked(&db), "a rollback that went through passes the writer on");

        let mut tx = db.begin(Urgency::Request).await.expect("begin");
        insert(&mut tx, "d").await;
        tx.commit().await.expect("commit");
        assert_eq!(names(&db).await, ["a", "d"], "only committed rows, none of the dropped or rolled-back ones");

        // Closing does not wait forever for the connection parked between turns.
        tokio::time::timeout(Duration::from_secs(5), db.close()).await.expect("closed with a parked writer");
    }

    /// Lets spawned tasks run up to their first wait, in spawn order.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_request_writes_before_background_work_that_queued_first() {
        let (turns, order) = (Arc::new(Turns::default()), Arc::new(Mutex::new(Vec::new())));
        let held = turns.take(Urgency::Background).await.expect("free writer");
        let mut tasks = vec![queue(&turns, Urgency::Background, "relay", Duration::ZERO, &order)];
        settle().await;
        tasks.push(queue(&turns, Urgency::Background, "consumer", Duration::ZERO, &order));
        settle().await;
        tasks.push(queue(&turns, Urgency::Request, "place order", Duration::ZERO, &order));
        settle().await;
        drop(held);
        for task in tasks {
            task.await.expect("task");
        }
        assert_eq!(*order.lock().expect("order lock"), ["place order", "relay", "consumer"]);
        assert!(!turns.state().held, "the writer is free again");
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn background_work_that_waited_its_limit_goes_before_further_requests() {
        let (turns, order) = (Arc::new(Turns::default()), Arc::new(Mutex::new(Vec::new())));
        let held = turns.take(Urgency::Request).await.expect("free writer");
        let mut tasks = vec![queue(&turns, Urgency::Background, "relay", Duration::ZERO, &order)];
        settle().await;
        // Requests keep the writer past the background's limit.
        tokio::time::advance(BACKGROUND_MAX_WAIT).await;
        tasks.push(queue(&turns, Urgency::Request, "place order", Duration::ZERO, &order));
        settle().await;
        drop(held);
        for task in tasks {
            task.await.expect("task");
        }
        assert_eq!(*order.lock().expect("order lock"), ["relay", "place order"]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_that_gives_up_passes_its_turn_on() {
        let (turns, order) = (Arc::new(Turns::default()), Arc::new(Mutex::new(Vec::new())));
        let held = turns.take(Urgency::Background).await.expect("free writer");
        let impatient = queue(&turns, Urgency::Request, "cancelled", Duration::ZERO, &order);
        settle().await;
        let patient = queue(&turns, Urgency::Background, "relay", Duration::ZERO, &order);
        settle().await;
        impatient.abort();
        // Gone before the turn is handed on: its channel refuses the turn.
        assert!(impatient.await.is_err_and(|e| e.is_cancelled()));
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), patient).await.expect("the next waiter got the turn").expect("task");
        assert_eq!(*order.lock().expect("order lock"), ["relay"]);
        assert!(!turns.state().held);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_turn_handed_to_a_waiter_dropped_before_it_ran_is_not_lost() {
        let turns = Arc::new(Turns::default());
        let held = turns.take(Urgency::Background).await.expect("free writer");
        let waiting = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.take(Urgency::Request).await.map(drop) })
        };
        settle().await;
        // The turn is sent to the waiter, which is aborted before it runs:
        // the turn sits in its channel and is dropped with it.
        drop(held);
        waiting.abort();
        let _ = waiting.await;
        let again = tokio::time::timeout(Duration::from_secs(1), turns.take(Urgency::Background)).await;
        assert!(again.is_ok(), "the writer was freed");
    }

    /// Every turn reported to a [`WriterObserver`]: (what, urgency, time).
    #[derive(Debug, Default)]
    struct Recorded(Mutex<Vec<(&'static str, Urgency, Duration)>>);

    impl WriterObserver for Recorded {
        fn waited(&self, urgency: Urgency, waited: Duration) {
            self.0.lock().expect("lock").push(("waited", urgency, waited));
        }
        fn held(&self, urgency: Urgency, held: Duration) {
            self.0.lock().expect("lock").push(("held", urgency, held));
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_observer_sees_how_long_a_request_waited_behind_background_work() {
        let turns = Arc::new(Turns::default());
        let recorded = Arc::new(Recorded::default());
        turns.observer.set(recorded.clone()).expect("first observer");
        let order = Arc::new(Mutex::new(Vec::new()));
        let held = turns.take(Urgency::Background).await.expect("free writer");
        let request = queue(&turns, Urgency::Request, "place order", Duration::from_millis(3), &order);
        settle().await;
        tokio::time::advance(Duration::from_millis(40)).await;
        drop(held);
        request.await.expect("task");
        let ms = Duration::from_millis;
        assert_eq!(
            *recorded.0.lock().expect("lock"),
            [
                ("waited", Urgency::Background, Duration::ZERO),
                ("held", Urgency::Background, ms(40)),
                ("waited", Urgency::Request, ms(40)),
                ("held", Urgency::Request, ms(3)),
            ]
        );
    }

    #[test]
    fn numbered_placeholders_count_in_order_of_appearance() {
        let mut p = Params { numbered: true, count: 0 };
        assert_eq!(p.value(), "$1");
        assert_eq!(p.rows(2, 2), "($2, $3), ($4, $5)");
        assert_eq!(p.list(0), "");
        let mut anonymous = Params { numbered: false, count: 0 };
        assert_eq!(anonymous.row(3), "(?, ?, ?)");
    }

    #[test]
    fn batches_are_powers_of_two_longest_first_and_keep_every_item_in_order() {
        let items: Vec<u32> = (0..100).collect();
        let lengths: Vec<usize> = batches(&items, 32).map(<[u32]>::len).collect();
        assert_eq!(lengths, [32, 32, 32, 4]);
        let lengths: Vec<usize> = batches(&items[..13], 64).map(<[u32]>::len).collect();
        assert_eq!(lengths, [8, 4, 1]);
        assert_eq!(batches(&items, 64).flatten().copied().collect::<Vec<_>>(), items);
        assert_eq!(batches(&items[..0], 8).count(), 0);
    }

    #[test]
    fn an_in_list_is_padded_with_its_last_value_to_as_many_as_its_placeholders() {
        for n in 0..=70 {
            let values: Vec<usize> = (0..n).collect();
            let bound: Vec<usize> = padded(&values).copied().collect();
            let placeholders = Params { numbered: true, count: 0 }.in_list(n);
            assert_eq!(placeholders.matches('$').count(), bound.len(), "{n} values");
            assert!(bound.len().is_power_of_two() || n == 0, "{n} values padded to {}", bound.len());
            assert_eq!(bound[..n], values[..], "the values come first, in order");
            assert!(bound[n..].iter().all(|v| Some(v) == values.last()), "then the last value again");
        }
    }
}
