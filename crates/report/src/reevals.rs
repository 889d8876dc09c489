//! The report's re-evaluations section (`ddlab eval --sweep`): values of the runs' final
//! weights computed again with other settings, one table per metric and method, so two values
//! computed differently never share a column.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::data::SweepData;
use crate::page::{html_escape, md_escape};

/// The metrics a re-evaluation tabulates (the others it records are their details).
const SHOWN: [&str; 3] = ["nll_bpd", "frechet_distance", "prompt_accuracy"];

/// A table row: the run's id, the re-evaluated value, the run's own value.
type Row = (i64, String, String);

/// One table: a metric under one method, a row per run.
struct Table<'a> {
    name: &'a str,
    method: &'a str,
    rows: Vec<Row>,
}

/// Every evaluation of a run's last evaluated step whose method is not the run's own.
fn tables(data: &SweepData) -> Vec<Table<'_>> {
    let mut by_key: BTreeMap<(&str, &str), Vec<Row>> = BTreeMap::new();
    for r in &data.runs {
        let last = r.eval_rows.iter().map(|e| e.step).max();
        for e in &r.eval_rows {
            let own = r.eval_methods.get(&e.name) == Some(&e.method);
            if own || Some(e.step) != last || !SHOWN.contains(&e.name.as_str()) {
                continue;
            }
            let stderr = r
                .eval_rows
                .iter()
                .find(|s| s.name == "nll_bpd_stderr" && s.method == e.method && s.step == e.step)
                .and_then(|s| s.value);
            let value = match (e.value, stderr) {
                (Some(v), Some(se)) => format!("{v:.4} ± {se:.4}"),
                (Some(v), None) => format!("{v:.4}"),
                (None, _) => "not finite".into(),
            };
            let own_value = r.eval(&e.name).map_or("-".into(), |v| format!("{v:.4}"));
            by_key
                .entry((e.name.as_str(), e.method.as_str()))
                .or_default()
                .push((r.row.id, value, own_value));
        }
    }
    by_key
        .into_iter()
        .map(|((name, method), rows)| Table { name, method, rows })
        .collect()
}

fn run_name(data: &SweepData, id: i64) -> &str {
    data.runs
        .iter()
        .find(|r| r.row.id == id)
        .map_or("", |r| r.row.name.as_str())
}

const INTRO: &str = "The runs' final weights evaluated again with other settings \
    (`ddlab eval --sweep`), one table per metric and method; the run's own value, computed as \
    its config said, is beside it for reference, not on the same scale unless the methods agree.";

pub fn markdown(data: &SweepData) -> String {
    let tables = tables(data);
    let mut s = String::new();
    if tables.is_empty() {
        return s;
    }
    let _ = writeln!(s, "\n## Re-evaluations\n\n{INTRO}\n");
    for t in &tables {
        let _ = writeln!(s, "**{}** — `{}`\n", t.name, md_escape(t.method));
        let _ = writeln!(s, "| run | name | value | own value |\n|---|---|---|---|");
        for (id, value, own) in &t.rows {
            let name = md_escape(run_name(data, *id));
            let _ = writeln!(s, "| {id} | {name} | {value} | {own} |");
        }
        s.push('\n');
    }
    s
}

pub fn html(data: &SweepData) -> String {
    let tables = tables(data);
    let mut s = String::new();
    if tables.is_empty() {
        return s;
    }
    let e = html_escape;
    let _ = writeln!(s, "<h2>Re-evaluations</h2>\n<p>{}</p>", e(INTRO));
    for t in &tables {
        let _ = writeln!(
            s,
            "<p><b>{}</b> — <code>{}</code></p>\n<table><thead><tr><th>run</th><th>name</th>\
             <th>value</th><th>own value</th></tr></thead><tbody>",
            e(t.name),
            e(t.method)
        );
        for (id, value, own) in &t.rows {
            let _ = writeln!(
                s,
                "<tr><td class=\"num\">{id}</td><td>{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td></tr>",
                e(run_name(data, *id)),
                e(value),
                e(own)
            );
        }
        let _ = writeln!(s, "</tbody></table>");
    }
    s
}
