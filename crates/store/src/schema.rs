//! What an existing database holds, found out before anything is written to it: a file that
//! is not SQLite, a database of another application's schema, or ddlab's schema at an older,
//! the same or a newer version.

use crate::{Backend, Result, StoreError};
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, Row};
use std::io::Read;
use std::path::Path;

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// sqlx's record of applied migrations: ddlab's stores have it, other databases rarely do.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Refuses an existing, non-empty file that does not start with SQLite's header, before any
/// connection is made (SQLite would wait on it and then report a pool timeout). An empty file
/// is a database with no tables yet.
pub(crate) fn check_sqlite_header(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(StoreError::NotSqlite(path.into(), "it is a directory"));
    }
    let mut header = Vec::with_capacity(16);
    let read = std::fs::File::open(path).and_then(|f| f.take(16).read_to_end(&mut header));
    match read {
        Err(_) => Err(StoreError::NotSqlite(path.into(), "it cannot be read")),
        Ok(0) => Ok(()),
        Ok(_) if header == SQLITE_HEADER => Ok(()),
        Ok(_) => Err(StoreError::NotSqlite(
            path.into(),
            "it does not start with SQLite's header",
        )),
    }
}

/// An existing database's schema as ddlab sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Schema {
    /// No tables: a new database, to be migrated by a writing open.
    Empty,
    /// ddlab's, with some of this build's migrations not yet applied.
    Behind,
    /// ddlab's, with exactly this build's migrations.
    Current,
    /// ddlab's, with a migration this build does not know.
    Ahead { version: i64 },
    /// Another application's tables: never touched.
    Foreign { why: String },
}

/// Reads the table names and applied migrations over `conn` (only reads) and classifies them
/// against `migrator`.
pub(crate) async fn inspect(
    conn: &mut AnyConnection,
    backend: Backend,
    migrator: &Migrator,
) -> Result<Schema> {
    let tables: Vec<String> = sqlx::query(match backend {
        Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') \
             AND name NOT LIKE 'sqlite_%'"
        }
        Backend::Postgres => {
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema()"
        }
    })
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    let applied = if tables.iter().any(|t| t == MIGRATIONS_TABLE) {
        sqlx::query("SELECT version, checksum FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(i64, Vec<u8>)>, sqlx::Error>>()?
    } else {
        Vec::new()
    };
    Ok(classify(&tables, &applied, migrator))
}

/// The decision of [`inspect`], apart from the queries.
fn classify(tables: &[String], applied: &[(i64, Vec<u8>)], migrator: &Migrator) -> Schema {
    let own_tables = tables.iter().filter(|t| *t != MIGRATIONS_TABLE).count();
    if applied.is_empty() {
        return if own_tables == 0 {
            // Nothing, or only sqlx's bookkeeping left by an interrupted first open.
            Schema::Empty
        } else if tables.iter().any(|t| t == MIGRATIONS_TABLE) {
            Schema::Foreign {
                why: "it has tables but no record of ddlab's migrations".into(),
            }
        } else {
            let clash = ["sweeps", "runs", "metrics", "samples", "evals"]
                .into_iter()
                .find(|name| tables.iter().any(|t| t == name));
            Schema::Foreign {
                why: match clash {
                    Some(name) => format!("it has its own `{name}` table and no ddlab migrations"),
                    None => format!(
                        "it has its own tables ({}) and no ddlab migrations",
                        tables
                            .iter()
                            .take(3)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
            }
        };
    }
    let known: Vec<(i64, &[u8])> = migrator
        .iter()
        .map(|m| (m.version, m.checksum.as_ref()))
        .collect();
    // A store starts with ddlab's first migration; another sqlx application's does not.
    let first_is_ours = known
        .first()
        .is_some_and(|(v, sum)| applied[0].0 == *v && applied[0].1 == *sum);
    if !first_is_ours {
        return Schema::Foreign {
            why: "its schema migrations are not ddlab's".into(),
        };
    }
    for (version, checksum) in applied {
        match known.iter().find(|(v, _)| v == version) {
            None => return Schema::Ahead { version: *version },
            Some((_, sum)) if *sum != checksum.as_slice() => {
                return Schema::Foreign {
                    why: format!("its migration {version} differs from ddlab's"),
                };
            }
            Some(_) => {}
        }
    }
    if applied.len() < known.len() {
        Schema::Behind
    } else {
        Schema::Current
    }
}
