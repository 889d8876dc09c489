//! The `/` filter: terms separated by spaces or commas, all of which must match.
//!
//! - `word` — the run's name or sweep contains it (case-insensitive);
//! - `key=value`, `key!=value` — a config key (`schedule=cosine`, `T=1000`, `lr=1e-3`; numbers
//!   compare as numbers) or one of the run's own fields `sweep`, `name`, `status`, `device`,
//!   `host`, `worker`, `slurm` (the job, or `JOB_TASK`), `id`.
//!
//! A run's name is itself such a list (`schedule=cosine,T=100`), so pasting one selects it.

use crate::snapshot::RunInfo;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    pub terms: Vec<Term>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    Text(String),
    Eq(String, String),
    Ne(String, String),
}

/// Parses a filter line. The error is one short sentence for the footer.
pub fn parse(input: &str) -> Result<Filter, String> {
    let mut terms = Vec::new();
    for raw in split_terms(input) {
        let term = if let Some((k, v)) = raw.split_once("!=") {
            let (k, v) = key_value(k, v, &raw)?;
            Term::Ne(k, v)
        } else if let Some((k, v)) = raw.split_once('=') {
            let (k, v) = key_value(k, v, &raw)?;
            Term::Eq(k, v)
        } else {
            Term::Text(raw.to_lowercase())
        };
        terms.push(term);
    }
    Ok(Filter { terms })
}

