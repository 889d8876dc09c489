//! `[grid]`, `[[grid.zip]]` and `[[grid.when]]` into a [`Grid`], every problem located by file,
//! line and key: an unknown key (in an axis or a condition), a list that is not one, zipped
//! lists of unequal length, a key varied twice, a value listed twice.

use serde::Deserialize;
use toml::Spanned;

use super::expand::{normalise, run_name};
use super::{Condition, Dim, Grid, When};
use crate::error::ConfigError;
use crate::overrides::{canonical_key, check_key};
use crate::source::{Source, SpannedTable};

/// The grid's groups, read in a second pass over the text so each keeps its keys' positions.
#[derive(Deserialize, Default)]
struct RawGroups {
    #[serde(default)]
    zip: Vec<SpannedTable>,
    #[serde(default)]
    when: Vec<SpannedTable>,
}

#[derive(Deserialize)]
struct RawSpecGroups {
    #[serde(default)]
    grid: Option<RawGroups>,
}

const GROUPS: [&str; 2] = ["zip", "when"];

/// The grid of a spec: `grid` is its `[grid]` table as first read (groups included).
pub(crate) fn parse_grid(src: &Source, grid: &SpannedTable) -> Result<Grid, ConfigError> {
    let at_group = |name: &str| {
        grid.iter()
            .find(|(k, _)| k.get_ref() == name)
            .map_or(0, |(k, _)| k.span().start)
    };
    let mut out = Grid::default();
    for (k, v) in grid
        .iter()
        .filter(|(k, _)| !GROUPS.contains(&k.get_ref().as_str()))
    {
        if matches!(v.get_ref(), toml::Value::Table(_)) || is_table_list(v.get_ref()) {
            let msg = format!(
                "unknown grid section `{}`: a grid holds axes, [[grid.zip]] and [[grid.when]]",
                k.get_ref()
            );
            return Err(src.at(k.span().start, msg));
        }
        out.dims.push(axis(src, k, v)?);
    }
    let groups = toml::from_str::<RawSpecGroups>(src.text)
        .map_err(|e| src.toml_error(&e))?
        .grid
        .unwrap_or_default();
    for table in &groups.zip {
        out.dims.push(zip(src, table, at_group("zip"))?);
    }
    for table in &groups.when {
        out.whens.push(when(src, table, at_group("when"))?);
    }
    out.dims.sort_by_key(|d| d.offset);
    check_distinct(src, &out)?;
    Ok(out)
}

fn is_table_list(v: &toml::Value) -> bool {
    matches!(v, toml::Value::Array(a) if a.first().is_some_and(|e| e.is_table()))
}

/// A key's list of values, each checked against the key.
fn values(
    src: &Source,
    k: &Spanned<String>,
    v: &Spanned<toml::Value>,
) -> Result<Vec<toml::Value>, ConfigError> {
    let (key, offset) = (k.get_ref(), k.span().start);
    let values = match v.get_ref() {
        toml::Value::Array(a) if !a.is_empty() => a.clone(),
        toml::Value::Array(_) => {
            return Err(src.at(offset, format!("grid key `{key}` has no values")));
        }
        _ => {
            let msg = format!("grid key `{key}` must be a list of values");
            return Err(src.at(offset, msg));
        }
    };
    for value in &values {
        check_key(key, value).map_err(|e| src.at(offset, format!("grid {e}")))?;
    }
    Ok(values)
}

/// A plain axis: one key, one point per value.
fn axis(src: &Source, k: &Spanned<String>, v: &Spanned<toml::Value>) -> Result<Dim, ConfigError> {
    let dim = Dim {
        offset: k.span().start,
        keys: vec![canonical_key(k.get_ref()).to_string()],
        rows: values(src, k, v)?.into_iter().map(|v| vec![v]).collect(),
    };
    no_repeats(src, &dim)?;
    Ok(dim)
}

/// A `[[grid.zip]]` group: its lists, all of one length, read row by row.
fn zip(src: &Source, table: &SpannedTable, fallback: usize) -> Result<Dim, ConfigError> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let Some((first, _)) = entries.first() else {
        return Err(src.at(fallback, "a [[grid.zip]] group has no keys"));
    };
    let mut columns = vec![];
    for (k, v) in &entries {
        let vals = values(src, k, v)?;
        if let Some((k0, first_len)) = columns
            .first()
            .map(|(k0, c): &(String, Vec<_>)| (k0, c.len()))
            && vals.len() != first_len
        {
            let msg = format!(
                "zipped key `{}` has {} values but `{k0}` has {first_len}: the lists of a [[grid.zip]] group vary together and must have equal length",
                k.get_ref(),
                vals.len()
            );
            return Err(src.at(k.span().start, msg));
        }
        columns.push((canonical_key(k.get_ref()).to_string(), vals));
    }
    let rows = (0..columns[0].1.len())
        .map(|i| columns.iter().map(|(_, c)| c[i].clone()).collect())
        .collect();
    let dim = Dim {
        offset: first.span().start,
        keys: columns.into_iter().map(|(k, _)| k).collect(),
        rows,
    };
    no_repeats(src, &dim)?;
    Ok(dim)
}

