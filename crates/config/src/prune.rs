//! `[prune]`: early stopping by asynchronous successive halving (ASHA, Li et al. 2020).
//!
//! ```toml
//! [prune]
//! metric = "loss"          # or "nll_bpd" (evaluated at each rung)
//! window = 50              # loss: the mean of the last `window` steps before the rung
//! rungs  = [100, 200, 400] # training steps where runs are compared
//! keep   = 0.333           # fraction that goes on past each rung (1/η; default 1/3)
//! within = ["T"]           # compare only runs with equal values of these keys ([]: all)
//! ```
//!
//! A run that reaches a rung is ranked against the runs that already reached it (runs that
//! differ only in `seed` form one trial, ranked by their mean) and stops there unless its
//! trial is among the best ⌈keep·n⌉ of the n trials seen so far. The first run at a rung always
//! goes on, as in ASHA: nothing waits for slower runs. The rule is pure ([`judge`]); the store
//! applies it atomically against what the other workers recorded.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use toml::Spanned;

use crate::error::ConfigError;
use crate::keys::RunConfig;
use crate::overrides::canonical_key;
use crate::source::Source;

pub const DEFAULT_KEEP: f64 = 1.0 / 3.0;
pub const DEFAULT_WINDOW: usize = 50;
const MAX_WINDOW: usize = 100_000;
const MAX_RUNGS: usize = 32;

/// What runs are ranked by at a rung; lower is better for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneMetric {
    /// The training loss, averaged over the `window` steps up to the rung.
    Loss,
    /// The NLL bound in bits/dim of the EMA weights at the rung.
    NllBpd,
}

impl PruneMetric {
    pub fn name(self) -> &'static str {
        match self {
            PruneMetric::Loss => "loss",
            PruneMetric::NllBpd => "nll_bpd",
        }
    }
}

/// A sweep's pruning rules, as validated from its `[prune]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneRules {
    pub metric: PruneMetric,
    pub window: usize,
    /// Training steps, strictly increasing.
    pub rungs: Vec<usize>,
    /// Fraction of the trials at a rung that goes on, in (0, 1].
    pub keep: f64,
    /// Runs are compared only with runs that have the same values of these keys.
    pub within: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPrune {
    metric: Spanned<String>,
    #[serde(default)]
    window: Option<Spanned<i64>>,
    rungs: Spanned<Vec<i64>>,
    #[serde(default)]
    keep: Option<Spanned<f64>>,
    #[serde(default)]
    within: Option<Spanned<Vec<String>>>,
}

/// The `[prune]` table checked, every problem located at its key.
pub(crate) fn parse_prune(src: &Source, raw: &RawPrune) -> Result<PruneRules, ConfigError> {
    let metric = match raw.metric.get_ref().as_str() {
        "loss" => PruneMetric::Loss,
        "nll_bpd" => PruneMetric::NllBpd,
        other => {
            let msg = format!("[prune] metric is `loss` or `nll_bpd`, not `{other}`");
            return Err(src.at(raw.metric.span().start, msg));
        }
    };
    let window = match &raw.window {
        None => DEFAULT_WINDOW,
        Some(w) => in_range(src, w, 1, MAX_WINDOW, "[prune] window")?,
    };
    let rungs = parse_rungs(src, &raw.rungs)?;
    let keep = match &raw.keep {
        None => DEFAULT_KEEP,
        Some(k) if k.get_ref().is_finite() && *k.get_ref() > 0.0 && *k.get_ref() <= 1.0 => {
            *k.get_ref()
        }
        Some(k) => {
            let msg = format!(
                "[prune] keep is the fraction of runs that goes on at a rung, in (0, 1], not {}",
                k.get_ref()
            );
            return Err(src.at(k.span().start, msg));
        }
    };
    let within = match &raw.within {
        None => vec![],
        Some(w) => parse_within(w.get_ref()).map_err(|e| src.at(w.span().start, e))?,
    };
    Ok(PruneRules {
        metric,
        window,
        rungs,
        keep,
        within,
    })
}

fn in_range(
    src: &Source,
    v: &Spanned<i64>,
    lo: usize,
    hi: usize,
    what: &str,
) -> Result<usize, ConfigError> {
    match usize::try_from(*v.get_ref()) {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(src.at(
            v.span().start,
            format!("{what} must be {lo} to {hi}, not {}", v.get_ref()),
        )),
    }
}

