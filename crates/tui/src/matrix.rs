//! The grid view's layout: the runs of the selected run's sweep as a matrix, one config key
//! down the rows and another across the columns, every other key that varies held at the
//! selected run's value (the matrix is a slice through the sweep at that run). Pure: built
//! from the snapshot's runs by the state, drawn by `ui::grid_view`.

use crate::snapshot::RunInfo;
use serde_json::Value;
use std::ops::Range;

/// At most this many row and column values are shown at once (the window follows the
/// selected run); each cell is a sample grid, and more would be too small to read.
pub const MAX_ROWS: usize = 6;
pub const MAX_COLS: usize = 6;

/// The keys the user picked for the axes (`y` cycles rows, `x` columns); `None` until then,
/// and columns `Some(None)` for a single column.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Axes {
    pub rows: Option<String>,
    pub cols: Option<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matrix {
    /// The keys that take more than one value among the runs: the choices for the axes.
    pub keys: Vec<String>,
    pub row_key: Option<String>,
    pub col_key: Option<String>,
    /// Every value of the row and column keys in the slice, in order.
    pub rows: Vec<String>,
    pub cols: Vec<String>,
    /// `rows.len() × cols.len()` run ids, row-major.
    pub cells: Vec<Option<i64>>,
    /// The other varying keys, at the selected run's values.
    pub fixed: Vec<(String, String)>,
    /// The rows and columns shown, around the selected run's.
    pub row_window: Range<usize>,
    pub col_window: Range<usize>,
    /// The selected run's cell.
    pub selected: Option<(usize, usize)>,
}

impl Matrix {
    /// The matrix of `runs` (one sweep's visible runs) by `axes` among `keys` (the sweep's
    /// varying keys, in its order), sliced at `selected`.
    pub fn build(runs: &[&RunInfo], keys: &[String], selected: &RunInfo, axes: &Axes) -> Matrix {
        let keys: Vec<String> = keys
            .iter()
            .filter(|k| distinct(runs, k).len() > 1)
            .cloned()
            .collect();
        let row_key = axes
            .rows
            .clone()
            .filter(|k| keys.contains(k))
            .or_else(|| keys.first().cloned());
        let col_key = match &axes.cols {
            Some(None) => None,
            Some(Some(k)) if keys.contains(k) && Some(k) != row_key.as_ref() => Some(k.clone()),
            _ => keys.iter().find(|k| Some(*k) != row_key.as_ref()).cloned(),
        };
        let on_axis = |k: &String| Some(k) == row_key.as_ref() || Some(k) == col_key.as_ref();
        let fixed: Vec<(String, String)> = keys
            .iter()
            .filter(|k| !on_axis(k))
            .map(|k| (k.clone(), key_text(selected, k)))
            .collect();
        let slice: Vec<&RunInfo> = runs
            .iter()
            .copied()
            .filter(|r| fixed.iter().all(|(k, v)| key_text(r, k) == *v))
            .collect();
        let rows = ordered(distinct(&slice, row_key.as_deref().unwrap_or("")));
        let cols = ordered(distinct(&slice, col_key.as_deref().unwrap_or("")));
        let at = |r: &RunInfo| {
            let i = rows.iter().position(|v| *v == axis_text(r, &row_key))?;
            let j = cols.iter().position(|v| *v == axis_text(r, &col_key))?;
            Some((i, j))
        };
        let mut cells = vec![None; rows.len() * cols.len()];
        for r in &slice {
            if let Some((i, j)) = at(r) {
                cells[i * cols.len() + j].get_or_insert(r.id);
            }
        }
        let selected_cell = at(selected).filter(|_| slice.iter().any(|r| r.id == selected.id));
        let (si, sj) = selected_cell.unwrap_or((0, 0));
        Matrix {
            row_window: window(rows.len(), si, MAX_ROWS),
            col_window: window(cols.len(), sj, MAX_COLS),
            keys,
            row_key,
            col_key,
            rows,
            cols,
            cells,
            fixed,
            selected: selected_cell,
        }
    }

    pub fn cell(&self, i: usize, j: usize) -> Option<i64> {
        self.cells.get(i * self.cols.len() + j).copied().flatten()
    }

