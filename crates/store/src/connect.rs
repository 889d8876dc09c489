//! Opening the store: URL checks, the connection pool, what an existing database holds, and
//! the schema migrations (applied only by writing opens).

use crate::file::FileIdentity;
use crate::schema::{Schema, check_sqlite_header, inspect};
use crate::{Backend, Result, Store, StoreError, redact, sqlite_path};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AnyPool, Connection, Row};
use std::path::Path;
use std::time::Duration;

pub static MIGRATOR_SQLITE: Migrator = sqlx::migrate!("../../migrations/sqlite");
pub static MIGRATOR_POSTGRES: Migrator = sqlx::migrate!("../../migrations/postgres");

/// How long opening a database may take before it is reported unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a command may do to the database it opens. Every mode refuses a file that is not
/// SQLite, a database of another schema and one written by a newer ddlab, without touching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Writing commands that may start a store (`sweep`, `train`): a missing SQLite file and
    /// its folder are created; the schema is brought up to date.
    Create,
    /// Writing commands on a store that must exist (`work`): a missing SQLite file is an
    /// error; the schema is brought up to date.
    Existing,
    /// Reading commands (`runs`, `report`, `tui`): never creates, migrates or writes. A store
    /// of an older ddlab is refused with a sentence saying how to upgrade it, rather than read
    /// through queries that may not match its tables.
    ReadOnly,
}

impl Store {
    /// Opens the store at `url` for writing: [`OpenMode::Create`] with `create`, else
    /// [`OpenMode::Existing`].
    pub async fn connect(url: &str, create: bool) -> Result<Store> {
        let mode = if create {
            OpenMode::Create
        } else {
            OpenMode::Existing
        };
        Store::open(url, mode).await
    }

    /// Opens an existing store for reading only ([`OpenMode::ReadOnly`]).
    pub async fn open_read_only(url: &str) -> Result<Store> {
        Store::open(url, OpenMode::ReadOnly).await
    }

    /// Opens the store at `url` as `mode` allows.
    pub async fn open(url: &str, mode: OpenMode) -> Result<Store> {
        install_default_drivers();
        if url.starts_with("sqlite:") {
            open_sqlite(url, mode).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            open_postgres(url, mode).await
        } else {
            Err(StoreError::UnsupportedUrl(url.to_string()))
        }
    }

