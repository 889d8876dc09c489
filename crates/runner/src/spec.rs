//! Sweep specs (`experiments/*.toml`) and run-config files: TOML in, validated runs out.
//!
//! ```toml
//! [sweep]
//! name = "schedules"
//! [base]          # any run key
//! steps = 500
//! [grid]          # cartesian product over any run keys
//! schedule = ["linear", "cosine"]
//! T = [100, 1000]
//! ```
//!
//! Every problem — an unknown key, a wrong type, an impossible combination — is reported as one
//! sentence naming the file, the line and the key, before anything runs.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

use crate::config::{ResolvedRun, RunConfig};

/// A problem in a spec or config, already phrased for the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

/// One run of a sweep, ready to execute.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// Grid values, e.g. `schedule=cosine,T=100`.
    pub name: String,
    pub resolved: ResolvedRun,
    pub config_hash: String,
}

#[derive(Debug, Clone)]
pub struct SweepSpec {
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    /// The spec as written (recorded in the store with the sweep).
    pub text: String,
    pub runs: Vec<PlannedRun>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
}

type SpannedTable = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    sweep: RawSweep,
    #[serde(default)]
    base: SpannedTable,
    #[serde(default)]
    grid: SpannedTable,
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> SpecError {
    let at = e
        .span()
        .map(|s| format!(":{}", line_of(text, s.start)))
        .unwrap_or_default();
    SpecError(format!("{}{at}: {}", path.display(), e.message().trim()))
}

/// Canonical spelling of a key (aliases accepted on input).
fn canonical_key(k: &str) -> &str {
    match k {
        "timesteps" => "T",
        other => other,
    }
}

/// The nearest known key, for "did you mean".
fn suggest(key: &str) -> Option<String> {
    fn dist(a: &str, b: &str) -> usize {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for i in 1..=a.len() {
            let mut cur = vec![i; b.len() + 1];
            for j in 1..=b.len() {
                let c = if a[i - 1].eq_ignore_ascii_case(&b[j - 1]) {
                    0
                } else {
                    1
                };
                cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + c);
            }
            prev = cur;
        }
        prev[b.len()]
    }
    RunConfig::keys()
        .into_iter()
        .map(|k| (dist(key, &k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k)
}

/// Checks one key and its value on its own, so the error can point at its line.
fn check_key(key: &str, value: &toml::Value) -> Result<(), String> {
    let known = RunConfig::keys();
    let canon = canonical_key(key);
    if !known.iter().any(|k| k == canon) {
        return Err(match suggest(key) {
            Some(s) => format!("unknown key `{key}` (did you mean `{s}`?)"),
            None => format!("unknown key `{key}`; run `ddlab keys` for the list"),
        });
    }
    let mut t = toml::Table::new();
    t.insert(canon.to_string(), value.clone());
    RunConfig::deserialize(toml::Value::Table(t))
        .map(|_| ())
        .map_err(|e| format!("key `{key}`: {}", e.message().trim()))
}

/// A `--set key=value` override. The value is TOML (`T=100`, `channel_mult=[1,2]`,
/// `schedule="cosine"`); a bare word is taken as a string (`schedule=cosine`).
pub fn parse_override(s: &str) -> Result<(String, toml::Value), SpecError> {
    let (k, value) = parse_key_value(s, "--set")?;
    check_key(&k, &value).map_err(|e| SpecError(format!("--set {s}: {e}")))?;
    Ok((canonical_key(&k).to_string(), value))
}

/// `key=value` with the value read as TOML, or as a string when it is a bare word.
fn parse_key_value(s: &str, flag: &str) -> Result<(String, toml::Value), SpecError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| SpecError(format!("{flag} {s}: expected key=value")))?;
    let (k, v) = (k.trim(), v.trim());
    let value = match toml::from_str::<toml::Table>(&format!("v = {v}")) {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(v.to_string()),
    };
    Ok((k.to_string(), value))
}

fn check_table(path: &Path, text: &str, table: &SpannedTable) -> Result<toml::Table, SpecError> {
    let mut out = toml::Table::new();
    for (k, v) in table {
        check_key(k.get_ref(), v.get_ref()).map_err(|e| {
            SpecError(format!(
                "{}:{}: {e}",
                path.display(),
                line_of(text, k.span().start)
            ))
        })?;
        out.insert(canonical_key(k.get_ref()).to_string(), v.get_ref().clone());
    }
    Ok(out)
}

fn resolve_table(table: toml::Table) -> Result<(RunConfig, ResolvedRun), String> {
    let cfg = RunConfig::deserialize(toml::Value::Table(table))
        .map_err(|e| e.message().trim().to_string())?;
    let resolved = cfg.resolve()?;
    Ok((cfg, resolved))
}

fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Reads a sweep spec, applies `--set` overrides to its base, expands the grid and validates
/// every run. A `--set` of a key the grid varies fixes that axis to the one value.
pub fn load_sweep(path: &Path, overrides: &[String]) -> Result<SweepSpec, SpecError> {
    load_sweep_with(path, overrides, &[])
}

