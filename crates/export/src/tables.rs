//! The tables: their Arrow schemas and record batches, built from the store's rows. Runs get
//! one column per configuration key, typed from the values the runs hold.

use anyhow::Result;
use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use ddlab_config::RunConfig;
use ddlab_store::{EvalRow, MetricRow, RunRow, Store, SweepRow};
use serde_json::{Map, Value};
use std::sync::Arc;

use crate::out::OutDir;
use crate::sink::TableSink;
use crate::{Format, Written};

fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
    let fields: Vec<Field> = fields
        .iter()
        .map(|(n, t)| Field::new(*n, t.clone(), true))
        .collect();
    Arc::new(Schema::new(fields))
}

fn ints(v: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(Int64Array::from_iter(v))
}

fn floats(v: impl IntoIterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from_iter(v))
}

fn texts<S: AsRef<str>>(v: impl IntoIterator<Item = Option<S>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(v))
}

/// The run columns that come from the `runs` table rather than its config.
const RUN_FIELDS: [&str; 12] = [
    "run_id",
    "name",
    "status",
    "config_hash",
    "steps_done",
    "steps_total",
    "attempts",
    "device",
    "created_at",
    "started_at",
    "finished_at",
    "error",
];

/// A column of `runs` that comes from the run row itself.
fn run_column(runs: &[RunRow], name: &str) -> ArrayRef {
    let text = |f: fn(&RunRow) -> Option<&str>| texts(runs.iter().map(f));
    let int = |f: fn(&RunRow) -> i64| ints(runs.iter().map(|r| Some(f(r))));
    match name {
        "run_id" => int(|r| r.id),
        "name" => text(|r| Some(&r.name)),
        "status" => text(|r| Some(&r.status)),
        "config_hash" => text(|r| Some(&r.config_hash)),
        "steps_done" => int(|r| r.steps_done),
        "steps_total" => int(|r| r.steps_total),
        "attempts" => int(|r| r.attempts),
        "device" => text(|r| r.device.as_deref()),
        "created_at" => text(|r| Some(&r.created_at)),
        "started_at" => text(|r| r.started_at.as_deref()),
        "finished_at" => text(|r| r.finished_at.as_deref()),
        _ => text(|r| r.error.as_deref()),
    }
}

/// A run's config as recorded, keys it predates at their defaults.
fn config_of(run: &RunRow) -> Map<String, Value> {
    let mut out = match serde_json::to_value(RunConfig::default()) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&run.config_json) {
        out.extend(m);
    }
    out
}

/// The narrowest column type that holds every run's value of a key (JSON text for lists).
fn kind_of<'a>(values: impl Iterator<Item = &'a Value>) -> DataType {
    let present: Vec<&Value> = values.filter(|v| !v.is_null()).collect();
    if present.is_empty() {
        DataType::Utf8
    } else if present.iter().all(|v| v.is_i64()) {
        DataType::Int64
    } else if present.iter().all(|v| v.is_number()) {
        DataType::Float64
    } else if present.iter().all(|v| v.is_boolean()) {
        DataType::Boolean
    } else {
        DataType::Utf8
    }
}

/// Config keys in `ddlab keys` order, then any the runs hold that this ddlab does not know.
fn config_keys(configs: &[Map<String, Value>]) -> Vec<String> {
    let mut keys: Vec<String> = RunConfig::ROLES
        .iter()
        .map(|(k, _)| k.to_string())
        .collect();
    let mut extra: Vec<&String> = configs
        .iter()
        .flat_map(|c| c.keys())
        .filter(|k| !keys.contains(k))
        .collect();
    extra.sort();
    extra.dedup();
    keys.extend(extra.into_iter().cloned());
    keys
}

/// The runs table's schema: the run's own columns, then one per config key (a key named like
/// a run column gets a `config.` prefix).
pub(crate) fn runs_schema(runs: &[RunRow]) -> SchemaRef {
    let configs: Vec<_> = runs.iter().map(config_of).collect();
    let mut fields: Vec<(String, DataType)> = RUN_FIELDS
        .iter()
        .map(|n| {
            let t = match *n {
                "run_id" | "steps_done" | "steps_total" | "attempts" => DataType::Int64,
                _ => DataType::Utf8,
            };
            (n.to_string(), t)
        })
        .collect();
    for key in config_keys(&configs) {
        let kind = kind_of(configs.iter().filter_map(|c| c.get(&key)));
        let column = if RUN_FIELDS.contains(&key.as_str()) {
            format!("config.{key}")
        } else {
            key
        };
        fields.push((column, kind));
    }
    let fields: Vec<(&str, DataType)> = fields
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    schema(&fields)
}

/// A config column of `runs` as an array of the schema's type.
fn config_column(configs: &[Map<String, Value>], key: &str, kind: &DataType) -> ArrayRef {
    let values = configs.iter().map(|c| c.get(key).filter(|v| !v.is_null()));
    match kind {
        DataType::Int64 => ints(values.map(|v| v.and_then(Value::as_i64))),
        DataType::Float64 => floats(values.map(|v| v.and_then(Value::as_f64))),
        DataType::Boolean => Arc::new(BooleanArray::from_iter(
            values.map(|v| v.and_then(Value::as_bool)),
        )),
        _ => texts(values.map(|v| {
            v.map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        })),
    }
}

