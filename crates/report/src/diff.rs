//! Runs side by side: the configuration keys whose values differ between them, then their
//! final metrics and evals. Read from the store (read-only is enough); the caller prints it.

use anyhow::{Result, bail};
use ddlab_config::RunConfig;
use ddlab_store::{RunRow, Store};
use serde_json::Value;
use std::collections::BTreeMap;

use crate::data::show_value;

/// What `ddlab diff` shows: one column per run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDiff {
    pub runs: Vec<RunRow>,
    /// Config keys whose values are not all equal, in the order `ddlab keys` lists them, with
    /// each run's value as text.
    pub keys: Vec<(String, Vec<String>)>,
    /// The newest value of each training metric, then each eval, per run (None: not recorded).
    pub metrics: Vec<(String, Vec<Option<f64>>)>,
}

/// Reads runs `ids` (at least two, each once) and compares them.
pub async fn load(store: &Store, ids: &[i64]) -> Result<RunDiff> {
    if ids.len() < 2 {
        bail!("diff needs at least two run ids");
    }
    if let Some(id) = ids
        .iter()
        .enumerate()
        .find_map(|(i, id)| ids[..i].contains(id).then_some(id))
    {
        bail!("run {id} is given twice");
    }
    let mut runs = vec![];
    let mut values: Vec<BTreeMap<String, Option<f64>>> = vec![];
    for &id in ids {
        runs.push(store.run(id).await?);
        let mut m: BTreeMap<String, Option<f64>> = BTreeMap::new();
        for (name, _, v) in store.final_metrics(id).await? {
            m.insert(name, Some(v));
        }
        for e in store.evals(id).await? {
            m.insert(format!("eval {}", e.name), e.value);
        }
        values.push(m);
    }
    let configs: Vec<BTreeMap<String, Value>> = runs.iter().map(config_of).collect();
    Ok(RunDiff {
        keys: differing_keys(&configs),
        metrics: side_by_side(&values),
        runs,
    })
}

/// A run's recorded config as key → value, keys it does not record at their defaults (it was
/// made before they existed). A config that does not parse is compared as recorded.
fn config_of(run: &RunRow) -> BTreeMap<String, Value> {
    let defaults = serde_json::to_value(RunConfig::default()).expect("config serialises");
    let mut out: BTreeMap<String, Value> = match defaults {
        Value::Object(m) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&run.config_json) {
        out.extend(m);
    }
    out
}

/// The keys whose values are not all equal, each with every run's value shown as text (`-`
/// where a run has none).
pub fn differing_keys(configs: &[BTreeMap<String, Value>]) -> Vec<(String, Vec<String>)> {
    let mut keys: Vec<&String> = configs.iter().flat_map(|c| c.keys()).collect();
    keys.sort_by_key(|k| {
        (
            RunConfig::ROLES.iter().position(|(r, _)| r == k),
            k.as_str(),
        )
    });
    keys.dedup();
    keys.into_iter()
        .filter(|k| configs.iter().any(|c| c.get(*k) != configs[0].get(*k)))
        .map(|k| {
            let shown = configs
                .iter()
                .map(|c| c.get(k).map_or("-".into(), show_value))
                .collect();
            (k.clone(), shown)
        })
        .collect()
}

/// Every metric any run has, with each run's value.
fn side_by_side(values: &[BTreeMap<String, Option<f64>>]) -> Vec<(String, Vec<Option<f64>>)> {
    let mut names: Vec<&String> = values.iter().flat_map(|m| m.keys()).collect();
    // Training metrics first, then evals; each alphabetically.
    names.sort_by_key(|n| (n.starts_with("eval "), n.as_str()));
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let row = values.iter().map(|m| m.get(n).copied().flatten()).collect();
            (n.clone(), row)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn only_differing_keys_in_key_order() {
        let a = cfg(&[
            ("seed", json!(0)),
            ("T", json!(100)),
            ("schedule", json!("linear")),
        ]);
        let b = cfg(&[
            ("seed", json!(1)),
            ("T", json!(100)),
            ("schedule", json!("cosine")),
        ]);
        let c = cfg(&[("seed", json!(0)), ("T", json!(100))]);
        let d = differing_keys(&[a, b, c]);
        assert_eq!(
            d,
            [
                (
                    "schedule".to_string(),
                    vec!["linear".into(), "cosine".into(), "-".into()]
                ),
                ("seed".to_string(), vec!["0".into(), "1".into(), "0".into()]),
            ]
        );
    }
}
