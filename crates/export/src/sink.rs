//! One table's file: record batches in, Parquet (snappy-compressed, row groups of bounded
//! size) or CSV (RFC 4180 quoting, a header line) out.

use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use crate::out::OutDir;
use crate::{Format, Written};

/// Rows a Parquet writer buffers before it writes a row group: bounds its memory.
const ROW_GROUP_ROWS: usize = 262_144;

enum Writer {
    Parquet(Box<ArrowWriter<File>>),
    Csv(BufWriter<File>),
}

/// A table being written to its temporary file.
pub(crate) struct TableSink {
    writer: Option<Writer>,
    schema: SchemaRef,
    path: PathBuf,
    tmp: PathBuf,
    rows: usize,
}

impl TableSink {
    pub fn create(dir: &OutDir, table: &str, format: Format, schema: SchemaRef) -> Result<Self> {
        let (path, tmp) = dir.paths(table);
        let file =
            File::create(&tmp).with_context(|| format!("cannot write {}", path.display()))?;
        let writer = match format {
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_size(ROW_GROUP_ROWS)
                    .build();
                Writer::Parquet(Box::new(ArrowWriter::try_new(
                    file,
                    schema.clone(),
                    Some(props),
                )?))
            }
            Format::Csv => {
                let mut w = BufWriter::new(file);
                let names: Vec<String> = schema
                    .fields()
                    .iter()
                    .map(|f| csv_field(f.name()))
                    .collect();
                writeln!(w, "{}", names.join(","))?;
                Writer::Csv(w)
            }
        };
        Ok(TableSink {
            writer: Some(writer),
            schema,
            path,
            tmp,
            rows: 0,
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let result = match self.writer.as_mut().expect("not finished") {
            Writer::Parquet(w) => w.write(batch).map_err(anyhow::Error::from),
            Writer::Csv(w) => write_csv(w, batch),
        };
        result.with_context(|| format!("cannot write {}", self.path.display()))?;
        self.rows += batch.num_rows();
        Ok(())
    }

    /// Closes the file and gives it its final name.
    pub fn finish(mut self) -> Result<Written> {
        let file = match self.writer.take().expect("not finished") {
            Writer::Parquet(w) => w.into_inner()?,
            Writer::Csv(w) => w.into_inner().map_err(|e| e.into_error())?,
        };
        file.sync_all()?;
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(Written {
            path: self.path.clone(),
            rows: self.rows,
        })
    }
}

impl Drop for TableSink {
    /// A table left unfinished (an error on the way) leaves no file behind.
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A field as CSV writes it: quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_csv(w: &mut BufWriter<File>, batch: &RecordBatch) -> Result<()> {
    let options = FormatOptions::default().with_null("");
    let columns = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    let mut line = Vec::with_capacity(columns.len());
    for row in 0..batch.num_rows() {
        line.clear();
        for c in &columns {
            line.push(csv_field(&c.value(row).to_string()));
        }
        writeln!(w, "{}", line.join(","))?;
    }
    Ok(())
}
