//! Helpers shared by the end-to-end tests: the real `ddlab` binary on tiny, fast settings.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn ddlab() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ddlab"));
    c.env_remove("DDLAB_DB").env("RAYON_NUM_THREADS", "1");
    c
}

/// Keys that make a run take a second or two.
pub const TINY: &[&str] = &[
    "model=tiny",
    "shapes_count=200",
    "batch_size=8",
    "T=50",
    "sample_count=4",
    "sample_steps=5",
    "nll_images=8",
    "nll_timesteps=3",
    "warmup_steps=2",
];

pub fn sets(extra: &[&str]) -> Vec<String> {
    TINY.iter()
        .chain(extra)
        .flat_map(|s| ["--set".to_string(), s.to_string()])
        .collect()
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("ddlab runs");
    assert!(
        out.status.success(),
        "ddlab failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("ddlab.sqlite").display())
}

/// A sweep spec with `runs` runs (seeds) of tiny settings.
pub fn write_spec(dir: &Path, name: &str, seeds: usize, extra: &str) -> PathBuf {
    let seeds: Vec<String> = (0..seeds).map(|s| s.to_string()).collect();
    let tiny: String = TINY
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            if v.parse::<f64>().is_ok() {
                format!("{k} = {v}\n")
            } else {
                format!("{k} = \"{v}\"\n")
            }
        })
        .collect();
    let text = format!(
        "[sweep]\nname = \"{name}\"\n[base]\n{tiny}{extra}\n[grid]\nseed = [{}]\n",
        seeds.join(", ")
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs SQL against a SQLite file with the store's own driver.
pub fn sqlite_rows(url: &str, sql: &str) -> Vec<Vec<String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Row;
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(url).await.unwrap();
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_all(&pool)
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                (0..r.columns().len())
                    .map(|i| {
                        r.try_get::<i64, _>(i)
                            .map(|v| v.to_string())
                            .or_else(|_| r.try_get::<f64, _>(i).map(|v| v.to_string()))
                            .or_else(|_| r.try_get::<String, _>(i))
                            .unwrap_or_else(|_| "NULL".into())
                    })
                    .collect()
            })
            .collect()
    })
}

/// A fresh PostgreSQL database on the test server, or None (with a visible note).
pub fn postgres_db(name: &str) -> Option<String> {
    let Ok(admin) = std::env::var("DDLAB_TEST_POSTGRES_URL") else {
        eprintln!("SKIPPED {name} on PostgreSQL: set DDLAB_TEST_POSTGRES_URL to run it");
        return None;
    };
    let db = format!("ddlab_e2e_{name}_{}", std::process::id());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&admin).await.unwrap();
        for q in [
            format!("DROP DATABASE IF EXISTS {db}"),
            format!("CREATE DATABASE {db}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(q))
                .execute(&pool)
                .await
                .unwrap();
        }
    });
    Some(format!("{}/{db}", admin.rsplit_once('/').unwrap().0))
}

pub fn pg_rows(url: &str, sql: &str) -> Vec<Vec<String>> {
    sqlite_rows(url, sql)
}

/// Whether the store in `dir` exists and its tables are there: a process that creates it makes
/// the file before its first migration commits, and a reader in between sees no tables.
pub fn store_ready(dir: &Path) -> bool {
    dir.join("ddlab.sqlite").exists()
        && sqlite_rows(
            &sqlite_url(dir),
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'runs'",
        )[0][0]
            == "1"
}

/// Polls `f` every 100 ms until it holds or `deadline` passes.
pub fn wait_until(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
