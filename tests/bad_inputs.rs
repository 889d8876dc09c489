//! The bad-input corpus: one table of inputs that `ddlab` must refuse with one sentence on
//! stderr, a non-zero exit, no backtrace (even with RUST_BACKTRACE=1), no change to the store
//! it was given and nothing written into its working folder.
//!
//! Every case carries `fixed_by_now`: the test fails only for cases marked `true` and prints
//! the others — those that still misbehave, and those that now pass and can be flipped.
//! Data files are in `tests/bad_inputs/`; larger or binary ones are made at test time.

mod common;
use common::*;

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tests of this file each start `ddlab` processes; on two cores they go one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Every case fails within this time or is killed (a refused connection or a file that is not
/// SQLite must not wait out a pool timeout).
const DEADLINE: Duration = Duration::from_secs(5);
/// Address space a case may use (with at most two malloc arenas): enough for a tiny run, far
/// below what the runaway sizes of the corpus ask for, which then fail in a second instead of
/// meeting the OOM killer minutes later.
const MEMORY_LIMIT: u64 = 3 << 29;

/// The store a case runs against (`{db}`) and what must hold for it afterwards.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Db {
    /// No database.
    None,
    /// A copy of the prepared store (one completed tiny run): row counts unchanged.
    Rows,
    /// A copy of the prepared store: byte-for-byte unchanged.
    Bytes,
    /// A copy of the prepared store after this SQL: byte-for-byte unchanged.
    BytesAfter(&'static str),
    /// A SQLite file of another program's schema: byte-for-byte unchanged.
    Foreign,
    /// A file of random bytes: unchanged.
    Random,
    /// An empty file: still empty.
    Empty,
    /// No file: none afterwards either.
    Absent,
}

struct Case {
    name: &'static str,
    /// `ddlab` arguments, with placeholders: {db} the case's store URL, {case} its scratch
    /// folder, {fx} tests/bad_inputs, {gen} the generated files, {ck} and {prepared} the
    /// prepared run's checkpoint and folder, {ro} a read-only folder, {full} a full disk,
    /// {fullfile} a file on one, {long} a 5,000-character name.
    args: &'static [&'static str],
    db: Db,
    /// Expected in stderr; `|` separates alternatives.
    needle: &'static str,
    /// Must not be in stderr (a message that names the wrong problem).
    avoid: Option<&'static str>,
    fixed_by_now: bool,
}

impl Case {
    const fn avoiding(self, text: &'static str) -> Case {
        Case {
            avoid: Some(text),
            ..self
        }
    }
}

const fn case(
    name: &'static str,
    args: &'static [&'static str],
    db: Db,
    needle: &'static str,
    fixed_by_now: bool,
) -> Case {
    Case {
        name,
        args,
        db,
        needle,
        avoid: None,
        fixed_by_now,
    }
}

/// The command before `;`, then the tiny run keys as `--set` pairs, then the case's own
/// arguments after `;` (which win: a later `--set` of a key overrides an earlier one).
macro_rules! tiny {
    ($($head:expr),+ ; $($arg:expr),* $(,)?) => {
        &[
            $($head,)+
            "--set", "model=tiny", "--set", "shapes_count=200", "--set", "batch_size=8",
            "--set", "T=50", "--set", "sample_count=4", "--set", "sample_steps=5",
            "--set", "nll_images=8", "--set", "nll_timesteps=3", "--set", "warmup_steps=2",
            "--set", "steps=4",
            $($arg,)*
        ]
    };
}

use Db::{Absent, Bytes, BytesAfter, Empty, Foreign, Random, Rows};

