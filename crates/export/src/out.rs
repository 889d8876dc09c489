//! The output folder: fixed file names inside it, nothing overwritten unless asked, and every
//! file written beside its final name, then renamed, so a failed export leaves no half file.

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Format, Written};

/// The tables, in the order they are written.
const TABLES: [&str; 4] = ["runs", "metrics", "evals", "sweep"];
const SPEC: &str = "spec.toml";

/// Every file an export in `format` writes (the names are fixed: no user text makes a path).
pub fn file_names(format: Format) -> Vec<String> {
    let mut names: Vec<String> = TABLES
        .iter()
        .map(|t| format!("{t}.{}", format.extension()))
        .collect();
    names.push(SPEC.to_string());
    names
}

/// A checked output folder.
pub(crate) struct OutDir {
    dir: PathBuf,
    format: Format,
}

impl OutDir {
    /// Refuses a path that is a file, and (unless `overwrite`) a folder that already holds any
    /// of the export's files, before anything is written; creates the folder.
    pub fn prepare(dir: &Path, format: Format, overwrite: bool) -> Result<OutDir> {
        if dir.exists() && !dir.is_dir() {
            bail!("--out {} is a file, not a folder", dir.display());
        }
        if !overwrite {
            for name in file_names(format) {
                let p = dir.join(&name);
                if p.symlink_metadata().is_ok() {
                    bail!(
                        "{} already exists; pass --force to overwrite it, or choose another --out folder",
                        p.display()
                    );
                }
            }
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the folder {}", dir.display()))?;
        Ok(OutDir {
            dir: dir.to_path_buf(),
            format,
        })
    }

    /// The final path of table `table` and the temporary one it is written to first.
    pub fn paths(&self, table: &str) -> (PathBuf, PathBuf) {
        let name = format!("{table}.{}", self.format.extension());
        (
            self.dir.join(&name),
            self.dir.join(format!(".{name}.partial")),
        )
    }

    /// A text file, written beside and renamed.
    pub fn write_text(&self, name: &str, text: &str) -> Result<Written> {
        let (path, tmp) = (
            self.dir.join(name),
            self.dir.join(format!(".{name}.partial")),
        );
        let result = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.sync_all()))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", path.display()));
        }
        Ok(Written {
            path,
            rows: text.lines().count(),
        })
    }
}
