//! How an evaluation was computed, as one canonical line of text (the `method` the store keys
//! evaluations by): two values with the same text were computed the same way and may share an
//! axis; values with different text may not, unless the reader says so.

use ddlab_core::nll::NllConfig;
use std::path::Path;

/// The NLL bound on `images` held-out images under `cfg`, drawn from the evaluation stream of
/// `seed`.
pub fn nll_method(images: usize, cfg: &NllConfig, seed: u64) -> String {
    format!(
        "nll images={images} timesteps={} variance={} clip_x0={} seed={seed}",
        cfg.timesteps, cfg.variance, cfg.clip_x0
    )
}

/// What a judge's metrics were computed from.
pub struct JudgeMethod<'a> {
    pub samples: usize,
    pub sampler: &'a str,
    pub steps: usize,
    pub guidance: &'a str,
    pub scale: f64,
    pub seed: u64,
    /// The judge checkpoint's hash ([`file_hash`]).
    pub judge_hash: &'a str,
}

impl JudgeMethod<'_> {
    pub fn text(&self) -> String {
        format!(
            "judge samples={} sampler={} steps={} guidance={} scale={} seed={} judge={}",
            self.samples,
            self.sampler,
            self.steps,
            self.guidance,
            self.scale,
            self.seed,
            self.judge_hash
        )
    }
}

/// The first 8 bytes of a file's SHA-256, in hex: a judge retrained under the same path gets
/// another hash, so its metrics are not mixed with the old one's.
pub fn file_hash(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(std::fs::read(path)?);
    Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_name_every_setting() {
        let m = nll_method(256, &NllConfig::default(), 3);
        assert_eq!(
            m,
            "nll images=256 timesteps=50 variance=beta-tilde clip_x0=true seed=3"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        std::fs::write(&p, b"judge").unwrap();
        let a = file_hash(&p).unwrap();
        std::fs::write(&p, b"judge2").unwrap();
        assert_ne!(a, file_hash(&p).unwrap());
    }
}