#[rustfmt::skip]
const CASES: &[Case] = &[
    // ---- Sweep specs: malformed TOML, wrong types, unknown keys, impossible values.
    case("spec_malformed_toml", &["sweep", "{fx}/malformed.toml", "--db", "{db}"], Rows, "malformed.toml:1", true),
    case("spec_wrong_type", &["sweep", "{fx}/wrong_type.toml", "--db", "{db}"], Rows, "key `T`", true),
    case("spec_unknown_key", &["sweep", "{fx}/unknown_key.toml", "--db", "{db}"], Rows, "did you mean `schedule`", true),
    case("spec_unknown_section", &["sweep", "{fx}/unknown_section.toml", "--db", "{db}"], Rows, "extras", true),
    case("spec_without_sweep_name", &["sweep", "{fx}/no_sweep_name.toml", "--db", "{db}"], Rows, "`name`", true),
    case("spec_grid_axis_empty", &["sweep", "{fx}/grid_axis_empty.toml", "--db", "{db}"], Rows, "has no values", true),
    case("spec_grid_axis_not_a_list", &["sweep", "{fx}/grid_axis_not_list.toml", "--db", "{db}"], Rows, "must be a list", true),
    case("spec_t_zero", &["sweep", "{fx}/t_zero.toml", "--db", "{db}"], Rows, "T = 0", true),
    case("spec_beta_end_above_one", &["sweep", "{fx}/beta_end_above_one.toml", "--db", "{db}"], Rows, "beta_end = 1.5", true),
    case("spec_lr_negative", &["sweep", "{fx}/lr_negative.toml", "--db", "{db}"], Rows, "lr = -0.001", true),
    case("spec_eta_negative", &["sweep", "{fx}/eta_negative.toml", "--db", "{db}"], Rows, "eta = -1|η = -1", true),
    case("spec_sample_steps_above_t", &["sweep", "{fx}/sample_steps_above_t.toml", "--db", "{db}"], Rows, "sample_steps = 500", true),
    case("spec_batch_size_zero", &["sweep", "{fx}/batch_size_zero.toml", "--db", "{db}"], Rows, "batch_size = 0|batch_size must", true),
    case("spec_unknown_model", &["sweep", "{fx}/unknown_model.toml", "--db", "{db}"], Rows, "huge", true),
    case("spec_unknown_dataset", &["sweep", "{fx}/unknown_dataset.toml", "--db", "{db}"], Rows, "imagenet", true),
    case("spec_duplicate_runs", &["sweep", "{fx}/duplicate_runs.toml", "--db", "{db}"], Rows, "same configuration", true),
    case("spec_missing", &["sweep", "{case}/none.toml", "--db", "{db}"], Rows, "none.toml", true),
    case("spec_is_a_folder", &["sweep", "{gen}", "--db", "{db}"], Rows, "cannot read", true),
    case("spec_random_bytes", &["sweep", "{gen}/random.toml", "--db", "{db}"], Rows, "random.toml", true),
    case("spec_grid_override_not_a_list", &["sweep", "{fx}/one_run.toml", "--grid", "T=100", "--db", "{db}"], Rows, "--grid T=100", true),
    // Item 11: a number where a schedule name belongs names the schedules, not serde's enum.
    case("spec_loss_buckets_zero", &["sweep", "{fx}/loss_buckets_zero.toml", "--db", "{db}"], Rows, "loss_buckets = 0", true),
    case("spec_loss_buckets_huge", &["sweep", "{fx}/loss_buckets_huge.toml", "--db", "{db}"], Rows, "loss_buckets = 99999999999", true),
    case("spec_eval_every_huge", &["sweep", "{fx}/eval_every_huge.toml", "--db", "{db}"], Rows, "eval_every = 1000000000", true),
    case("set_loss_buckets_above_max", tiny!["train"; "--db", "{db}", "--set", "T=20", "--set", "loss_buckets=1001"], Absent, "loss_buckets = 1001", true),
    case("spec_schedule_is_a_number", &["sweep", "{fx}/schedule_number.toml", "--db", "{db}"], Rows, "cosine", true),
    // Issue 19: zipped and conditional axes, also under --dry-run (which opens no store).
    case("spec_zip_unequal_lengths", &["sweep", "{fx}/zip_unequal.toml", "--db", "{db}"], Rows, "zip_unequal.toml:15: zipped key `sample_steps` has 3 values", true),
    case("spec_zip_unequal_dry_run", &["sweep", "{fx}/zip_unequal.toml", "--dry-run", "--db", "{db}"], Bytes, "equal length", true),
    case("spec_when_unknown_key", &["sweep", "{fx}/when_unknown_key.toml", "--db", "{db}"], Rows, "when_unknown_key.toml:16: condition `if`: unknown key `samplr` (did you mean `sampler`?)", true),
    case("spec_when_without_condition", &["sweep", "{fx}/when_no_condition.toml", "--db", "{db}"], Rows, "needs a condition", true),
    case("spec_when_huge", &["sweep", "{fx}/when_huge.toml", "--dry-run", "--db", "{db}"], Bytes, "more than the 10000 runs allowed", true),
    case("spec_zip_grid_override", &["sweep", "{fx}/zip.toml", "--grid", "sample_steps=[5]", "--db", "{db}"], Rows, "--grid sample_steps=[5]: `sample_steps` is zipped with `sampler`", true),
    case("spec_zip_set_unlisted", &["sweep", "{fx}/zip.toml", "--set", "sample_steps=7", "--db", "{db}"], Rows, "none of its values is 7", true),

    // ---- `--set` and config files of single runs.
    case("set_without_equals", tiny!["train"; "--db", "{db}", "--set", "steps"], Absent, "expected key=value", true),
    case("set_unknown_key", tiny!["train"; "--db", "{db}", "--set", "shedule=cosine"], Absent, "did you mean `schedule`", true),
    case("set_wrong_type", tiny!["train"; "--db", "{db}", "--set", "batch_size=many"], Absent, "batch_size", true),
    case("set_negative_count", tiny!["train"; "--db", "{db}", "--set", "sample_count=-1"], Absent, "sample_count", true),
    case("set_beta_start_above_beta_end", tiny!["train"; "--db", "{db}", "--set", "beta_start=0.5", "--set", "beta_end=0.1"], Absent, "beta", true),
    case("set_ema_decay_above_one", tiny!["train"; "--db", "{db}", "--set", "ema_decay=1.5"], Absent, "ema_decay", true),
    case("set_dropout_above_one", tiny!["train"; "--db", "{db}", "--set", "dropout=2.0"], Absent, "dropout", true),
    case("config_file_missing", tiny!["train"; "--db", "{db}", "--config", "{case}/none.toml"], Absent, "none.toml", true),
    case("config_file_malformed", tiny!["train"; "--db", "{db}", "--config", "{fx}/malformed.toml"], Absent, "malformed.toml", true),
    case("train_resume_unknown_run", &["train", "--db", "{db}", "--resume", "999"], Rows, "999", true),
    case("train_device_unknown", tiny!["train"; "--db", "{db}", "--device", "tpu"], Absent, "tpu", true),

    // ---- Item 1: names that escape their folder, or are no names at all.
    case("sweep_name_dotdot", &["sweep", "{fx}/sweep_dotdot.toml", "--db", "{db}"], Rows, "name", true),
    case("sweep_name_dot", &["sweep", "{fx}/sweep_dot.toml", "--db", "{db}"], Rows, "name", true),
    case("sweep_name_newline", &["sweep", "{fx}/sweep_newline.toml", "--db", "{db}"], Rows, "name", true).avoiding("without `/`"),
    case("sweep_name_nul", &["sweep", "{fx}/sweep_nul.toml", "--db", "{db}"], Rows, "name", true).avoiding("without `/`"),
    case("sweep_name_5000_chars", &["sweep", "{gen}/longest.toml", "--db", "{db}"], Rows, "characters|5000|5,000|too long", true),
    case("sweep_name_empty", &["sweep", "{fx}/sweep_empty.toml", "--db", "{db}"], Rows, "name", true),
    case("report_sweep_dotdot", &["report", "--sweep", "..", "--db", "{db}"], BytesAfter("UPDATE sweeps SET name = '..'"), "name", true),
    case("train_name_empty", tiny!["train"; "--name", "", "--db", "{db}"], Rows, "name", true),
    case("train_name_newline", tiny!["train"; "--name", "a\nb", "--db", "{db}"], Rows, "name", true),
    case("train_name_5000_chars", tiny!["train"; "--name", "{long}", "--db", "{db}"], Rows, "characters|5000|5,000|too long", true),

    // ---- Item 2: run artifacts belong to their database.
    case("resume_into_a_fresh_database", &["train", "--resume", "1", "--db", "{db}", "--out", "{prepared}/runs"], Absent, "id 1|run 1", true),
    case("work_on_a_fresh_database", &["work", "--sweep", "one-run", "--db", "{db}", "--out", "{prepared}/runs"], Absent, "db.sqlite", true),

    // ---- Item 4: databases that are not ddlab's, or not SQLite; bad URLs.
    case("runs_foreign_sqlite", &["runs", "--db", "{db}"], Foreign, "db.sqlite", true),
    case("report_foreign_sqlite", &["report", "--sweep", "x", "--db", "{db}", "--out", "{case}/report"], Foreign, "db.sqlite", true),
    case("sweep_into_foreign_sqlite", &["sweep", "{fx}/one_run.toml", "--db", "{db}"], Foreign, "db.sqlite", true),
    case("train_into_foreign_sqlite", tiny!["train"; "--db", "{db}"], Foreign, "db.sqlite", true),
    case("runs_random_bytes_db", &["runs", "--db", "{db}"], Random, "db.sqlite", true),
    case("train_into_random_bytes_db", tiny!["train"; "--db", "{db}"], Random, "db.sqlite", true),
    case("runs_empty_file_db", &["runs", "--db", "{db}"], Empty, "db.sqlite", true),
    case("runs_sqlite_url_without_path", &["runs", "--db", "sqlite://"], Db::None, "sqlite://", true),
    case("runs_missing_db", &["runs", "--db", "{db}"], Absent, "does not exist", true),
    case("runs_db_is_a_folder", &["runs", "--db", "sqlite://{case}"], Db::None, "{case}", true),
    case("runs_unsupported_url", &["runs", "--db", "mysql://127.0.0.1:1/x"], Db::None, "mysql://", true),
    case("runs_postgres_refused", &["runs", "--db", "postgres://ddlab@127.0.0.1:1/ddlab"], Db::None, "127.0.0.1", true),
    case("sweep_postgres_refused", &["sweep", "{fx}/one_run.toml", "--db", "postgres://ddlab@127.0.0.1:1/ddlab"], Db::None, "127.0.0.1", true),
    case("runs_unknown_sweep", &["runs", "--sweep", "nosuch", "--db", "{db}"], Bytes, "nosuch", true),
    case("report_unknown_sweep", &["report", "--sweep", "nosuch", "--db", "{db}", "--out", "{case}/report"], Bytes, "nosuch", true),
    // Issue 19: `ddlab diff` reads runs by id, read-only.
    case("diff_unknown_run", &["diff", "1", "999", "--db", "{db}"], Bytes, "999", true),
    case("diff_one_run", &["diff", "1", "--db", "{db}"], Bytes, "required", true),
    case("diff_same_run_twice", &["diff", "1", "1", "--db", "{db}"], Bytes, "given twice", true),
    case("diff_not_a_run_id", &["diff", "1", "x\u{1b}[2J", "--db", "{db}"], Bytes, "invalid value", true).avoiding("\u{1b}"),
    case("diff_missing_db", &["diff", "1", "2", "--db", "{db}"], Absent, "does not exist", true),
    // Issue 19: `ddlab export` writes fixed file names into a folder, never over a file.
    case("export_unknown_sweep", &["export", "--sweep", "nosuch", "--out", "{case}/x", "--db", "{db}"], Bytes, "nosuch", true),
    case("export_out_is_a_file", &["export", "--sweep", "one-run", "--out", "{gen}/random.toml", "--db", "{db}"], Bytes, "is a file, not a folder", true),
    case("export_unknown_format", &["export", "--sweep", "one-run", "--format", "xlsx", "--out", "{case}/x", "--db", "{db}"], Bytes, "xlsx", true),
    case("export_without_out", &["export", "--sweep", "one-run", "--db", "{db}"], Bytes, "required", true),
    case("export_read_only_folder", &["export", "--sweep", "one-run", "--out", "{ro}/x", "--db", "{db}"], Bytes, "cannot create", true),
    case("export_sweep_name_escape", &["export", "--sweep", "../../etc", "--out", "{case}/x", "--db", "{db}"], Bytes, "no sweep named", true),
    case("cancel_without_slurm_job", &["cancel", "--sweep", "one-run", "--db", "{db}"], Bytes, "no Slurm job", true),

    // ---- Item 5: sizes that exhaust memory or threads.
    case("spec_grid_t_1e9", &["sweep", "{fx}/huge_t.toml", "--db", "{db}"], Rows, "1000000000|1,000,000,000", true),
    case("schedule_steps_1e8", &["schedule", "--kind", "linear", "--steps", "100000000"], Db::None, "100000000|100,000,000", true),
    case("shapes_count_1e9", tiny!["train"; "--db", "{db}", "--set", "shapes_count=1000000000"], Rows, "shapes_count", true),
    case("sample_n_1e8", &["sample", "--checkpoint", "{ck}", "-n", "100000000", "--out", "{case}/s.png"], Db::None, "100000000|100,000,000", true),
    case("threads_100000", tiny!["--threads", "100000", "train"; "--db", "{db}"], Rows, "threads", true),
    case("batch_size_1e9", tiny!["train"; "--db", "{db}", "--set", "batch_size=1000000000"], Rows, "batch_size", true),
    case("base_channels_1e6", tiny!["train"; "--db", "{db}", "--set", "base_channels=1000000"], Rows, "base_channels", true),
    case("hybrid_lambda_negative", tiny!["train"; "--db", "{db}", "--set", "hybrid_lambda=-1"], Rows, "hybrid_lambda", true),
    case("hybrid_lambda_1e9", tiny!["train"; "--db", "{db}", "--set", "hybrid_lambda=1e9", "--set", "variance=learned"], Rows, "hybrid_lambda", true),
    case("variance_unknown", tiny!["train"; "--db", "{db}", "--set", "variance=learnt"], Rows, "learned", true),
    case("sampler_unknown", tiny!["train"; "--db", "{db}", "--set", "sampler=dpm++"], Rows, "dpmpp2m", true),
    case("sample_learned_variance_of_a_fixed_model", &["sample", "--checkpoint", "{ck}", "-n", "2", "--sampler", "ddpm", "--variance", "learned", "--out", "{case}/s.png"], Db::None, "variance = learned", true),
    case("sample_zoom_1e6", &["sample", "--checkpoint", "{ck}", "-n", "1", "--zoom", "1000000", "--out", "{case}/s.png"], Db::None, "zoom", true),

    // ---- Item 6: a grid of a million runs needs to be asked for.
    case("grid_of_a_million_runs", &["sweep", "{gen}/million.toml", "--db", "{db}"], Rows, "--yes|--max-runs", true),

    // ---- Item 7: images the model cannot take; corrupt IDX, gzip, CIFAR and images.
    case("idx_images_0x0", tiny!["train"; "--db", "{db}", "--set", "dataset=mnist", "--set", "data_dir={gen}/idx_zero"], Rows, "0×0|0x0", true),
    case("idx_images_1x1", tiny!["train"; "--db", "{db}", "--set", "dataset=mnist", "--set", "data_dir={gen}/idx_one"], Rows, "1×1|1x1", true),
    case("idx_images_28x7", tiny!["train"; "--db", "{db}", "--set", "dataset=mnist", "--set", "data_dir={gen}/idx_narrow"], Rows, "28×7|28x7|7×28|7x28", true),
    case("sweep_idx_images_28x7", &["sweep", "{fx}/one_run.toml", "--db", "{db}", "--set", "dataset=mnist", "--set", "data_dir={gen}/idx_narrow"], Rows, "28×7|28x7|7×28|7x28", true),
    case("eval_nll_on_20x20_data", &["eval", "--nll", "--images", "4", "--timesteps", "2", "--checkpoint", "{ck}", "--data-dir", "{gen}/idx_small"], Db::None, "20×20|20x20", true),
    case("eval_nll_on_28x7_data", &["eval", "--nll", "--images", "4", "--timesteps", "2", "--checkpoint", "{ck}", "--data-dir", "{gen}/idx_narrow"], Db::None, "28×7|28x7|7×28|7x28", true),
    case("idx_corrupt_gzip", tiny!["train"; "--db", "{db}", "--set", "dataset=mnist", "--set", "data_dir={gen}/idx_bad_gzip"], Absent, "corrupt gzip", true),
    case("idx_bad_magic", tiny!["train"; "--db", "{db}", "--set", "dataset=mnist", "--set", "data_dir={gen}/idx_bad_magic"], Absent, "not an IDX file", true),
    case("idx_truncated_body", tiny!["train"; "--db", "{db}", "--set", "dataset=mnist", "--set", "data_dir={gen}/idx_truncated"], Absent, "header promises", true),
    case("idx_label_count_mismatch", tiny!["train"; "--db", "{db}", "--set", "dataset=mnist", "--set", "data_dir={gen}/idx_label_count"], Absent, "labels for", true),
    case("idx_label_out_of_range", tiny!["train"; "--db", "{db}", "--set", "dataset=mnist", "--set", "data_dir={gen}/idx_label_range"], Absent, "outside 0..=9", true),
    case("idx_labels_missing", tiny!["train"; "--db", "{db}", "--set", "dataset=mnist", "--set", "data_dir={gen}/idx_no_labels"], Absent, "labels", true),
    case("idx_folder_empty", tiny!["train"; "--db", "{db}", "--set", "dataset=mnist", "--set", "data_dir={gen}/empty_dir"], Absent, "holds no IDX", true),
    case("data_dir_missing", tiny!["train"; "--db", "{db}", "--set", "dataset=mnist", "--set", "data_dir={case}/none"], Absent, "none", true),
    case("cifar_wrong_size", tiny!["train"; "--db", "{db}", "--set", "dataset=cifar10", "--set", "data_dir={gen}/cifar_bad"], Absent, "CIFAR-10 records", true),
    case("cifar_missing_batches", tiny!["train"; "--db", "{db}", "--set", "dataset=cifar10", "--set", "data_dir={gen}/empty_dir"], Absent, "is missing", true),
    case("folder_corrupt_png", tiny!["train"; "--db", "{db}", "--set", "dataset=folder", "--set", "image_size=16", "--set", "data_dir={gen}/bad_png"], Absent, "cannot decode", true),

    // ---- Corrupt checkpoints.
    case("sample_checkpoint_missing", &["sample", "--checkpoint", "{case}/none.safetensors", "--out", "{case}/s.png"], Db::None, "none.safetensors", true),
    case("sample_checkpoint_random_bytes", &["sample", "--checkpoint", "{gen}/random.safetensors", "--out", "{case}/s.png"], Db::None, "random.safetensors", true),
    case("sample_checkpoint_truncated", &["sample", "--checkpoint", "{gen}/truncated.safetensors", "--out", "{case}/s.png"], Db::None, "truncated.safetensors", true),
    case("sample_checkpoint_empty", &["sample", "--checkpoint", "{gen}/empty.safetensors", "--out", "{case}/s.png"], Db::None, "empty.safetensors", true),
    case("sample_checkpoint_is_a_png", &["sample", "--checkpoint", "{gen}/bad_png/a.png", "--out", "{case}/s.png"], Db::None, "a.png", true),
    case("sample_checkpoint_is_a_folder", &["sample", "--checkpoint", "{gen}", "--out", "{case}/s.png"], Db::None, "cannot read", true),
    case("eval_checkpoint_random_bytes", &["eval", "--nll", "--checkpoint", "{gen}/random.safetensors"], Db::None, "random.safetensors", true),
    case("eval_checkpoint_truncated", &["eval", "--nll", "--checkpoint", "{gen}/truncated.safetensors"], Db::None, "truncated.safetensors", true),
    case("sample_clip_random_bytes", &["sample", "--checkpoint", "{ck}", "--guidance", "clip", "--prompt", "a handwritten three", "--clip", "{gen}/random.safetensors", "--out", "{case}/s.png"], Db::None, "random.safetensors", true),
    // Item 11: a judge that cannot be read is reported before the sampling, not after.
    case("sample_judge_random_bytes", &["sample", "--checkpoint", "{ck}", "-n", "16", "--sampler", "ddpm", "--judge", "{gen}/random.safetensors", "--out", "{case}/s.png"], Db::None, "random.safetensors|prompt", true),

    // ---- Sampling and evaluation flags.
    case("sample_zoom_zero", &["sample", "--checkpoint", "{ck}", "-n", "1", "--zoom", "0", "--out", "{case}/s.png"], Db::None, "zoom", true),
    case("sample_n_zero", &["sample", "--checkpoint", "{ck}", "-n", "0", "--out", "{case}/s.png"], Db::None, "--n", true),
    case("sample_steps_above_t", &["sample", "--checkpoint", "{ck}", "--steps", "500", "--out", "{case}/s.png"], Db::None, "500", true),
    case("sample_eta_negative", &["sample", "--checkpoint", "{ck}", "--eta=-1", "--out", "{case}/s.png"], Db::None, "η|eta", true),
    case("sample_variance_unknown", &["sample", "--checkpoint", "{ck}", "--sampler", "ddpm", "--variance", "banana", "--out", "{case}/s.png"], Db::None, "banana", true),
    case("sample_spacing_unknown", &["sample", "--checkpoint", "{ck}", "--spacing", "banana", "--out", "{case}/s.png"], Db::None, "banana", true),
    case("eval_without_nll", &["eval", "--checkpoint", "{ck}"], Db::None, "--nll", true),
    case("eval_images_zero", &["eval", "--nll", "--images", "0", "--checkpoint", "{ck}"], Db::None, "--images", true),
    case("eval_data_dir_missing", &["eval", "--nll", "--checkpoint", "{ck}", "--data-dir", "{case}/none"], Db::None, "none", true),
    case("schedule_t_zero", &["schedule", "--kind", "linear", "--steps", "0"], Db::None, "T = 0", true),
    case("schedule_beta_end_above_one", &["schedule", "--kind", "quadratic", "--steps", "10", "--beta-end", "1.2"], Db::None, "beta_end = 1.2", true),
    case("schedule_beta_start_negative", &["schedule", "--kind", "linear", "--steps", "10", "--beta-start=-0.1"], Db::None, "beta_start", true),

    // ---- Item 8: every flag is checked before the first write.
    case("slurm_time_banana", &["sweep", "{fx}/one_run.toml", "--slurm", "--single-node", "--time", "banana", "--db", "{db}", "--out", "{case}/runs"], Rows, "banana", true),
    case("slurm_without_single_node_on_sqlite", &["sweep", "{fx}/one_run.toml", "--slurm", "--db", "{db}"], Rows, "SQLite", true),
    case("slurm_workers_zero", &["sweep", "{fx}/one_run.toml", "--slurm", "--single-node", "--workers", "0", "--db", "{db}", "--out", "{case}/runs"], Rows, "workers", true),
    case("sweep_jobs_zero", &["sweep", "{fx}/one_run.toml", "--jobs", "0", "--db", "{db}"], Rows, "--jobs", true),
    case("sweep_device_unknown", &["sweep", "{fx}/one_run.toml", "--device", "tpu", "--db", "{db}"], Rows, "tpu", true),

    // ---- Read-only folders and full disks.
    case("sample_out_read_only", &["sample", "--checkpoint", "{ck}", "-n", "1", "--out", "{ro}/s.png"], Db::None, "s.png", true),
    case("sample_out_full_disk", &["sample", "--checkpoint", "{ck}", "-n", "1", "--out", "{fullfile}"], Db::None, "s.png|/dev/full", true),
    case("train_db_in_read_only_folder", tiny!["train"; "--db", "sqlite://{ro}/db.sqlite"], Db::None, "db.sqlite", true),
    case("train_out_read_only", tiny!["train"; "--db", "{db}", "--out", "{ro}/runs"], Rows, "runs", true),
    case("train_out_full_disk", tiny!["train"; "--db", "{db}", "--out", "{full}/runs"], Rows, "runs|space", true),
    case("report_out_read_only", &["report", "--sweep", "one-run", "--db", "{db}", "--out", "{ro}/report"], Bytes, "report", true),
    case("report_out_full_disk", &["report", "--sweep", "one-run", "--db", "{db}", "--out", "{full}/report"], Bytes, "report|space", true),
];

