//! Stores and their menus.

use foodmesh_platform::money::Money;
use sha2::{Digest, Sha256};

/// A restaurant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    /// Its id, for example `seoul-bbq`.
    pub store_id: String,
    /// Display name.
    pub name: String,
    /// Kind of food.
    pub cuisine: String,
    /// Where it cooks.
    pub address: String,
}

/// One dish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuItem {
    /// Its id within the store.
    pub menu_item_id: String,
    /// Display name.
    pub name: String,
    /// One line of description.
    pub description: String,
    /// The price of one portion.
    pub price: Money,
}

/// A store with its whole menu, at a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// The store.
    pub store: Store,
    /// Its menu, in display order.
    pub items: Vec<MenuItem>,
    /// Grows by one with every change.
    pub version: i64,
}

impl Catalog {
    /// A digest of everything a customer sees, to tell whether a seed changed.
    pub fn content_hash(&self) -> String {
        let mut hash = Sha256::new();
        let s = &self.store;
        for part in [&s.store_id, &s.name, &s.cuisine, &s.address] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        for item in &self.items {
            for part in [&item.menu_item_id, &item.name, &item.description] {
                hash.update(part.as_bytes());
                hash.update([0]);
            }
            hash.update(item.price.currency().code().as_bytes());
            hash.update(item.price.amount_minor().to_le_bytes());
        }
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use foodmesh_platform::money::Currency;

    use super::*;

    fn catalog(price: i64) -> Catalog {
        Catalog {
            store: Store { store_id: "s".into(), name: "S".into(), cuisine: "c".into(), address: "a".into() },
            items: vec![MenuItem {
                menu_item_id: "i".into(),
                name: "I".into(),
                description: "d".into(),
                price: Money::new(Currency::KRW, price).expect("valid"),
            }],
            version: 1,
        }
    }

    #[test]
    fn the_hash_changes_with_a_price_and_not_with_the_version() {
        let mut bumped = catalog(100);
        bumped.version = 7;
        assert_eq!(catalog(100).content_hash(), bumped.content_hash());
        assert_ne!(catalog(100).content_hash(), catalog(101).content_hash());
    }
}
