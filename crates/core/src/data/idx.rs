//! MNIST and Fashion-MNIST in LeCun's IDX format, gzip-compressed or raw.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{DataSplit, DatasetKind, HOLDOUT_FROM_SINGLE_SET, ImageDataset};
use crate::error::{Error, Result};

pub const MNIST_CLASSES: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];
pub const FASHION_CLASSES: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

/// Reads a whole file, inflating it if it is gzip.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::data(path, format!("cannot read: {e}")))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| Error::data(path, format!("corrupt gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses an IDX file of unsigned bytes, returning its dimensions and data.
pub fn parse_idx(path: &Path, bytes: &[u8], expect_rank: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(Error::data(path, "not an IDX file (bad magic number)"));
    }
    if bytes[2] != 0x08 {
        return Err(Error::data(
            path,
            format!("IDX element type 0x{:02x} is not unsigned bytes", bytes[2]),
        ));
    }
    let rank = bytes[3] as usize;
    if rank != expect_rank {
        return Err(Error::data(
            path,
            format!("IDX file has {rank} dimensions, expected {expect_rank}"),
        ));
    }
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(Error::data(path, "IDX header is truncated"));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| be_u32(bytes, 4 + 4 * i) as usize)
        .collect();
    let expected: usize = dims.iter().product();
    let body = &bytes[header..];
    if body.len() != expected {
        return Err(Error::data(
            path,
            format!(
                "IDX data has {} bytes, the header promises {expected} ({dims:?})",
                body.len()
            ),
        ));
    }
    Ok((dims, body.to_vec()))
}

fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Loads one images/labels pair.
pub fn load_pair(images: &Path, labels: &Path, kind: DatasetKind) -> Result<ImageDataset> {
    let (dims, pixels) = parse_idx(images, &read_maybe_gzip(images)?, 3)?;
    let (ldims, labels_raw) = parse_idx(labels, &read_maybe_gzip(labels)?, 1)?;
    if ldims[0] != dims[0] {
        return Err(Error::data(
            labels,
            format!("{} labels for {} images", ldims[0], dims[0]),
        ));
    }
    if let Some(bad) = labels_raw.iter().find(|&&l| l > 9) {
        return Err(Error::data(labels, format!("label {bad} is outside 0..=9")));
    }
    let names = if kind == DatasetKind::FashionMnist {
        &FASHION_CLASSES
    } else {
        &MNIST_CLASSES
    };
    let labels: Vec<u32> = labels_raw.iter().map(|&l| l as u32).collect();
    let captions = labels
        .iter()
        .map(|&l| caption_for_class(kind, l as usize))
        .collect();
    Ok(ImageDataset {
        name: kind.name().to_string(),
        pixels,
        len: dims[0],
        channels: 1,
        height: dims[1],
        width: dims[2],
        labels: Some(labels),
        class_names: names.iter().map(|s| s.to_string()).collect(),
        attributes: labels_raw.iter().map(|&l| [l, 0, 0]).collect(),
        captions,
    })
}

/// The canonical caption of a class ("a handwritten seven").
pub fn caption_for_class(kind: DatasetKind, class: usize) -> String {
    match kind {
        DatasetKind::FashionMnist => format!("a photo of a {}", FASHION_CLASSES[class]),
        _ => format!("a handwritten {}", MNIST_CLASSES[class]),
    }
}

/// Train on `train-*` and hold out `t10k-*` when both exist; with only `t10k-*` (the test set),
/// train on its first 9,000 images and hold out the last 1,000.
pub fn load_split(dir: &Path, kind: DatasetKind) -> Result<DataSplit> {
    let train_img = find(dir, "train-images-idx3-ubyte");
    let train_lab = find(dir, "train-labels-idx1-ubyte");
    let test_img = find(dir, "t10k-images-idx3-ubyte");
    let test_lab = find(dir, "t10k-labels-idx1-ubyte");
    let missing_labels = |img: &Path| {
        Error::data(
            img,
            "has no matching labels file (*-labels-idx1-ubyte[.gz]) beside it",
        )
    };
    match (train_img, test_img) {
        (Some(ti), Some(ei)) => {
            let tl = train_lab.ok_or_else(|| missing_labels(&ti))?;
            let el = test_lab.ok_or_else(|| missing_labels(&ei))?;
            Ok(DataSplit {
                train: load_pair(&ti, &tl, kind)?,
                heldout: load_pair(&ei, &el, kind)?,
                description: "the official training set; the test set held out".into(),
            })
        }
        (None, Some(ei)) | (Some(ei), None) => {
            let el = if ei.to_string_lossy().contains("t10k") {
                test_lab
            } else {
                train_lab
            }
            .ok_or_else(|| missing_labels(&ei))?;
            let all = load_pair(&ei, &el, kind)?;
            if all.len <= HOLDOUT_FROM_SINGLE_SET {
                return Err(Error::data(
                    &ei,
                    format!("only {} images: too few to split", all.len),
                ));
            }
            let cut = all.len - HOLDOUT_FROM_SINGLE_SET;
            Ok(DataSplit {
                train: all.slice(0..cut, kind.name()),
                heldout: all.slice(cut..all.len, kind.name()),
                description: format!(
                    "one file set of {} images: the first {cut} train, the last {} are held out",
                    all.len, HOLDOUT_FROM_SINGLE_SET
                ),
            })
        }
        (None, None) => Err(Error::data(
            dir,
            "holds no IDX image files (expected train-images-idx3-ubyte[.gz] or \
             t10k-images-idx3-ubyte[.gz])",
        )),
    }
}