/// Where everything of one test run lives.
struct Env {
    root: PathBuf,
    fx: PathBuf,
    gen_dir: PathBuf,
    prepared: PathBuf,
    checkpoint: PathBuf,
    counts: Vec<i64>,
    root_user: bool,
}

const TABLES: [&str; 5] = ["sweeps", "runs", "metrics", "samples", "evals"];

fn url_of(file: &Path) -> String {
    format!("sqlite://{}", file.display())
}

/// Row counts of the store's tables, or why they cannot be read.
fn row_counts(file: &Path) -> Result<Vec<i64>, String> {
    let sql = TABLES
        .iter()
        .map(|t| format!("(SELECT COUNT(*) FROM {t})"))
        .collect::<Vec<_>>()
        .join(", ");
    let url = url_of(file);
    std::panic::catch_unwind(|| sqlite_rows(&url, &format!("SELECT {sql}")))
        .map_err(|_| "the store's tables cannot be read".to_string())
        .map(|rows| rows[0].iter().map(|v| v.parse().unwrap_or(-1)).collect())
}

/// Deterministic bytes that are neither SQLite, gzip, IDX nor safetensors.
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// An IDX file of unsigned bytes: magic, dimensions, data.
fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// A folder of MNIST-style train and t10k files: `n` images of `h`×`w` each.
fn write_idx_set(dir: &Path, n: u32, h: u32, w: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let pixels = random_bytes((n * h * w) as usize, u64::from(h * 31 + w));
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    for set in ["train", "t10k"] {
        std::fs::write(
            dir.join(format!("{set}-images-idx3-ubyte")),
            idx_bytes(&[n, h, w], &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{set}-labels-idx1-ubyte")),
            idx_bytes(&[n], &labels),
        )
        .unwrap();
    }
}

fn write(path: PathBuf, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The data files too large or too binary to commit.
fn generate_fixtures(g: &Path) {
    write_idx_set(&g.join("idx_28"), 16, 28, 28);
    write_idx_set(&g.join("idx_zero"), 16, 0, 0);
    write_idx_set(&g.join("idx_one"), 16, 1, 1);
    write_idx_set(&g.join("idx_narrow"), 16, 28, 7);
    write_idx_set(&g.join("idx_small"), 16, 20, 20);

    let labels = idx_bytes(&[16], &[1; 16]);
    let images = idx_bytes(&[16, 28, 28], &[7; 16 * 28 * 28]);
    let set = |dir: &str, img: &[u8], lab: &[u8]| {
        write(g.join(dir).join("t10k-images-idx3-ubyte"), img);
        write(g.join(dir).join("train-images-idx3-ubyte"), img);
        write(g.join(dir).join("t10k-labels-idx1-ubyte"), lab);
        write(g.join(dir).join("train-labels-idx1-ubyte"), lab);
    };
    // gzip's magic number, then bytes that do not inflate.
    let mut gz = vec![0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 0xff];
    gz.extend(random_bytes(600, 3));
    write(g.join("idx_bad_gzip/t10k-images-idx3-ubyte.gz"), &gz);
    write(g.join("idx_bad_gzip/t10k-labels-idx1-ubyte"), &labels);
    set("idx_bad_magic", &random_bytes(600, 4), &labels);
    set("idx_truncated", &images[..images.len() - 100], &labels);
    set("idx_label_count", &images, &idx_bytes(&[15], &[1; 15]));
    set("idx_label_range", &images, &idx_bytes(&[16], &[42; 16]));
    write(g.join("idx_no_labels/t10k-images-idx3-ubyte"), &images);
    std::fs::create_dir_all(g.join("empty_dir")).unwrap();

    for i in 1..=5 {
        write(
            g.join(format!("cifar_bad/data_batch_{i}.bin")),
            random_bytes(100, i),
        );
    }
    write(g.join("cifar_bad/test_batch.bin"), random_bytes(100, 9));

    std::fs::create_dir_all(g.join("bad_png")).unwrap();
    image::RgbImage::from_pixel(4, 4, image::Rgb([200, 10, 10]))
        .save(g.join("bad_png/a.png"))
        .unwrap();
    let mut broken = std::fs::read(g.join("bad_png/a.png")).unwrap();
    broken.truncate(20);
    broken.extend(random_bytes(200, 5));
    write(g.join("bad_png/b.png"), &broken);

    write(g.join("random.safetensors"), random_bytes(4096, 6));
    write(g.join("random.toml"), random_bytes(2048, 7));
    write(g.join("empty.safetensors"), b"");

    let spec = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/bad_inputs/one_run.toml"),
    )
    .unwrap();
    write(
        g.join("longest.toml"),
        spec.replace("\"one-run\"", &format!("\"{}\"", "n".repeat(5000))),
    );
    // 100 × 100 × 100 valid runs.
    let axis = |f: &dyn Fn(usize) -> String| (0..100).map(f).collect::<Vec<_>>().join(", ");
    let million = spec
        .replace("[grid]\nseed = [0]", "")
        .replace("name = \"one-run\"", "name = \"million\"")
        + &format!(
            "[grid]\nseed = [{}]\nlr = [{}]\nema_decay = [{}]\n",
            axis(&|i| i.to_string()),
            axis(&|i| format!("{:.6}", 0.0001 + i as f64 * 0.000001)),
            axis(&|i| format!("{:.4}", 0.9 + i as f64 * 0.0009)),
        );
    write(g.join("million.toml"), million);
}

/// A SQLite file with another program's tables, one named like ddlab's, in SQLite's default
/// rollback-journal mode.
fn write_foreign_sqlite(file: &Path) {
    let url = format!("{}?mode=rwc", url_of(file));
    sqlite_rows(
        &url,
        "CREATE TABLE runs (id INTEGER PRIMARY KEY, athlete TEXT, km REAL)",
    );
    sqlite_rows(&url, "INSERT INTO runs (athlete, km) VALUES ('ann', 5.0)");
    // The default of other programs (sqlx chose WAL on creating it).
    sqlite_rows(&url, "PRAGMA journal_mode = DELETE");
}

/// One completed tiny run on 28×28 IDX images: the store and checkpoint many cases start from.
fn prepare(root: &Path, fx: &Path, gen_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = root.join("prepared");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("db.sqlite");
    run_ok(
        ddlab()
            .current_dir(&dir)
            .arg("sweep")
            .arg(fx.join("one_run.toml"))
            .args(["--no-report", "--db", &url_of(&db), "--out"])
            .arg(dir.join("runs"))
            .args(["--set", "dataset=mnist", "--set"])
            .arg(format!("data_dir={}", gen_dir.join("idx_28").display())),
    );
    // Everything into the main file, so that a copy of it is the whole store.
    sqlite_rows(&url_of(&db), "PRAGMA wal_checkpoint(TRUNCATE)");
    let ck = find_file(&dir.join("runs"), "checkpoint.safetensors").expect("a checkpoint");
    let bytes = std::fs::read(&ck).unwrap();
    write(
        gen_dir.join("truncated.safetensors"),
        &bytes[..bytes.len() / 2],
    );
    (db, ck)
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if p.is_dir()
            && let Some(f) = find_file(&p, name)
        {
            return Some(f);
        }
    }
    None
}

