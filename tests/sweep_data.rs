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
