//! Guided evaluation in sweeps as a user runs it: a judge from `ddlab train-judge`, a
//! caption-conditioned model swept over classifier-free guidance scales (trained once), the
//! evals and samples it records, and the report's trade-off charts.

mod common;
use common::*;

#[test]
fn a_guidance_scale_sweep_trains_once_and_records_what_the_judge_reads() {
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
    let spec = write_spec(
        dir.path(),
        "guided",
        1,
        "steps = 12\neval_nll = false\ncaptions = true\nguidance = \"cfg\"\nguided_count = 8\n\
         judge_checkpoint = \"judge.safetensors\"\nprompt = \"a red circle\"\n",
    );
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("seed = [0]", "guidance_scale = [0.0, 1.0, 3.0]");
    std::fs::write(&spec, text).unwrap();
    let out = run_ok(
        ddlab()
            .current_dir(dir.path())
            .args(["sweep"])
            .arg(&spec)
            .args(["--db", &db]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("report:"), "{stdout}");

    // One training: the other two runs start from the first's weights.
    let donors = sqlite_rows(
        &db,
        "SELECT e.value FROM evals e JOIN runs r ON r.id = e.run_id \
         WHERE e.name = 'trained_by_run' ORDER BY r.id",
    );
    assert_eq!(donors.len(), 2, "{donors:?}");
    let trained = sqlite_rows(
        &db,
        "SELECT COUNT(DISTINCT run_id) FROM metrics WHERE name = 'loss'",
    );
    assert_eq!(
        trained[0][0], "2",
        "the judge's run and one diffusion run trained"
    );
    for name in ["prompt_accuracy", "frechet_distance", "judge_accuracy"] {
        let rows = sqlite_rows(
            &db,
            &format!(
                "SELECT e.value FROM evals e JOIN runs r ON r.id = e.run_id \
                 WHERE e.name = '{name}' AND r.sweep_id IS NOT NULL"
            ),
        );
        assert_eq!(rows.len(), 3, "{name}: {rows:?}");
        let v: f64 = rows[0][0].parse().unwrap();
        assert!(v.is_finite() && v >= 0.0, "{name} = {v}");
    }
    // Guided grids carry their prompt, guidance and scale.
    let samples = sqlite_rows(
        &db,
        "SELECT prompt, guidance, guidance_scale FROM samples WHERE guidance IS NOT NULL ORDER BY guidance_scale",
    );
    assert_eq!(samples.len(), 3, "{samples:?}");
    assert_eq!(
        samples[2],
        vec!["a red circle".to_string(), "cfg".into(), "3".into()]
    );
    let report = dir.path().join("reports/guided");
    for f in [
        "prompt_accuracy_vs_scale.png",
        "frechet_vs_scale.svg",
        "summary.md",
    ] {
        assert!(report.join(f).is_file(), "{f}");
    }
    let md = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(
        md.contains("prompt accuracy") && md.contains("Fréchet"),
        "{md}"
    );
}

#[test]
fn guidance_keys_that_cannot_work_are_one_sentence_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    for (extra, says) in [
        ("guidance = \"cfg\"\n", "needs captions = true"),
        ("guidance = \"clip\"\n", "needs clip_checkpoint"),
        ("guidance_scale = -2.0\n", "guidance_scale = -2"),
        (
            "judge_checkpoint = \"missing.safetensors\"\n",
            "is not a file",
        ),
        (
            "captions = true\nguidance = \"cfg\"\nprompt = \"   \"\n",
            "prompt is empty",
        ),
    ] {
        let spec = write_spec(dir.path(), "bad", 1, extra);
        let out = ddlab()
            .current_dir(dir.path())
            .args(["sweep"])
            .arg(&spec)
            .args(["--db", &db])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra}");
        assert!(err.contains(says), "{extra}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    assert!(
        !dir.path().join("ddlab.sqlite").exists(),
        "nothing recorded"
    );
}