/// A tmpfs mounted for one case (root only), unmounted when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, options: &str) -> Option<Mount> {
    std::fs::create_dir_all(dir).ok()?;
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs"])
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Mount(dir.to_path_buf()))
}

/// A folder nobody may write to: mode 0555, or for root (whom modes do not stop) a read-only
/// tmpfs. None when neither can be had.
fn read_only_dir(dir: &Path, root_user: bool) -> Option<Option<Mount>> {
    if root_user {
        return mount_tmpfs(dir, "ro,size=64k").map(Some);
    }
    std::fs::create_dir_all(dir).ok()?;
    let mut perms = std::fs::metadata(dir).ok()?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
    std::fs::set_permissions(dir, perms).ok()?;
    Some(None)
}

/// A tiny tmpfs filled to the last byte (root only).
fn full_dir(dir: &Path) -> Option<Mount> {
    let m = mount_tmpfs(dir, "size=64k")?;
    let mut f = std::fs::File::create(dir.join("filler")).ok()?;
    let chunk = [0u8; 4096];
    while f.write_all(&chunk).and_then(|_| f.flush()).is_ok() {}
    Some(m)
}

/// The result of one `ddlab` process.
struct Ran {
    status: Option<ExitStatus>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `cmd` under the corpus's memory limit, killing it after `DEADLINE`.
fn run_limited(mut cmd: Command) -> Ran {
    // SAFETY: only async-signal-safe setrlimit calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mem = libc::rlimit {
                rlim_cur: MEMORY_LIMIT,
                rlim_max: MEMORY_LIMIT,
            };
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_AS, &mem);
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            Ok(())
        });
    }
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ddlab starts");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = vec![];
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// What a store looked like before a case.
enum Before {
    Nothing,
    Bytes(Vec<u8>),
    Counts(Vec<i64>),
    Absent,
}

