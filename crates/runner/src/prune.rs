//! A sweep's `[prune]` rules at work: what each run compares itself with, and continuing
//! pruned runs when the rules loosen or the user asks. The rule itself is the config crate's
//! [`ddlab_config::prune::judge`]; the store applies it atomically.

use anyhow::{Context, Result};
use ddlab_config::prune::{RungEntry, Verdict, judge, trial_of};
use ddlab_config::{PruneRules, RunConfig};
use ddlab_store::{RunRow, RunStatus, RungDecision, RungRow, SweepRow};

use crate::recorder::SyncStore;

/// What one run of a pruned sweep needs to know at its rungs.
#[derive(Debug, Clone)]
pub struct PrunePlan {
    pub rules: PruneRules,
    pub sweep_id: i64,
    /// Its comparison group (the `within` keys' values as JSON).
    pub group: String,
    /// Its trial (identity without the seed).
    pub trial: String,
}

/// The sweep's recorded rules, if any.
pub fn sweep_rules(sweep: &SweepRow) -> Result<Option<PruneRules>> {
    sweep
        .prune_json
        .as_deref()
        .map(|json| {
            serde_json::from_str(json)
                .with_context(|| format!("sweep `{}` has unreadable [prune] rules", sweep.name))
        })
        .transpose()
}

impl PrunePlan {
    pub fn for_run(sweep: &SweepRow, cfg: &RunConfig) -> Result<Option<Self>> {
        Ok(sweep_rules(sweep)?.map(|rules| Self {
            group: rules.group_of(cfg),
            trial: trial_of(cfg),
            rules,
            sweep_id: sweep.id,
        }))
    }

    /// The decision the store records, from the entries at the rung (this run's last).
    pub fn decide(&self, rung: usize, entries: &[(String, Option<f64>)]) -> RungDecision {
        let entries: Vec<RungEntry> = entries
            .iter()
            .map(|(trial, value)| RungEntry {
                trial: trial.clone(),
                value: *value,
            })
            .collect();
        let verdict = judge(&entries, &self.trial, self.rules.keep);
        decision(&verdict, &self.rules, rung, &self.group)
    }
}

fn decision(v: &Verdict, rules: &PruneRules, rung: usize, group: &str) -> RungDecision {
    RungDecision {
        go_on: v.go_on,
        rank: v.rank as i64,
        trials: v.trials as i64,
        kept: v.kept as i64,
        threshold: v.threshold,
        reason: v.reason(rules.metric, rung, group, rules.keep),
    }
}

/// Records the sweep's rules and continues the pruned runs that the new rules keep: all of
/// them when the spec no longer prunes, and when `keep` grew, those the larger fraction would
/// have kept with what was at the rung when they were decided. The same rules launched again
/// change nothing. Returns how many were continued.
/// `sweep` is the row as it was before this registration.
pub fn apply_rules(
    store: &SyncStore,
    sweep: &SweepRow,
    rules: Option<&PruneRules>,
) -> Result<usize> {
    let (s, sweep_id) = (store.store(), sweep.id);
    let before = sweep_rules(sweep)?;
    let json = rules.map(serde_json::to_string).transpose()?;
    store.block(s.set_sweep_prune(sweep_id, json.as_deref()))?;
    let loosened = match (&before, rules) {
        (_, None) => true,
        (Some(old), Some(new)) => new.keep > old.keep,
        (None, Some(_)) => false,
    };
    if !loosened {
        return Ok(0);
    }
    let rungs = store.block(s.rungs(sweep_id))?;
    let mut continued = 0;
    for run in pruned_runs(store, sweep_id)? {
        let Some(at) = rungs
            .iter()
            .rev()
            .find(|r| r.run_id == run.id && r.pruned())
        else {
            continue;
        };
        let why = match rules {
            None => Some("continued: the sweep no longer prunes".to_string()),
            Some(rules) => rejudged(rules, at, &rungs).filter(|v| v.go_on).map(|v| {
                format!(
                    "continued under keep {:.2}: {}",
                    rules.keep,
                    reason(&v, rules, at)
                )
            }),
        };
        if let Some(why) = why
            && store.block(s.unprune(run.id, at.rung, &why))?
        {
            continued += 1;
        }
    }
    Ok(continued)
}

/// `--resume-pruned`: every pruned run goes back to pending. Returns how many.
pub fn resume_pruned(store: &SyncStore, sweep_id: i64) -> Result<usize> {
    let s = store.store();
    let rungs = store.block(s.rungs(sweep_id))?;
    let mut continued = 0;
    for run in pruned_runs(store, sweep_id)? {
        let rung = rungs
            .iter()
            .rev()
            .find(|r| r.run_id == run.id && r.pruned())
            .map_or(run.steps_done, |r| r.rung);
        if store.block(s.unprune(run.id, rung, "continued by --resume-pruned"))? {
            continued += 1;
        }
    }
    Ok(continued)
}

fn pruned_runs(store: &SyncStore, sweep_id: i64) -> Result<Vec<RunRow>> {
    let runs = store.block(store.store().runs(Some(sweep_id)))?;
    Ok(runs
        .into_iter()
        .filter(|r| r.status() == RunStatus::Pruned)
        .collect())
}

/// The decision at a recorded rung under `rules`, from the values its group had recorded there
/// when it arrived (None when the rules now rank by another metric: those values do not apply).
fn rejudged(rules: &PruneRules, at: &RungRow, rungs: &[RungRow]) -> Option<Verdict> {
    if at.metric != rules.metric.name() {
        return None;
    }
    let entries: Vec<RungEntry> = rungs
        .iter()
        .filter(|r| r.rung == at.rung && r.group_key == at.group_key && r.id <= at.id)
        .map(|r| RungEntry {
            trial: r.trial_key.clone(),
            value: r.value,
        })
        .collect();
    Some(judge(&entries, &at.trial_key, rules.keep))
}

fn reason(v: &Verdict, rules: &PruneRules, at: &RungRow) -> String {
    v.reason(rules.metric, at.rung as usize, &at.group_key, rules.keep)
}

/// Training steps the pruned runs of a sweep did not take.
pub fn steps_saved(runs: &[RunRow]) -> i64 {
    runs.iter()
        .filter(|r| r.status() == RunStatus::Pruned)
        .map(|r| (r.steps_total - r.steps_done).max(0))
        .sum()
}
