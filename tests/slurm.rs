//! Sweeps on a real Slurm cluster (see scripts/slurm-up, run by .ci/run as root): a job array
//! of workers over PostgreSQL, and an array task cancelled in the middle of a run. Each test
//! says SKIPPED and returns when no Slurm controller answers or no PostgreSQL server is set.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

/// Whether a Slurm controller answers here.
fn slurm_up(test: &str) -> bool {
    let ok = Command::new("sinfo")
        .arg("-h")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED {test}: no Slurm cluster here (as root: scripts/slurm-up)");
    }
    ok
}

fn job_state(job: &str) -> String {
    let out = Command::new("squeue")
        .args(["-h", "-j", job, "-o", "%T"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn submitted_job(stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("submitted job "))
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("no job id in: {text}"))
        .to_string()
}

/// Waits for every array task of `job` to leave the queue; panics with the logs if not.
fn wait_for_job(job: &str, dir: &std::path::Path, secs: u64) {
    let gone = wait_until(Duration::from_secs(secs), || job_state(job).is_empty());
    if !gone {
        let _ = Command::new("scancel").arg(job).status();
        panic!("job {job} still queued after {secs}s\n{}", logs(dir));
    }
}

fn logs(dir: &std::path::Path) -> String {
    let mut text = String::new();
    for e in walk(dir) {
        if e.extension().is_some_and(|x| x == "out") {
            text += &format!(
                "--- {}\n{}\n",
                e.display(),
                std::fs::read_to_string(&e).unwrap_or_default()
            );
        }
    }
    text
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_job_array_of_two_workers_completes_every_run_exactly_once() {
    let test = "slurm job array";
    if !slurm_up(test) {
        return;
    }
    let Some(url) = postgres_db("slurm_array") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "sl6", 6, "steps = 20\neval_nll = false\n");
    let out = run_ok(
        ddlab()
            .current_dir(dir.path())
            .args(["sweep"])
            .arg(&spec)
            .args([
                "--db",
                &url,
                "--slurm",
                "--submit",
                "--workers",
                "2",
                "--cpus-per-task",
                "1",
            ]),
    );
    let job = submitted_job(&out.stdout);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("squeue -j") && stdout.contains("ddlab tui"),
        "{stdout}"
    );
    let script = std::fs::read_to_string(dir.path().join("runs/sl6/slurm/workers.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-1"), "{script}");
    assert_eq!(
        pg_rows(&url, "SELECT slurm_job_id FROM sweeps WHERE name = 'sl6'")[0][0],
        job
    );
    wait_for_job(&job, dir.path(), 600);

    let rows = pg_rows(
        &url,
        "SELECT status, attempts, slurm_job, slurm_task, host FROM runs ORDER BY id",
    );
    assert_eq!(rows.len(), 6);
    for r in &rows {
        assert_eq!(
            (r[0].as_str(), r[1].as_str()),
            ("completed", "1"),
            "{rows:?}\n{}",
            logs(dir.path())
        );
        assert_eq!(r[2], job, "the run records its Slurm job");
        assert!(r[3] == "0" || r[3] == "1", "array task recorded: {r:?}");
        assert_ne!(r[4], "NULL");
    }
    // Every step of every run recorded exactly once.
    let r = pg_rows(
        &url,
        "SELECT COUNT(*), COUNT(DISTINCT run_id * 100000 + step) FROM metrics WHERE name = 'loss'",
    );
    assert_eq!(r[0], vec!["120".to_string(), "120".into()]);
    // `ddlab runs` shows where each ran.
    let out = run_ok(ddlab().args(["runs", "--sweep", "sl6", "--db", &url]));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("{job}_0")) || table.contains(&format!("{job}_1")),
        "{table}"
    );
}

#[test]
fn a_cancelled_array_task_hands_its_run_to_another_worker() {
    take_over("slurm_cancel", &[]);
}

/// `scancel --signal=USR1 --batch` is what Slurm sends two minutes before the time limit
/// (`--signal=B:USR1@120` in the script): the worker hands its run back and exits cleanly.
#[test]
fn a_worker_near_its_time_limit_hands_its_run_back_and_exits_cleanly() {
    let task_state = take_over("slurm_usr1", &["--signal=USR1", "--batch"]);
    assert!(
        task_state.contains("JobState=COMPLETED") && task_state.contains("ExitCode=0:0"),
        "{task_state}"
    );
}