impl Env {
    /// Sets up the store of a case at `file`; returns what to compare it with afterwards.
    fn setup_store(&self, db: Db, file: &Path) -> Before {
        let copy = || std::fs::copy(self.prepared.join("db.sqlite"), file).unwrap();
        match db {
            Db::None => Before::Nothing,
            Rows => {
                copy();
                Before::Counts(self.counts.clone())
            }
            Bytes => {
                copy();
                Before::Bytes(std::fs::read(file).unwrap())
            }
            BytesAfter(sql) => {
                copy();
                sqlite_rows(&url_of(file), sql);
                sqlite_rows(&url_of(file), "PRAGMA wal_checkpoint(TRUNCATE)");
                Before::Bytes(std::fs::read(file).unwrap())
            }
            Foreign => {
                std::fs::copy(self.gen_dir.join("foreign.sqlite"), file).unwrap();
                Before::Bytes(std::fs::read(file).unwrap())
            }
            Random => {
                write(file.to_path_buf(), random_bytes(8192, 8));
                Before::Bytes(std::fs::read(file).unwrap())
            }
            Empty => {
                write(file.to_path_buf(), b"");
                Before::Bytes(vec![])
            }
            Absent => Before::Absent,
        }
    }

    /// Replaces the placeholders of one argument.
    fn expand(&self, arg: &str, case_dir: &Path, db_file: &Path) -> String {
        let long = "n".repeat(5000);
        let subs: [(&str, String); 10] = [
            ("{db}", url_of(db_file)),
            ("{case}", case_dir.display().to_string()),
            ("{fx}", self.fx.display().to_string()),
            ("{gen}", self.gen_dir.display().to_string()),
            ("{ck}", self.checkpoint.display().to_string()),
            ("{prepared}", self.prepared.display().to_string()),
            ("{ro}", case_dir.join("ro").display().to_string()),
            ("{fullfile}", self.full_file(case_dir)),
            ("{full}", case_dir.join("full").display().to_string()),
            ("{long}", long),
        ];
        subs.iter()
            .fold(arg.to_string(), |a, (k, v)| a.replace(k, v))
    }