fn parse_rungs(src: &Source, raw: &Spanned<Vec<i64>>) -> Result<Vec<usize>, ConfigError> {
    let at = |msg: String| src.at(raw.span().start, msg);
    let values = raw.get_ref();
    if values.is_empty() || values.len() > MAX_RUNGS {
        return Err(at(format!(
            "[prune] rungs lists 1 to {MAX_RUNGS} training steps, not {}",
            values.len()
        )));
    }
    let mut rungs = Vec::with_capacity(values.len());
    for &v in values {
        let step = usize::try_from(v)
            .ok()
            .filter(|&s| s > 0 && s <= crate::limits::MAX_STEPS)
            .ok_or_else(|| at(format!("[prune] rung {v} is not a training step")))?;
        if rungs.last().is_some_and(|&last| step <= last) {
            return Err(at(format!(
                "[prune] rungs must increase: {step} comes after {}",
                rungs.last().unwrap()
            )));
        }
        rungs.push(step);
    }
    Ok(rungs)
}

fn parse_within(keys: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = vec![];
    for k in keys {
        let canon = canonical_key(k);
        if RunConfig::role_of(canon).is_none() {
            return Err(format!("[prune] within: unknown key `{k}`"));
        }
        if canon == "seed" {
            return Err(
                "[prune] within cannot name `seed`: seeds are averaged into one trial".into(),
            );
        }
        if out.iter().any(|o| o == canon) {
            return Err(format!("[prune] within names `{k}` twice"));
        }
        out.push(canon.to_string());
    }
    Ok(out)
}

impl PruneRules {
    /// The comparison group of a run: the values of the `within` keys, as canonical JSON
    /// (`""` when the whole sweep is one group).
    pub fn group_of(&self, cfg: &RunConfig) -> String {
        if self.within.is_empty() {
            return String::new();
        }
        let all = serde_json::to_value(cfg).expect("config serialises");
        let picked: BTreeMap<&str, &serde_json::Value> = self
            .within
            .iter()
            .filter_map(|k| all.get(k).map(|v| (k.as_str(), v)))
            .collect();
        serde_json::to_string(&picked).expect("values serialise")
    }

    /// The rungs a run of `steps` training steps meets (its last step is no rung).
    pub fn rungs_below(&self, steps: usize) -> impl Iterator<Item = usize> + '_ {
        self.rungs.iter().copied().filter(move |&r| r < steps)
    }
}

/// The trial of a run: its identity without the seed, so seeds are averaged.
pub fn trial_of(cfg: &RunConfig) -> String {
    RunConfig {
        seed: RunConfig::default().seed,
        ..cfg.clone()
    }
    .config_hash()
}

/// One run's value at a rung, as another worker recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct RungEntry {
    pub trial: String,
    /// None when the metric was not finite: it ranks last.
    pub value: Option<f64>,
}

/// A rung's decision for one trial, with the numbers that explain it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub go_on: bool,
    /// The trial's value: the mean over its seeds at the rung (None: not finite).
    pub value: Option<f64>,
    /// 1 = best.
    pub rank: usize,
    pub trials: usize,
    /// How many trials go on: ⌈keep·trials⌉, at least 1.
    pub kept: usize,
    /// The value of the last trial that goes on.
    pub threshold: Option<f64>,
}