fn key_value(k: &str, v: &str, raw: &str) -> Result<(String, String), String> {
    let (k, v) = (k.trim(), v.trim());
    if k.is_empty() {
        return Err(format!("`{raw}` needs a key before `=`"));
    }
    if v.is_empty() {
        return Err(format!("`{raw}` needs a value after `=`"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Splits on whitespace and commas, except for commas inside brackets (`channel_mult=[1,2]`).
fn split_terms(input: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    for c in input.chars() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if (c.is_whitespace() || c == ',') && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn matches(&self, run: &RunInfo) -> bool {
        self.terms.iter().all(|t| match t {
            Term::Text(w) => {
                run.name.to_lowercase().contains(w)
                    || run
                        .sweep
                        .as_deref()
                        .unwrap_or("")
                        .to_lowercase()
                        .contains(w)
            }
            Term::Eq(k, v) => field_matches(run, k, v),
            Term::Ne(k, v) => !field_matches(run, k, v),
        })
    }

    /// Keys of `key=value` terms that no run has, to point out a typo.
    pub fn unknown_keys<'a>(&'a self, runs: &[RunInfo]) -> Vec<&'a str> {
        self.terms
            .iter()
            .filter_map(|t| match t {
                Term::Eq(k, _) | Term::Ne(k, _) => Some(k.as_str()),
                Term::Text(_) => None,
            })
            .filter(|k| {
                !RUN_FIELDS.contains(&k.to_lowercase().as_str())
                    && !runs.iter().any(|r| config_value(r, k).is_some())
            })
            .collect()
    }
}

const RUN_FIELDS: [&str; 8] = [
    "sweep", "name", "status", "device", "host", "worker", "slurm", "id",
];

fn field_matches(run: &RunInfo, key: &str, want: &str) -> bool {
    let text = |s: Option<&str>| s.is_some_and(|s| s.eq_ignore_ascii_case(want));
    match key.to_lowercase().as_str() {
        "sweep" => text(run.sweep.as_deref()),
        "name" => text(Some(&run.name)),
        "status" => {
            text(Some(run.status.as_str())) || (run.stalled && want.eq_ignore_ascii_case("stalled"))
        }
        "device" => text(run.device.as_deref()),
        "host" => text(run.host.as_deref()),
        "worker" => text(run.worker.as_deref()),
        // The whole array job, or one task of it.
        "slurm" => text(run.slurm_job.as_deref()) || text(run.slurm().as_deref()),
        "id" => want.parse::<i64>().is_ok_and(|id| id == run.id),
        _ => config_value(run, key).is_some_and(|v| value_matches(v, want)),
    }
}

/// A config key, exactly or else ignoring case (`t=1000` finds `T`).
fn config_value<'a>(run: &'a RunInfo, key: &str) -> Option<&'a Value> {
    run.config.get(key).or_else(|| {
        run.config
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn value_matches(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s.eq_ignore_ascii_case(want),
        Value::Number(n) => match (n.as_f64(), want.parse::<f64>()) {
            (Some(a), Ok(b)) => a == b || ((a - b).abs() <= 1e-12 * a.abs().max(b.abs())),
            _ => false,
        },
        Value::Bool(b) => want.eq_ignore_ascii_case(if *b { "true" } else { "false" }),
        Value::Null => want.eq_ignore_ascii_case("null") || want.eq_ignore_ascii_case("none"),
        // Compared as JSON, so spacing does not matter: `[1,2]` is `[1, 2]`.
        Value::Array(_) | Value::Object(_) => {
            serde_json::from_str::<Value>(want).is_ok_and(|w| w == *v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ddlab_store::RunStatus;

    fn run(id: i64, name: &str, config: Value) -> RunInfo {
        let Value::Object(config) = config else {
            panic!("a config is a JSON object");
        };
        RunInfo {
            sweep_id: Some(1),
            sweep: Some("quickstart".into()),
            name: name.into(),
            status: RunStatus::Completed,
            device: Some("cpu".into()),
            host: Some("node1".into()),
            worker: Some("node1:77".into()),
            slurm_job: Some("4242".into()),
            slurm_task: Some(id),
            config,
            ..RunInfo::blank(id)
        }
    }

    #[test]
    fn parses_terms() {
        let f = parse("  cosine schedule=cosine,T=1000  lr!=1e-3 channel_mult=[1, 2]").unwrap();
        assert_eq!(
            f.terms,
            vec![
                Term::Text("cosine".into()),
                Term::Eq("schedule".into(), "cosine".into()),
                Term::Eq("T".into(), "1000".into()),
                Term::Ne("lr".into(), "1e-3".into()),
                Term::Eq("channel_mult".into(), "[1, 2]".into()),
            ]
        );
        assert!(parse("").unwrap().is_empty());
        assert!(parse(" , ").unwrap().is_empty());
    }

    #[test]
    fn parse_errors_name_the_term() {
        assert_eq!(
            parse("=cosine").unwrap_err(),
            "`=cosine` needs a key before `=`"
        );
        assert_eq!(
            parse("T=1000 schedule=").unwrap_err(),
            "`schedule=` needs a value after `=`"
        );
    }

    #[test]
    fn matches_config_keys_and_fields() {
        let a = run(
            1,
            "schedule=cosine,T=1000",
            serde_json::json!({"schedule": "cosine", "T": 1000, "lr": 0.001, "clip_x0": true,
                               "channel_mult": [1, 2], "data_dir": null}),
        );
        let b = run(
            2,
            "schedule=linear,T=100",
            serde_json::json!({"schedule": "linear", "T": 100, "lr": 0.0002, "clip_x0": false,
                               "channel_mult": [1, 2, 2], "data_dir": "/data"}),
        );
        let hits = |q: &str| -> Vec<i64> {
            let f = parse(q).unwrap();
            [&a, &b]
                .iter()
                .filter(|r| f.matches(r))
                .map(|r| r.id)
                .collect()
        };
        assert_eq!(hits(""), vec![1, 2]);
        assert_eq!(hits("schedule=cosine"), vec![1]);
        assert_eq!(hits("schedule=COSINE"), vec![1]);
        assert_eq!(hits("T=1000"), vec![1]);
        assert_eq!(hits("t=100"), vec![2]);
        assert_eq!(hits("T=1e3"), vec![1]);
        assert_eq!(hits("lr=1e-3"), vec![1]);
        assert_eq!(hits("lr=2e-4"), vec![2]);
        assert_eq!(hits("clip_x0=false"), vec![2]);
        assert_eq!(hits("channel_mult=[1,2]"), vec![1]);
        assert_eq!(hits("channel_mult=[1, 2, 2]"), vec![2]);
        assert_eq!(hits("data_dir=none"), vec![1]);
        assert_eq!(hits("schedule!=cosine"), vec![2]);
        assert_eq!(hits("linear"), vec![2]);
        assert_eq!(hits("quick"), vec![1, 2]);
        assert_eq!(hits("sweep=quickstart status=completed id=2"), vec![2]);
        assert_eq!(hits("host=node1 device=cpu"), vec![1, 2]);
        assert_eq!(hits("worker=node1:77"), vec![1, 2]);
        assert_eq!(hits("slurm=4242"), vec![1, 2]);
        assert_eq!(hits("slurm=4242_2"), vec![2]);
        assert_eq!(hits("slurm=424"), Vec::<i64>::new());
        // A run's name is a filter that selects it.
        assert_eq!(hits("schedule=linear,T=100"), vec![2]);
        assert_eq!(hits("nosuchkey=1"), Vec::<i64>::new());

        let f = parse("nosuchkey=1 status=running schedule=cosine").unwrap();
        assert_eq!(f.unknown_keys(&[a, b]), vec!["nosuchkey"]);
    }
}