    /// The runs of the cells shown, for the loader to fetch their grids.
    pub fn shown_runs(&self) -> Vec<i64> {
        let mut out = Vec::new();
        for i in self.row_window.clone() {
            for j in self.col_window.clone() {
                out.extend(self.cell(i, j));
            }
        }
        out
    }

    /// The run reached from the selected cell by moving `(down, right)` cells, passing over
    /// empty ones; `None` at the edge.
    pub fn step(&self, down: isize, right: isize) -> Option<i64> {
        let (mut i, mut j) = self.selected?;
        loop {
            i = i
                .checked_add_signed(down)
                .filter(|i| *i < self.rows.len())?;
            j = j
                .checked_add_signed(right)
                .filter(|j| *j < self.cols.len())?;
            if let Some(id) = self.cell(i, j) {
                return Some(id);
            }
        }
    }
}

/// The key after `current` among `keys`, skipping `other` (the other axis); columns may also
/// be none (`allow_none`: one column), which comes after the last key.
pub fn next_key(
    keys: &[String],
    current: Option<&str>,
    other: Option<&str>,
    allow_none: bool,
) -> Option<String> {
    let mut choices: Vec<Option<&str>> = keys
        .iter()
        .map(|k| Some(k.as_str()))
        .filter(|k| *k != other)
        .collect();
    if allow_none {
        choices.push(None);
    }
    let at = choices.iter().position(|c| *c == current);
    let next = at.map_or(0, |i| (i + 1) % choices.len().max(1));
    choices.get(next).copied().flatten().map(str::to_string)
}

/// The config keys whose values differ between `runs` (a missing key differs from any
/// value), in the order they first appear: the axes of runs outside any sweep.
pub fn varying_keys(runs: &[&RunInfo]) -> Vec<String> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    let mut keys: Vec<String> = Vec::new();
    for run in &runs[1..] {
        for key in first.config.keys().chain(run.config.keys()) {
            if first.config.get(key) != run.config.get(key) && !keys.contains(key) {
                keys.push(key.clone());
            }
        }
    }
    keys
}

/// `len` positions shown `max` at a time, the window around `at`.
fn window(len: usize, at: usize, max: usize) -> Range<usize> {
    if len <= max {
        return 0..len;
    }
    let start = at.saturating_sub(max / 2).min(len - max);
    start..start + max
}

fn axis_text(run: &RunInfo, key: &Option<String>) -> String {
    key.as_deref().map(|k| key_text(run, k)).unwrap_or_default()
}

