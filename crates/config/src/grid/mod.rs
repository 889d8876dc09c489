//! A sweep's grid as a structure: plain axes and zipped groups multiply into the unconditional
//! runs, then each conditional block adds its axes to the runs that meet its condition.
//!
//! ```toml
//! [grid]
//! schedule = ["linear", "cosine"]   # a plain axis
//! [[grid.zip]]                      # keys that vary together: the i-th values make one point
//! sampler = ["ddpm", "ddim"]
//! sample_steps = [1000, 50]
//! [[grid.when]]                     # axes only for the runs that meet the condition
//! if = { sampler = "ddim" }         # every key equals its value (a list: any of them)
//! unless = { guidance = "none" }    # no key equals its value
//! eta = [0.0, 1.0]
//! ```
//!
//! Parsing with located errors is in [`parse`], expansion in [`expand`].

mod expand;
mod parse;

pub(crate) use expand::{Combo, ExpandError, expand, run_name};
pub(crate) use parse::parse_grid;

/// Keys that take their values together: one key for a plain axis, several for a zipped
/// group. Each row is one point, with a value per key.
#[derive(Debug, Clone)]
pub(crate) struct Dim {
    /// Where it was written (for ordering and errors); `usize::MAX` for a `--grid` axis.
    pub offset: usize,
    pub keys: Vec<String>,
    pub rows: Vec<Vec<toml::Value>>,
}

/// `key = value` tests on a run's configuration, values already normalised through the key's
/// type (so `1` and `1.0` of a float key compare equal).
#[derive(Debug, Clone, Default)]
pub(crate) struct Condition {
    /// Every key must equal one of its values.
    pub all: Vec<(String, Vec<serde_json::Value>)>,
    /// No key may equal any of its values.
    pub none: Vec<(String, Vec<serde_json::Value>)>,
}

/// A `[[grid.when]]` block: axes that only the runs meeting `condition` get.
#[derive(Debug, Clone)]
pub(crate) struct When {
    pub offset: usize,
    pub condition: Condition,
    pub dims: Vec<Dim>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Grid {
    /// Plain axes and zipped groups, in file order.
    pub dims: Vec<Dim>,
    /// Conditional blocks, in file order, applied after the unconditional product.
    pub whens: Vec<When>,
}

impl Grid {
    /// Every key the grid varies, in the order they appear in run names.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = vec![];
        let all = self
            .dims
            .iter()
            .chain(self.whens.iter().flat_map(|w| &w.dims));
        for k in all.flat_map(|d| &d.keys) {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        keys
    }

    /// Where the grid starts in the file (errors of whole runs point there).
    pub fn first_offset(&self) -> usize {
        self.dims
            .iter()
            .map(|d| d.offset)
            .chain(self.whens.iter().map(|w| w.offset))
            .min()
            .unwrap_or(0)
    }

    /// `--set key=value`: an axis of that key keeps only that value; a zipped group keeps the
    /// points whose value it is (an error names the group when none is).
    pub fn fix(&mut self, key: &str, value: &toml::Value) -> Result<(), String> {
        let want = expand::normalise(key, value);
        let all = self
            .dims
            .iter_mut()
            .chain(self.whens.iter_mut().flat_map(|w| &mut w.dims));
        for dim in all {
            let Some(i) = dim.keys.iter().position(|k| k == key) else {
                continue;
            };
            if dim.keys.len() == 1 {
                dim.rows = vec![vec![value.clone()]];
                continue;
            }
            dim.rows
                .retain(|row| expand::normalise(key, &row[i]) == want);
            if dim.rows.is_empty() {
                return Err(format!(
                    "`{key}` is zipped with {} and none of its values is {value}",
                    others(&dim.keys, key)
                ));
            }
        }
        Ok(())
    }

    /// `--grid key=[…]`: replaces the values of that key's axes, or adds an axis last. A zipped
    /// key cannot be replaced alone.
    pub fn replace(&mut self, key: &str, values: &[toml::Value]) -> Result<(), String> {
        let mut found = false;
        let all = self
            .dims
            .iter_mut()
            .chain(self.whens.iter_mut().flat_map(|w| &mut w.dims));
        for dim in all.filter(|d| d.keys.iter().any(|k| k == key)) {
            if dim.keys.len() > 1 {
                return Err(format!(
                    "`{key}` is zipped with {}; edit the spec's [[grid.zip]] instead",
                    others(&dim.keys, key)
                ));
            }
            dim.rows = values.iter().map(|v| vec![v.clone()]).collect();
            found = true;
        }
        if !found {
            self.dims.push(Dim {
                offset: usize::MAX,
                keys: vec![key.to_string()],
                rows: values.iter().map(|v| vec![v.clone()]).collect(),
            });
        }
        Ok(())
    }
}

/// "`a`, `b`": the keys of a group other than `key`.
fn others(keys: &[String], key: &str) -> String {
    keys.iter()
        .filter(|k| *k != key)
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
