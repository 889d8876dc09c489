//! Evaluation over training and again afterwards, as a user runs it: `eval_every` records the
//! NLL bound (and a judge's metrics) with the step, exactly once across a SIGKILL; `ddlab eval
//! --sweep` evaluates finished runs again beside their own evaluations, resumably.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn evaluations_over_training_keep_their_steps_exactly_once_across_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let spec = write_spec(
        dir.path(),
        "over",
        1,
        "steps = 80\ncheckpoint_every = 10\neval_every = 10\n",
    );
    let mut child = ddlab()
        .current_dir(dir.path())
        .args(["sweep"])
        .arg(&spec)
        .args(["--db", &db])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mid = wait_until(Duration::from_secs(300), || {
        store_ready(dir.path())
            && sqlite_rows(
                &db,
                "SELECT COUNT(*) FROM evals WHERE run_id = 1 AND name = 'nll_bpd' AND step >= 30",
            )[0][0]
                != "0"
    });
    assert!(mid, "the run never evaluated step 30");
    child.kill().unwrap();
    child.wait().unwrap();
    let before = sqlite_rows(
        &db,
        "SELECT step, value, method FROM evals WHERE name = 'nll_bpd' ORDER BY step",
    );
    run_ok(
        ddlab()
            .current_dir(dir.path())
            .args(["sweep"])
            .arg(&spec)
            .args(["--db", &db]),
    );
    let after = sqlite_rows(
        &db,
        "SELECT step, value, method FROM evals WHERE name = 'nll_bpd' ORDER BY step",
    );
    let steps: Vec<&str> = after.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        steps,
        ["10", "20", "30", "40", "50", "60", "70", "80"],
        "{after:?}"
    );
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "what was evaluated before the kill is kept as it was"
    );
    let methods: std::collections::BTreeSet<&str> = after.iter().map(|r| r[2].as_str()).collect();
    assert_eq!(methods.len(), 1, "one method over training: {methods:?}");
    assert!(
        methods
            .iter()
            .next()
            .unwrap()
            .starts_with("nll images=8 timesteps=3"),
        "{methods:?}"
    );
}

/// A finished sweep of two runs in `dir`.
fn finished_sweep(dir: &std::path::Path, db: &str, extra: &str) -> std::path::PathBuf {
    let spec = write_spec(dir, "again", 2, &format!("steps = 12\n{extra}"));
    run_ok(
        ddlab()
            .current_dir(dir)
            .args(["sweep"])
            .arg(&spec)
            .args(["--db", db, "--no-report"]),
    );
    spec
}

