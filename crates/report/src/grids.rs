//! The grids page (`grids.html`): every run's latest grid in a matrix by the sweep's two main
//! varying keys (rows × columns; each further key makes further matrices), each run's grids
//! over training as a film strip, and, for runs that share one training, their grids by the
//! sampling keys they differ in. A sweep's grids start from the same noise stream, so what
//! differs between cells is the model and the sampler, not the draw.

use anyhow::Result;
use ddlab_store::SampleInfo;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use crate::data::{RunData, SweepData};
use crate::page::html_escape;

/// Film-strip frames per run, at most: the page stays bounded whatever `sample_every` was.
pub const STRIP_FRAMES: usize = 8;

/// Evenly spaced frames of `samples` (newest last, always kept), at most `n`.
pub fn strip_frames(samples: &[SampleInfo], n: usize) -> Vec<&SampleInfo> {
    let unguided: Vec<&SampleInfo> = samples.iter().filter(|s| s.guidance.is_none()).collect();
    let len = unguided.len();
    if len <= n {
        return unguided;
    }
    (0..n)
        .map(|i| unguided[i * (len - 1) / (n - 1).max(1)])
        .collect()
}

/// One matrix: rows by one key, columns by another, each cell a run.
struct Matrix<'a> {
    /// What the other varying keys are fixed to in this matrix.
    title: String,
    row_key: Option<String>,
    col_key: Option<String>,
    rows: Vec<String>,
    cols: Vec<String>,
    cells: BTreeMap<(usize, usize), &'a RunData>,
}

/// Values of `key` in first-appearance order.
fn values_of(runs: &[&RunData], key: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for r in runs {
        let v = key.map(|k| r.key(k)).unwrap_or_default();
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// The runs laid out by `keys`: the first two are rows and columns, each combination of the
/// rest a matrix of its own.
fn matrices<'a>(runs: &[&'a RunData], keys: &[String]) -> Vec<Matrix<'a>> {
    let row_key = keys.first().cloned();
    let col_key = keys.get(1).cloned();
    let rest = keys.get(2..).unwrap_or(&[]);
    let mut by_rest: Vec<(String, Vec<&'a RunData>)> = vec![];
    for r in runs {
        let title: Vec<String> = rest.iter().map(|k| format!("{k}={}", r.key(k))).collect();
        let title = title.join(", ");
        match by_rest.iter_mut().find(|(t, _)| *t == title) {
            Some((_, v)) => v.push(r),
            None => by_rest.push((title, vec![r])),
        }
    }
    by_rest
        .into_iter()
        .map(|(title, members)| {
            let rows = values_of(&members, row_key.as_deref());
            let cols = values_of(&members, col_key.as_deref());
            let mut cells = BTreeMap::new();
            for r in &members {
                let at = |key: &Option<String>, values: &[String]| {
                    let v = key.as_deref().map(|k| r.key(k)).unwrap_or_default();
                    values.iter().position(|x| *x == v).unwrap_or(0)
                };
                cells
                    .entry((at(&row_key, &rows), at(&col_key, &cols)))
                    .or_insert(*r);
            }
            Matrix {
                title,
                row_key: row_key.clone(),
                col_key: col_key.clone(),
                rows,
                cols,
                cells,
            }
        })
        .collect()
}

fn matrix_html(s: &mut String, m: &Matrix, samples: &BTreeMap<i64, String>) {
    let e = html_escape;
    if !m.title.is_empty() {
        let _ = writeln!(s, "<h3>{}</h3>", e(&m.title));
    }
    let corner = match (&m.row_key, &m.col_key) {
        (Some(r), Some(c)) => format!("{r} ↓ · {c} →"),
        (Some(r), None) => format!("{r} ↓"),
        _ => String::new(),
    };
    let _ = write!(s, "<table class=\"matrix\"><tr><th>{}</th>", e(&corner));
    for c in &m.cols {
        let _ = write!(s, "<th>{}</th>", e(c));
    }
    let _ = writeln!(s, "</tr>");
    for (i, row) in m.rows.iter().enumerate() {
        let _ = write!(s, "<tr><th>{}</th>", e(row));
        for j in 0..m.cols.len() {
            let cell = m.cells.get(&(i, j));
            match cell.and_then(|r| samples.get(&r.row.id).map(|p| (r, p))) {
                Some((r, path)) => {
                    let _ = write!(
                        s,
                        "<td><img src=\"{}\" alt=\"run {id}\"><br><small>#{id} · {}</small></td>",
                        e(path),
                        e(&r.row.status),
                        id = r.row.id
                    );
                }
                None => {
                    let _ = write!(s, "<td class=\"empty\">–</td>");
                }
            }
        }
        let _ = writeln!(s, "</tr>");
    }
    let _ = writeln!(s, "</table>");
}

/// Runs grouped by the training they share (their training identity), groups of two or more.
fn shared_trainings(data: &SweepData) -> Vec<Vec<&RunData>> {
    let mut groups: Vec<(String, Vec<&RunData>)> = vec![];
    for r in &data.runs {
        let id = serde_json::to_string(&r.config.training_identity()).unwrap_or_default();
        match groups.iter_mut().find(|(k, _)| *k == id) {
            Some((_, v)) => v.push(r),
            None => groups.push((id, vec![r])),
        }
    }
    groups
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| v.len() > 1)
        .collect()
}

