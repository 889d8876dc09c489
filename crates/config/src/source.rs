//! A spec or config file's text, kept to locate errors: every message names the file and line.

use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

use crate::error::ConfigError;
use crate::overrides::{canonical_key, check_key};

/// A TOML table with the position of every key and value.
pub(crate) type SpannedTable = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

/// A spec's file: its path and text, for locating errors.
pub(crate) struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    /// 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    pub fn at(&self, offset: usize, msg: impl std::fmt::Display) -> ConfigError {
        ConfigError::Spec(format!(
            "{}:{}: {msg}",
            self.path.display(),
            self.line_of(offset)
        ))
    }

    pub fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let at = e
            .span()
            .map(|s| format!(":{}", self.line_of(s.start)))
            .unwrap_or_default();
        ConfigError::Spec(format!(
            "{}{at}: {}",
            self.path.display(),
            e.message().trim()
        ))
    }

    /// Every entry of a table checked on its own, under canonical key names.
    pub fn check_table(&self, table: &SpannedTable) -> Result<toml::Table, ConfigError> {
        let mut out = toml::Table::new();
        for (k, v) in table {
            check_key(k.get_ref(), v.get_ref()).map_err(|e| self.at(k.span().start, e))?;
            out.insert(canonical_key(k.get_ref()).to_string(), v.get_ref().clone());
        }
        Ok(out)
    }
}