fn eval_sweep(dir: &std::path::Path, db: &str, extra: &[&str]) -> std::process::Output {
    ddlab()
        .current_dir(dir)
        .args(["eval", "--sweep", "again", "--db", db])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_sweep_evaluated_again_records_beside_its_own_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    finished_sweep(dir.path(), &db, "");
    let own = sqlite_rows(
        &db,
        "SELECT run_id, nll_bpd FROM run_summary ORDER BY run_id",
    );
    let args = ["--nll", "--images", "16", "--timesteps", "5"];
    let out = eval_sweep(dir.path(), &db, &args);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2 evaluation(s) computed"), "{stdout}");
    let rows = sqlite_rows(
        &db,
        "SELECT run_id, step, method FROM evals WHERE name = 'nll_bpd' ORDER BY run_id, created_at",
    );
    assert_eq!(rows.len(), 4, "each run: its own and the new one: {rows:?}");
    for pair in rows.chunks(2) {
        assert_eq!(pair[0][1], "12");
        assert_eq!(pair[1][1], "12", "at the checkpoint's step");
        assert!(
            pair[0][2].starts_with("nll images=8 timesteps=3"),
            "{pair:?}"
        );
        assert!(
            pair[1][2].starts_with("nll images=16 timesteps=5"),
            "{pair:?}"
        );
    }
    assert_eq!(
        sqlite_rows(
            &db,
            "SELECT run_id, nll_bpd FROM run_summary ORDER BY run_id"
        ),
        own,
        "the runs' own NLL stays theirs"
    );
    // The same settings again: nothing to compute.
    let out = eval_sweep(dir.path(), &db, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("0 evaluation(s) computed and recorded, 2 already"),
        "{stdout}"
    );
    // Other settings: two more.
    let out = eval_sweep(
        dir.path(),
        &db,
        &["--nll", "--images", "16", "--timesteps", "6"],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 evaluation(s) computed"));
    let n = sqlite_rows(&db, "SELECT COUNT(*) FROM evals WHERE name = 'nll_bpd'");
    assert_eq!(n[0][0], "6");
    // The report tabulates each method apart, beside the runs' own values.
    run_ok(
        ddlab()
            .current_dir(dir.path())
            .args(["report", "--sweep", "again", "--db", &db]),
    );
    let md = std::fs::read_to_string(dir.path().join("reports/again/summary.md")).unwrap();
    let section = &md[md
        .find("## Re-evaluations")
        .expect("a re-evaluations section")..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    assert!(section.contains("nll images=16 timesteps=5"), "{section}");
    assert!(section.contains("nll images=16 timesteps=6"), "{section}");
    assert!(
        !section.contains("nll images=8 timesteps=3"),
        "own method is not a re-evaluation"
    );
}

#[test]
fn a_sweep_evaluated_again_with_a_judge_records_its_frechet_distance() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    run_ok(ddlab().current_dir(dir.path()).args([
        "train-judge",
        "--dataset",
        "shapes",
        "--steps",
        "10",
        "--batch-size",
        "16",
        "--db",
        &db,
        "-o",
        "judge.safetensors",
    ]));
    // The runs judge themselves over training (eval_every) with 6 samples.
    finished_sweep(
        dir.path(),
        &db,
        "eval_nll = false\neval_every = 6\nguided_count = 6\njudge_checkpoint = \"judge.safetensors\"\n",
    );
    let own = sqlite_rows(
        &db,
        "SELECT run_id, step FROM evals WHERE name = 'frechet_distance' ORDER BY run_id, step",
    );
    let steps: Vec<&str> = own.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(steps, ["6", "12", "6", "12"], "{own:?}");
    let out = eval_sweep(
        dir.path(),
        &db,
        &[
            "--frechet",
            "--judge",
            "judge.safetensors",
            "--samples",
            "8",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let rows = sqlite_rows(
        &db,
        "SELECT e.value, e.method FROM evals e JOIN runs r ON r.id = e.run_id \
         WHERE e.name = 'frechet_distance' AND r.sweep_id IS NOT NULL AND e.method LIKE '%samples=8 %'",
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        let v: f64 = r[0].parse().unwrap();
        assert!(v.is_finite() && v >= 0.0, "{r:?}");
        assert!(r[1].starts_with("judge samples=8 sampler="), "{r:?}");
    }
}

#[test]
fn bad_reevaluations_are_one_sentence_and_record_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    finished_sweep(dir.path(), &db, "");
    let count = || sqlite_rows(&db, "SELECT COUNT(*) FROM evals")[0][0].clone();
    let before = count();
    let cases: &[(&[&str], &str)] = &[
        (&["--nll", "--images", "0"], "--images must be between 1"),
        (
            &["--nll", "--timesteps", "100000000"],
            "--timesteps must be between 1",
        ),
        (&[], "nothing to evaluate"),
        (&["--frechet"], "--judge"),
        (
            &["--frechet", "--judge", "nope.safetensors"],
            "nope.safetensors",
        ),
        (&["--nll", "--variance", "wide"], "wide"),
        (
            &["--nll", "--checkpoint", "x.safetensors"],
            "cannot be used with",
        ),
    ];
    for (args, want) in cases {
        let out = eval_sweep(dir.path(), &db, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(count(), before, "{args:?} recorded something");
    }
    let out = ddlab()
        .current_dir(dir.path())
        .args(["eval", "--sweep", "no-such-sweep", "--nll", "--db", &db])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-sweep"),
        "{out:?}"
    );
    // A missing checkpoint is said before anything is evaluated.
    std::fs::remove_dir_all(dir.path().join("runs")).unwrap();
    let out = eval_sweep(dir.path(), &db, &["--nll"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is missing"), "{err}");
    assert_eq!(count(), before);
}