    /// A file on a full disk: on the case's full tmpfs for root, else /dev/full (never for
    /// root: its temporary file beside /dev/full would be renamed over the device).
    fn full_file(&self, case_dir: &Path) -> String {
        if self.root_user {
            case_dir.join("full/s.png").display().to_string()
        } else {
            "/dev/full".into()
        }
    }

    /// Runs one case; returns its problems (empty: it behaved), or Err(why it was skipped).
    fn run_case(&self, number: usize, c: &Case) -> Result<Vec<String>, String> {
        // Numbered, not named: a needle must not be found in a path that merely repeats it.
        let case_dir = self.root.join("cases").join(format!("{number:03}"));
        let cwd = case_dir.join("cwd");
        std::fs::create_dir_all(&cwd).unwrap();
        let db_file = case_dir.join("db.sqlite");
        let before = self.setup_store(c.db, &db_file);
        let uses = |p: &str| c.args.iter().any(|a| a.contains(p));
        let mut mounts = vec![];
        if uses("{ro}") {
            match read_only_dir(&case_dir.join("ro"), self.root_user) {
                Some(m) => mounts.extend(m),
                None => return Err("no read-only folder can be made here".into()),
            }
        }
        if uses("{full}") || (uses("{fullfile}") && self.root_user) {
            match full_dir(&case_dir.join("full")) {
                Some(m) => mounts.push(m),
                None => {
                    return Err("no full disk can be simulated here (needs root and mount)".into());
                }
            }
        }
        let args: Vec<String> = c
            .args
            .iter()
            .map(|a| self.expand(a, &case_dir, &db_file))
            .collect();
        let mut cmd = ddlab();
        cmd.current_dir(&cwd)
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .env("MALLOC_ARENA_MAX", "2")
            .env_remove("DDLAB_THREADS");
        let ran = run_limited(cmd);
        let mut problems = check_output(&ran, &self.expand(c.needle, &case_dir, &db_file));
        let err = String::from_utf8_lossy(&ran.stderr);
        if let Some(avoid) = c.avoid.filter(|a| err.contains(a)) {
            problems.push(format!("stderr names the wrong problem ({avoid:?})"));
        }
        if std::env::var_os("BAD_INPUTS_SHOW").is_some() {
            eprintln!("{}: {err:?}", c.name);
        }
        problems.extend(check_store(&before, &db_file));
        let left: Vec<String> = std::fs::read_dir(&cwd)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !left.is_empty() {
            problems.push(format!("wrote into its working folder: {left:?}"));
        }
        drop(mounts);
        Ok(problems)
    }
}

