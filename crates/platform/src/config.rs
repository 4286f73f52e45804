//! Layered configuration: the service's built-in defaults (a TOML file compiled
//! into the binary, which doubles as its documentation), then an optional file,
//! then the environment. Later layers win, key by key.
//!
//! - The file is named by `--config PATH` on the command line or by the
//!   `FOODMESH_CONFIG` environment variable.
//! - `FOODMESH_<SECTION>__<KEY>=value` sets `key` in `[section]`; a double
//!   underscore separates levels, for example `FOODMESH_SERVER__LISTEN_ADDR`.
//!   Values that read as booleans or integers become those; quote a value
//!   (`'"123"'`) to keep it a string.
//! - The conventional `DATABASE_URL`, `NATS_URL` and `LISTEN_ADDR` are
//!   accepted as well, for `database.url`, `nats.url` and `server.listen_addr`.
//!
//! A configuration that cannot be read or does not fit fails start-up with a
//! message that names the layer and the key.

use std::{collections::BTreeMap, fmt, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use toml::{Table, Value};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The built-in defaults are not valid TOML: a bug in the service.
    #[error("built-in defaults are invalid: {0}")]
    Defaults(toml::de::Error),
    /// The file named by `--config` or `FOODMESH_CONFIG` could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: toml::de::Error,
    },
    /// The merged configuration does not fit the service's settings.
    #[error("invalid configuration: {0}")]
    Invalid(toml::de::Error),
    /// A setting is out of its range or malformed.
    #[error("invalid setting: {0}")]
    Setting(String),
    /// `--config` was given without a path.
    #[error("--config needs a path")]
    MissingPath,
}

/// Loads the configuration from the built-in `defaults` (TOML layers, later
/// ones winning), the file given
/// on the command line or in `FOODMESH_CONFIG`, and the process environment.
pub fn load<T: DeserializeOwned>(defaults: &[&str]) -> Result<T, ConfigError> {
    let file =
        config_path_from_args(std::env::args().skip(1))?.or_else(|| std::env::var_os("FOODMESH_CONFIG").map(PathBuf::from));
    let file = match file {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            Some((path, text))
        }
        None => None,
    };
    let file = file.as_ref().map(|(p, t)| (p.clone(), t.as_str()));
    load_from(defaults, file, std::env::vars())
}

/// Like [`load`], with every input given explicitly (tests use this).
pub fn load_from<T: DeserializeOwned>(
    defaults: &[&str],
    file: Option<(PathBuf, &str)>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let mut merged = Table::new();
    for layer in defaults {
        merge(&mut merged, toml::from_str(layer).map_err(ConfigError::Defaults)?);
    }
    if let Some((path, text)) = file {
        let layer: Table = toml::from_str(text).map_err(|source| ConfigError::Parse { path, source })?;
        merge(&mut merged, layer);
    }
    merge(&mut merged, env_layer(env));
    Value::Table(merged).try_into().map_err(ConfigError::Invalid)
}

fn config_path_from_args(mut args: impl Iterator<Item = String>) -> Result<Option<PathBuf>, ConfigError> {
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(|p| Some(PathBuf::from(p))).ok_or(ConfigError::MissingPath);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Ok(Some(PathBuf::from(path)));
        }
    }
    Ok(None)
}

fn env_layer(env: impl IntoIterator<Item = (String, String)>) -> Table {
    const ALIASES: [(&str, &str); 3] =
        [("DATABASE_URL", "database__url"), ("NATS_URL", "nats__url"), ("LISTEN_ADDR", "server__listen_addr")];
    // Sorted so that FOODMESH_* (more specific) is applied after the aliases.
    let mut settings = BTreeMap::new();
    for (key, value) in env {
        if let Some((_, path)) = ALIASES.iter().find(|(alias, _)| *alias == key) {
            settings.insert((0, (*path).to_owned()), value);
        } else if let Some(path) = key.strip_prefix("FOODMESH_")
            && path != "CONFIG"
        {
            settings.insert((1, path.to_ascii_lowercase()), value);
        }
    }
    let mut layer = Table::new();
    for ((_, path), value) in settings {
        let parts: Vec<&str> = path.split("__").collect();
        let Some((leaf, sections)) = parts.split_last() else { continue };
        let mut table = &mut layer;
        for section in sections {
            let entry = table.entry((*section).to_owned()).or_insert_with(|| Value::Table(Table::new()));
            if !entry.is_table() {
                *entry = Value::Table(Table::new());
            }
            let Value::Table(inner) = entry else { unreachable!("just made it a table") };
            table = inner;
        }
        table.insert((*leaf).to_owned(), scalar(&value));
    }
    layer
}

