//! Reports from a real store: every file written and readable, seeds pooled, failed runs
//! shown, hostile strings escaped.

use ddlab_config::RunConfig;

mod support;
use ddlab_store::{MetricRow, NewSample, RunStatus, Store, sqlite_url};

fn png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(8, 8, |x, y| {
        image::Rgb([(x * 30) as u8, (y * 30) as u8, 100])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

async fn populate(store: &Store, seeds: u64, hostile: &str) {
    let sweep = store
        .upsert_sweep(
            "rep<&>",
            &format!("desc {hostile}"),
            "[sweep]\nname = \"rep<&>\"",
        )
        .await
        .unwrap();
    for schedule in ["linear", "cosine"] {
        for t in [100usize, 1000] {
            for seed in 0..seeds {
                let cfg = RunConfig {
                    schedule: schedule.parse().unwrap(),
                    t,
                    seed,
                    steps: 200,
                    ..RunConfig::default()
                };
                let name = format!("schedule={schedule},T={t},seed={seed} {hostile}");
                let run = store
                    .ensure_run(&support::new_run(sweep.id, &name, &cfg))
                    .await
                    .unwrap();
                store
                    .start_run(run.id, "cpu", &Default::default())
                    .await
                    .unwrap();
                let base =
                    if schedule == "cosine" { 0.05 } else { 0.06 } * (1.0 + seed as f64 * 0.01);
                let rows: Vec<MetricRow> = (1..=200)
                    .map(|s| MetricRow {
                        run_id: run.id,
                        step: s,
                        name: "loss".into(),
                        value: Some(base + 1.0 / s as f64),
                        wall_time: 0.0,
                    })
                    .collect();
                store.insert_metrics(&rows).await.unwrap();
                if schedule == "linear" && t == 100 && seed == 0 {
                    store
                        .finish_run(
                            run.id,
                            RunStatus::Failed,
                            Some(&format!("diverged {hostile}")),
                        )
                        .await
                        .unwrap();
                    continue;
                }
                let nll = if schedule == "cosine" { 3.0 } else { 3.2 }
                    + 100.0 / t as f64
                    + seed as f64 * 0.01;
                store
                    .upsert_eval(run.id, "nll_bpd", Some(nll), "{}")
                    .await
                    .unwrap();
                store
                    .upsert_eval(run.id, "nll_bpd_stderr", Some(0.05), "{}")
                    .await
                    .unwrap();
                store
                    .insert_sample(&NewSample {
                        run_id: run.id,
                        step: 200,
                        sampler: "ddim".into(),
                        sample_steps: 50,
                        prompt: Some(hostile.into()),
                        guidance: None,
                        guidance_scale: None,
                        count: 4,
                        width: 8,
                        height: 8,
                        png: png(),
                    })
                    .await
                    .unwrap();
                store
                    .finish_run(run.id, RunStatus::Completed, None)
                    .await
                    .unwrap();
            }
        }
    }
}

#[tokio::test]
async fn a_report_has_every_chart_table_and_grid() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&sqlite_url(&dir.path().join("db.sqlite")), true)
        .await
        .unwrap();
    let hostile = "<script>alert(1)</script> | *bold* [x](y)";
    populate(&store, 2, hostile).await;
    let out = dir.path().join("report");
    let r = ddlab_report::build(&store, "rep<&>", &out).await.unwrap();
    assert_eq!(r.runs, 8);
    for f in ["loss", "nll_vs_T", "final_loss_vs_T", "schedules"] {
        let img =
            image::open(out.join(format!("{f}.png"))).unwrap_or_else(|e| panic!("{f}.png: {e}"));
        assert!(img.width() >= 1000);
        let svg = std::fs::read_to_string(out.join(format!("{f}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{f}.svg");
    }
    // Seven completed runs have grids; the failed one has none.
    let latest = std::fs::read_dir(out.join("samples"))
        .unwrap()
        .filter(|f| {
            let name = f.as_ref().unwrap().file_name().into_string().unwrap();
            name.starts_with("run-") && !name.contains("-step-")
        })
        .count();
    assert_eq!(latest, 7);
    // The grids page: a matrix by the varying keys and film strips, every image beside it,
    // user text escaped, nothing fetched.
    let grids = std::fs::read_to_string(out.join("grids.html")).unwrap();
    assert!(grids.contains("class=\"matrix\"") && grids.contains("class=\"strip\""));
    assert!(!grids.contains("<script>") && !grids.contains("http"));
    for src in grids.split("src=\"").skip(1) {
        let file = src.split('"').next().unwrap();
        assert!(
            out.join(file).is_file(),
            "grids.html shows a missing {file}"
        );
    }

    let html = std::fs::read_to_string(&r.index).unwrap();
    assert!(
        !html.contains("<script>"),
        "unescaped user text in index.html"
    );
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("rep&lt;&amp;&gt;"));
    assert!(html.contains("class=\"failed\"") && html.contains("diverged"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page must not reach the network"
    );
    for f in [
        "loss.png",
        "nll_vs_T.png",
        "schedules.png",
        "samples/run-2.png",
    ] {
        assert!(html.contains(&format!("src=\"{f}\"")), "{f} not shown");
    }

    let md = std::fs::read_to_string(&r.summary).unwrap();
    assert!(md.contains("&lt;script&gt;") && md.contains("\\|") && !md.contains("<script>"));
    let table: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(table.len(), 9, "header and 8 runs");
    // Every row has the same number of cells despite the pipes in the names.
    let cells = |l: &str| l.replace("\\|", "").matches('|').count();
    assert!(table.iter().all(|l| cells(l) == cells(table[0])));
    // cosine, T = 1000, seed 0: 3.0 + 100/1000.
    assert!(md.contains("| 3.100 ± 0.050 |"), "{md}");
}

#[tokio::test]
async fn an_unknown_sweep_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&sqlite_url(&dir.path().join("db.sqlite")), true)
        .await
        .unwrap();
    let e = ddlab_report::build(&store, "nope", dir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no sweep named `nope`"), "{e}");
}