/// Exit status, stderr and speed of one case.
fn check_output(ran: &Ran, needle: &str) -> Vec<String> {
    let mut problems = vec![];
    let err = String::from_utf8_lossy(&ran.stderr);
    match ran.status {
        None => problems.push(format!("still running after {DEADLINE:?}; killed")),
        Some(s) if s.success() => problems.push(format!(
            "exit 0 (stdout: {:?})",
            String::from_utf8_lossy(&ran.stdout)
                .chars()
                .take(120)
                .collect::<String>()
        )),
        Some(s) if s.code().is_none() => problems.push(format!("killed by a signal ({s})")),
        Some(s) if s.code() != Some(1) && s.code() != Some(2) => {
            problems.push(format!("exit {}", s.code().unwrap()))
        }
        Some(_) => {}
    }
    let lines: Vec<&str> = err.lines().collect();
    if lines.len() != 1 || lines[0].trim().is_empty() {
        let shown: String = err.chars().take(300).collect();
        problems.push(format!(
            "{} lines ({} bytes) on stderr: {shown:?}",
            lines.len(),
            err.len()
        ));
    }
    if [
        "stack backtrace",
        "panicked at",
        "RUST_BACKTRACE",
        "\n   0: ",
    ]
    .iter()
    .any(|b| err.contains(b))
    {
        problems.push("a backtrace or panic on stderr".into());
    }
    if !needle.split('|').any(|n| err.contains(n)) {
        problems.push(format!("stderr lacks {needle:?}"));
    }
    problems
}

fn check_store(before: &Before, file: &Path) -> Vec<String> {
    match before {
        Before::Nothing => vec![],
        Before::Absent if file.exists() => vec!["created the database".into()],
        Before::Absent => vec![],
        Before::Bytes(b) => match std::fs::read(file) {
            Ok(now) if &now == b => vec![],
            Ok(now) => vec![format!(
                "changed the database file ({} → {} bytes)",
                b.len(),
                now.len()
            )],
            Err(e) => vec![format!("the database file is gone: {e}")],
        },
        Before::Counts(c) => match row_counts(file) {
            Ok(now) if &now == c => vec![],
            Ok(now) => vec![format!(
                "changed the store's rows ({TABLES:?}: {c:?} → {now:?})"
            )],
            Err(e) => vec![e],
        },
    }
}

fn setup_env(root: &Path) -> Env {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/bad_inputs");
    let fx = fx.canonicalize().unwrap();
    let gen_dir = root.join("gen");
    generate_fixtures(&gen_dir);
    write_foreign_sqlite(&gen_dir.join("foreign.sqlite"));
    let (db, checkpoint) = prepare(root, &fx, &gen_dir);
    let counts = row_counts(&db).unwrap();
    Env {
        root: root.to_path_buf(),
        fx,
        gen_dir,
        prepared: root.join("prepared"),
        checkpoint,
        counts,
        // SAFETY: a plain query of this process's credentials.
        root_user: unsafe { libc::geteuid() } == 0,
    }
}

