//! Orders of the runs table (within each sweep), cycled with `s`.

use crate::snapshot::RunInfo;
use ddlab_store::RunStatus;
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    #[default]
    Id,
    Name,
    /// What needs attention first: running, failed, interrupted, pending, completed.
    Status,
    /// Last loss, lowest first; runs without one last.
    Loss,
    /// NLL in bits/dim, lowest first; runs without one last.
    Nll,
}

impl SortKey {
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Id => SortKey::Name,
            SortKey::Name => SortKey::Status,
            SortKey::Status => SortKey::Loss,
            SortKey::Loss => SortKey::Nll,
            SortKey::Nll => SortKey::Id,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SortKey::Id => "id",
            SortKey::Name => "name",
            SortKey::Status => "status",
            SortKey::Loss => "loss",
            SortKey::Nll => "NLL",
        }
    }

    /// Compares two runs; ties fall back to the id, so the order is total and stable.
    pub fn compare(self, a: &RunInfo, b: &RunInfo) -> Ordering {
        let primary = match self {
            SortKey::Id => Ordering::Equal,
            SortKey::Name => a.name.to_lowercase().cmp(&b.name.to_lowercase()),
            SortKey::Status => status_rank(a).cmp(&status_rank(b)),
            SortKey::Loss => missing_last(a.last_loss, b.last_loss),
            SortKey::Nll => missing_last(a.nll_bpd, b.nll_bpd),
        };
        primary.then(a.id.cmp(&b.id))
    }
}

fn status_rank(r: &RunInfo) -> u8 {
    match r.status {
        RunStatus::Running => 0,
        RunStatus::Failed => 1,
        RunStatus::Interrupted => 2,
        RunStatus::Pending => 3,
        RunStatus::Completed => 4,
        RunStatus::Pruned => 5,
    }
}

fn missing_last(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: i64, name: &str, status: RunStatus, loss: Option<f64>, nll: Option<f64>) -> RunInfo {
        RunInfo {
            name: name.into(),
            status,
            last_loss: loss,
            best_loss: loss,
            nll_bpd: nll,
            ..RunInfo::blank(id)
        }
    }

    fn order(key: SortKey, runs: &[RunInfo]) -> Vec<i64> {
        let mut v: Vec<&RunInfo> = runs.iter().collect();
        v.sort_by(|a, b| key.compare(a, b));
        v.iter().map(|r| r.id).collect()
    }

    #[test]
    fn sort_orders() {
        let runs = [
            run(1, "b-cosine", RunStatus::Completed, Some(0.05), Some(3.1)),
            run(2, "A-linear", RunStatus::Running, Some(0.20), None),
            run(3, "c-sigmoid", RunStatus::Failed, None, None),
            run(4, "a-linear", RunStatus::Pending, None, None),
            run(5, "d-quad", RunStatus::Completed, Some(0.05), Some(2.9)),
            run(6, "e", RunStatus::Interrupted, Some(0.10), None),
        ];
        assert_eq!(order(SortKey::Id, &runs), [1, 2, 3, 4, 5, 6]);
        // Case-insensitive; equal names keep id order.
        assert_eq!(order(SortKey::Name, &runs), [2, 4, 1, 3, 5, 6]);
        assert_eq!(order(SortKey::Status, &runs), [2, 3, 6, 4, 1, 5]);
        assert_eq!(order(SortKey::Loss, &runs), [1, 5, 6, 2, 3, 4]);
        assert_eq!(order(SortKey::Nll, &runs), [5, 1, 2, 3, 4, 6]);
    }

    #[test]
    fn cycle_visits_every_key() {
        let mut k = SortKey::default();
        let mut seen = vec![k.label()];
        for _ in 0..4 {
            k = k.next();
            seen.push(k.label());
        }
        assert_eq!(seen, ["id", "name", "status", "loss", "NLL"]);
        assert_eq!(k.next(), SortKey::Id);
    }
}
