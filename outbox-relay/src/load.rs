//! The relay's configuration from its layers, each over the one before: the TOML file
//! (`--config`) or the defaults, a Debezium connector configuration (`--debezium-config`), the
//! command line and environment, and the secret files. The result is checked.

use crate::config::{Config, ConfigError, Overrides};

/// The configuration `overrides` describe, checked.
pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
    let mut config = Config::base(overrides)?;
    if let Some(path) = &overrides.debezium_config {
        let translation = crate::debezium::apply_file(path, &mut config)?;
        for warning in &translation.warnings {
            tracing::warn!(file = %path.display(), "Debezium config: {warning}");
        }
    }
    config.with_overrides(overrides)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_overrides_file_and_missing_keys_are_named() {
        let o = Overrides::default();
        let err = load(&o).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("`database_url`: is required (or set DATABASE_URL / --database-url)")
        );
        let o = Overrides {
            database_url: Some("postgres://u:hunter2@h/db".into()),
            kafka_brokers: Some("k:9092".into()),
            slot: Some("s1".into()),
            kafka_properties: vec!["sasl.password=hunter2".into()],
            ..Overrides::default()
        };
        let c = load(&o).map_err(|e| e.to_string());
        assert!(c.as_ref().is_ok_and(|c| c.source.slot == "s1"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
