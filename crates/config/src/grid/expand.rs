//! The grid into runs: the cartesian product of the unconditional dimensions (first slowest),
//! then each conditional block multiplies the runs that meet its condition — refused as soon
//! as the count passes the limit, so a runaway spec is never held in memory.

use serde::Deserialize;
use std::collections::HashMap;

use super::{Condition, Dim, Grid, When};
use crate::keys::RunConfig;

/// One run's grid values, in name order.
pub(crate) type Combo = Vec<(String, toml::Value)>;

/// Why a grid did not expand.
#[derive(Debug)]
pub(crate) enum ExpandError {
    /// More runs than the limit: the exact count when it was known before expanding.
    TooMany(Option<usize>),
    /// A conditional block set a key that an earlier axis had set for this run.
    Twice {
        offset: usize,
        key: String,
        run: String,
    },
}

/// A value as the run config holds it (`1` and `1.0` of a float key are one value).
pub(crate) fn normalise(key: &str, value: &toml::Value) -> serde_json::Value {
    let mut t = toml::Table::new();
    t.insert(key.to_string(), value.clone());
    RunConfig::deserialize(toml::Value::Table(t))
        .ok()
        .and_then(|c| serde_json::to_value(c).ok())
        .and_then(|mut j| j.get_mut(key).map(serde_json::Value::take))
        .unwrap_or(serde_json::Value::Null)
}

fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A run's name: its grid values joined, `schedule=cosine,T=100`.
pub(crate) fn run_name(combo: &Combo) -> String {
    combo
        .iter()
        .map(|(k, v)| format!("{k}={}", show(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Every run of the grid over `base`, at most `limit` of them.
pub(crate) fn expand(
    grid: &Grid,
    base: &toml::Table,
    limit: usize,
) -> Result<Vec<Combo>, ExpandError> {
    let count = size(&grid.dims);
    if count > limit {
        return Err(ExpandError::TooMany(Some(count)));
    }
    let mut combos = vec![Combo::new()];
    for dim in &grid.dims {
        combos = multiply(combos, dim);
    }
    let mut look = Lookup::new(base);
    for when in &grid.whens {
        combos = apply_when(combos, when, &mut look, limit)?;
    }
    Ok(combos)
}

/// The number of points of a product of dimensions (saturating).
fn size(dims: &[Dim]) -> usize {
    dims.iter()
        .try_fold(1usize, |n, d| n.checked_mul(d.rows.len()))
        .unwrap_or(usize::MAX)
}

fn multiply(combos: Vec<Combo>, dim: &Dim) -> Vec<Combo> {
    combos
        .into_iter()
        .flat_map(|c| {
            dim.rows.iter().map(move |row| {
                let mut c = c.clone();
                c.extend(dim.keys.iter().cloned().zip(row.iter().cloned()));
                c
            })
        })
        .collect()
}

/// The runs meeting the block's condition, each multiplied by the block's axes; the others
/// unchanged.
fn apply_when(
    combos: Vec<Combo>,
    when: &When,
    look: &mut Lookup,
    limit: usize,
) -> Result<Vec<Combo>, ExpandError> {
    if size(&when.dims) > limit {
        return Err(ExpandError::TooMany(None));
    }
    let block = when.dims.iter().fold(vec![Combo::new()], multiply);
    let block_keys: Vec<&String> = when.dims.iter().flat_map(|d| &d.keys).collect();
    let mut out = Vec::with_capacity(combos.len());
    for combo in combos {
        if !look.holds(&when.condition, &combo) {
            out.push(combo);
            continue;
        }
        if let Some((key, _)) = combo.iter().find(|(k, _)| block_keys.contains(&k)) {
            return Err(ExpandError::Twice {
                offset: when.offset,
                key: key.clone(),
                run: run_name(&combo),
            });
        }
        for point in &block {
            let mut c = combo.clone();
            c.extend(point.iter().cloned());
            out.push(c);
        }
        if out.len() > limit {
            return Err(ExpandError::TooMany(None));
        }
    }
    Ok(out)
}

/// A run's value of a key: its grid value, else its base value, else the default.
struct Lookup<'a> {
    base: &'a toml::Table,
    defaults: serde_json::Value,
    /// Normalised values by key and TOML text: the same few values recur in every run.
    cache: HashMap<(String, String), serde_json::Value>,
}

impl<'a> Lookup<'a> {
    fn new(base: &'a toml::Table) -> Self {
        let defaults = serde_json::to_value(RunConfig::default()).expect("config serialises");
        Lookup {
            base,
            defaults,
            cache: HashMap::new(),
        }
    }

    fn value(&mut self, key: &str, combo: &Combo) -> serde_json::Value {
        let written = combo
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .or_else(|| self.base.get(key));
        match written {
            None => self.defaults.get(key).cloned().unwrap_or_default(),
            Some(v) => self
                .cache
                .entry((key.to_string(), v.to_string()))
                .or_insert_with(|| normalise(key, v))
                .clone(),
        }
    }

    fn holds(&mut self, c: &Condition, combo: &Combo) -> bool {
        let all = c.all.iter().all(|(k, vs)| {
            let v = self.value(k, combo);
            vs.contains(&v)
        });
        all && !c.none.iter().any(|(k, vs)| {
            let v = self.value(k, combo);
            vs.contains(&v)
        })
    }
}