/// [`load_sweep`], plus `--grid key=[v1, v2]` overrides that replace a grid axis's values (or
/// add an axis).
pub fn load_sweep_with(
    path: &Path,
    overrides: &[String],
    grid_overrides: &[String],
) -> Result<SweepSpec, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SpecError(format!(
            "cannot read the sweep spec {}: {e}",
            path.display()
        ))
    })?;
    let raw: RawSpec = toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))?;
    let name = raw.sweep.name.get_ref().trim().to_string();
    if name.is_empty() || name.chars().any(|c| c.is_control() || c == '/') {
        return Err(SpecError(format!(
            "{}:{}: sweep name must be non-empty, without `/`",
            path.display(),
            line_of(&text, raw.sweep.name.span().start)
        )));
    }
    let mut base = check_table(path, &text, &raw.base)?;
    let mut fixed: Vec<(String, toml::Value)> = vec![];
    for o in overrides {
        let (k, v) = parse_override(o)?;
        fixed.push((canonical_key(&k).to_string(), v.clone()));
        base.insert(k, v);
    }
    let mut replaced: Vec<(String, Vec<toml::Value>)> = vec![];
    for o in grid_overrides {
        let (k, v) = parse_key_value(o, "--grid")?;
        match v {
            toml::Value::Array(a) if !a.is_empty() => {
                for value in &a {
                    check_key(&k, value).map_err(|e| SpecError(format!("--grid {o}: {e}")))?;
                }
                replaced.push((canonical_key(&k).to_string(), a));
            }
            _ => {
                return Err(SpecError(format!(
                    "--grid {o}: expected a non-empty list, e.g. --grid 'T=[100, 1000]'"
                )));
            }
        }
    }

    // Grid axes in file order.
    let mut axes: Vec<(usize, String, Vec<toml::Value>)> = vec![];
    for (k, v) in &raw.grid {
        let line = line_of(&text, k.span().start);
        let at = |m: String| SpecError(format!("{}:{line}: {m}", path.display()));
        let values = match v.get_ref() {
            toml::Value::Array(a) if !a.is_empty() => a.clone(),
            toml::Value::Array(_) => {
                return Err(at(format!("grid key `{}` has no values", k.get_ref())));
            }
            _ => {
                return Err(at(format!(
                    "grid key `{}` must be a list of values",
                    k.get_ref()
                )));
            }
        };
        for value in &values {
            check_key(k.get_ref(), value).map_err(|e| at(format!("grid {e}")))?;
        }
        let key = canonical_key(k.get_ref()).to_string();
        // A --set of this key fixes the axis; a --grid of it replaces its values.
        let values = match (
            fixed.iter().rev().find(|(f, _)| *f == key),
            replaced.iter().rev().find(|(r, _)| *r == key),
        ) {
            (_, Some((_, vs))) => vs.clone(),
            (Some((_, v)), None) => vec![v.clone()],
            (None, None) => values,
        };
        axes.push((k.span().start, key, values));
    }
    for (key, values) in &replaced {
        if !axes.iter().any(|a| &a.1 == key) {
            axes.push((usize::MAX, key.clone(), values.clone()));
        }
    }
    axes.sort_by_key(|a| a.0);

    // Cartesian product, first axis slowest.
    let mut combos: Vec<Vec<(String, toml::Value)>> = vec![vec![]];
    for (_, key, values) in &axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((key.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }

    let mut runs = Vec::with_capacity(combos.len());
    let mut seen = std::collections::HashSet::new();
    for combo in combos {
        let mut table = base.clone();
        for (k, v) in &combo {
            table.insert(k.clone(), v.clone());
        }
        let run_name = if combo.is_empty() {
            name.clone()
        } else {
            combo
                .iter()
                .map(|(k, v)| format!("{k}={}", show(v)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let (cfg, resolved) = resolve_table(table).map_err(|e| {
            let line = axes.first().map(|a| line_of(&text, a.0)).unwrap_or(1);
            SpecError(format!(
                "{}:{line}: run `{run_name}` is impossible: {e}",
                path.display()
            ))
        })?;
        let hash = cfg.config_hash();
        if !seen.insert(hash.clone()) {
            return Err(SpecError(format!(
                "{}: run `{run_name}` has the same configuration as an earlier run of the grid",
                path.display()
            )));
        }
        runs.push(PlannedRun {
            name: run_name,
            resolved,
            config_hash: hash,
        });
    }
    Ok(SweepSpec {
        name,
        description: raw.sweep.description,
        path: path.to_path_buf(),
        text,
        runs,
    })
}

/// A single run's configuration: an optional file of flat keys (a `[base]` table is accepted
/// too) plus `--set` overrides.
pub fn load_run_config(
    path: Option<&Path>,
    overrides: &[String],
) -> Result<ResolvedRun, SpecError> {
    let mut table = toml::Table::new();
    if let Some(path) = path {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SpecError(format!(
                "cannot read the config file {}: {e}",
                path.display()
            ))
        })?;
        let mut raw: SpannedTable =
            toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))?;
        // Accept a sweep file's [base] as a run config.
        let base_key = raw.keys().find(|k| k.get_ref() == "base").cloned();
        if let Some(k) = base_key {
            let v = raw.remove(&k).expect("key present");
            let inner: SpannedTable = v
                .into_inner()
                .try_into()
                .map_err(|e: toml::de::Error| toml_error(path, &text, &e))?;
            raw.extend(inner);
            raw.retain(|k, _| k.get_ref() != "sweep" && k.get_ref() != "grid");
        }
        table = check_table(path, &text, &raw)?;
    }
    for o in overrides {
        let (k, v) = parse_override(o)?;
        table.insert(k, v);
    }
    let (_, resolved) = resolve_table(table).map_err(|e| {
        SpecError(match path {
            Some(p) => format!("{}: {e}", p.display()),
            None => e,
        })
    })?;
    Ok(resolved)
}
