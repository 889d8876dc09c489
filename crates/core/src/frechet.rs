//! Sample-quality metrics that need no download: statistics of an in-project classifier's
//! features. The Fréchet distance between two Gaussians fitted to feature sets is the quantity
//! FID computes with Inception features; here the features are the judge's own, so the number
//! is only comparable between runs judged by the same judge and is called by its own name.

use nalgebra::{DMatrix, DVector, SymmetricEigen};

use crate::error::{Error, Result};

/// Mean and covariance of feature vectors (rows of an n × d matrix).
#[derive(Debug, Clone)]
pub struct FeatureStats {
    pub mean: DVector<f64>,
    pub cov: DMatrix<f64>,
    pub n: usize,
}

impl FeatureStats {
    /// `features` is row-major n × d.
    pub fn from_rows(features: &[f32], d: usize) -> Result<Self> {
        if d == 0 || !features.len().is_multiple_of(d) {
            return Err(Error::Guidance("feature matrix has the wrong size".into()));
        }
        let n = features.len() / d;
        if n < 2 {
            return Err(Error::Guidance(
                "at least two feature vectors are needed for a covariance".into(),
            ));
        }
        let x = DMatrix::from_row_iterator(n, d, features.iter().map(|&v| v as f64));
        let mean = DVector::from_iterator(d, (0..d).map(|j| x.column(j).sum() / n as f64));
        let mut centered = x;
        for j in 0..d {
            let m = mean[j];
            centered.column_mut(j).add_scalar_mut(-m);
        }
        let cov = (centered.transpose() * &centered) / (n as f64 - 1.0);
        Ok(Self { mean, cov, n })
    }
}

/// Symmetric positive semi-definite square root.
fn sqrtm_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let e = SymmetricEigen::new(m.clone());
    let d = DMatrix::from_diagonal(&e.eigenvalues.map(|v| v.max(0.0).sqrt()));
    &e.eigenvectors * d * e.eigenvectors.transpose()
}

/// ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁^{½} Σ₂ Σ₁^{½})^{½}).
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> f64 {
    let diff = &a.mean - &b.mean;
    let s1 = sqrtm_psd(&a.cov);
    let inner = &s1 * &b.cov * &s1;
    let inner = (&inner + inner.transpose()) * 0.5;
    let tr_sqrt: f64 = SymmetricEigen::new(inner)
        .eigenvalues
        .iter()
        .map(|v| v.max(0.0).sqrt())
        .sum();
    (diff.dot(&diff) + a.cov.trace() + b.cov.trace() - 2.0 * tr_sqrt).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn gaussian(n: usize, d: usize, shift: f32, scale: f32, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed, 0);
        r.normal_vec(n * d)
            .into_iter()
            .map(|v| v * scale + shift)
            .collect()
    }

    #[test]
    fn a_set_with_itself_is_zero_and_a_known_shift_adds_its_square() {
        let d = 8;
        let x = gaussian(4000, d, 0.0, 1.0, 1);
        let a = FeatureStats::from_rows(&x, d).unwrap();
        assert!(frechet_distance(&a, &a) < 1e-6);
        // Shifting every feature by δ adds d·δ² exactly (the covariance is unchanged).
        for delta in [0.5f32, 1.0, 2.0] {
            let y: Vec<f32> = x.iter().map(|v| v + delta).collect();
            let b = FeatureStats::from_rows(&y, d).unwrap();
            let fd = frechet_distance(&a, &b);
            assert!(
                (fd - d as f64 * (delta as f64).powi(2)).abs() < 1e-6,
                "δ={delta}: {fd}"
            );
        }
        // Scaling by σ: for identity covariance the distance is d (σ − 1)².
        let z = gaussian(4000, d, 0.0, 2.0, 2);
        let c = FeatureStats::from_rows(&z, d).unwrap();
        let fd = frechet_distance(&a, &c);
        assert!((fd - d as f64).abs() < 0.6, "{fd}");
        assert!(FeatureStats::from_rows(&[1.0], 1).is_err());
    }
}
