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
    Any, AnyConnection, AnyPool, Executor, Transaction,
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::{MigrateError, Migrator},
    pool::PoolConnection,
};
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
/// themselves (README, Benchmark). So requests go first, and background work
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

/// A use of the writer holding its turn until dropped: [`WriteTx`] or
/// [`WriteConn`].
#[derive(Debug)]
pub struct Held<C> {
    // Declared first, so dropped first: the connection (and the rollback of
    // an unfinished transaction) is given back before the next writer runs.
    conn: C,
    _turn: Turn,
}

/// A write transaction holding the writer's turn until it ends.
pub type WriteTx = Held<Transaction<'static, Any>>;

/// The writer connection outside a transaction (each statement commits on
/// its own), holding the writer's turn until dropped.
pub type WriteConn = Held<PoolConnection<Any>>;

impl WriteTx {
    /// Commits, then gives up the turn.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let Self { conn, _turn } = self;
        conn.commit().await
    }

    /// Rolls back, then gives up the turn.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        let Self { conn, _turn } = self;
        conn.rollback().await
    }
}

impl<C: DerefMut<Target = AnyConnection>> Deref for Held<C> {
    type Target = AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl<C: DerefMut<Target = AnyConnection>> DerefMut for Held<C> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
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
        // comes back). A SQLite connection is a thread in this process, not a
        // socket that can be cut, so the check only costs a round trip to that
        // thread on every use.
        let sqlite_pool = || pool_options(settings).test_before_acquire(false);
        let writer = with_pragmas(sqlite_pool().max_connections(1)).connect_lazy_with(options.clone());
        let reader = with_pragmas(sqlite_pool().max_connections(settings.max_connections.max(1))).connect_lazy_with(options);
        Ok(Self { writer, reader, backend: Backend::Sqlite, turns: Some(Arc::default()) })
    }

    /// The engine.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool for statements that write, outside the turns of
    /// [`Database::begin`] and [`Database::write`]: for tests and tools, which
    /// then simply queue in the pool.
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

    /// Reports every turn on SQLite's writer to `observer` from now on (the
    /// first observer stays; nothing on PostgreSQL, which has no turns).
    pub fn observe_writer(&self, observer: Arc<dyn WriterObserver>) {
        if let Some(turns) = &self.turns {
            let _ = turns.observer.set(observer);
        }
    }

    /// Waits for the writer's turn (SQLite) and starts a write transaction.
    pub async fn begin(&self, urgency: Urgency) -> Result<WriteTx, sqlx::Error> {
        let turn = self.turn(urgency).await?;
        Ok(Held { conn: self.writer.begin().await?, _turn: turn })
    }

    /// Waits for the writer's turn (SQLite) and takes the writer connection,
    /// for statements that each commit on their own, or for reading what was
    /// just written.
    pub async fn write(&self, urgency: Urgency) -> Result<WriteConn, sqlx::Error> {
        let turn = self.turn(urgency).await?;
        Ok(Held { conn: self.writer.acquire().await?, _turn: turn })
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
