//! The menus PlaceOrder prices from, kept for a moment so that every order
//! does not read its store's menu from the database.
//!
//! An entry must never outlive the change that made it stale. Clearing the
//! map is not enough on its own: a read of the database that began before a
//! catalog update committed can finish after the map was cleared and put the
//! old menu (or "no such store") back, where it would stay for the whole
//! time to live. Right after start-up, the demo's two orders at one store
//! were refused as "unknown store" (and retried) for a second: their read
//! overlapped the first catalog's commit. So every invalidation starts a
//! new generation, a read notes the generation it began in, and its result
//! is kept only if no invalidation came in between.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// What a read must hand back to [`ReadCache::store`]: the generation it began in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// A map from key to the value read for it, each kept for `ttl`.
#[derive(Debug)]
pub struct ReadCache<V> {
    ttl: Duration,
    state: Mutex<State<V>>,
}

#[derive(Debug)]
struct State<V> {
    generation: u64,
    entries: HashMap<String, (Instant, V)>,
}

/// A lookup: the value kept for the key, or a ticket to read it with.
#[derive(Debug)]
pub enum Lookup<V> {
    /// Read within the time to live, and not invalidated since.
    Fresh(V),
    /// Not kept: read it, then [`ReadCache::store`] it with this ticket.
    Missing(Ticket),
}

impl<V: Clone> ReadCache<V> {
    /// An empty cache whose entries are reused for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, state: Mutex::new(State { generation: 0, entries: HashMap::new() }) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<V>> {
        // The map is replaced whole under the lock; a panic elsewhere cannot
        // leave it half-written.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value kept for `key`, or a ticket for reading it.
    pub fn lookup(&self, key: &str) -> Lookup<V> {
        let state = self.state();
        match state.entries.get(key) {
            Some((read_at, value)) if read_at.elapsed() < self.ttl => Lookup::Fresh(value.clone()),
            _ => Lookup::Missing(Ticket(state.generation)),
        }
    }

    /// Keeps what a read found, unless the cache was invalidated after the
    /// read began (the value may predate that change). Returns whether it was kept.
    pub fn store(&self, ticket: Ticket, key: &str, value: V) -> bool {
        let mut state = self.state();
        if state.generation != ticket.0 {
            return false;
        }
        state.entries.insert(key.to_owned(), (Instant::now(), value));
        true
    }

    /// Forgets every entry and every read still in flight. Call it after the
    /// change is committed, so that a read beginning later sees the change.
    pub fn invalidate(&self) {
        let mut state = self.state();
        state.generation += 1;
        state.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn ticket(cache: &ReadCache<Option<&'static str>>, key: &str) -> Ticket {
        match cache.lookup(key) {
            Lookup::Missing(ticket) => ticket,
            Lookup::Fresh(v) => panic!("expected a miss, found {v:?}"),
        }
    }

    #[test]
    fn a_stored_read_is_reused_until_an_invalidation() {
        let cache = ReadCache::new(TTL);
        let t = ticket(&cache, "seoul-bbq");
        assert!(cache.store(t, "seoul-bbq", Some("menu v1")));
        assert!(matches!(cache.lookup("seoul-bbq"), Lookup::Fresh(Some("menu v1"))));
        cache.invalidate();
        let t = ticket(&cache, "seoul-bbq");
        assert!(cache.store(t, "seoul-bbq", Some("menu v2")));
        assert!(matches!(cache.lookup("seoul-bbq"), Lookup::Fresh(Some("menu v2"))));
    }

    #[test]
    fn a_read_that_began_before_an_invalidation_is_not_kept() {
        // The interleaving seen at start-up: PlaceOrder reads the catalog copy
        // (no such store yet), the first catalog commits and invalidates, then
        // the read finishes. Its "no such store" must not be kept.
        let cache = ReadCache::new(TTL);
        let before = ticket(&cache, "seoul-bbq");
        cache.invalidate();
        assert!(!cache.store(before, "seoul-bbq", None));
        // The next order reads again, and finds the menu committed.
        let after = ticket(&cache, "seoul-bbq");
        assert!(cache.store(after, "seoul-bbq", Some("menu v1")));
        assert!(matches!(cache.lookup("seoul-bbq"), Lookup::Fresh(Some("menu v1"))));
    }

    #[test]
    fn an_entry_expires_after_its_time_to_live() {
        let cache = ReadCache::new(Duration::ZERO);
        let t = ticket(&cache, "green-bowl");
        assert!(cache.store(t, "green-bowl", Some("menu")));
        assert!(matches!(cache.lookup("green-bowl"), Lookup::Missing(_)));
    }
}
