//! One key and its value on their own: `--set key=value`, `--grid key=[…]`, and each entry of
//! a spec's tables, checked so that an error can point at its flag or line.

use serde::Deserialize;

use crate::error::ConfigError;
use crate::keys::RunConfig;

/// Canonical spelling of a key (aliases accepted on input).
pub fn canonical_key(k: &str) -> &str {
    match k {
        "timesteps" => "T",
        other => other,
    }
}

/// Edit distance, case-insensitive, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let c = usize::from(!a[i - 1].eq_ignore_ascii_case(&b[j - 1]));
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + c);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The nearest known key, for "did you mean".
fn suggest(key: &str) -> Option<String> {
    RunConfig::keys()
        .into_iter()
        .map(|k| (edit_distance(key, &k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k)
}

/// Checks one key and its value on their own.
pub fn check_key(key: &str, value: &toml::Value) -> Result<(), String> {
    let canon = canonical_key(key);
    if RunConfig::role_of(canon).is_none() {
        return Err(match suggest(key) {
            Some(s) => format!("unknown key `{key}` (did you mean `{s}`?)"),
            None => format!("unknown key `{key}`; run `ddlab keys` for the list"),
        });
    }
    deserialize_one(canon, value).map_err(|e| match (value, choices(canon)) {
        // serde's word for a number given to a named choice is "unit variant": say the names.
        (toml::Value::String(_), _) | (_, None) => format!("key `{key}`: {e}"),
        (other, Some(names)) => format!("key `{key}`: {names}, not {other}"),
    })
}

/// The run config with just this key set, or serde's reason why it cannot be.
fn deserialize_one(key: &str, value: &toml::Value) -> Result<(), String> {
    let mut t = toml::Table::new();
    t.insert(key.to_string(), value.clone());
    RunConfig::deserialize(toml::Value::Table(t))
        .map(|_| ())
        .map_err(|e| e.message().trim().to_string())
}

/// "expected one of `a`, `b`" for a key that takes a named choice (asked of serde with a name
/// no choice has).
fn choices(key: &str) -> Option<String> {
    let e = deserialize_one(key, &toml::Value::String("\u{0}".into())).err()?;
    e.find("expected one of").map(|at| e[at..].to_string())
}

/// A `--set key=value` override. The value is TOML (`T=100`, `channel_mult=[1,2]`,
/// `schedule="cosine"`); a bare word is taken as a string (`schedule=cosine`).
pub fn parse_override(s: &str) -> Result<(String, toml::Value), ConfigError> {
    let (k, value) = parse_key_value(s, "--set")?;
    check_key(&k, &value).map_err(|e| ConfigError::Spec(format!("--set {s}: {e}")))?;
    Ok((canonical_key(&k).to_string(), value))
}

/// A `--grid key=[v1, v2]` override: the key and its checked values.
pub fn parse_grid_override(s: &str) -> Result<(String, Vec<toml::Value>), ConfigError> {
    let (k, v) = parse_key_value(s, "--grid")?;
    match v {
        toml::Value::Array(values) if !values.is_empty() => {
            for value in &values {
                check_key(&k, value).map_err(|e| ConfigError::Spec(format!("--grid {s}: {e}")))?;
            }
            Ok((canonical_key(&k).to_string(), values))
        }
        _ => Err(ConfigError::Spec(format!(
            "--grid {s}: expected a non-empty list, e.g. --grid 'T=[100, 1000]'"
        ))),
    }
}

/// `key=value` with the value read as TOML, or as a string when it is a bare word.
fn parse_key_value(s: &str, flag: &str) -> Result<(String, toml::Value), ConfigError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| ConfigError::Spec(format!("{flag} {s}: expected key=value")))?;
    let (k, v) = (k.trim(), v.trim());
    let value = match toml::from_str::<toml::Table>(&format!("v = {v}")) {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(v.to_string()),
    };
    Ok((k.to_string(), value))
}
