//! Sweeps as a user runs them: killed with SIGKILL mid-training and relaunched, eight
//! processes writing into one SQLite file, two workers sharing a PostgreSQL database.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn a_sweep_killed_mid_training_completes_when_launched_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let spec = write_spec(dir.path(), "kill", 3, "steps = 60\ncheckpoint_every = 10\n");
    let mut child = ddlab()
        .current_dir(dir.path())
        .args(["sweep"])
        .arg(&spec)
        .args(["--db", &db])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the second run is past a checkpoint and still training.
    let mid = wait_until(Duration::from_secs(300), || {
        store_ready(dir.path())
            && sqlite_rows(
                &db,
                "SELECT COUNT(*) FROM runs WHERE id = 2 AND status = 'running' AND checkpoint_step >= 20 AND steps_done < 60",
            )[0][0]
                == "1"
    });
    assert!(mid, "the sweep never reached the middle of run 2");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let ck: i64 = sqlite_rows(&db, "SELECT checkpoint_step FROM runs WHERE id = 2")[0][0]
        .parse()
        .unwrap();
    let before = sqlite_rows(
        &db,
        &format!(
            "SELECT step, value FROM metrics WHERE run_id = 2 AND step <= {ck} ORDER BY name, step"
        ),
    );
    assert_eq!(
        sqlite_rows(&db, "SELECT status FROM runs WHERE id = 2")[0][0],
        "running",
        "SIGKILL leaves it running"
    );

    let out = run_ok(
        ddlab()
            .current_dir(dir.path())
            .args(["sweep"])
            .arg(&spec)
            .args(["--db", &db]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 to resume"), "{err}");
    let rows = sqlite_rows(
        &db,
        "SELECT id, status, steps_done, attempts FROM runs ORDER BY id",
    );
    assert_eq!(
        rows.iter().map(|r| r[1].as_str()).collect::<Vec<_>>(),
        ["completed"; 3]
    );
    assert_eq!(rows[0][3], "1", "a completed run is not run again");
    assert_eq!(rows[1][3], "2", "the killed run resumed once");
    // Nothing recorded up to the checkpoint was lost, and every step is there exactly once.
    let after = sqlite_rows(
        &db,
        &format!(
            "SELECT step, value FROM metrics WHERE run_id = 2 AND step <= {ck} ORDER BY name, step"
        ),
    );
    assert_eq!(before, after);
    for id in 1..=3 {
        let r = sqlite_rows(
            &db,
            &format!(
                "SELECT COUNT(*), MIN(step), MAX(step) FROM metrics WHERE run_id = {id} AND name = 'loss'"
            ),
        );
        assert_eq!(
            r[0],
            vec!["60".to_string(), "1".into(), "60".into()],
            "run {id}"
        );
    }
    assert_eq!(sqlite_rows(&db, "PRAGMA integrity_check")[0][0], "ok");
    // The README's query works.
    assert_eq!(sqlite_rows(&db, "SELECT * FROM run_summary").len(), 3);

    // Launching a finished sweep again does nothing.
    let out = run_ok(
        ddlab()
            .current_dir(dir.path())
            .args(["sweep"])
            .arg(&spec)
            .args(["--db", &db]),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 completed"));
    assert_eq!(
        sqlite_rows(&db, "SELECT SUM(attempts) FROM runs")[0][0],
        "4"
    );
}

#[test]
fn eight_processes_write_one_sqlite_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let children: Vec<_> = (0..8)
        .map(|i| {
            ddlab()
                .current_dir(dir.path())
                .args(["train", "--db", &db, "--name", &format!("p{i}")])
                .args(sets(&[
                    "steps=25",
                    &format!("seed={i}"),
                    "eval_nll=false",
                    "checkpoint_every=5",
                    "sample_count=1",
                    "sample_steps=2",
                ]))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !err.contains("locked"), "{err}");
    }
    let r = sqlite_rows(
        &db,
        "SELECT COUNT(DISTINCT run_id), COUNT(*) FROM metrics WHERE name = 'loss'",
    );
    assert_eq!(r[0], vec!["8".to_string(), "200".into()]);
    assert_eq!(
        sqlite_rows(&db, "SELECT COUNT(*) FROM runs WHERE status = 'completed'")[0][0],
        "8"
    );
    assert_eq!(sqlite_rows(&db, "PRAGMA integrity_check")[0][0], "ok");
}

#[test]
fn two_workers_on_postgres_never_run_the_same_run_twice() {
    let Some(url) = postgres_db("workers") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "pgw", 6, "steps = 20\neval_nll = false\n");
    run_ok(
        ddlab()
            .current_dir(dir.path())
            .args(["sweep"])
            .arg(&spec)
            .args(["--db", &url, "--register-only"]),
    );
    let workers: Vec<_> = (0..2)
        .map(|_| {
            ddlab()
                .current_dir(dir.path())
                .args([
                    "work",
                    "--sweep",
                    "pgw",
                    "--db",
                    &url,
                    "--checkpoint-dir",
                    "shared",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rows = pg_rows(
        &url,
        "SELECT status, attempts, worker FROM runs ORDER BY id",
    );
    assert_eq!(rows.len(), 6);
    for r in &rows {
        assert_eq!(
            (r[0].as_str(), r[1].as_str()),
            ("completed", "1"),
            "{rows:?}"
        );
    }
    let workers: std::collections::HashSet<_> = rows.iter().map(|r| r[2].clone()).collect();
    assert!(!workers.is_empty() && workers.len() <= 2);
    let r = pg_rows(&url, "SELECT COUNT(*) FROM metrics WHERE name = 'loss'");
    assert_eq!(r[0][0], "120", "every metric row of every run, once");
}

/// A run's checkpoint belongs to the store that recorded it: two fresh databases given the same
/// spec one after the other (same output folder, same run ids and names) each train every step
/// and keep a full metric history; neither resumes or overwrites the other's checkpoint.
#[test]
fn a_second_database_never_resumes_another_databases_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "twice",
        1,
        "steps = 30\ncheckpoint_every = 10\neval_nll = false\n",
    );
    let spec = spec.to_str().unwrap();
    let (a, b) = (
        sqlite_url(dir.path()),
        format!("sqlite://{}", dir.path().join("other.sqlite").display()),
    );
    let loss_rows = "SELECT COUNT(*), MIN(step), MAX(step) FROM metrics WHERE name = 'loss'";
    let full = vec!["30".to_string(), "1".into(), "30".into()];
    for db in [&a, &b] {
        let out = run_ok(
            ddlab()
                .current_dir(dir.path())
                .args(["sweep", spec, "--db", db]),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("resuming from step"), "{err}");
        assert_eq!(sqlite_rows(db, loss_rows)[0], full, "{db}");
    }
    // The first database's run still resumes (and finds nothing left to train) from its own
    // checkpoint, which the second database's run did not overwrite.
    let checkpoints = sqlite_rows(&a, "SELECT checkpoint_path FROM runs");
    let other = sqlite_rows(&b, "SELECT checkpoint_path FROM runs");
    assert_ne!(checkpoints, other, "each store's run has its own folder");
    let out = run_ok(
        ddlab()
            .current_dir(dir.path())
            .args(["sweep", spec, "--db", &a]),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 completed"));
    assert_eq!(sqlite_rows(&a, loss_rows)[0], full);
}

/// A checkpoint is written just before the grid of the same step is drawn; a kill between the
/// two used to lose that grid for good (the relaunch resumed after it). Killed while drawing a
/// scheduled grid, the relaunched sweep draws it, and every scheduled grid exists exactly once.
#[test]
fn a_grid_lost_to_a_kill_during_sampling_is_drawn_on_relaunch_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let spec = write_spec(
        dir.path(),
        "grids",
        1,
        "steps = 30\ncheckpoint_every = 10\nsample_every = 10\neval_nll = false\n",
    );
    // Slow grids (64 images, 40 DDIM steps) leave a wide window between checkpoint and grid.
    let slow_grids = ["--set", "sample_count=64", "--set", "sample_steps=40"];
    let grid_rows = |step: i64| -> usize {
        sqlite_rows(
            &db,
            &format!("SELECT COUNT(*) FROM samples WHERE step = {step}"),
        )[0][0]
            .parse()
            .unwrap()
    };
    let mut killed_at = None;
    for attempt in 0..3 {
        let mut child = ddlab()
            .current_dir(dir.path())
            .args(["sweep"])
            .arg(&spec)
            .args(["--db", &db, "--no-report"])
            .args(slow_grids)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill as soon as a checkpoint at a grid step is recorded: its grid is being drawn.
        let mut ck = 0i64;
        let reached = wait_until(Duration::from_secs(120), || {
            if !store_ready(dir.path()) {
                return false;
            }
            let rows = sqlite_rows(&db, "SELECT checkpoint_step FROM runs WHERE id = 1");
            ck = rows.first().and_then(|r| r[0].parse().ok()).unwrap_or(0);
            ck > 0 && ck < 30 && grid_rows(ck) == 0
        });
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if reached && grid_rows(ck) == 0 {
            killed_at = Some(ck);
            break;
        }
        assert!(
            attempt < 2,
            "never killed a sweep between a checkpoint and its grid"
        );
    }
    let ck = killed_at.unwrap();
    run_ok(
        ddlab()
            .current_dir(dir.path())
            .args(["sweep"])
            .arg(&spec)
            .args(["--db", &db, "--no-report"])
            .args(slow_grids),
    );
    for step in [10, 20, 30] {
        assert_eq!(grid_rows(step), 1, "grid of step {step} (killed at {ck})");
    }
}
