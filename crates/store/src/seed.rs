//! The catalog the service loads at start: the built-in demo catalog
//! (`seed/catalog.toml`) or a file of the same shape named in the settings.

use foodmesh_platform::money::{Currency, Money};
use serde::Deserialize;

use crate::domain::catalog::{Catalog, MenuItem, Store};

/// The built-in demo catalog.
pub const DEMO_CATALOG: &str = include_str!("../seed/catalog.toml");

#[derive(Deserialize)]
struct SeedFile {
    stores: Vec<SeedStore>,
}

#[derive(Deserialize)]
struct SeedStore {
    store_id: String,
    name: String,
    cuisine: String,
    address: String,
    #[serde(default = "krw")]
    currency: String,
    items: Vec<SeedItem>,
}

#[derive(Deserialize)]
struct SeedItem {
    menu_item_id: String,
    name: String,
    description: String,
    price: i64,
}

fn krw() -> String {
    "KRW".to_owned()
}

/// Why a catalog file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// Not TOML of the expected shape.
    #[error("catalog is not valid: {0}")]
    Parse(#[from] toml::de::Error),
    /// A price or currency is wrong.
    #[error("store {store}: {message}")]
    Invalid {
        /// The store.
        store: String,
        /// What is wrong.
        message: String,
    },
}

/// Parses a catalog file.
pub fn parse(text: &str) -> Result<Vec<Catalog>, SeedError> {
    let file: SeedFile = toml::from_str(text)?;
    file.stores
        .into_iter()
        .map(|s| {
            let invalid = |message: String| SeedError::Invalid { store: s.store_id.clone(), message };
            let currency = Currency::parse(&s.currency).map_err(|e| invalid(e.to_string()))?;
            let items = s
                .items
                .into_iter()
                .map(|i| {
                    let price = Money::new(currency, i.price).map_err(|e| invalid(format!("{}: {e}", i.menu_item_id)))?;
                    Ok(MenuItem { menu_item_id: i.menu_item_id, name: i.name, description: i.description, price })
                })
                .collect::<Result<Vec<_>, SeedError>>()?;
            let store = Store { store_id: s.store_id, name: s.name, cuisine: s.cuisine, address: s.address };
            Ok(Catalog { store, items, version: 0 })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_catalog_loads_with_unique_ids() {
        let catalogs = parse(DEMO_CATALOG).expect("valid demo catalog");
        assert!(catalogs.len() >= 3);
        for catalog in &catalogs {
            let mut ids: Vec<_> = catalog.items.iter().map(|i| &i.menu_item_id).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), catalog.items.len(), "duplicate item in {}", catalog.store.store_id);
        }
    }

    #[test]
    fn a_negative_price_names_the_store_and_item() {
        let bad = r#"
            [[stores]]
            store_id = "s"
            name = "S"
            cuisine = "c"
            address = "a"
            items = [{ menu_item_id = "x", name = "X", description = "", price = -1 }]
        "#;
        let err = parse(bad).expect_err("negative price");
        assert!(err.to_string().contains("store s: x"), "{err}");
    }
}