/// The ASHA rule: `trial` goes on when it ranks among the best ⌈keep·n⌉ of the n trials in
/// `entries` (which hold its own). Seeds of a trial are averaged; a trial with any non-finite
/// value ranks last; ties share the better rank.
pub fn judge(entries: &[RungEntry], trial: &str, keep: f64) -> Verdict {
    let mut by_trial: BTreeMap<&str, Vec<Option<f64>>> = BTreeMap::new();
    for e in entries {
        by_trial.entry(&e.trial).or_default().push(e.value);
    }
    let mean = |vs: &Vec<Option<f64>>| -> Option<f64> {
        let sum: Option<f64> = vs.iter().copied().sum();
        sum.map(|s| s / vs.len() as f64).filter(|m| m.is_finite())
    };
    let mut values: Vec<(&str, Option<f64>)> =
        by_trial.iter().map(|(t, vs)| (*t, mean(vs))).collect();
    // Finite values ascending, then the non-finite ones.
    values.sort_by(|a, b| match (a.1, b.1) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let trials = values.len().max(1);
    let kept = ((keep * trials as f64 - 1e-9).ceil() as usize).clamp(1, trials);
    let own = values
        .iter()
        .find(|(t, _)| *t == trial)
        .and_then(|(_, v)| *v);
    let rank = 1 + match own {
        Some(v) => values
            .iter()
            .filter(|(_, o)| o.is_some_and(|o| o < v))
            .count(),
        None => values.iter().filter(|(_, o)| o.is_some()).count(),
    };
    Verdict {
        go_on: rank <= kept,
        value: own,
        rank,
        trials,
        kept,
        threshold: values.get(kept - 1).and_then(|(_, v)| *v),
    }
}

impl Verdict {
    /// Why, in one line: "loss 0.0421 ranks 3rd of 4 at step 200 (within T=1000): the best 2
    /// go on (keep 0.33), threshold 0.0398".
    pub fn reason(&self, metric: PruneMetric, rung: usize, group: &str, keep: f64) -> String {
        let value = self
            .value
            .map_or("not finite".into(), |v| format!("{v:.5}"));
        let within = if group.is_empty() {
            String::new()
        } else {
            format!(" within {}", describe_group(group))
        };
        let threshold = self.threshold.map_or("none".into(), |v| format!("{v:.5}"));
        format!(
            "{} {value} ranks {} of {} at step {rung}{within}: the best {} go on (keep {keep:.2}), threshold {threshold}",
            metric.name(),
            self.rank,
            self.trials,
            self.kept
        )
    }
}

/// `{"T":1000,"schedule":"cosine"}` as `T=1000, schedule=cosine`.
fn describe_group(group: &str) -> String {
    match serde_json::from_str::<BTreeMap<String, serde_json::Value>>(group) {
        Ok(map) => map
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Err(_) => group.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(trial: &str, value: f64) -> RungEntry {
        RungEntry {
            trial: trial.into(),
            value: Some(value),
        }
    }

    #[test]
    fn the_first_at_a_rung_goes_on_and_the_rest_need_the_top_third() {
        assert!(judge(&[e("a", 5.0)], "a", DEFAULT_KEEP).go_on);
        // Two trials: ⌈2/3⌉ = 1 goes on.
        let two = [e("a", 5.0), e("b", 6.0)];
        assert!(judge(&two, "a", DEFAULT_KEEP).go_on);
        let v = judge(&two, "b", DEFAULT_KEEP);
        assert!(!v.go_on);
        assert_eq!(
            (v.rank, v.trials, v.kept, v.threshold),
            (2, 2, 1, Some(5.0))
        );
        // Four trials: ⌈4/3⌉ = 2 go on.
        let four = [e("a", 1.0), e("b", 4.0), e("c", 2.0), e("d", 3.0)];
        let go: Vec<bool> = ["a", "b", "c", "d"]
            .iter()
            .map(|t| judge(&four, t, DEFAULT_KEEP).go_on)
            .collect();
        assert_eq!(go, [true, false, true, false]);
    }

    #[test]
    fn seeds_are_averaged_and_non_finite_values_rank_last() {
        // Trial a's seeds average 3.0, worse than b's 2.5 though one seed is the best value.
        let entries = [e("a", 1.0), e("a", 5.0), e("b", 2.5)];
        assert!(!judge(&entries, "a", 0.5).go_on);
        assert!(judge(&entries, "b", 0.5).go_on);
        let nan = [
            RungEntry {
                trial: "x".into(),
                value: None,
            },
            e("y", 100.0),
        ];
        let v = judge(&nan, "x", 0.5);
        assert_eq!((v.go_on, v.rank, v.value), (false, 2, None));
        assert!(judge(&nan, "y", 0.5).go_on);
        // keep = 1 keeps everyone, even a diverged run.
        assert!(judge(&nan, "x", 1.0).go_on);
    }

    #[test]
    fn the_reason_names_the_numbers() {
        let v = judge(&[e("a", 0.04), e("b", 0.05)], "b", DEFAULT_KEEP);
        let why = v.reason(PruneMetric::Loss, 200, r#"{"T":1000}"#, DEFAULT_KEEP);
        assert_eq!(
            why,
            "loss 0.05000 ranks 2 of 2 at step 200 within T=1000: the best 1 go on (keep 0.33), threshold 0.04000"
        );
    }

    #[test]
    fn groups_and_trials_come_from_the_config() {
        let rules = PruneRules {
            metric: PruneMetric::Loss,
            window: 10,
            rungs: vec![10, 20],
            keep: 0.5,
            within: vec!["T".into()],
        };
        let a = RunConfig::default();
        let b = RunConfig {
            seed: 7,
            ..a.clone()
        };
        assert_eq!(trial_of(&a), trial_of(&b));
        assert_eq!(rules.group_of(&a), format!(r#"{{"T":{}}}"#, a.t));
        assert_eq!(rules.rungs_below(20).collect::<Vec<_>>(), [10]);
    }
}