#[test]
fn every_bad_input_is_one_sentence_a_nonzero_exit_and_no_change() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert!(CASES.len() >= 60, "the corpus has {} cases", CASES.len());
    let mut names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), CASES.len(), "case names are unique");

    let t = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let env = setup_env(tmp.path());
    eprintln!("prepared in {:.1} s", t.elapsed().as_secs_f64());
    let (mut regressions, mut still_open, mut now_pass, mut skipped) =
        (vec![], vec![], vec![], vec![]);
    for (i, c) in CASES.iter().enumerate() {
        let t = Instant::now();
        let result = env.run_case(i, c);
        let secs = t.elapsed().as_secs_f64();
        match result {
            Err(why) => skipped.push(format!("{}: {why}", c.name)),
            Ok(p) if p.is_empty() && !c.fixed_by_now => now_pass.push(c.name.to_string()),
            Ok(p) if p.is_empty() => {}
            Ok(p) => {
                let line = format!("{} ({secs:.1} s): {}", c.name, p.join("; "));
                if c.fixed_by_now {
                    regressions.push(line);
                } else {
                    still_open.push(line);
                }
            }
        }
    }
    eprintln!(
        "\n{} cases in {:.1} s",
        CASES.len(),
        t.elapsed().as_secs_f64()
    );
    for (title, list) in [
        ("skipped", &skipped),
        ("not fixed yet (fixed_by_now = false)", &still_open),
        ("now pass: flip fixed_by_now to true", &now_pass),
        ("FAILED (fixed_by_now = true)", &regressions),
    ] {
        if !list.is_empty() {
            eprintln!("\n{title}: {}", list.len());
            for l in list {
                eprintln!("  {l}");
            }
        }
    }
    assert!(
        regressions.is_empty(),
        "{} case(s) marked fixed_by_now misbehave:\n{}",
        regressions.len(),
        regressions.join("\n")
    );
}

/// Prints how a check outside the table went; fails only when it is marked fixed.
fn verdict(name: &str, fixed_by_now: bool, problems: &[String]) {
    match (problems.is_empty(), fixed_by_now) {
        (true, false) => eprintln!("{name}: now passes: flip its fixed_by_now to true"),
        (true, true) => {}
        (false, false) => eprintln!("{name}: not fixed yet: {}", problems.join("; ")),
        (false, true) => panic!("{name}: {}", problems.join("; ")),
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/bad_inputs")
        .join(name)
}

/// Problems if `out` holds a raw ESC or BEL byte.
fn raw_escapes(what: &str, out: &[u8]) -> Option<String> {
    let n = out.iter().filter(|b| **b == 0x1b || **b == 0x07).count();
    (n > 0).then(|| format!("{what} printed {n} raw ESC/BEL byte(s)"))
}

/// Item 9: a string from a spec or the store reaches the terminal with its control characters
/// escaped.
#[test]
fn printed_names_carry_no_terminal_escapes() {
    const FIXED_BY_NOW: bool = true;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let spec = fixture("escape_prompt.toml");
    let mut problems = vec![];
    let mut step = |what: &str, args: &[&str]| {
        let out = ddlab()
            .current_dir(dir.path())
            .args(args)
            .arg(&spec)
            .output()
            .unwrap();
        problems.extend(raw_escapes(what, &out.stdout));
        problems.extend(raw_escapes(what, &out.stderr));
        out.status.success()
    };
    step("sweep --dry-run", &["sweep", "--dry-run"]);
    let registered = step(
        "sweep --register-only",
        &["sweep", "--register-only", "--db", &db],
    );
    if registered {
        for args in [
            vec!["runs", "--db", db.as_str()],
            vec!["runs", "--json", "--db", db.as_str()],
        ] {
            let out = ddlab().args(&args).output().unwrap();
            problems.extend(raw_escapes(&args.join(" "), &out.stdout));
            problems.extend(raw_escapes(&args.join(" "), &out.stderr));
        }
    }
    verdict(
        "printed_names_carry_no_terminal_escapes",
        FIXED_BY_NOW,
        &problems,
    );
}

/// Item 2: a fresh database with the same configuration and output folder trains its own run
/// instead of resuming the other database's checkpoint.
#[test]
fn a_fresh_database_does_not_resume_another_databases_checkpoint() {
    const FIXED_BY_NOW: bool = true;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let spec = fixture("one_run.toml");
    let (a, b) = (
        sqlite_url(dir.path()),
        format!("sqlite://{}", dir.path().join("other.sqlite").display()),
    );
    let sweep = |db: &str| {
        run_ok(
            ddlab()
                .current_dir(dir.path())
                .arg("sweep")
                .arg(&spec)
                .args(["--no-report", "--db", db]),
        )
    };
    sweep(&a);
    let out = sweep(&b);
    let err = String::from_utf8_lossy(&out.stderr);
    let mut problems = vec![];
    if err.contains("resuming from step") {
        problems.push("the second database resumed the first one's checkpoint".to_string());
    }
    let losses = sqlite_rows(&b, "SELECT COUNT(*) FROM metrics WHERE name = 'loss'");
    if losses[0][0] != "4" {
        problems.push(format!(
            "the second database recorded {} of its 4 training losses",
            losses[0][0]
        ));
    }
    verdict(
        "a_fresh_database_does_not_resume_another_databases_checkpoint",
        FIXED_BY_NOW,
        &problems,
    );
}

/// Item 3: a run killed (SIGKILL) while it draws a sample grid draws that grid when resumed.
#[test]
fn a_grid_interrupted_by_kill_is_drawn_on_resume() {
    const FIXED_BY_NOW: bool = true;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let spec = fixture("one_run.toml");
    let keys = [
        "--set",
        "sample_every=2",
        "--set",
        "checkpoint_every=2",
        "--set",
        "sample_count=64",
        "--set",
        "sample_steps=50",
        "--set",
        "eval_nll=false",
    ];
    let mut child = ddlab()
        .current_dir(dir.path())
        .arg("sweep")
        .arg(&spec)
        .args(["--no-report", "--db", &db])
        .args(keys)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut stderr, &mut line).unwrap_or(0) > 0 {
        seen.push_str(&line);
        if line.contains("sampling") {
            break;
        }
        line.clear();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen.contains("sampling"), "the run never sampled: {seen}");
    run_ok(
        ddlab()
            .current_dir(dir.path())
            .arg("sweep")
            .arg(&spec)
            .args(["--no-report", "--db", &db])
            .args(keys),
    );
    let steps: Vec<String> = sqlite_rows(&db, "SELECT step FROM samples ORDER BY step")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let mut problems = vec![];
    if steps != ["2", "4"] {
        problems.push(format!(
            "sample grids recorded at steps {steps:?}, not [2, 4]"
        ));
    }
    verdict(
        "a_grid_interrupted_by_kill_is_drawn_on_resume",
        FIXED_BY_NOW,
        &problems,
    );
}