/// Cancels (or signals) the array task holding a long run once it is past a checkpoint, checks
/// the run completes on the other task from that checkpoint; returns `scontrol show job` of
/// the signalled task.
fn take_over(name: &str, scancel_args: &[&str]) -> String {
    if !slurm_up(name) {
        return "JobState=COMPLETED ExitCode=0:0 (skipped)".into();
    }
    let Some(url) = postgres_db(name) else {
        return "JobState=COMPLETED ExitCode=0:0 (skipped)".into();
    };
    let dir = tempfile::tempdir().unwrap();
    // Run 1 is long; run 2 is short, so its worker is free to take run 1 over.
    let spec = dir.path().join("slc.toml");
    let tiny = write_spec(
        dir.path(),
        "slc",
        1,
        "checkpoint_every = 20\neval_nll = false\n",
    );
    let base = std::fs::read_to_string(&tiny)
        .unwrap()
        .replace("[grid]\nseed = [0]\n", "");
    std::fs::write(&spec, format!("{base}[grid]\nsteps = [400, 30]\n")).unwrap();
    let out = run_ok(
        ddlab()
            .current_dir(dir.path())
            .args(["sweep"])
            .arg(&spec)
            .args([
                "--db",
                &url,
                "--slurm",
                "--submit",
                "--workers",
                "2",
                "--cpus-per-task",
                "1",
            ]),
    );
    let job = submitted_job(&out.stdout);

    // Cancel the task holding the long run once it is past a checkpoint.
    let mut task = String::new();
    let mid = wait_until(Duration::from_secs(300), || {
        let r = pg_rows(
            &url,
            "SELECT slurm_task FROM runs WHERE steps_total = 400 AND status = 'running' AND checkpoint_step >= 40 AND steps_done < 300",
        );
        if let Some(row) = r.first() {
            task = row[0].clone();
        }
        !r.is_empty()
    });
    assert!(
        mid,
        "the long run never reached a checkpoint\n{}",
        logs(dir.path())
    );
    let ck: i64 = pg_rows(
        &url,
        "SELECT checkpoint_step FROM runs WHERE steps_total = 400",
    )[0][0]
        .parse()
        .unwrap();
    let before = pg_rows(
        &url,
        &format!(
            "SELECT m.step, m.value FROM metrics m JOIN runs r ON r.id = m.run_id WHERE r.steps_total = 400 AND m.step <= {ck} ORDER BY m.name, m.step"
        ),
    );
    let status = Command::new("scancel")
        .args(scancel_args)
        .arg(format!("{job}_{task}"))
        .status()
        .unwrap();
    assert!(status.success());
    wait_for_job(&job, dir.path(), 600);

    let rows = pg_rows(
        &url,
        "SELECT status, attempts, slurm_task, steps_done FROM runs WHERE steps_total = 400",
    );
    assert_eq!(rows[0][0], "completed", "{rows:?}\n{}", logs(dir.path()));
    assert_eq!(rows[0][1], "2", "taken over once");
    assert_ne!(rows[0][2], task, "finished by the other array task");
    let after = pg_rows(
        &url,
        &format!(
            "SELECT m.step, m.value FROM metrics m JOIN runs r ON r.id = m.run_id WHERE r.steps_total = 400 AND m.step <= {ck} ORDER BY m.name, m.step"
        ),
    );
    assert_eq!(before, after, "rows up to the checkpoint are unchanged");
    let r = pg_rows(
        &url,
        "SELECT COUNT(*), COUNT(DISTINCT m.step), MAX(m.step) FROM metrics m JOIN runs r ON r.id = m.run_id WHERE r.steps_total = 400 AND m.name = 'loss'",
    );
    assert_eq!(r[0], vec!["400".to_string(), "400".into(), "400".into()]);
    let out = Command::new("scontrol")
        .args(["show", "job", &format!("{job}_{task}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn slurm_refuses_sqlite_and_a_missing_sbatch_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "sq", 2, "steps = 5\n");
    let db = sqlite_url(dir.path());
    let out = ddlab()
        .current_dir(dir.path())
        .args(["sweep"])
        .arg(&spec)
        .args(["--db", &db, "--slurm", "--submit"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PostgreSQL") && err.contains("--single-node"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        !dir.path().join("ddlab.sqlite").exists(),
        "nothing recorded before the error"
    );

    // --single-node writes the script; with no sbatch on the PATH, --submit is one sentence.
    let out = ddlab()
        .current_dir(dir.path())
        .env("PATH", "/nonexistent")
        .args(["sweep"])
        .arg(&spec)
        .args([
            "--db",
            &db,
            "--slurm",
            "--single-node",
            "--submit",
            "--time",
            "0:30:00",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`sbatch` was not found"), "{err}");
    let script = std::fs::read_to_string(dir.path().join("runs/sq/slurm/workers.sbatch")).unwrap();
    assert!(
        script.contains("#SBATCH --time=0:30:00") && script.contains(" work --sweep sq "),
        "{script}"
    );

    // A bad time limit and an unknown sweep to cancel.
    let out = ddlab()
        .current_dir(dir.path())
        .args(["sweep"])
        .arg(&spec)
        .args(["--db", &db, "--slurm", "--single-node", "--time", "soon"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a Slurm time"));
    let out = ddlab()
        .args(["cancel", "--sweep", "nope", "--db", &db])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no sweep named `nope`"));
    let out = ddlab()
        .args(["cancel", "--sweep", "sq", "--db", &db])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Slurm job recorded"));
}

#[test]
fn an_unreachable_database_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "un", 2, "steps = 5\n");
    let out = ddlab()
        .current_dir(dir.path())
        .args(["sweep"])
        .arg(&spec)
        .args(["--db", "postgres://nobody@127.0.0.1:1/none", "--slurm"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("error:"), "{err}");
    assert!(
        !dir.path().join("runs").exists(),
        "no script for a database nobody can reach"
    );
}
