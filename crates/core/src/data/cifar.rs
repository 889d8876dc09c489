//! CIFAR-10 in its binary form: records of one label byte and 3×32×32 pixel bytes.

use std::path::Path;

use super::{DataSplit, ImageDataset};
use crate::error::{Error, Result};

pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
const RECORD: usize = 1 + 3 * 32 * 32;

fn load_files(paths: &[std::path::PathBuf]) -> Result<ImageDataset> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for p in paths {
        let bytes = std::fs::read(p).map_err(|e| Error::data(p, format!("cannot read: {e}")))?;
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            return Err(Error::data(
                p,
                format!(
                    "{} bytes is not a whole number of {RECORD}-byte CIFAR-10 records",
                    bytes.len()
                ),
            ));
        }
        for rec in bytes.chunks_exact(RECORD) {
            if rec[0] > 9 {
                return Err(Error::data(p, format!("label {} is outside 0..=9", rec[0])));
            }
            labels.push(rec[0] as u32);
            pixels.extend_from_slice(&rec[1..]);
        }
    }
    let attributes = labels.iter().map(|&l| [l as u8, 0, 0]).collect();
    let captions = labels
        .iter()
        .map(|&l| format!("a photo of a {}", CIFAR10_CLASSES[l as usize]))
        .collect();
    Ok(ImageDataset {
        name: "cifar10".into(),
        len: labels.len(),
        pixels,
        channels: 3,
        height: 32,
        width: 32,
        labels: Some(labels),
        class_names: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
        attributes,
        captions,
    })
}

/// `data_batch_1..5.bin` train, `test_batch.bin` held out; `dir` may be the folder that holds
/// them or its parent containing `cifar-10-batches-bin/`.
pub fn load_split(dir: &Path) -> Result<DataSplit> {
    let dir = if dir.join("cifar-10-batches-bin").is_dir() {
        dir.join("cifar-10-batches-bin")
    } else {
        dir.to_path_buf()
    };
    let train: Vec<_> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .collect();
    for p in &train {
        if !p.is_file() {
            return Err(Error::data(
                p,
                "is missing (expected CIFAR-10 binary batches)",
            ));
        }
    }
    let test = dir.join("test_batch.bin");
    if !test.is_file() {
        return Err(Error::data(
            &test,
            "is missing (expected CIFAR-10 binary batches)",
        ));
    }
    Ok(DataSplit {
        train: load_files(&train)?,
        heldout: load_files(&[test])?,
        description: "data_batch_1..5 for training; test_batch held out".into(),
    })
}
