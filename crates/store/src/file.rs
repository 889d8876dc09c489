//! The identity of a SQLite store's file, so that a long-lived reader (the dashboard) notices
//! when the file at its path was deleted or replaced: its open connections would otherwise
//! keep reading the old, unlinked file forever.

use crate::Store;
use std::path::{Path, PathBuf};

/// The file at a path when the store was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileIdentity {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl FileIdentity {
    pub(crate) fn of(path: &Path) -> FileIdentity {
        FileIdentity {
            path: path.to_path_buf(),
            id: device_and_inode(path),
        }
    }
}

/// Whether the store's file is still the one that was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// The path still names the opened file (and always for PostgreSQL).
    Unchanged,
    /// Nothing is at the path any more.
    Deleted,
    /// Another file is at the path now (e.g. a new sweep recreated the database).
    Replaced,
}

impl Store {
    /// Compares the file at the store's path with the one opened (a `stat`, no query).
    pub fn file_state(&self) -> FileState {
        let Some(opened) = &self.file else {
            return FileState::Unchanged;
        };
        if !opened.path.exists() {
            return FileState::Deleted;
        }
        match (opened.id, device_and_inode(&opened.path)) {
            (Some(then), Some(now)) if then != now => FileState::Replaced,
            _ => FileState::Unchanged,
        }
    }
}

#[cfg(unix)]
fn device_and_inode(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Elsewhere only a deletion is noticed.
#[cfg(not(unix))]
fn device_and_inode(_path: &Path) -> Option<(u64, u64)> {
    None
}