/// A config value as the matrix labels it (strings bare, `none` for null, else JSON).
pub fn key_text(run: &RunInfo, key: &str) -> String {
    match run.config.get(key) {
        None | Some(Value::Null) => "none".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// The values of `key` among `runs`, in first-appearance order (`key` "" gives one value).
fn distinct(runs: &[&RunInfo], key: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in runs {
        let v = if key.is_empty() {
            String::new()
        } else {
            key_text(r, key)
        };
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Numbers in increasing order when every value is one; otherwise as they came.
fn ordered(mut values: Vec<String>) -> Vec<String> {
    if values.iter().all(|v| v.parse::<f64>().is_ok()) {
        values.sort_by(|a, b| {
            a.parse::<f64>()
                .unwrap()
                .total_cmp(&b.parse::<f64>().unwrap())
        });
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(id: i64, config: Value) -> RunInfo {
        let Value::Object(config) = config else {
            panic!("a config is an object")
        };
        RunInfo {
            config,
            ..RunInfo::blank(id)
        }
    }

    /// schedule × T × seed, ids 1..=8.
    fn sweep() -> Vec<RunInfo> {
        let mut runs = Vec::new();
        for schedule in ["linear", "cosine"] {
            for t in [1000, 100] {
                for seed in [0, 1] {
                    let id = runs.len() as i64 + 1;
                    runs.push(run(
                        id,
                        json!({"schedule": schedule, "T": t, "seed": seed, "lr": 1e-3}),
                    ));
                }
            }
        }
        runs
    }

    fn keys() -> Vec<String> {
        ["schedule", "T", "seed", "lr"].map(String::from).to_vec()
    }

    #[test]
    fn rows_and_columns_by_the_first_keys_sliced_at_the_selection() {
        let runs = sweep();
        let refs: Vec<&RunInfo> = runs.iter().collect();
        let m = Matrix::build(&refs, &keys(), &runs[1], &Axes::default());
        // lr does not vary: not a choice.
        assert_eq!(m.keys, ["schedule", "T", "seed"]);
        assert_eq!(m.row_key.as_deref(), Some("schedule"));
        assert_eq!(m.col_key.as_deref(), Some("T"));
        assert_eq!(m.rows, ["linear", "cosine"]);
        // Numbers in order.
        assert_eq!(m.cols, ["100", "1000"]);
        assert_eq!(m.fixed, [("seed".to_string(), "1".to_string())]);
        // Seed 1 only: ids 2 (linear 1000), 4 (linear 100), 6, 8.
        assert_eq!(m.cells, [Some(4), Some(2), Some(8), Some(6)]);
        assert_eq!(m.selected, Some((0, 1)));
        assert_eq!(m.step(1, 0), Some(6));
        assert_eq!(m.step(0, -1), Some(4));
        assert_eq!(m.step(-1, 0), None);
    }

    #[test]
    fn chosen_axes_and_cycling() {
        let runs = sweep();
        let refs: Vec<&RunInfo> = runs.iter().collect();
        let axes = Axes {
            rows: Some("seed".into()),
            cols: Some(Some("seed".into())),
        };
        let m = Matrix::build(&refs, &keys(), &runs[0], &axes);
        // The same key cannot be both: columns take the first other one.
        assert_eq!(m.row_key.as_deref(), Some("seed"));
        assert_eq!(m.col_key.as_deref(), Some("schedule"));
        assert_eq!(m.fixed, [("T".to_string(), "1000".to_string())]);
        let k = m.keys.clone();
        assert_eq!(
            next_key(&k, Some("schedule"), Some("seed"), true).as_deref(),
            Some("T")
        );
        assert_eq!(next_key(&k, Some("T"), Some("seed"), true), None);
        assert_eq!(
            next_key(&k, None, Some("seed"), true).as_deref(),
            Some("schedule")
        );
        assert_eq!(
            next_key(&k, Some("seed"), Some("T"), false).as_deref(),
            Some("schedule")
        );
        // Columns by default, then none: one column, the rest fixed.
        let mut axes = Axes {
            rows: Some("T".into()),
            cols: None,
        };
        let m = Matrix::build(&refs, &keys(), &runs[0], &axes);
        assert_eq!(m.col_key.as_deref(), Some("schedule"));
        axes.cols = Some(None);
        let m = Matrix::build(&refs, &keys(), &runs[0], &axes);
        assert_eq!(m.col_key, None);
        assert_eq!(m.cols, [""]);
        assert_eq!(m.rows, ["100", "1000"]);
        assert_eq!(m.cells, [Some(3), Some(1)]);
    }

    #[test]
    fn a_long_axis_shows_a_window_around_the_selection() {
        let runs: Vec<RunInfo> = (0..20)
            .map(|i| run(i + 1, json!({"lr": (i + 1) as f64 * 1e-4, "seed": 0})))
            .collect();
        let refs: Vec<&RunInfo> = runs.iter().collect();
        let keys = vec!["lr".to_string(), "seed".to_string()];
        let m = Matrix::build(&refs, &keys, &runs[15], &Axes::default());
        assert_eq!(m.rows.len(), 20);
        assert_eq!(m.cols, [""]);
        assert_eq!(m.row_window, 12..18);
        assert_eq!(m.shown_runs(), (13..=18).collect::<Vec<i64>>());
        assert_eq!(m.step(1, 0), Some(17));
        let m = Matrix::build(&refs, &keys, &runs[19], &Axes::default());
        assert_eq!(m.row_window, 14..20);
    }

    #[test]
    fn a_sweep_with_nothing_varying_is_one_cell() {
        let runs = [run(1, json!({"lr": 1e-3}))];
        let refs: Vec<&RunInfo> = runs.iter().collect();
        let m = Matrix::build(&refs, &["lr".into()], &runs[0], &Axes::default());
        assert_eq!((m.row_key.clone(), m.col_key.clone()), (None, None));
        assert_eq!(m.cells, [Some(1)]);
        assert_eq!(m.selected, Some((0, 0)));
    }
}