/// The keys whose values differ among `runs`, in the sweep's order.
fn varying_among(data: &SweepData, runs: &[&RunData]) -> Vec<String> {
    data.varying
        .iter()
        .filter(|k| runs.iter().any(|r| r.key(k) != runs[0].key(k)))
        .cloned()
        .collect()
}

/// Writes each run's film-strip frames under `samples/`; returns their paths by run.
pub fn write_strips(data: &SweepData, dir: &Path) -> Result<BTreeMap<i64, Vec<(i64, String)>>> {
    let mut out = BTreeMap::new();
    for r in &data.runs {
        let mut frames = vec![];
        for (info, png) in &r.strip {
            let rel = format!("samples/run-{}-step-{}.png", r.row.id, info.step);
            std::fs::write(dir.join(&rel), png)?;
            frames.push((info.step, rel));
        }
        if !frames.is_empty() {
            out.insert(r.row.id, frames);
        }
    }
    Ok(out)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1240px;padding:0 1rem;color:#222}\
    table{border-collapse:collapse;margin:.5rem 0 1.5rem}th,td{padding:.25rem;text-align:center;vertical-align:top}\
    th{background:#f4f4f4;font-size:.85rem}td small{color:#555}td.empty{color:#aaa}\
    .matrix img{width:150px;image-rendering:pixelated}\
    .strip{display:flex;gap:.4rem;overflow-x:auto;margin-bottom:1rem}.strip figure{margin:0}\
    .strip img{width:110px;image-rendering:pixelated}figcaption{font-size:.75rem;color:#555;text-align:center}";

/// The whole page. `samples`: each run's latest grid; `strips`: its frames over training.
pub fn html(
    data: &SweepData,
    samples: &[(i64, String)],
    strips: &BTreeMap<i64, Vec<(i64, String)>>,
) -> String {
    let e = html_escape;
    let latest: BTreeMap<i64, String> = samples.iter().cloned().collect();
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>ddlab — {name} — grids</title><style>{STYLE}</style></head><body>\n\
         <h1>Sample grids of <code>{name}</code></h1>\n<p><a href=\"index.html\">← the report</a>. \
         Every grid of a run starts from the same noise (its seed), so cells differ by model and \
         sampler, not by draw.</p>\n",
        name = e(&data.sweep.name)
    );
    let all: Vec<&RunData> = data.runs.iter().collect();
    let _ = writeln!(s, "<h2>Latest grid of every run</h2>");
    for m in matrices(&all, &data.varying) {
        matrix_html(&mut s, &m, &latest);
    }
    let shared = shared_trainings(data);
    // One training shared by the whole sweep is the matrix above already.
    let whole_sweep = shared.len() == 1 && shared[0].len() == all.len();
    if !shared.is_empty() && !whole_sweep {
        let _ = writeln!(
            s,
            "<h2>One training, several samplings</h2><p>Runs that share their weights, by the \
             sampling keys they differ in.</p>"
        );
        for group in &shared {
            let keys = varying_among(data, group);
            let _ = writeln!(s, "<h3>Training of run {}</h3>", group[0].row.id);
            for m in matrices(group, &keys) {
                matrix_html(&mut s, &m, &latest);
            }
        }
    }
    strips_html(&mut s, data, strips);
    let _ = writeln!(s, "</body></html>");
    s
}

fn strips_html(s: &mut String, data: &SweepData, strips: &BTreeMap<i64, Vec<(i64, String)>>) {
    if strips.is_empty() {
        return;
    }
    let e = html_escape;
    let _ = writeln!(
        s,
        "<h2>Over training</h2><p>Each run's unguided grids by training step (at most \
         {STRIP_FRAMES}, evenly spaced).</p>"
    );
    for r in &data.runs {
        let Some(frames) = strips.get(&r.row.id) else {
            continue;
        };
        let _ = writeln!(
            s,
            "<h3>#{} {}</h3><div class=\"strip\">",
            r.row.id,
            e(&r.row.name)
        );
        for (step, path) in frames {
            let _ = writeln!(
                s,
                "<figure><img src=\"{}\" alt=\"run {} at step {step}\"><figcaption>step {step}</figcaption></figure>",
                e(path),
                r.row.id
            );
        }
        let _ = writeln!(s, "</div>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(step: i64, guided: bool) -> SampleInfo {
        SampleInfo {
            id: step,
            run_id: 1,
            step,
            sampler: "ddim".into(),
            sample_steps: 10,
            prompt: None,
            guidance: guided.then(|| "cfg".into()),
            guidance_scale: None,
            count: 4,
            width: 8,
            height: 8,
            created_at: String::new(),
        }
    }

    #[test]
    fn strips_keep_the_first_and_last_unguided_grids() {
        let samples: Vec<SampleInfo> = (1..=20)
            .map(|s| info(s * 100, false))
            .chain([info(2000, true)])
            .collect();
        let steps: Vec<i64> = strip_frames(&samples, 4).iter().map(|s| s.step).collect();
        assert_eq!(steps, [100, 700, 1300, 2000]);
        assert_eq!(strip_frames(&samples[..3], 8).len(), 3);
    }
}
