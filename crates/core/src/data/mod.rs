//! Datasets, held in memory as 8-bit pixels and normalised to [-1, 1] per batch.

pub mod cifar;
pub mod folder;
pub mod idx;
pub mod shapes;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::rng::{Rng, streams};

/// Images (N, C, H, W) as bytes, with optional class labels and captions.
#[derive(Debug, Clone)]
pub struct ImageDataset {
    pub name: String,
    pub pixels: Vec<u8>,
    pub len: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub labels: Option<Vec<u32>>,
    /// Name of each class label value.
    pub class_names: Vec<String>,
    /// One caption per image (the canonical phrasing).
    pub captions: Vec<String>,
    /// Per-image attributes that captions describe: [class, 0, 0] for labelled datasets,
    /// [shape, colour, position] for shapes; empty when there are none.
    pub attributes: Vec<[u8; 3]>,
}

impl ImageDataset {
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The images at `indices` as an f32 tensor in [-1, 1].
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        let n = self.image_len();
        let mut v = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            v.extend(
                self.pixels[i * n..(i + 1) * n]
                    .iter()
                    .map(|&p| p as f32 / 127.5 - 1.0),
            );
        }
        Ok(Tensor::from_vec(
            v,
            (indices.len(), self.channels, self.height, self.width),
            device,
        )?)
    }

    /// The first `n` images (all of them if fewer) as one tensor.
    pub fn head(&self, n: usize, device: &Device) -> Result<Tensor> {
        let idx: Vec<usize> = (0..n.min(self.len)).collect();
        self.batch(&idx, device)
    }

    /// Images `range` as a new dataset.
    pub fn slice(&self, range: std::ops::Range<usize>, name: &str) -> Self {
        let n = self.image_len();
        Self {
            name: name.to_string(),
            pixels: self.pixels[range.start * n..range.end * n].to_vec(),
            len: range.len(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            labels: self.labels.as_ref().map(|l| l[range.clone()].to_vec()),
            class_names: self.class_names.clone(),
            captions: if self.captions.is_empty() {
                vec![]
            } else {
                self.captions[range.clone()].to_vec()
            },
            attributes: if self.attributes.is_empty() {
                vec![]
            } else {
                self.attributes[range].to_vec()
            },
        }
    }
}

/// Indices of training batch `step` (0-based): consecutive slices of an endless sequence of
/// per-epoch permutations, so any step's batch is known without replaying the ones before it.
pub fn batch_indices(n: usize, batch_size: usize, seed: u64, step: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(batch_size);
    let mut pos = step * batch_size;
    let mut epoch = usize::MAX;
    let mut perm = Vec::new();
    while out.len() < batch_size {
        let e = pos / n;
        if e != epoch {
            epoch = e;
            perm = Rng::new(seed, streams::DATA_ORDER + e as u64).permutation(n);
        }
        out.push(perm[pos % n]);
        pos += 1;
    }
    out
}

/// Which data a run trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// Built-in procedural coloured shapes with captions.
    #[default]
    Shapes,
    Mnist,
    FashionMnist,
    Cifar10,
    /// A directory of PNG/JPEG images.
    Folder,
}

impl DatasetKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Shapes => "shapes",
            Self::Mnist => "mnist",
            Self::FashionMnist => "fashion-mnist",
            Self::Cifar10 => "cifar10",
            Self::Folder => "folder",
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "shapes" => Ok(Self::Shapes),
            "mnist" => Ok(Self::Mnist),
            "fashion-mnist" => Ok(Self::FashionMnist),
            "cifar10" | "cifar-10" => Ok(Self::Cifar10),
            "folder" => Ok(Self::Folder),
            _ => Err(Error::InvalidDataset(format!(
                "unknown dataset `{s}` (expected shapes, mnist, fashion-mnist, cifar10 or folder)"
            ))),
        }
    }
}

/// Where and how to load a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetConfig {
    pub kind: DatasetKind,
    /// Directory of the files (not used by `shapes`).
    pub dir: Option<PathBuf>,
    /// Side length: 16 or 32 for shapes; the resize target for folders.
    pub image_size: Option<usize>,
    /// Number of generated training images (shapes).
    pub shapes_count: usize,
    /// Seed of the generated images (shapes).
    pub shapes_seed: u64,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        Self {
            kind: DatasetKind::Shapes,
            dir: None,
            image_size: None,
            shapes_count: 20_000,
            shapes_seed: 0,
        }
    }
}

/// A training set and a held-out set (for the NLL and other metrics).
#[derive(Debug, Clone)]
pub struct DataSplit {
    pub train: ImageDataset,
    pub heldout: ImageDataset,
    /// One sentence on how the split was made, for the docs and the run record.
    pub description: String,
}

/// Number of held-out images when only one set of files exists (MNIST's t10k alone:
/// 9,000 train / 1,000 held out).
pub const HOLDOUT_FROM_SINGLE_SET: usize = 1000;

impl DatasetConfig {
    /// Side length of the images this config yields, when known without reading files.
    pub fn image_size_hint(&self) -> Option<usize> {
        match self.kind {
            DatasetKind::Shapes => Some(self.image_size.unwrap_or(16)),
            DatasetKind::Mnist | DatasetKind::FashionMnist => Some(28),
            DatasetKind::Cifar10 => Some(32),
            DatasetKind::Folder => self.image_size,
        }
    }

    pub fn channels_hint(&self) -> usize {
        match self.kind {
            DatasetKind::Mnist | DatasetKind::FashionMnist => 1,
            _ => 3,
        }
    }

    fn dir(&self) -> Result<&Path> {
        self.dir
            .as_deref()
            .ok_or_else(|| Error::InvalidDataset(format!("dataset `{}` needs data_dir", self.kind)))
    }

    pub fn validate(&self) -> Result<()> {
        match self.kind {
            DatasetKind::Shapes => {
                let size = self.image_size.unwrap_or(16);
                if size != 16 && size != 32 {
                    return Err(Error::InvalidDataset(format!(
                        "shapes images are 16 or 32 pixels wide, not {size}"
                    )));
                }
                if self.shapes_count == 0 {
                    return Err(Error::InvalidDataset(
                        "shapes_count must be positive".into(),
                    ));
                }
            }
            DatasetKind::Folder => {
                self.dir()?;
                if self.image_size.is_none() {
                    return Err(Error::InvalidDataset(
                        "dataset `folder` needs image_size (images are resized to it)".into(),
                    ));
                }
            }
            _ => {
                self.dir()?;
            }
        }
        Ok(())
    }

    pub fn load(&self) -> Result<DataSplit> {
        self.validate()?;
        match self.kind {
            DatasetKind::Shapes => {
                let size = self.image_size.unwrap_or(16);
                let heldout_count = (self.shapes_count / 10).max(1);
                Ok(DataSplit {
                    train: shapes::generate(self.shapes_count, size, self.shapes_seed, 0),
                    heldout: shapes::generate(heldout_count, size, self.shapes_seed, 1),
                    description: format!(
                        "{} generated training images and {heldout_count} held-out images from an \
                         independent stream of seed {}",
                        self.shapes_count, self.shapes_seed
                    ),
                })
            }
            DatasetKind::Mnist | DatasetKind::FashionMnist => {
                idx::load_split(self.dir()?, self.kind)
            }
            DatasetKind::Cifar10 => cifar::load_split(self.dir()?),
            DatasetKind::Folder => folder::load_split(self.dir()?, self.image_size.unwrap_or(32)),
        }
    }
}