    /// Opens the same URL again in the same mode: for a reader whose file was replaced.
    pub async fn reopen(&self) -> Result<Store> {
        Store::open(&self.url, self.mode).await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn mode(&self) -> OpenMode {
        self.mode
    }

    /// The URL with any password hidden.
    pub fn display_url(&self) -> String {
        redact(&self.url)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`), so
    /// the busy timeout applies instead of an immediate "database is locked" on upgrade.
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// SQLite's own consistency check ("ok" when sound); PostgreSQL answers "ok".
    pub async fn integrity_check(&self) -> Result<String> {
        match self.backend {
            Backend::Sqlite => Ok(sqlx::query("PRAGMA integrity_check")
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?),
            Backend::Postgres => Ok("ok".into()),
        }
    }

    async fn migrate(&self) -> Result<()> {
        let migrator = migrator(self.backend);
        // Several processes may open a new SQLite file at once; the loser of the race sees the
        // tables appear under it and succeeds on a second look.
        let mut attempt = 0;
        loop {
            match migrator.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(_) if attempt < 5 && self.backend == Backend::Sqlite => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                Err(reason) => {
                    return Err(StoreError::Migrate {
                        url: redact(&self.url),
                        reason,
                    });
                }
            }
        }
    }
}

fn migrator(backend: Backend) -> &'static Migrator {
    match backend {
        Backend::Sqlite => &MIGRATOR_SQLITE,
        Backend::Postgres => &MIGRATOR_POSTGRES,
    }
}

/// How long opening a SQLite file keeps retrying while other processes hold its lock: many
/// workers starting on one new file at once each create, inspect or migrate it in turn.
const SQLITE_OPEN_PATIENCE: Duration = Duration::from_secs(60);

async fn open_sqlite(url: &str, mode: OpenMode) -> Result<Store> {
    let started = std::time::Instant::now();
    let mut attempt: u64 = 0;
    loop {
        match open_sqlite_once(url, mode).await {
            Err(e) if is_busy(&e) && started.elapsed() < SQLITE_OPEN_PATIENCE => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt.min(20))).await;
            }
            opened => return opened,
        }
    }
}

/// Whether `err` is SQLite's "database is locked" or "busy", which passes once the other
/// process's transaction ends.
fn is_busy(err: &StoreError) -> bool {
    let reason = match err {
        StoreError::Connect { reason, .. } | StoreError::Query(reason) => reason,
        StoreError::Migrate {
            reason:
                sqlx::migrate::MigrateError::Execute(reason)
                | sqlx::migrate::MigrateError::ExecuteMigration(reason, _),
            ..
        } => reason,
        _ => return false,
    };
    match reason {
        sqlx::Error::Database(db) => {
            let message = db.message();
            message.contains("locked") || message.contains("busy")
        }
        _ => false,
    }
}

async fn open_sqlite_once(url: &str, mode: OpenMode) -> Result<Store> {
    let Some(path) = sqlite_path(url) else {
        if url.contains(":memory:") {
            return open_sqlite_memory(url).await;
        }
        return Err(StoreError::EmptySqlitePath(url.to_string()));
    };
    if path.exists() {
        // Everything about an existing file is settled before a connection that may write.
        check_sqlite_header(&path)?;
        let schema = inspect_sqlite_read_only(url, &path).await?;
        check_schema(&schema, mode, url)?;
    } else if mode == OpenMode::Create {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Connect {
                url: url.to_string(),
                reason: sqlx::Error::Io(e),
            })?;
        }
    } else {
        return Err(StoreError::Missing(path));
    }
    let file_mode = if mode == OpenMode::ReadOnly {
        "ro"
    } else {
        "rwc"
    };
    let pool = connect_pool(
        url,
        &with_sqlite_mode(url, file_mode),
        Backend::Sqlite,
        mode,
    )
    .await?;
    let store = Store {
        pool,
        backend: Backend::Sqlite,
        url: url.to_string(),
        mode,
        file: Some(FileIdentity::of(&path)),
    };
    if mode != OpenMode::ReadOnly {
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&store.pool)
            .await?;
        store.migrate().await?;
    }
    Ok(store)
}

/// `sqlite::memory:`, as before: created and migrated on every open.
async fn open_sqlite_memory(url: &str) -> Result<Store> {
    let pool = connect_pool(url, url, Backend::Sqlite, OpenMode::Create).await?;
    let store = Store {
        pool,
        backend: Backend::Sqlite,
        url: url.to_string(),
        mode: OpenMode::Create,
        file: None,
    };
    store.migrate().await?;
    Ok(store)
}

/// What the existing file at `path` holds, read over a read-only connection of its own: even
/// a pool that will write must not have touched a foreign file by the time it is refused.
async fn inspect_sqlite_read_only(url: &str, path: &Path) -> Result<Schema> {
    let ro_url = with_sqlite_mode(&format!("sqlite://{}", path.display()), "ro");
    let connect_error = |reason| StoreError::Connect {
        url: url.to_string(),
        reason,
    };
    let mut conn =
        match tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect(&ro_url)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(reason)) => return Err(connect_error(reason)),
            Err(_) => return Err(connect_error(sqlx::Error::PoolTimedOut)),
        };
    let schema = inspect(&mut conn, Backend::Sqlite, &MIGRATOR_SQLITE).await;
    let _ = conn.close().await;
    schema
}

async fn open_postgres(url: &str, mode: OpenMode) -> Result<Store> {
    probe_postgres(url).await?;
    let pool = connect_pool(url, url, Backend::Postgres, mode).await?;
    let store = Store {
        pool,
        backend: Backend::Postgres,
        url: url.to_string(),
        mode,
        file: None,
    };
    let schema = {
        let mut conn = store.pool.acquire().await?;
        inspect(&mut conn, Backend::Postgres, &MIGRATOR_POSTGRES).await?
    };
    if let Err(e) = check_schema(&schema, mode, url) {
        store.close().await;
        return Err(e);
    }
    if mode != OpenMode::ReadOnly {
        store.migrate().await?;
    }
    Ok(store)
}

/// One direct connection first: a refused or unknown server is reported at once, where the
/// pool would retry it until its timeout.
async fn probe_postgres(url: &str) -> Result<()> {
    let failed = |reason| StoreError::Connect {
        url: redact(url),
        reason,
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect(url)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(reason)) => Err(failed(reason)),
        Err(_) => Err(failed(sqlx::Error::PoolTimedOut)),
    }
}

/// Whether `mode` may use a database holding `schema`.
fn check_schema(schema: &Schema, mode: OpenMode, url: &str) -> Result<()> {
    let read_only = mode == OpenMode::ReadOnly;
    match schema {
        Schema::Foreign { why } => Err(StoreError::Foreign {
            url: redact(url),
            why: why.clone(),
        }),
        Schema::Ahead { version } => Err(StoreError::Newer {
            url: redact(url),
            version: *version,
        }),
        Schema::Empty if read_only => Err(StoreError::Uninitialised(redact(url))),
        Schema::Behind if read_only => Err(StoreError::NeedsUpgrade(redact(url))),
        Schema::Empty | Schema::Behind | Schema::Current => Ok(()),
    }
}

/// `url` with SQLite's open mode (`ro`, `rwc`) unless the URL already names one.
fn with_sqlite_mode(url: &str, mode: &str) -> String {
    if url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode={mode}")
    } else {
        format!("{url}?mode={mode}")
    }
}

/// The pool, with each connection set up for the backend and mode.
async fn connect_pool(
    url: &str,
    connect_url: &str,
    backend: Backend,
    mode: OpenMode,
) -> Result<AnyPool> {
    let opts = AnyPoolOptions::new()
        .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
        .acquire_timeout(Duration::from_secs(120));
    let read_only = mode == OpenMode::ReadOnly;
    let opts = opts.after_connect(move |conn, _| {
        Box::pin(async move {
            use sqlx::Executor;
            match backend {
                Backend::Sqlite => {
                    // A minute of patience for writers; WAL lets readers run beside a writer.
                    conn.execute("PRAGMA busy_timeout = 60000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                }
                // The server then refuses any write a read-only command might attempt.
                Backend::Postgres if read_only => {
                    conn.execute("SET default_transaction_read_only = on")
                        .await?;
                }
                Backend::Postgres => {}
            }
            Ok(())
        })
    });
    // sqlx retries refused connections until the acquire timeout; an unreachable server
    // should be reported within seconds instead.
    match tokio::time::timeout(CONNECT_TIMEOUT, opts.connect(connect_url)).await {
        Ok(Ok(pool)) => Ok(pool),
        Ok(Err(reason)) => Err(StoreError::Connect {
            url: redact(url),
            reason,
        }),
        Err(_) => Err(StoreError::Connect {
            url: redact(url),
            reason: sqlx::Error::PoolTimedOut,
        }),
    }
}