/// Two points of one dimension with equal values would make two runs of one configuration.
fn no_repeats(src: &Source, dim: &Dim) -> Result<(), ConfigError> {
    // Each point normalised once and remembered as text: an axis of thousands of values is
    // checked in linear time.
    let mut seen = std::collections::HashSet::with_capacity(dim.rows.len());
    for row in &dim.rows {
        let norm: Vec<serde_json::Value> = dim
            .keys
            .iter()
            .zip(row)
            .map(|(k, v)| normalise(k, v))
            .collect();
        if !seen.insert(serde_json::to_string(&norm).expect("JSON values serialise")) {
            let point: Vec<_> = dim.keys.iter().cloned().zip(row.iter().cloned()).collect();
            let msg = format!(
                "the grid lists `{}` twice: two runs would have the same configuration",
                run_name(&point)
            );
            return Err(src.at(dim.offset, msg));
        }
    }
    Ok(())
}

/// A `[[grid.when]]` block: `if`/`unless` conditions and the axes they guard.
fn when(src: &Source, table: &SpannedTable, fallback: usize) -> Result<When, ConfigError> {
    let mut condition = Condition::default();
    let mut dims = vec![];
    let offset = table
        .keys()
        .map(|k| k.span().start)
        .min()
        .unwrap_or(fallback);
    for (k, v) in table {
        match k.get_ref().as_str() {
            "if" => condition.all = tests(src, k, v)?,
            "unless" => condition.none = tests(src, k, v)?,
            _ => dims.push(axis(src, k, v)?),
        }
    }
    if condition.all.is_empty() && condition.none.is_empty() {
        let msg = "a [[grid.when]] block needs a condition: `if = { key = value }` or `unless = { key = value }`";
        return Err(src.at(offset, msg));
    }
    if dims.is_empty() {
        return Err(src.at(offset, "a [[grid.when]] block has no axes to add"));
    }
    dims.sort_by_key(|d| d.offset);
    Ok(When {
        offset,
        condition,
        dims,
    })
}

/// `{ key = value, … }` of a condition; a list of values for a key that does not take a list
/// means any of them.
fn tests(
    src: &Source,
    k: &Spanned<String>,
    v: &Spanned<toml::Value>,
) -> Result<Vec<(String, Vec<serde_json::Value>)>, ConfigError> {
    let offset = k.span().start;
    let at = |e: String| src.at(offset, format!("condition `{}`: {e}", k.get_ref()));
    let toml::Value::Table(t) = v.get_ref() else {
        return Err(at(
            "expected a table, e.g. `if = { sampler = \"ddim\" }`".into()
        ));
    };
    if t.is_empty() {
        return Err(at("names no key".into()));
    }
    let mut out = vec![];
    for (key, value) in t {
        let alternatives = match (check_key(key, value), value) {
            (Ok(()), _) => vec![value.clone()],
            (Err(_), toml::Value::Array(a)) if !a.is_empty() => a.clone(),
            (Err(e), _) => return Err(at(e)),
        };
        for alt in &alternatives {
            check_key(key, alt).map_err(at)?;
        }
        let key = canonical_key(key);
        let norm = alternatives.iter().map(|a| normalise(key, a)).collect();
        out.push((key.to_string(), norm));
    }
    Ok(out)
}

/// Each key varies in one place: one unconditional dimension, or conditional blocks that do
/// not vary it unconditionally or test it themselves.
fn check_distinct(src: &Source, grid: &Grid) -> Result<(), ConfigError> {
    let mut seen: Vec<(&String, usize)> = vec![];
    for dim in &grid.dims {
        for key in &dim.keys {
            if let Some((_, at)) = seen.iter().find(|(k, _)| *k == key) {
                let msg = format!(
                    "grid key `{key}` is varied twice (also at line {})",
                    src.line_of(*at)
                );
                return Err(src.at(dim.offset, msg));
            }
            seen.push((key, dim.offset));
        }
    }
    for w in &grid.whens {
        let tested = w.condition.all.iter().chain(&w.condition.none);
        for key in w.dims.iter().flat_map(|d| &d.keys) {
            if let Some((_, at)) = seen.iter().find(|(k, _)| *k == key) {
                let msg = format!(
                    "conditional axis `{key}` is already an unconditional axis at line {}",
                    src.line_of(*at)
                );
                return Err(src.at(w.offset, msg));
            }
            if tested.clone().any(|(k, _)| k == key) {
                let msg = format!("conditional axis `{key}` is also tested by its own condition");
                return Err(src.at(w.offset, msg));
            }
        }
    }
    Ok(())
}
