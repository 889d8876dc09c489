//! Issue 19 end to end: zipped and conditional axes register exactly the runs `--dry-run`
//! lists, `ddlab diff` shows what differs between runs, and `ddlab export` writes a sweep out.

mod common;
use common::*;

/// A spec of tiny runs with a zip and a conditional block (5 runs).
const SPEC: &str = r#"[sweep]
name = "axes"
[base]
model = "tiny"
shapes_count = 200
batch_size = 8
T = 50
sample_count = 4
nll_images = 8
nll_timesteps = 3
warmup_steps = 2
steps = 4
[grid]
seed = [0, 1]
[[grid.zip]]
sampler = ["ddpm", "ddim"]
sample_steps = [50, 5]
[[grid.when]]
if = { sampler = "ddim", seed = 1 }
eta = [0.0, 1.0]
"#;

fn spec(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("axes.toml");
    std::fs::write(&p, SPEC).unwrap();
    p
}

#[test]
fn dry_run_lists_exactly_the_runs_a_zipped_conditional_spec_registers() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let p = spec(dir.path());
    let out = run_ok(ddlab().args(["sweep", "--dry-run", "--db", &db]).arg(&p));
    assert!(
        !dir.path().join("ddlab.sqlite").exists(),
        "--dry-run opened the store"
    );
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.trim().split_once("  ").unwrap().1.to_string())
        .collect();
    assert_eq!(
        listed,
        [
            "seed=0,sampler=ddpm,sample_steps=50",
            "seed=0,sampler=ddim,sample_steps=5",
            "seed=1,sampler=ddpm,sample_steps=50",
            "seed=1,sampler=ddim,sample_steps=5,eta=0.0",
            "seed=1,sampler=ddim,sample_steps=5,eta=1.0",
        ]
    );
    run_ok(
        ddlab()
            .args(["sweep", "--register-only", "--db", &db])
            .arg(&p),
    );
    let out = run_ok(ddlab().args(["runs", "--sweep", "axes", "--json", "--db", &db]));
    let registered: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["name"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(registered, listed);
    // The recorded axes name every key that varies, conditional ones included.
    let axes = sqlite_rows(&db, "SELECT axes_json FROM sweeps");
    let axes: serde_json::Value = serde_json::from_str(&axes[0][0]).unwrap();
    assert_eq!(
        axes["grid_keys"],
        serde_json::json!(["seed", "sampler", "sample_steps", "eta"])
    );
}

/// The spec's seed-1 runs (3) trained and evaluated; returns the folder and the store URL.
fn trained() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let p = spec(dir.path());
    run_ok(
        ddlab()
            .current_dir(dir.path())
            .args(["sweep", "--no-report", "--set", "seed=1", "--db", &db])
            .arg(&p),
    );
    (dir, db)
}

fn stdout(cmd: &mut std::process::Command) -> String {
    String::from_utf8_lossy(&run_ok(cmd).stdout).into_owned()
}