fn scalar(value: &str) -> Value {
    if let Some(quoted) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        return Value::String(quoted.to_owned());
    }
    match value {
        "true" => Value::Boolean(true),
        "false" => Value::Boolean(false),
        _ => value.parse::<i64>().map(Value::Integer).unwrap_or_else(|_| Value::String(value.to_owned())),
    }
}

fn merge(base: &mut Table, layer: Table) {
    for (key, value) in layer {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(base_table)), Value::Table(layer_table)) => merge(base_table, layer_table),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// A value that must never be logged: database URLs with passwords, keys.
/// `Debug` and `Display` print `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Secret)
    }
}

/// Reads a whole number of milliseconds as a `Duration`, for settings named `*_ms`.
pub fn millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_millis)
}

/// Reads a millisecond range as written in settings and on command lines:
/// `"500"` is (500, 500), `"400-620"` is (400, 620). `None` if malformed.
pub fn millis_range(spec: &str) -> Option<(u32, u32)> {
    let ms = |s: &str| s.trim().parse::<u32>().ok();
    match spec.split_once('-') {
        Some((low, high)) => Some((ms(low)?, ms(high)?)),
        None => ms(spec).map(|v| (v, v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millisecond_ranges_fixed_or_from_to() {
        assert_eq!(millis_range("500"), Some((500, 500)));
        assert_eq!(millis_range("400-620"), Some((400, 620)));
        assert_eq!(millis_range(" 0 "), Some((0, 0)));
        assert_eq!(millis_range("fast"), None);
        assert_eq!(millis_range("400-"), None);
    }

    #[derive(Debug, Deserialize)]
    struct Settings {
        server: Server,
        database: Database,
        feature: Feature,
    }
    #[derive(Debug, Deserialize)]
    struct Server {
        listen_addr: String,
        #[serde(deserialize_with = "millis")]
        drain_ms: Duration,
    }
    #[derive(Debug, Deserialize)]
    struct Database {
        url: Secret<String>,
    }
    #[derive(Debug, Deserialize)]
    struct Feature {
        enabled: bool,
        name: String,
    }

    const DEFAULTS: &str = r#"
        [server]
        listen_addr = "127.0.0.1:1"
        drain_ms = 100
        [database]
        url = "sqlite://default.db"
        [feature]
        enabled = false
        name = "x"
    "#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn file_overrides_defaults_and_environment_overrides_file() {
        let file = r#"
            [server]
            listen_addr = "127.0.0.1:2"
            drain_ms = 5
        "#;
        let settings: Settings = load_from(
            &[DEFAULTS],
            Some(("f.toml".into(), file)),
            env(&[("FOODMESH_SERVER__DRAIN_MS", "7"), ("FOODMESH_FEATURE__ENABLED", "true")]),
        )
        .expect("loads");
        assert_eq!(settings.server.listen_addr, "127.0.0.1:2");
        assert_eq!(settings.server.drain_ms, Duration::from_millis(7));
        assert!(settings.feature.enabled);
        assert_eq!(settings.database.url.expose(), "sqlite://default.db");
    }

    #[test]
    fn conventional_variables_are_aliases_and_prefixed_ones_win() {
        let settings: Settings = load_from(
            &[DEFAULTS],
            None,
            env(&[
                ("DATABASE_URL", "postgres://u:p@h/db"),
                ("LISTEN_ADDR", "127.0.0.1:3"),
                ("FOODMESH_SERVER__LISTEN_ADDR", "127.0.0.1:4"),
            ]),
        )
        .expect("loads");
        assert_eq!(settings.database.url.expose(), "postgres://u:p@h/db");
        assert_eq!(settings.server.listen_addr, "127.0.0.1:4");
    }

    #[test]
    fn a_quoted_number_stays_a_string() {
        let settings: Settings = load_from(&[DEFAULTS], None, env(&[("FOODMESH_FEATURE__NAME", "\"123\"")])).expect("loads");
        assert_eq!(settings.feature.name, "123");
    }

    #[test]
    fn a_value_of_the_wrong_type_names_the_key() {
        let err = load_from::<Settings>(&[DEFAULTS], None, env(&[("FOODMESH_SERVER__DRAIN_MS", "soon")])).expect_err("must fail");
        assert!(err.to_string().contains("drain_ms"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let settings: Settings =
            load_from(&[DEFAULTS], None, env(&[("DATABASE_URL", "postgres://u:hunter2@h/db")])).expect("loads");
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn config_flag_is_found_in_both_spellings() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>().into_iter();
        assert_eq!(config_path_from_args(args(&["--config", "a.toml"])).ok().flatten(), Some("a.toml".into()));
        assert_eq!(config_path_from_args(args(&["--config=b.toml"])).ok().flatten(), Some("b.toml".into()));
        assert!(config_path_from_args(args(&["--config"])).is_err());
    }
}
