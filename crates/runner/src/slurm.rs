//! Slurm: the sbatch script of a job array of `ddlab work` workers, submitting and cancelling
//! it, and reading the state of array tasks so that a run held by a task that ended
//! (FAILED, CANCELLED, TIMEOUT, PREEMPTED, NODE_FAIL, …) returns to the queue at once.
//!
//! Each task `exec`s the worker, so the worker *is* the batch shell: the warning signal is
//! therefore requested as `--signal=B:USR1@120` (a plain `USR1@120` reaches only `srun`
//! steps, which this script does not start). On USR1 the worker checkpoints its run, hands it
//! back and exits before the time limit.

use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the job array asks of Slurm.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    pub sweep: String,
    pub db_url: String,
    /// Array size: the number of workers.
    pub workers: usize,
    pub partition: Option<String>,
    pub gpus_per_task: usize,
    pub cpus_per_task: Option<usize>,
    /// HH:MM:SS (or D-HH:MM:SS).
    pub time: Option<String>,
    /// Absolute: checkpoints, where every node can read them.
    pub checkpoint_dir: PathBuf,
    pub log_dir: PathBuf,
    pub workdir: PathBuf,
    pub ddlab: PathBuf,
}

/// Refuses SQLite for multi-node work: SQLite's locking is unsafe on network file systems.
pub fn check_db_for_cluster(url: &str, single_node: bool) -> Result<()> {
    if url.starts_with("sqlite:") && !single_node {
        bail!(
            "--slurm with a SQLite database is unsafe (SQLite's locks do not work on network file \
             systems): use PostgreSQL (--db postgres://…), or pass --single-node if every task runs on this machine"
        );
    }
    Ok(())
}

fn valid_time(t: &str) -> bool {
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, t),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    days.is_none_or(|d| d.parse::<u32>().is_ok())
        && (1..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.parse::<u32>().is_ok())
}

/// Quotes a string for a POSIX shell.
fn sh(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:=@+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The flags of a Slurm launch that can be checked before anything is recorded.
pub fn check_flags(workers: Option<usize>, time: Option<&str>) -> Result<()> {
    if workers == Some(0) {
        bail!("--workers must be at least 1");
    }
    if let Some(t) = time.filter(|t| !valid_time(t)) {
        bail!(
            "--time {} is not a Slurm time (HH:MM:SS, MM:SS or D-HH:MM:SS)",
            t.escape_debug()
        );
    }
    Ok(())
}

/// The sbatch script.
pub fn script(o: &SlurmOptions) -> Result<String> {
    check_flags(Some(o.workers), o.time.as_deref())?;
    if o.sweep.contains(['\n', '\'']) {
        bail!("the sweep name cannot contain newlines or quotes for a Slurm job");
    }
    let mut s = String::new();
    let name: String = o
        .sweep
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let _ = writeln!(s, "#!/bin/bash");
    let _ = writeln!(
        s,
        "# ddlab workers for sweep `{}`: each array task claims runs until none is left.",
        o.sweep
    );
    let _ = writeln!(s, "#SBATCH --job-name=ddlab-{name}");
    let _ = writeln!(s, "#SBATCH --array=0-{}", o.workers - 1);
    let _ = writeln!(s, "#SBATCH --output={}/%x-%A_%a.out", o.log_dir.display());
    let _ = writeln!(s, "#SBATCH --chdir={}", o.workdir.display());
    let _ = writeln!(s, "#SBATCH --signal=B:USR1@120");
    let _ = writeln!(s, "#SBATCH --ntasks=1");
    if let Some(p) = &o.partition {
        let _ = writeln!(s, "#SBATCH --partition={p}");
    }
    if o.gpus_per_task > 0 {
        let _ = writeln!(s, "#SBATCH --gres=gpu:{}", o.gpus_per_task);
    }
    if let Some(c) = o.cpus_per_task {
        let _ = writeln!(s, "#SBATCH --cpus-per-task={c}");
    }
    if let Some(t) = &o.time {
        let _ = writeln!(s, "#SBATCH --time={t}");
    }
    let _ = writeln!(s);
    let device = if o.gpus_per_task > 0 { "cuda" } else { "cpu" };
    let threads = o
        .cpus_per_task
        .map(|c| format!(" --threads {c}"))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "exec {} work --sweep {} --db {} --checkpoint-dir {} --device {device} --jobs {}{threads}",
        sh(&o.ddlab.display().to_string()),
        sh(&o.sweep),
        sh(&o.db_url),
        sh(&o.checkpoint_dir.display().to_string()),
        o.gpus_per_task.max(1)
    );
    Ok(s)
}

