//! Datasets: real MNIST files when present, corrupt files, the shapes generator, batching.

use candle_core::Device;
use ddlab_core::data::{DatasetConfig, DatasetKind, batch_indices, idx, shapes};
use std::io::Write;
use std::path::PathBuf;

fn mnist_dir() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/mnist");
    p.join("t10k-images-idx3-ubyte.gz").is_file().then_some(p)
}

#[test]
fn real_mnist_test_set_loads_and_splits_9000_1000() {
    let Some(dir) = mnist_dir() else {
        eprintln!("SKIPPED: ../shared/data/mnist is not present");
        return;
    };
    let split = DatasetConfig {
        kind: DatasetKind::Mnist,
        dir: Some(dir),
        ..Default::default()
    }
    .load()
    .unwrap();
    assert_eq!((split.train.len(), split.heldout.len()), (9000, 1000));
    assert_eq!(
        (split.train.channels, split.train.height, split.train.width),
        (1, 28, 28)
    );
    // The README's class counts of the whole test set.
    let mut counts = [0usize; 10];
    for l in split
        .train
        .labels
        .iter()
        .chain(split.heldout.labels.iter())
        .flatten()
    {
        counts[*l as usize] += 1;
    }
    assert_eq!(
        counts,
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    let x = split.train.batch(&[0, 1], &Device::Cpu).unwrap();
    let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|p| (-1.0..=1.0).contains(p)));
    assert!(v.iter().any(|&p| p > 0.9) && v.iter().any(|&p| p == -1.0));
    assert_eq!(
        split.train.captions[0],
        format!(
            "a handwritten {}",
            idx::MNIST_CLASSES[split.train.labels.as_ref().unwrap()[0] as usize]
        )
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ddlab-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn idx_bytes(dims: &[u32], rank_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, rank_byte];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend(body);
    v
}

#[test]
fn corrupt_or_missing_files_name_the_file() {
    let load = |dir: &PathBuf| {
        DatasetConfig {
            kind: DatasetKind::Mnist,
            dir: Some(dir.clone()),
            ..Default::default()
        }
        .load()
        .unwrap_err()
        .to_string()
    };
    let d = temp_dir("empty");
    assert!(load(&d).contains("holds no IDX image files"));

    // Truncated body.
    let d = temp_dir("trunc");
    std::fs::write(
        d.join("t10k-images-idx3-ubyte"),
        idx_bytes(&[2000, 28, 28], 3, &[0; 100]),
    )
    .unwrap();
    std::fs::write(
        d.join("t10k-labels-idx1-ubyte"),
        idx_bytes(&[2000], 1, &[0; 2000]),
    )
    .unwrap();
    let e = load(&d);
    assert!(
        e.contains("t10k-images-idx3-ubyte") && e.contains("header promises"),
        "{e}"
    );

    // Garbage that claims to be gzip.
    let d = temp_dir("gz");
    std::fs::write(
        d.join("t10k-images-idx3-ubyte.gz"),
        [0x1f, 0x8b, 1, 2, 3, 4],
    )
    .unwrap();
    std::fs::write(
        d.join("t10k-labels-idx1-ubyte"),
        idx_bytes(&[2000], 1, &[0; 2000]),
    )
    .unwrap();
    let e = load(&d);
    assert!(
        e.contains("t10k-images-idx3-ubyte.gz") && e.contains("corrupt gzip"),
        "{e}"
    );

    // Wrong magic.
    let d = temp_dir("magic");
    std::fs::File::create(d.join("t10k-images-idx3-ubyte"))
        .unwrap()
        .write_all(b"PK\x03\x04 zip")
        .unwrap();
    std::fs::write(
        d.join("t10k-labels-idx1-ubyte"),
        idx_bytes(&[2000], 1, &[0; 2000]),
    )
    .unwrap();
    assert!(load(&d).contains("bad magic"));

    // Labels out of range, and labels missing.
    let d = temp_dir("labels");
    std::fs::write(
        d.join("t10k-images-idx3-ubyte"),
        idx_bytes(&[1001, 2, 2], 3, &[0; 4004]),
    )
    .unwrap();
    let e = load(&d);
    assert!(e.contains("no matching labels"), "{e}");
    std::fs::write(
        d.join("t10k-labels-idx1-ubyte"),
        idx_bytes(&[1001], 1, &[12; 1001]),
    )
    .unwrap();
    assert!(load(&d).contains("label 12"));

    let e = DatasetConfig {
        kind: DatasetKind::Cifar10,
        dir: Some(temp_dir("cifar")),
        ..Default::default()
    }
    .load()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("data_batch_1.bin") && e.contains("missing"),
        "{e}"
    );
    let e = DatasetConfig {
        kind: DatasetKind::Mnist,
        dir: None,
        ..Default::default()
    }
    .load()
    .unwrap_err()
    .to_string();
    assert!(e.contains("needs data_dir"), "{e}");
}

#[test]
fn shapes_are_deterministic_captioned_and_varied() {
    let a = shapes::generate(300, 16, 5, 0);
    let b = shapes::generate(300, 16, 5, 0);
    let c = shapes::generate(300, 16, 5, 1);
    assert_eq!(a.pixels, b.pixels);
    assert_ne!(a.pixels, c.pixels);
    assert_eq!(a.captions.len(), 300);
    assert!(
        a.captions
            .iter()
            .all(|c| c.starts_with("a ") && c.contains(" in the "))
    );
    let distinct: std::collections::HashSet<_> = a.captions.iter().collect();
    assert!(
        distinct.len() > 100,
        "only {} distinct captions",
        distinct.len()
    );
    // A rendered red circle in the top left lights the top-left, red channel only.
    let spec = shapes::ShapeSpec {
        shape: 0,
        colour: 0,
        position: 0,
        large: true,
    };
    assert_eq!(spec.caption(), "a red circle in the top left");
    let img = shapes::render(&spec, 32, (0.0, 0.0));
    let (r, g) = (&img[0..1024], &img[1024..2048]);
    assert!(r[5 * 32 + 5] > 200 && g[5 * 32 + 5] < 60);
    assert_eq!(r[25 * 32 + 25], 0);
}

#[test]
fn batches_cover_each_epoch_exactly_once() {
    let n = 10;
    let mut seen = vec![];
    for step in 0..5 {
        seen.extend(batch_indices(n, 4, 3, step));
    }
    let mut first: Vec<_> = seen[..10].to_vec();
    first.sort();
    assert_eq!(first, (0..10).collect::<Vec<_>>());
    let mut second: Vec<_> = seen[10..20].to_vec();
    second.sort();
    assert_eq!(second, (0..10).collect::<Vec<_>>());
    assert_ne!(
        seen[..10],
        seen[10..20],
        "each epoch is a fresh permutation"
    );
    assert_eq!(batch_indices(n, 4, 3, 3), seen[12..16]);
}