#[test]
fn diff_shows_only_the_keys_that_differ_then_final_metrics() {
    let (_dir, db) = trained();
    let out = stdout(ddlab().args(["diff", "2", "3", "--db", &db]));
    let line = |label: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` in:\n{out}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(line("eta"), ["eta", "0.0", "1.0"], "{out}");
    let labels: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        !labels.contains(&"sampler") && !labels.contains(&"seed"),
        "{out}"
    );
    assert_eq!(line("eval nll_bpd ").len(), 4, "{out}");
    // Runs 2 and 3 evaluate the weights run 1 trained: only run 1 has training metrics.
    let out = stdout(ddlab().args(["diff", "1", "2", "3", "--db", &db]));
    let row = |label: &str| -> Vec<String> {
        let l = out.lines().find(|l| l.trim_start().starts_with(label));
        l.unwrap_or_else(|| panic!("no `{label}` in:\n{out}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        row("sample_steps"),
        ["sample_steps", "50", "5", "5"],
        "{out}"
    );
    let loss = row("loss");
    assert!(
        loss[1].parse::<f64>().is_ok() && loss[2..] == ["-", "-"],
        "{out}"
    );

    for (args, needle) in [
        (&["diff", "1"][..], "2"),
        (&["diff", "1", "1"][..], "run 1 is given twice"),
        (&["diff", "1", "99"][..], "99"),
    ] {
        let out = ddlab().args(args).args(["--db", &db]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn export_writes_fixed_files_and_refuses_to_overwrite() {
    let (dir, db) = trained();
    let out = dir.path().join("exports");
    let o = stdout(
        ddlab()
            .args(["export", "--sweep", "axes", "--format", "csv", "--db", &db])
            .arg("--out")
            .arg(&out),
    );
    assert!(
        o.contains("runs.csv  (3 rows)") && o.contains("spec.toml"),
        "{o}"
    );
    let runs = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    let header: Vec<&str> = runs.lines().next().unwrap().split(',').collect();
    assert!(header.contains(&"eta") && header.contains(&"sample_steps") && header.contains(&"T"));
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let want = sqlite_rows(&db, "SELECT COUNT(*) FROM metrics");
    assert_eq!((metrics.lines().count() - 1).to_string(), want[0][0]);
    assert_eq!(
        std::fs::read_to_string(out.join("spec.toml")).unwrap(),
        SPEC
    );

    let again = ddlab()
        .args(["export", "--sweep", "axes", "--format", "csv", "--db", &db])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    run_ok(
        ddlab()
            .args([
                "export", "--sweep", "axes", "--format", "csv", "--force", "--db", &db,
            ])
            .arg("--out")
            .arg(&out),
    );
    // Parquet is the default; the CSV export's spec.toml is in the way without --force.
    let o = stdout(
        ddlab()
            .args(["export", "--sweep", "axes", "--force", "--db", &db])
            .arg("--out")
            .arg(&out),
    );
    assert!(o.contains("metrics.parquet"), "{o}");
}

/// Six tiny runs: three learning rates (trials) × two seeds, compared at steps 10 and 20.
const PRUNED_SPEC: &str = r#"[sweep]
name = "asha"
[base]
model = "tiny"
shapes_count = 200
batch_size = 8
T = 50
sample_count = 4
sample_steps = 5
eval_nll = false
warmup_steps = 2
steps = 30
[grid]
lr = [3e-3, 1e-3, 1e-5]
seed = [0, 1]
[prune]
metric = "loss"
window = 5
rungs = [10, 20]
keep = 0.34
"#;

/// The rung table replayed through the rule in the order the runs arrived: every recorded
/// decision must be the one the rule gives with what was there before it.
fn replay_matches(db: &str) -> usize {
    use ddlab_config::prune::{RungEntry, judge};
    let rows = sqlite_rows(
        db,
        "SELECT rung, group_key, trial_key, value, decision, run_id FROM rungs ORDER BY id",
    );
    let mut seen: Vec<(String, String, RungEntry)> = vec![];
    let mut pruned = 0;
    for r in &rows {
        let entry = RungEntry {
            trial: r[2].clone(),
            value: r[3].parse().ok(),
        };
        seen.push((r[0].clone(), r[1].clone(), entry));
        let here: Vec<RungEntry> = seen
            .iter()
            .filter(|(rung, group, _)| *rung == r[0] && *group == r[1])
            .map(|(_, _, e)| e.clone())
            .collect();
        let go_on = judge(&here, &r[2], 0.34).go_on;
        assert_eq!(r[4], if go_on { "continue" } else { "pruned" }, "{r:?}");
        pruned += usize::from(!go_on);
        // The value is the run's mean loss over the 5 steps up to the rung.
        let mean = sqlite_rows(
            db,
            &format!(
                "SELECT AVG(value) FROM metrics WHERE run_id = {} AND name = 'loss' AND step > {} - 5 AND step <= {}",
                r[5], r[0], r[0]
            ),
        );
        let (a, b): (f64, f64) = (mean[0][0].parse().unwrap(), r[3].parse().unwrap());
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }
    pruned
}

/// The pruned runs that `keep` would have kept at their pruning rung, from the entries
/// recorded there up to their own, as (run, rung).
fn kept_by(db: &str, keep: f64) -> Vec<(String, String)> {
    use ddlab_config::prune::{RungEntry, judge};
    let rows = sqlite_rows(
        db,
        "SELECT id, rung, group_key, trial_key, value, decision, run_id FROM rungs ORDER BY id",
    );
    rows.iter()
        .filter(|r| r[5] == "pruned")
        .filter(|r| {
            let here: Vec<RungEntry> = rows
                .iter()
                .filter(|o| {
                    o[1] == r[1]
                        && o[2] == r[2]
                        && o[0].parse::<i64>().unwrap() <= r[0].parse().unwrap()
                })
                .map(|o| RungEntry {
                    trial: o[3].clone(),
                    value: o[4].parse().ok(),
                })
                .collect();
            judge(&here, &r[3], keep).go_on
        })
        .map(|r| (r[6].clone(), r[1].clone()))
        .collect()
}

#[test]
fn asha_prunes_by_the_rule_across_two_workers_and_pruned_runs_resume() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let p = dir.path().join("asha.toml");
    std::fs::write(&p, PRUNED_SPEC).unwrap();
    let sweep = |extra: &[&str]| {
        ddlab()
            .current_dir(dir.path())
            .args(["sweep", "--jobs", "2", "--no-report", "--db", &db])
            .args(extra)
            .arg(&p)
            .output()
            .unwrap()
    };
    let out = sweep(&[]);
    assert!(out.status.success(), "{out:?}");
    let pruned = replay_matches(&db);
    assert!(pruned > 0, "three trials at keep 0.34 prune someone");
    // Pruned runs stopped at their rung, checkpointed there; the rest finished.
    let runs = sqlite_rows(
        &db,
        "SELECT r.status, r.steps_done, r.checkpoint_step, g.rung FROM runs r
         LEFT JOIN rungs g ON g.run_id = r.id AND g.decision = 'pruned' ORDER BY r.id",
    );
    let mut saved = 0;
    for r in &runs {
        match r[0].as_str() {
            "pruned" => {
                assert_eq!((&r[1], &r[2]), (&r[3], &r[3]), "{r:?}");
                saved += 30 - r[1].parse::<i64>().unwrap();
            }
            "completed" => assert_eq!(r[1], "30"),
            other => panic!("status {other}"),
        }
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{saved} of 180 training steps not taken")),
        "{stdout}"
    );
    // The same spec again changes nothing; a larger keep continues exactly the runs it would
    // have kept with what was at the rung when they arrived.
    let before = sqlite_rows(&db, "SELECT id, status, steps_done FROM runs ORDER BY id");
    assert!(sweep(&[]).status.success());
    assert_eq!(
        sqlite_rows(&db, "SELECT id, status, steps_done FROM runs ORDER BY id"),
        before
    );
    let expected = kept_by(&db, 0.67);
    assert!(!expected.is_empty());
    std::fs::write(&p, PRUNED_SPEC.replace("keep = 0.34", "keep = 0.67")).unwrap();
    assert!(sweep(&[]).status.success());
    // Judged at the rung where each was pruned: a run may have gone on at an earlier one.
    for (run, rung) in &expected {
        let reason = sqlite_rows(
            &db,
            &format!("SELECT reason FROM rungs WHERE run_id = {run} AND rung = {rung}"),
        );
        assert!(
            reason[0][0].starts_with("continued under keep 0.67"),
            "{reason:?}"
        );
    }
    // --resume-pruned continues them from their checkpoints; they still meet the later rungs.
    let first: Vec<Vec<String>> = sqlite_rows(
        &db,
        "SELECT run_id, rung FROM rungs WHERE decision = 'pruned' ORDER BY run_id",
    );
    let out = sweep(&["--resume-pruned"]);
    assert!(out.status.success(), "{out:?}");
    for r in &first {
        let now = sqlite_rows(
            &db,
            &format!("SELECT status, steps_done FROM runs WHERE id = {}", r[0]),
        );
        let done: i64 = now[0][1].parse().unwrap();
        assert!(
            done > r[1].parse().unwrap(),
            "run {} stayed at {done}",
            r[0]
        );
        let reason = sqlite_rows(
            &db,
            &format!(
                "SELECT reason FROM rungs WHERE run_id = {} AND rung = {}",
                r[0], r[1]
            ),
        );
        assert_eq!(reason[0][0], "continued by --resume-pruned");
    }
    // Without [prune] every run finishes.
    std::fs::write(&p, PRUNED_SPEC.split("[prune]").next().unwrap()).unwrap();
    let out = sweep(&[]);
    assert!(out.status.success(), "{out:?}");
    let statuses = sqlite_rows(&db, "SELECT DISTINCT status, steps_done FROM runs");
    assert_eq!(statuses, [vec!["completed".to_string(), "30".into()]]);
}

#[test]
fn bad_prune_sections_are_located_sentences() {
    let dir = tempfile::tempdir().unwrap();
    for (prune, says) in [
        (
            "metric = \"fid\"\nrungs = [10]",
            "asha.toml:17: [prune] metric is `loss` or `nll_bpd`",
        ),
        (
            "metric = \"loss\"\nrungs = [20, 10]",
            "[prune] rungs must increase",
        ),
        (
            "metric = \"loss\"\nrungs = [30]",
            "rung 30 is not below any run's steps",
        ),
        (
            "metric = \"loss\"\nrungs = [10]\nkeep = 0",
            "[prune] keep is the fraction",
        ),
        (
            "metric = \"loss\"\nrungs = [10]\nwithin = [\"seed\"]",
            "cannot name `seed`",
        ),
        (
            "metric = \"loss\"\nrungs = [10]\nwithin = [\"Tt\"]",
            "unknown key `Tt`",
        ),
        (
            "metric = \"nll_bpd\"\nrungs = [10]",
            "needs the NLL evaluation",
        ),
        (
            "metric = \"loss\"\nrungs = [10]\nrung = 3",
            "unknown field `rung`",
        ),
    ] {
        let spec = PRUNED_SPEC.split("[prune]").next().unwrap().to_string() + "[prune]\n" + prune;
        let p = dir.path().join("asha.toml");
        std::fs::write(&p, spec).unwrap();
        let out = ddlab()
            .args(["sweep", "--dry-run"])
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{prune}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
