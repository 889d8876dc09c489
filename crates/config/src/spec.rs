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
//! plus zipped and conditional axes (`[[grid.zip]]`, `[[grid.when]]`: see [`crate::grid`]).
//!
//! Every problem — an unknown key, a wrong type, an impossible combination — is reported as one
//! sentence naming the file, the line and the key, before anything runs.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

use crate::error::ConfigError;
use crate::grid::{Combo, ExpandError, Grid, expand, parse_grid, run_name};
use crate::keys::RunConfig;
use crate::limits::{DEFAULT_MAX_RUNS, HARD_MAX_RUNS};
use crate::names::{check_run_name, check_sweep_name};
use crate::overrides::{parse_grid_override, parse_override};
use crate::prune::{PruneMetric, PruneRules, RawPrune, parse_prune};
use crate::resolve::ResolvedRun;
use crate::source::{Source, SpannedTable};

/// One run of a sweep, ready to execute.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// Grid values, e.g. `schedule=cosine,T=100`.
    pub name: String,
    pub resolved: ResolvedRun,
    pub config_hash: String,
}

/// A point of the grid whose configuration an earlier point already has: it makes no run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedRun {
    pub name: String,
    /// The run that has its configuration.
    pub same_as: String,
}

#[derive(Debug, Clone)]
pub struct SweepSpec {
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    /// The spec as written (recorded in the store with the sweep).
    pub text: String,
    /// Every key the grid varies — plain, zipped and conditional axes — in the order they
    /// appear in run names.
    pub grid_keys: Vec<String>,
    /// The keys `[base]` and `--set` fix for every run.
    pub base_keys: Vec<String>,
    pub runs: Vec<PlannedRun>,
    /// Points of the grid that resolved to the configuration of an earlier run.
    pub merged: Vec<MergedRun>,
    /// `[prune]`: when runs stop early.
    pub prune: Option<PruneRules>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    sweep: RawSweep,
    #[serde(default)]
    base: SpannedTable,
    #[serde(default)]
    grid: SpannedTable,
    #[serde(default)]
    prune: Option<Spanned<RawPrune>>,
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
    let mut grid = parse_grid(&src, &raw.grid)?;
    apply_overrides(&mut grid, &mut base, overrides, grid_overrides)?;
    let limit = max_runs.min(HARD_MAX_RUNS);
    let combos = expand(&grid, &base, limit).map_err(|e| expand_error(&src, e, limit))?;
    let (runs, merged) = plan_runs(&src, &name, &base, combos, grid.first_offset())?;
    let prune = match &raw.prune {
        Some(p) => Some(check_prune(&src, p, &runs)?),
        None => None,
    };
    Ok(SweepSpec {
        name,
        description: raw.sweep.description,
        path: path.to_path_buf(),
        text: text.clone(),
        grid_keys: grid.keys(),
        base_keys: base.keys().cloned().collect(),
        runs,
        merged,
        prune,
    })
}

/// `[prune]` parsed, then checked against the runs it would act on.
fn check_prune(
    src: &Source,
    raw: &Spanned<RawPrune>,
    runs: &[PlannedRun],
) -> Result<PruneRules, ConfigError> {
    let rules = parse_prune(src, raw.get_ref())?;
    let at = raw.span().start;
    if rules.metric == PruneMetric::NllBpd
        && let Some(r) = runs.iter().find(|r| r.resolved.nll.is_none())
    {
        let msg = format!(
            "[prune] metric = \"nll_bpd\" needs the NLL evaluation, which run `{}` turns off (eval_nll = false)",
            r.name
        );
        return Err(src.at(at, msg));
    }
    let longest = runs
        .iter()
        .map(|r| r.resolved.train.steps)
        .max()
        .unwrap_or(0);
    if let Some(&r) = rules.rungs.iter().find(|&&r| r >= longest) {
        let msg = format!(
            "[prune] rung {r} is not below any run's steps (the longest trains {longest}): it would never act"
        );
        return Err(src.at(at, msg));
    }
    Ok(rules)
}

/// `--set` sets a base key and fixes the grid's axes of that key to the one value; `--grid`
/// (applied after, so it wins) replaces an axis's values or adds an axis.
fn apply_overrides(
    grid: &mut Grid,
    base: &mut toml::Table,
    overrides: &[String],
    grid_overrides: &[String],
) -> Result<(), ConfigError> {
    for o in overrides {
        let (k, v) = parse_override(o)?;
        grid.fix(&k, &v)
            .map_err(|e| ConfigError::Spec(format!("--set {o}: {e}")))?;
        base.insert(k, v);
    }
    for o in grid_overrides {
        let (k, values) = parse_grid_override(o)?;
        grid.replace(&k, &values)
            .map_err(|e| ConfigError::Spec(format!("--grid {o}: {e}")))?;
    }
    Ok(())
}

/// The expansion's refusal as one located sentence.
fn expand_error(src: &Source, e: ExpandError, limit: usize) -> ConfigError {
    match e {
        ExpandError::TooMany(count) => {
            let (makes, flag) = match count {
                Some(n) => (format!("{n} runs, more than the {limit}"), format!("--max-runs {n}")),
                None => (format!("more than the {limit} runs"), "a larger --max-runs".into()),
            };
            let how = if limit < HARD_MAX_RUNS {
                format!("; pass --yes (or {flag}) to register them all")
            } else {
                String::new()
            };
            ConfigError::Spec(format!(
                "{}: the grid makes {makes} allowed{how}",
                src.path.display()
            ))
        }
        ExpandError::Twice { offset, key, run } => src.at(
            offset,
            format!(
                "conditional axis `{key}` applies to run `{run}`, which an earlier axis already gives a `{key}`"
            ),
        ),
    }
}

/// Every run of the grid, resolved. A point whose configuration an earlier point already has
/// makes no run of its own: it is listed in `merged`.
fn plan_runs(
    src: &Source,
    sweep_name: &str,
    base: &toml::Table,
    combos: Vec<Combo>,
    offset: usize,
) -> Result<(Vec<PlannedRun>, Vec<MergedRun>), ConfigError> {
    let mut runs: Vec<PlannedRun> = Vec::with_capacity(combos.len());
    let mut merged = vec![];
    let mut seen: HashMap<String, usize> = HashMap::new();
    for combo in combos {
        let mut table = base.clone();
        for (k, v) in &combo {
            table.insert(k.clone(), v.clone());
        }
        let name = if combo.is_empty() {
            sweep_name.to_string()
        } else {
            run_name(&combo)
        };
        check_run_name(&name).map_err(|e| src.at(offset, e))?;
        let (cfg, resolved) = resolve_table(table)
            .map_err(|e| src.at(offset, format!("run `{name}` is impossible: {e}")))?;
        let hash = cfg.config_hash();
        if let Some(&i) = seen.get(&hash) {
            merged.push(MergedRun {
                name,
                same_as: runs[i].name.clone(),
            });
            continue;
        }
        seen.insert(hash.clone(), runs.len());
        runs.push(PlannedRun {
            name,
            resolved,
            config_hash: hash,
        });
    }
    Ok((runs, merged))
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