fn run_tool(tool: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(tool).args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!("`{tool}` was not found: Slurm's client commands must be on the PATH")
        } else {
            anyhow::anyhow!("cannot run `{tool}`: {e}")
        }
    })?;
    if !out.status.success() {
        bail!(
            "`{tool} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Submits a script; returns the job id.
pub fn submit(script_path: &Path) -> Result<String> {
    let path = script_path.display().to_string();
    let out = run_tool("sbatch", &["--parsable", &path])?;
    let id = out.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch answered `{}` instead of a job id", out.trim());
    }
    Ok(id)
}

/// Cancels a job (all its array tasks).
pub fn cancel(job: &str) -> Result<()> {
    run_tool("scancel", &[job]).map(|_| ())
}

/// Slurm job states after which a task holds nothing any more.
const ENDED: [&str; 9] = [
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "PREEMPTED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
];

/// The state of array task `job_task` of job `job` (e.g. RUNNING, CANCELLED), or None when
/// Slurm does not know it (no Slurm here, or the record expired).
pub fn task_state(job: &str, task: i64) -> Option<String> {
    let out = Command::new("scontrol")
        .args(["show", "job", &format!("{job}_{task}")])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("JobState="))
        .map(str::to_string)
}

/// Whether Slurm says that task has ended.
pub fn task_ended(job: &str, task: i64) -> bool {
    task_state(job, task).is_some_and(|s| ENDED.contains(&s.as_str()))
}

/// Writes the script next to the run directories and returns its path.
pub fn write_script(o: &SlurmOptions, path: &Path) -> Result<PathBuf> {
    let text = script(o)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::create_dir_all(&o.log_dir)
        .with_context(|| format!("cannot create {}", o.log_dir.display()))?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> SlurmOptions {
        SlurmOptions {
            sweep: "s1".into(),
            db_url: "postgres://u:p@db/ddlab".into(),
            workers: 4,
            partition: Some("gpu".into()),
            gpus_per_task: 1,
            cpus_per_task: Some(8),
            time: Some("12:00:00".into()),
            checkpoint_dir: "/shared/runs".into(),
            log_dir: "/shared/logs".into(),
            workdir: "/home/me/ddlab".into(),
            ddlab: "/home/me/ddlab/target/release/ddlab".into(),
        }
    }

    #[test]
    fn every_flag_becomes_a_directive() {
        let s = script(&opts()).unwrap();
        for line in [
            "#SBATCH --array=0-3",
            "#SBATCH --partition=gpu",
            "#SBATCH --gres=gpu:1",
            "#SBATCH --cpus-per-task=8",
            "#SBATCH --time=12:00:00",
            "#SBATCH --signal=B:USR1@120",
            "#SBATCH --output=/shared/logs/%x-%A_%a.out",
            "exec /home/me/ddlab/target/release/ddlab work --sweep s1 --db postgres://u:p@db/ddlab --checkpoint-dir /shared/runs --device cuda --jobs 1 --threads 8",
        ] {
            assert!(s.contains(line), "missing `{line}` in\n{s}");
        }
        let cpu = script(&SlurmOptions {
            gpus_per_task: 0,
            partition: None,
            time: None,
            cpus_per_task: None,
            ..opts()
        })
        .unwrap();
        assert!(
            !cpu.contains("--gres") && !cpu.contains("--partition") && cpu.contains("--device cpu")
        );
        assert!(
            script(&SlurmOptions {
                time: Some("12h".into()),
                ..opts()
            })
            .is_err()
        );
        assert!(
            script(&SlurmOptions {
                workers: 0,
                ..opts()
            })
            .is_err()
        );
        assert_eq!(sh("a b'c"), "'a b'\\''c'");
    }

    #[test]
    fn sqlite_needs_single_node() {
        let e = check_db_for_cluster("sqlite://runs/ddlab.sqlite", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("PostgreSQL") || e.contains("postgres"), "{e}");
        assert!(check_db_for_cluster("sqlite://x", true).is_ok());
        assert!(check_db_for_cluster("postgres://x/y", false).is_ok());
        assert!(valid_time("1-00:00:00") && valid_time("30:00") && !valid_time("1:2:3:4"));
    }
}
