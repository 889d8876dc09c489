//! A sweep exported and read back: the Parquet files through the Rust Parquet reader, the CSV
//! files as text, each compared row for row with the store.

use arrow_array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use ddlab_config::RunConfig;
use ddlab_export::{ExportOptions, Format, export_sweep};
use ddlab_store::{MetricRow, NewRun, Store, SweepAxes};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;

/// Three runs (T and schedule vary), 2,500 rows of two metrics each with a NULL among them,
/// two evals; one run never started.
async fn store(dir: &Path) -> Store {
    let url = format!("sqlite://{}", dir.join("ddlab.sqlite").display());
    let s = Store::connect(&url, true).await.unwrap();
    let sweep = s
        .upsert_sweep("exp", "a \"quoted\", test", "[sweep]\nname = \"exp\"\n")
        .await
        .unwrap();
    let axes = SweepAxes {
        grid_keys: vec!["T".into()],
        base_keys: vec!["steps".into()],
    };
    s.set_sweep_axes(sweep.id, &axes).await.unwrap();
    for (i, t) in [100usize, 1000, 250].into_iter().enumerate() {
        let cfg = RunConfig {
            t,
            steps: 2500,
            channel_mult: Some(vec![1, 2]),
            ..RunConfig::default()
        };
        let run = s
            .ensure_run(&NewRun {
                sweep_id: Some(sweep.id),
                name: format!("T={t},x\"y"),
                config_hash: cfg.config_hash(),
                config_json: serde_json::to_string(&cfg).unwrap(),
                dataset: "shapes".into(),
                model: "small".into(),
                schedule: "linear".into(),
                timesteps: t as i64,
                seed: 0,
                steps_total: 2500,
            })
            .await
            .unwrap();
        if i == 2 {
            continue;
        }
        let rows: Vec<MetricRow> = (0..2500)
            .flat_map(|step| {
                ["loss", "lr"].map(|name| MetricRow {
                    run_id: run.id,
                    step,
                    name: name.into(),
                    value: (step != 7).then_some(step as f64 / 3.0 + i as f64),
                    wall_time: 1.7e9 + step as f64,
                })
            })
            .collect();
        s.insert_metrics(&rows).await.unwrap();
        s.upsert_eval(run.id, "nll_bpd", Some(4.5 - i as f64), "{}")
            .await
            .unwrap();
    }
    s
}

fn read(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap();
    reader.map(Result::unwrap).collect()
}

fn column<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> &'a T {
    b.column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref::<T>()
        .unwrap()
}

#[tokio::test]
async fn parquet_files_read_back_equal_to_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path()).await;
    let out = dir.path().join("out");
    let mut opts = ExportOptions::new(Format::Parquet, &out);
    opts.batch_rows = 777; // pages and batches that do not divide the rows
    let written = export_sweep(&s, "exp", &opts).await.unwrap();
    let rows: Vec<usize> = written.iter().map(|w| w.rows).collect();
    assert_eq!(rows[..4], [3, 10_000, 2, 1]);

    let runs = read(&out.join("runs.parquet"));
    let b = &runs[0];
    assert_eq!(column::<Int64Array>(b, "T").values(), &[100, 1000, 250]);
    assert_eq!(column::<StringArray>(b, "name").value(1), "T=1000,x\"y");
    assert_eq!(column::<StringArray>(b, "schedule").value(0), "linear");
    assert_eq!(column::<StringArray>(b, "channel_mult").value(0), "[1,2]");
    assert_eq!(column::<Float64Array>(b, "lr").value(0), 2e-4);
    assert!(b.column_by_name("steps_done").is_some() && b.column_by_name("seed").is_some());

    // Every metric row, in (run, name, step) order, equal to the store's.
    let metrics = read(&out.join("metrics.parquet"));
    let mut got = vec![];
    for b in &metrics {
        let (run, step) = (
            column::<Int64Array>(b, "run_id"),
            column::<Int64Array>(b, "step"),
        );
        let (name, value) = (
            column::<StringArray>(b, "name"),
            column::<Float64Array>(b, "value"),
        );
        for i in 0..b.num_rows() {
            let v = (!value.is_null(i)).then(|| value.value(i));
            got.push((run.value(i), name.value(i).to_string(), step.value(i), v));
        }
    }
    let mut want = vec![];
    for run in s.runs(None).await.unwrap() {
        for name in ["loss", "lr"] {
            for (step, v) in s.metric_rows(run.id, name).await.unwrap() {
                want.push((run.id, name.to_string(), step, v));
            }
        }
    }
    assert_eq!(got.len(), 10_000);
    assert_eq!(got, want);
    assert_eq!(got[7].3, None, "a NULL stays NULL");

    let evals = read(&out.join("evals.parquet"));
    assert_eq!(
        column::<Float64Array>(&evals[0], "value").values(),
        &[4.5, 3.5]
    );
    let sweep = read(&out.join("sweep.parquet"));
    assert_eq!(
        column::<StringArray>(&sweep[0], "grid_keys").value(0),
        "[\"T\"]"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("spec.toml")).unwrap(),
        "[sweep]\nname = \"exp\"\n"
    );

    // A second export into the same folder is refused unless asked, and changes nothing.
    let before = std::fs::read(out.join("metrics.parquet")).unwrap();
    let e = export_sweep(&s, "exp", &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("runs.parquet already exists") && e.contains("--force"),
        "{e}"
    );
    assert_eq!(std::fs::read(out.join("metrics.parquet")).unwrap(), before);
    opts.overwrite = true;
    export_sweep(&s, "exp", &opts).await.unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn csv_files_hold_the_same_rows_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path()).await;
    let out = dir.path().join("csv");
    export_sweep(&s, "exp", &ExportOptions::new(Format::Csv, &out))
        .await
        .unwrap();
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let mut lines = metrics.lines();
    assert_eq!(lines.next(), Some("run_id,step,name,value,wall_time"));
    assert_eq!(lines.clone().count(), 10_000);
    assert_eq!(lines.nth(7), Some("1,7,loss,,1700000007.0"));
    let runs = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    assert!(
        runs.lines()
            .nth(1)
            .unwrap()
            .starts_with("1,\"T=100,x\"\"y\",pending,"),
        "{runs}"
    );
    assert!(runs.contains("\"[1,2]\""), "{runs}");
    assert_eq!(runs.lines().count(), 4);

    // An --out that is a file is refused before anything is written.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let e = export_sweep(&s, "exp", &ExportOptions::new(Format::Csv, &file))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("is a file, not a folder"), "{e}");
    let e = export_sweep(
        &s,
        "nosuch",
        &ExportOptions::new(Format::Csv, dir.path().join("n")),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("nosuch") && !dir.path().join("n").exists(),
        "{e}"
    );
}
