//! `index.html` and `summary.md`. Every string that came from a user (sweep name and
//! description, run names, config values, error messages, prompts) is escaped.

use std::fmt::Write;
use std::path::Path;

use crate::charts::ChartFiles;
use crate::data::{RunData, SweepData};

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for a Markdown table cell: Markdown punctuation, HTML, pipes and newlines.
pub fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '#' | '|' | '!' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn rel(dir: &Path, p: &Path) -> String {
    p.strip_prefix(dir).unwrap_or(p).display().to_string()
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.digits$}"))
}

fn nll(r: &RunData) -> String {
    match (r.eval("nll_bpd"), r.eval("nll_bpd_stderr")) {
        (Some(b), Some(e)) => format!("{b:.3} ± {e:.3}"),
        (b, _) => num(b, 3),
    }
}

fn duration(r: &RunData) -> String {
    match r.duration_s {
        Some(s) if s >= 3600.0 => format!("{:.1} h", s / 3600.0),
        Some(s) if s >= 60.0 => format!("{:.1} min", s / 60.0),
        Some(s) => format!("{s:.0} s"),
        None => "–".into(),
    }
}

/// Columns of the comparison table: id, name, the varying keys, status, steps, loss, NLL, time.
fn table_rows(data: &SweepData) -> (Vec<String>, Vec<Vec<String>>) {
    let mut head = vec!["run".to_string(), "name".into()];
    let shown: Vec<&str> = ["schedule", "T", "seed"]
        .into_iter()
        .chain(
            data.varying
                .iter()
                .map(String::as_str)
                .filter(|k| !["schedule", "T", "seed"].contains(k)),
        )
        .collect();
    head.extend(shown.iter().map(|s| s.to_string()));
    head.extend(["status", "steps", "final loss", "NLL (bits/dim)"].map(String::from));
    // Guided evaluation, when any run has one.
    let guided: Vec<(&str, &str, usize)> = [
        ("prompt_accuracy", "prompt accuracy", 3),
        ("frechet_distance", "Fréchet (judge features)", 2),
        ("judge_accuracy", "judge's own accuracy", 3),
    ]
    .into_iter()
    .filter(|(k, _, _)| data.runs.iter().any(|r| r.eval(k).is_some()))
    .collect();
    head.extend(guided.iter().map(|(_, h, _)| h.to_string()));
    head.push("time".into());
    let rows = data
        .runs
        .iter()
        .map(|r| {
            let mut row = vec![r.row.id.to_string(), r.row.name.clone()];
            row.extend(shown.iter().map(|k| r.key(k)));
            row.extend([
                r.row.status.clone(),
                format!("{}/{}", r.row.steps_done, r.row.steps_total),
                num(r.final_loss, 4),
                nll(r),
            ]);
            row.extend(guided.iter().map(|(k, _, d)| num(r.eval(k), *d)));
            row.push(duration(r));
            row
        })
        .collect();
    (head, rows)
}

