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
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use toml::Spanned;

use crate::error::ConfigError;
use crate::keys::RunConfig;
use crate::limits::{DEFAULT_MAX_RUNS, HARD_MAX_RUNS};
use crate::names::{check_run_name, check_sweep_name};
use crate::overrides::{canonical_key, check_key, parse_grid_override, parse_override};
use crate::resolve::ResolvedRun;

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
    /// The keys the grid varies, in expansion order (first slowest).
    pub grid_keys: Vec<String>,
    /// The keys `[base]` and `--set` fix for every run.
    pub base_keys: Vec<String>,
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

/// A spec's file: its path and text, for locating errors.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    /// 1-based line of a byte offset.
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn at(&self, offset: usize, msg: impl std::fmt::Display) -> ConfigError {
        ConfigError::Spec(format!(
            "{}:{}: {msg}",
            self.path.display(),
            self.line_of(offset)
        ))
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
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
    fn check_table(&self, table: &SpannedTable) -> Result<toml::Table, ConfigError> {
        let mut out = toml::Table::new();
        for (k, v) in table {
            check_key(k.get_ref(), v.get_ref()).map_err(|e| self.at(k.span().start, e))?;
            out.insert(canonical_key(k.get_ref()).to_string(), v.get_ref().clone());
        }
        Ok(out)
    }
}

/// One axis of the grid: where it was written (for ordering and errors), its key and values.
struct Axis {
    offset: usize,
    key: String,
    values: Vec<toml::Value>,
}

fn read_text(path: &Path, what: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Spec(format!("cannot read the {what} {}: {e}", path.display())))
}

