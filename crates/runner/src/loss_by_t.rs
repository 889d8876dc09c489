//! The training loss by noise level: each step's per-example losses (computed by the step
//! anyway) summed into equal buckets of t ∈ [0, T) until the metric buffer flushes, then
//! written as one row per bucket. A few additions per example: far below 1% of a step.

use ddlab_core::nll::t_bucket;
use ddlab_core::train::ExampleLoss;
use ddlab_store::LossBucketRow;

/// Sums of the current flush window, bucket by bucket.
#[derive(Debug, Clone)]
pub struct LossByT {
    t_steps: usize,
    count: Vec<u64>,
    sum: Vec<f64>,
    /// `None` until a weighted example arrives (unweighted objectives record no weighted mean).
    weighted_sum: Option<Vec<f64>>,
    /// The last step added: the window's step when it is written.
    last_step: usize,
}

impl LossByT {
    pub fn new(t_steps: usize, buckets: usize) -> Self {
        let buckets = buckets.max(1);
        Self {
            t_steps: t_steps.max(1),
            count: vec![0; buckets],
            sum: vec![0.0; buckets],
            weighted_sum: None,
            last_step: 0,
        }
    }

    pub fn buckets(&self) -> usize {
        self.count.len()
    }

    /// Timestep indices [lo, hi) of bucket `b`.
    pub fn bounds(&self, b: usize) -> (usize, usize) {
        let n = self.buckets();
        (
            (b * self.t_steps).div_ceil(n),
            ((b + 1) * self.t_steps).div_ceil(n),
        )
    }

    /// Adds the examples of training step `step`.
    pub fn add(&mut self, step: usize, examples: &[ExampleLoss]) {
        let n = self.buckets();
        for e in examples {
            let b = t_bucket(e.t, self.t_steps, n);
            self.count[b] += 1;
            self.sum[b] += e.loss;
            if let Some(w) = e.weighted {
                self.weighted_sum.get_or_insert_with(|| vec![0.0; n])[b] += w;
            }
        }
        self.last_step = step;
    }

    /// The window's rows (buckets without examples are left out), and a new window.
    pub fn take(&mut self, run_id: i64, wall_time: f64) -> Vec<LossBucketRow> {
        let n = self.buckets();
        let rows = (0..n)
            .filter(|&b| self.count[b] > 0)
            .map(|b| {
                let (lo, hi) = self.bounds(b);
                let count = self.count[b] as f64;
                LossBucketRow {
                    run_id,
                    step: self.last_step as i64,
                    bucket: b as i64,
                    buckets: n as i64,
                    t_lo: lo as i64,
                    t_hi: hi as i64,
                    count: self.count[b] as i64,
                    loss: Some(self.sum[b] / count),
                    weighted_loss: self.weighted_sum.as_ref().map(|w| w[b] / count),
                    wall_time,
                }
            })
            .collect();
        self.count.iter_mut().for_each(|c| *c = 0);
        self.sum.iter_mut().for_each(|s| *s = 0.0);
        self.weighted_sum = None;
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(t: usize, loss: f64, weighted: Option<f64>) -> ExampleLoss {
        ExampleLoss { t, loss, weighted }
    }

    #[test]
    fn buckets_match_a_direct_computation() {
        // T = 1000, 10 buckets: the mean of every bucket against a filter over the examples.
        let examples: Vec<ExampleLoss> = (0..500)
            .map(|i| {
                let t = (i * 7919) % 1000;
                example(t, (i as f64 * 0.37).sin().abs(), Some(i as f64 * 0.01))
            })
            .collect();
        let mut acc = LossByT::new(1000, 10);
        for (k, chunk) in examples.chunks(64).enumerate() {
            acc.add(k + 1, chunk);
        }
        let rows = acc.take(3, 1.5);
        assert_eq!(rows.len(), 10);
        for r in &rows {
            let inside: Vec<&ExampleLoss> = examples
                .iter()
                .filter(|e| e.t >= r.t_lo as usize && e.t < r.t_hi as usize)
                .collect();
            let mean = inside.iter().map(|e| e.loss).sum::<f64>() / inside.len() as f64;
            let wmean =
                inside.iter().map(|e| e.weighted.unwrap()).sum::<f64>() / inside.len() as f64;
            assert_eq!(r.count as usize, inside.len());
            assert!((r.loss.unwrap() - mean).abs() < 1e-12);
            assert!((r.weighted_loss.unwrap() - wmean).abs() < 1e-12);
            assert_eq!((r.step, r.run_id, r.buckets), (8, 3, 10));
            assert_eq!(r.t_hi - r.t_lo, 100);
        }
        // A new window starts empty.
        assert!(acc.take(3, 2.0).is_empty());
    }

    #[test]
    fn uneven_t_splits_into_adjacent_bounds_and_empty_buckets_are_left_out() {
        let acc = LossByT::new(7, 3);
        let bounds: Vec<_> = (0..3).map(|b| acc.bounds(b)).collect();
        assert_eq!(bounds, [(0, 3), (3, 5), (5, 7)]);
        // Every t falls in the bucket whose bounds hold it.
        for t in 0..7 {
            let b = t_bucket(t, 7, 3);
            assert!(bounds[b].0 <= t && t < bounds[b].1, "t = {t} in bucket {b}");
        }
        let mut acc = LossByT::new(100, 4);
        acc.add(1, &[example(99, 1.0, None)]);
        let rows = acc.take(1, 0.0);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].bucket, rows[0].weighted_loss), (3, None));
    }
}
