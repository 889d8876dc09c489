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