pub(crate) fn runs_batch(schema: &SchemaRef, runs: &[RunRow]) -> Result<RecordBatch> {
    let configs: Vec<_> = runs.iter().map(config_of).collect();
    let mut columns: Vec<ArrayRef> = vec![];
    for field in schema.fields() {
        let name = field.name().as_str();
        if RUN_FIELDS.contains(&name) {
            columns.push(run_column(runs, name));
        } else {
            let key = name.strip_prefix("config.").unwrap_or(name);
            columns.push(config_column(&configs, key, field.data_type()));
        }
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

pub(crate) fn sweep_schema() -> SchemaRef {
    let t = DataType::Utf8;
    schema(&[
        ("name", t.clone()),
        ("description", t.clone()),
        ("created_at", t.clone()),
        ("slurm_job_id", t.clone()),
        ("grid_keys", t.clone()),
        ("base_keys", t.clone()),
        ("spec_toml", t),
    ])
}

/// The sweep's one row; its axes as JSON lists of key names.
pub(crate) fn sweep_batch(s: &SweepRow) -> Result<RecordBatch> {
    let axes = s.axes.clone().unwrap_or_default();
    let json = |keys: &[String]| serde_json::to_string(keys).expect("strings serialise");
    let columns = vec![
        texts([Some(&s.name)]),
        texts([Some(&s.description)]),
        texts([Some(&s.created_at)]),
        texts([s.slurm_job_id.as_ref()]),
        texts([s.axes.as_ref().map(|_| json(&axes.grid_keys))]),
        texts([s.axes.as_ref().map(|_| json(&axes.base_keys))]),
        texts([Some(&s.spec_toml)]),
    ];
    Ok(RecordBatch::try_new(sweep_schema(), columns)?)
}

fn metrics_schema() -> SchemaRef {
    schema(&[
        ("run_id", DataType::Int64),
        ("step", DataType::Int64),
        ("name", DataType::Utf8),
        ("value", DataType::Float64),
        ("wall_time", DataType::Float64),
    ])
}

fn metrics_batch(schema: &SchemaRef, rows: &[MetricRow]) -> Result<RecordBatch> {
    let columns = vec![
        ints(rows.iter().map(|r| Some(r.run_id))),
        ints(rows.iter().map(|r| Some(r.step))),
        texts(rows.iter().map(|r| Some(&r.name))),
        floats(rows.iter().map(|r| r.value)),
        floats(rows.iter().map(|r| Some(r.wall_time))),
    ];
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Every metric row of the runs in long format, read from the store a page at a time (one
/// page is one batch), so memory stays bounded whatever the store holds.
pub(crate) async fn write_metrics(
    store: &Store,
    dir: &OutDir,
    format: Format,
    runs: &[RunRow],
    batch: usize,
) -> Result<Written> {
    let mut sink = TableSink::create(dir, "metrics", format, metrics_schema())?;
    for run in runs {
        let mut after: Option<(String, i64)> = None;
        loop {
            let page = store
                .metric_page(run.id, after.as_ref().map(|(n, s)| (n.as_str(), *s)), batch)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some((last.name.clone(), last.step));
            sink.write(&metrics_batch(sink.schema(), &page)?)?;
            if page.len() < batch {
                break;
            }
        }
    }
    sink.finish()
}

fn evals_schema() -> SchemaRef {
    schema(&[
        ("run_id", DataType::Int64),
        ("name", DataType::Utf8),
        ("value", DataType::Float64),
        ("details_json", DataType::Utf8),
        ("created_at", DataType::Utf8),
    ])
}

fn evals_batch(schema: &SchemaRef, rows: &[EvalRow]) -> Result<RecordBatch> {
    let columns = vec![
        ints(rows.iter().map(|r| Some(r.run_id))),
        texts(rows.iter().map(|r| Some(&r.name))),
        floats(rows.iter().map(|r| r.value)),
        texts(rows.iter().map(|r| Some(&r.details_json))),
        texts(rows.iter().map(|r| Some(&r.created_at))),
    ];
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Every eval of the runs, a batch whenever `batch` rows have gathered.
pub(crate) async fn write_evals(
    store: &Store,
    dir: &OutDir,
    format: Format,
    runs: &[RunRow],
    batch: usize,
) -> Result<Written> {
    let mut sink = TableSink::create(dir, "evals", format, evals_schema())?;
    let mut rows: Vec<EvalRow> = vec![];
    for run in runs {
        rows.extend(store.evals(run.id).await?);
        if rows.len() >= batch {
            sink.write(&evals_batch(sink.schema(), &rows)?)?;
            rows.clear();
        }
    }
    if !rows.is_empty() {
        sink.write(&evals_batch(sink.schema(), &rows)?)?;
    }
    sink.finish()
}
