//! Numbers and statuses as the dashboard writes them: short, fixed-ish width.

use crate::snapshot::RunInfo;
use ddlab_store::RunStatus;
use ratatui::style::{Color, Modifier, Style};

pub fn status_color(status: RunStatus, stalled: bool) -> Color {
    if stalled {
        return Color::Magenta;
    }
    match status {
        RunStatus::Pending => Color::DarkGray,
        RunStatus::Running => Color::LightBlue,
        RunStatus::Completed => Color::Green,
        RunStatus::Failed => Color::Red,
        RunStatus::Interrupted => Color::Yellow,
        RunStatus::Pruned => Color::Cyan,
    }
}

pub fn status_style(run: &RunInfo) -> Style {
    let s = Style::new().fg(status_color(run.status, run.stalled));
    if run.status == RunStatus::Failed {
        s.add_modifier(Modifier::BOLD)
    } else {
        s
    }
}

pub fn status_text(run: &RunInfo) -> &'static str {
    if run.stalled {
        "stalled"
    } else {
        run.status.as_str()
    }
}

/// A loss-like value with about four significant digits.
pub fn value(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        format!("{v}")
    } else if a == 0.0 {
        "0".into()
    } else if !(1e-3..1000.0).contains(&a) {
        format!("{v:.2e}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else if a >= 1.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

pub fn opt_value(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), value)
}

/// Steps per second.
pub fn speed(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A duration as `42s`, `12m05s`, `3h12m`, `2d03h`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// A step count as `950`, `1.5k`, `12k`, `1.0M`.
pub fn steps(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

pub fn nll(run: &RunInfo) -> String {
    match (run.nll_bpd, run.nll_bpd_stderr) {
        (Some(b), Some(e)) => format!("{b:.3}±{e:.3}"),
        (Some(b), None) => format!("{b:.3}"),
        _ => "–".into(),
    }
}

/// `2026-11-25T07:54:12.345Z` → `2026-11-25 07:54:12`.
pub fn timestamp(t: &str) -> String {
    t.get(..19).unwrap_or(t).replacen('T', " ", 1)
}

/// A run name that fits `width` columns. Sweep runs are named by their grid keys
/// (`guidance=clip,guidance_scale=3.0`), and cutting such a name at the end hides exactly the
/// values that tell the runs apart; so a name too long keeps the values and drops the keys
/// (`clip,3.0`), and only what still does not fit is cut, with an ellipsis.
pub fn run_name(name: &str, width: usize) -> String {
    let chars = |s: &str| s.chars().count();
    if chars(name) <= width {
        return name.to_string();
    }
    let values: Vec<&str> = name
        .split(',')
        .map(|part| part.split_once('=').map_or(part, |(_, v)| v))
        .collect();
    let short = values.join(",");
    if chars(&short) <= width {
        return short;
    }
    let cut: String = short.chars().take(width.saturating_sub(1)).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(value(0.031234), "0.0312");
        assert_eq!(value(1.5), "1.500");
        assert_eq!(value(12345.0), "1.23e4");
        assert_eq!(value(0.0), "0");
        assert_eq!(duration(42.4), "42s");
        assert_eq!(duration(725.0), "12m05s");
        assert_eq!(duration(3.0 * 3600.0 + 12.0 * 60.0), "3h12m");
        assert_eq!(duration(2.0 * 86400.0 + 3.0 * 3600.0), "2d03h");
        assert_eq!(steps(950.0), "950");
        assert_eq!(steps(1500.0), "1.5k");
        assert_eq!(steps(1_000_000.0), "1.0M");
        assert_eq!(speed(4.56789), "4.57");
        assert_eq!(speed(12.34), "12.3");
        assert_eq!(timestamp("2026-11-25T07:54:12.345Z"), "2026-11-25 07:54:12");
    }

    #[test]
    fn long_run_names_keep_the_values_that_tell_runs_apart() {
        let name = "guidance=clip,guidance_scale=3.0";
        assert_eq!(run_name(name, 40), name);
        assert_eq!(run_name(name, 29), "clip,3.0");
        assert_eq!(run_name("schedule=cosine,T=1000", 11), "cosine,1000");
        assert_eq!(run_name("schedule=cosine,T=1000", 8), "cosine,…");
        assert_eq!(run_name("a-very-long-plain-name", 6), "a-ver…");
        assert_eq!(run_name("x", 0), "…");
    }
}
