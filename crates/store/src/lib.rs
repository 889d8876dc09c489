//! ddlab's experiment store, the only crate that speaks SQL.
//!
//! One code path for both backends through `sqlx::AnyPool`: SQLite is the embedded default
//! (`sqlite://runs/ddlab.sqlite`, WAL mode, a long busy timeout and `BEGIN IMMEDIATE` writes so
//! that many processes can write at once), PostgreSQL serves many machines (runs are claimed
//! with `FOR UPDATE SKIP LOCKED`). The schema lives in the top-level `migrations/`, one folder
//! per backend. Queries are checked at run time, so a fresh clone builds with no database
//! present.
//!
//! Opening ([`Store::open`]) is where the store protects what is not its own: a file that is
//! not SQLite, or a database of another schema, is refused untouched, and a read-only open
//! ([`OpenMode::ReadOnly`]) never creates, migrates or writes. The queries are grouped by
//! table: [`sweeps`](Store::upsert_sweep), [`runs`](Store::ensure_run),
//! [`metrics`](Store::insert_metrics), [`samples`](Store::insert_sample),
//! [`loss_buckets`](Store::insert_loss_buckets), [`evals`](Store::record_eval), and the per-run [`summaries`](Store::summaries) across them.

mod connect;
mod evals;
mod file;
mod info;
mod loss_buckets;
mod metrics;
mod rows;
mod rungs;
mod runs;
mod samples;
mod schema;
mod summary;
mod sweeps;
mod synthetic;
mod time;

pub use connect::{CONNECT_TIMEOUT, MIGRATOR_POSTGRES, MIGRATOR_SQLITE, OpenMode};
pub use evals::own_evals;
pub use file::FileState;
pub use rows::*;
pub use rungs::{NewRung, RungDecision, RungRow};
pub use runs::STALE_AFTER;
pub use time::now_rfc3339;

use sqlx::AnyPool;
use std::path::{Path, PathBuf};

/// Where the store lives unless `--db` or `DDLAB_DB` says otherwise.
pub const DEFAULT_URL: &str = "sqlite://runs/ddlab.sqlite";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL `{0}` (expected sqlite://PATH or postgres://USER@HOST/DB)")]
    UnsupportedUrl(String),
    #[error(
        "the database URL `{0}` names no file (expected sqlite://PATH, e.g. sqlite://runs/ddlab.sqlite)"
    )]
    EmptySqlitePath(String),
    #[error(
        "the database {0} does not exist (run `ddlab sweep` or `ddlab train` first, or pass --db)"
    )]
    Missing(PathBuf),
    #[error(
        "the database {0} holds no ddlab store yet (run `ddlab sweep` or `ddlab train` first, or pass --db)"
    )]
    Uninitialised(String),
    #[error("{0} is not a SQLite database ({1}), so ddlab left it untouched")]
    NotSqlite(PathBuf, &'static str),
    #[error("the database {url} is not a ddlab store ({why}), so ddlab left it untouched")]
    Foreign { url: String, why: String },
    #[error(
        "the database {url} was written by a newer ddlab (schema version {version}); upgrade ddlab to use it"
    )]
    Newer { url: String, version: i64 },
    #[error(
        "the database {0} was written by an older ddlab; run any writing command (e.g. `ddlab sweep` or `ddlab train`) to upgrade it"
    )]
    NeedsUpgrade(String),
    // The causes are part of the message, not error sources, so a chain printer does not
    // repeat them.
    #[error("cannot open the database {url}: {reason}")]
    Connect { url: String, reason: sqlx::Error },
    #[error("cannot apply the schema migrations to {url}: {reason}")]
    Migrate {
        url: String,
        reason: sqlx::migrate::MigrateError,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool to the store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: String,
    mode: OpenMode,
    /// The SQLite file as it was when opened, to notice it being deleted or replaced.
    file: Option<file::FileIdentity>,
}

/// Hides a password in a URL for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The file behind a `sqlite:` URL (None for in-memory databases and an empty path).
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        None
    } else {
        Some(PathBuf::from(path))
    }
}

/// Resolves the database URL: explicit, else `DDLAB_DB`, else the default file.
pub fn resolve_url(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| std::env::var("DDLAB_DB").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_URL.to_string())
}

/// Turns a path into a `sqlite://` URL.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// A nullable float as the store binds it: NaN stands for NULL. sqlx 0.9's Any driver binds
/// a NULL `f64` as a `float4` on PostgreSQL, and a statement first prepared so on a connection
/// then refuses every `f64` bound to it ("incorrect binary data format"); a NaN is a `float8`
/// like any value. SQLite stores a bound NaN as NULL itself; PostgreSQL reads it back through
/// [`Store::float_arg`].
pub(crate) fn float_param(v: Option<f64>) -> f64 {
    v.filter(|x| x.is_finite()).unwrap_or(f64::NAN)
}

impl Store {
    /// The SQL for placeholder `$n` bound with [`float_param`]: NULL where it is NaN.
    pub(crate) fn float_arg(&self, n: usize) -> String {
        match self.backend() {
            Backend::Sqlite => format!("${n}"),
            Backend::Postgres => format!("NULLIF(${n}, 'NaN'::float8)"),
        }
    }
}

/// Marks SQL text assembled in this crate from constant fragments (column lists, table names,
/// placeholders) as audited: no user input is ever formatted into a statement.
fn sql(text: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(text)
}