fn resolve_table(table: toml::Table) -> Result<(RunConfig, ResolvedRun), String> {
    let cfg = RunConfig::deserialize(toml::Value::Table(table))
        .map_err(|e| e.message().trim().to_string())?;
    let resolved = cfg.resolve().map_err(|e| e.to_string())?;
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
pub fn load_sweep(path: &Path, overrides: &[String]) -> Result<SweepSpec, ConfigError> {
    load_sweep_with(path, overrides, &[])
}

/// [`load_sweep`], plus `--grid key=[v1, v2]` overrides that replace a grid axis's values (or
/// add an axis).
pub fn load_sweep_with(
    path: &Path,
    overrides: &[String],
    grid_overrides: &[String],
) -> Result<SweepSpec, ConfigError> {
    load_sweep_bounded(path, overrides, grid_overrides, DEFAULT_MAX_RUNS)
}

/// [`load_sweep_with`], refusing a grid of more than `max_runs` runs before expanding it.
pub fn load_sweep_bounded(
    path: &Path,
    overrides: &[String],
    grid_overrides: &[String],
    max_runs: usize,
) -> Result<SweepSpec, ConfigError> {
    let text = read_text(path, "sweep spec")?;
    let src = Source { path, text: &text };
    let raw: RawSpec = toml::from_str(&text).map_err(|e| src.toml_error(&e))?;
    let name = raw.sweep.name.get_ref().trim().to_string();
    check_sweep_name(&name).map_err(|e| src.at(raw.sweep.name.span().start, e))?;
    let mut base = src.check_table(&raw.base)?;
    let mut fixed: Vec<(String, toml::Value)> = vec![];
    for o in overrides {
        let (k, v) = parse_override(o)?;
        fixed.push((k.clone(), v.clone()));
        base.insert(k, v);
    }
    let replaced = grid_overrides
        .iter()
        .map(|o| parse_grid_override(o))
        .collect::<Result<Vec<_>, _>>()?;
    let axes = grid_axes(&src, &raw.grid, &fixed, &replaced)?;
    check_run_count(path, &axes, max_runs)?;
    let runs = plan_runs(&src, &name, &base, &axes)?;
    Ok(SweepSpec {
        name,
        description: raw.sweep.description,
        path: path.to_path_buf(),
        text: text.clone(),
        grid_keys: axes.iter().map(|a| a.key.clone()).collect(),
        base_keys: base.keys().cloned().collect(),
        runs,
    })
}

/// The grid's axes in file order, each checked; a `--set` of an axis's key fixes it to one
/// value, a `--grid` of it replaces its values, and a `--grid` of a new key adds an axis last.
fn grid_axes(
    src: &Source,
    grid: &SpannedTable,
    fixed: &[(String, toml::Value)],
    replaced: &[(String, Vec<toml::Value>)],
) -> Result<Vec<Axis>, ConfigError> {
    let mut axes = vec![];
    for (k, v) in grid {
        let offset = k.span().start;
        let values = match v.get_ref() {
            toml::Value::Array(a) if !a.is_empty() => a.clone(),
            toml::Value::Array(_) => {
                return Err(src.at(offset, format!("grid key `{}` has no values", k.get_ref())));
            }
            _ => {
                return Err(src.at(
                    offset,
                    format!("grid key `{}` must be a list of values", k.get_ref()),
                ));
            }
        };
        for value in &values {
            check_key(k.get_ref(), value).map_err(|e| src.at(offset, format!("grid {e}")))?;
        }
        let key = canonical_key(k.get_ref()).to_string();
        let values = match (
            fixed.iter().rev().find(|(f, _)| *f == key),
            replaced.iter().rev().find(|(r, _)| *r == key),
        ) {
            (_, Some((_, vs))) => vs.clone(),
            (Some((_, v)), None) => vec![v.clone()],
            (None, None) => values,
        };
        axes.push(Axis {
            offset,
            key,
            values,
        });
    }
    for (key, values) in replaced {
        if !axes.iter().any(|a| &a.key == key) {
            axes.push(Axis {
                offset: usize::MAX,
                key: key.clone(),
                values: values.clone(),
            });
        }
    }
    axes.sort_by_key(|a| a.offset);
    Ok(axes)
}

/// The grid's size, refused before it is expanded when it passes `max_runs`.
fn check_run_count(path: &Path, axes: &[Axis], max_runs: usize) -> Result<(), ConfigError> {
    let count = axes
        .iter()
        .try_fold(1usize, |n, a| n.checked_mul(a.values.len()))
        .unwrap_or(usize::MAX);
    let limit = max_runs.min(HARD_MAX_RUNS);
    if count <= limit {
        return Ok(());
    }
    let how = if limit < HARD_MAX_RUNS {
        format!("; pass --yes (or --max-runs {count}) to register them all")
    } else {
        String::new()
    };
    Err(ConfigError::Spec(format!(
        "{}: the grid makes {count} runs, more than the {limit} allowed{how}",
        path.display()
    )))
}

/// Cartesian product of the axes, first axis slowest.
fn expand(axes: &[Axis]) -> Vec<Vec<(String, toml::Value)>> {
    let mut combos: Vec<Vec<(String, toml::Value)>> = vec![vec![]];
    for axis in axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                axis.values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((axis.key.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    combos
}

/// Every run of the grid, resolved; two runs with one configuration are an error.
fn plan_runs(
    src: &Source,
    sweep_name: &str,
    base: &toml::Table,
    axes: &[Axis],
) -> Result<Vec<PlannedRun>, ConfigError> {
    let combos = expand(axes);
    let mut runs = Vec::with_capacity(combos.len());
    let mut seen = HashSet::new();
    for combo in combos {
        let mut table = base.clone();
        for (k, v) in &combo {
            table.insert(k.clone(), v.clone());
        }
        let run_name = if combo.is_empty() {
            sweep_name.to_string()
        } else {
            combo
                .iter()
                .map(|(k, v)| format!("{k}={}", show(v)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let offset = axes.first().map_or(0, |a| a.offset);
        check_run_name(&run_name).map_err(|e| src.at(offset, e))?;
        let (cfg, resolved) = resolve_table(table)
            .map_err(|e| src.at(offset, format!("run `{run_name}` is impossible: {e}")))?;
        let hash = cfg.config_hash();
        if !seen.insert(hash.clone()) {
            return Err(ConfigError::Spec(format!(
                "{}: run `{run_name}` has the same configuration as an earlier run of the grid",
                src.path.display()
            )));
        }
        runs.push(PlannedRun {
            name: run_name,
            resolved,
            config_hash: hash,
        });
    }
    Ok(runs)
}

/// A single run's configuration: an optional file of flat keys (a `[base]` table is accepted
/// too) plus `--set` overrides.
pub fn load_run_config(
    path: Option<&Path>,
    overrides: &[String],
) -> Result<ResolvedRun, ConfigError> {
    let mut table = match path {
        Some(path) => read_config_file(path)?,
        None => toml::Table::new(),
    };
    for o in overrides {
        let (k, v) = parse_override(o)?;
        table.insert(k, v);
    }
    let (_, resolved) = resolve_table(table).map_err(|e| {
        ConfigError::Spec(match path {
            Some(p) => format!("{}: {e}", p.display()),
            None => e,
        })
    })?;
    Ok(resolved)
}

/// A config file's keys, a sweep file's `[base]` accepted in place of flat keys.
fn read_config_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = read_text(path, "config file")?;
    let src = Source { path, text: &text };
    let mut raw: SpannedTable = toml::from_str(&text).map_err(|e| src.toml_error(&e))?;
    let base_key = raw.keys().find(|k| k.get_ref() == "base").cloned();
    if let Some(k) = base_key {
        let v = raw.remove(&k).expect("key present");
        let inner: SpannedTable = v
            .into_inner()
            .try_into()
            .map_err(|e: toml::de::Error| src.toml_error(&e))?;
        raw.extend(inner);
        raw.retain(|k, _| k.get_ref() != "sweep" && k.get_ref() != "grid");
    }
    src.check_table(&raw)
}