pub fn markdown(data: &SweepData, charts: &[(String, ChartFiles)], dir: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Sweep {}\n", md_escape(&data.sweep.name));
    if !data.sweep.description.is_empty() {
        let _ = writeln!(s, "{}\n", md_escape(&data.sweep.description));
    }
    let _ = writeln!(
        s,
        "{} runs; varying: {}. Final loss is the mean over the last ~2% of steps; NLL is the variational \
         bound on held-out images (± its standard error).\n",
        data.runs.len(),
        if data.varying.is_empty() {
            "nothing".into()
        } else {
            md_escape(&data.varying.join(", "))
        }
    );
    let (head, rows) = table_rows(data);
    let _ = writeln!(
        s,
        "| {} |",
        head.iter()
            .map(|h| md_escape(h))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(
        s,
        "|{}|",
        head.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for row in rows {
        let _ = writeln!(
            s,
            "| {} |",
            row.iter()
                .map(|c| md_escape(c))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let failed: Vec<&RunData> = data.runs.iter().filter(|r| r.row.error.is_some()).collect();
    if !failed.is_empty() {
        let _ = writeln!(s, "\n## Failed runs\n");
        for r in failed {
            let _ = writeln!(
                s,
                "- run {} ({}): {}",
                r.row.id,
                md_escape(&r.row.name),
                md_escape(r.row.error.as_deref().unwrap_or(""))
            );
        }
    }
    s.push_str(&crate::pruning::markdown(data));
    s.push_str(&crate::reevals::markdown(data));
    let _ = writeln!(s, "\n## Charts\n");
    for (title, f) in charts {
        let _ = writeln!(
            s,
            "![{}]({}) ([SVG]({}))\n",
            md_escape(title),
            rel(dir, &f.png),
            rel(dir, &f.svg)
        );
    }
    s
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#222}\
    table{border-collapse:collapse;font-size:.9rem}th,td{border-bottom:1px solid #ddd;padding:.3rem .6rem;text-align:left}\
    th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}\
    .failed{color:#b00}.pruned{color:#07a}img{max-width:100%}figure{margin:1.5rem 0}\
    .grids{display:flex;flex-wrap:wrap;gap:1rem}.grids figure{margin:0;width:220px}\
    .grids img{width:220px;image-rendering:pixelated}figcaption{font-size:.8rem;color:#555}";

/// The report's index.html: runs table, charts, latest sample grids, the spec.
pub fn html(
    data: &SweepData,
    charts: &[(String, ChartFiles)],
    samples: &[(i64, String)],
    dir: &Path,
) -> String {
    let e = html_escape;
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>ddlab — {name}</title><style>{STYLE}</style></head><body>\n\
         <h1>Sweep <code>{name}</code></h1>\n",
        name = e(&data.sweep.name)
    );
    if !data.sweep.description.is_empty() {
        let _ = writeln!(s, "<p>{}</p>", e(&data.sweep.description));
    }
    let _ = writeln!(
        s,
        "<p>{} runs; varying: {}. Final loss is the mean over the last ~2% of steps; NLL is the \
         variational bound on held-out images (± its standard error).</p>",
        data.runs.len(),
        if data.varying.is_empty() {
            "nothing".into()
        } else {
            e(&data.varying.join(", "))
        }
    );
    runs_table_html(&mut s, data);
    s.push_str(&crate::pruning::html(data));
    s.push_str(&crate::reevals::html(data));
    for (title, f) in charts {
        let _ = writeln!(
            s,
            "<figure><img src=\"{}\" alt=\"{t}\"><figcaption>{t} (<a href=\"{}\">SVG</a>)</figcaption></figure>",
            e(&rel(dir, &f.png)),
            e(&rel(dir, &f.svg)),
            t = e(title)
        );
    }
    samples_html(&mut s, data, samples);
    let _ = writeln!(
        s,
        "<p><small>Written by ddlab from the sweep's records; the spec:</small></p><pre>{}</pre>",
        e(&data.sweep.spec_toml)
    );
    let _ = writeln!(s, "</body></html>");
    s
}

/// The runs table, failed runs marked, then why each failed.
fn runs_table_html(s: &mut String, data: &SweepData) {
    let e = html_escape;
    let (head, rows) = table_rows(data);
    let _ = write!(s, "<table><thead><tr>");
    for h in &head {
        let _ = write!(s, "<th>{}</th>", e(h));
    }
    let _ = writeln!(s, "</tr></thead><tbody>");
    for (row, run) in rows.iter().zip(&data.runs) {
        let class = match run.row.status.as_str() {
            "failed" => " class=\"failed\"",
            "pruned" => " class=\"pruned\"",
            _ => "",
        };
        let _ = write!(s, "<tr{class}>");
        for (i, c) in row.iter().enumerate() {
            let numeric = i == 0 || i + 3 >= row.len();
            let class = if numeric { " class=\"num\"" } else { "" };
            let _ = write!(s, "<td{class}>{}</td>", e(c));
        }
        let _ = writeln!(s, "</tr>");
    }
    let _ = writeln!(s, "</tbody></table>");
    for r in data.runs.iter().filter(|r| r.row.error.is_some()) {
        let _ = writeln!(
            s,
            "<p class=\"failed\">Run {} failed: {}</p>",
            r.row.id,
            e(r.row.error.as_deref().unwrap_or(""))
        );
    }
}

/// How a run's latest grid was drawn: sampler, steps, training step, prompt and guidance.
fn sample_caption(run: &RunData) -> String {
    let Some(x) = run.samples.last() else {
        return String::new();
    };
    let mut t = format!(
        "{} {} steps, training step {}",
        x.sampler, x.sample_steps, x.step
    );
    if let Some(p) = &x.prompt {
        t.push_str(&format!(", prompt “{p}”"));
    }
    if let (Some(g), Some(sc)) = (&x.guidance, x.guidance_scale) {
        t.push_str(&format!(", {g} guidance ×{sc}"));
    }
    t
}

/// The latest sample grid of each run, captioned.
fn samples_html(s: &mut String, data: &SweepData, samples: &[(i64, String)]) {
    if samples.is_empty() {
        return;
    }
    let e = html_escape;
    let _ = writeln!(
        s,
        "<h2>Samples (latest grid of each run)</h2><p><a href=\"grids.html\">All grids side by \
         side</a>: a matrix by the varying keys, each run over training, and the samplings of a \
         shared training.</p><div class=\"grids\">"
    );
    for (id, path) in samples {
        let run = data.runs.iter().find(|r| r.row.id == *id);
        let name = run.map(|r| r.row.name.clone()).unwrap_or_default();
        let info = run.map(sample_caption).unwrap_or_default();
        let _ = writeln!(
            s,
            "<figure><img src=\"{}\" alt=\"samples of run {id}\"><figcaption>#{id} {}<br>{}</figcaption></figure>",
            e(path),
            e(&name),
            e(&info)
        );
    }
    let _ = writeln!(s, "</div>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            html_escape("<script>alert('x')</script> & \""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;"
        );
        assert_eq!(
            md_escape("a|b *c* [d](e) <i>\nx"),
            "a\\|b \\*c\\* \\[d\\](e) &lt;i&gt; x"
        );
    }
}
