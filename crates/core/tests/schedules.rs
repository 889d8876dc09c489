//! Schedules against values computed by the reference implementations themselves
//! (tests/data/reference.json, made by tests/data/make_reference.py).

use ddlab_core::schedule::{NoiseSchedule, ScheduleConfig, ScheduleKind};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(include_str!("data/reference.json")).unwrap()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    if a.is_infinite() || b.is_infinite() {
        return a == b;
    }
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn every_schedule_matches_its_reference_implementation() {
    let r = reference();
    let mut checked = 0;
    for case in r["schedules"].as_array().unwrap() {
        let kind: ScheduleKind = case["kind"].as_str().unwrap().parse().unwrap();
        let t_steps = case["T"].as_u64().unwrap() as usize;
        let mut cfg = ScheduleConfig::new(kind, t_steps);
        cfg.zero_terminal_snr = case["zero_terminal_snr"].as_bool().unwrap_or(false);
        let s = cfg
            .build()
            .unwrap_or_else(|e| panic!("{kind} T={t_steps}: {e}"));
        let tol = case["tol"].as_f64().unwrap();
        let ts: Vec<usize> = case["t"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let columns: [(&str, &dyn Fn(usize) -> f64); 7] = [
            ("beta", &|i| s.betas[i]),
            ("alpha_bar", &|i| s.alpha_bars[i]),
            ("snr", &|i| s.snr(i)),
            ("posterior_variance", &|i| s.posterior_variance[i]),
            ("posterior_log_variance_clipped", &|i| {
                s.posterior_log_variance_clipped[i]
            }),
            ("posterior_mean_coef1", &|i| s.posterior_mean_coef1[i]),
            ("posterior_mean_coef2", &|i| s.posterior_mean_coef2[i]),
        ];
        for (col, ours) in columns {
            let Some(want) = case.get(col) else { continue };
            for (k, &t) in ts.iter().enumerate() {
                let w = want[k].as_f64().unwrap_or(f64::INFINITY);
                let got = ours(t - 1);
                assert!(
                    close(got, w, tol),
                    "{kind} T={t_steps} zt={} {col} at t={t}: ours {got:e}, {} says {w:e}",
                    cfg.zero_terminal_snr,
                    case["source"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "only {checked} values compared");
}

#[test]
fn cosine_schedule_does_not_collapse() {
    // candle-transformers' integer division made 999 of 1000 betas zero.
    let s = ScheduleConfig::new(ScheduleKind::Cosine, 1000)
        .build()
        .unwrap();
    assert!(s.betas.iter().all(|&b| b > 1e-6));
    assert!((s.alpha_bars[999] - 0.0).abs() < 1e-4 && s.alpha_bars[999] > 0.0);
    assert!(s.betas[999] == 0.999, "last β is clipped at 0.999");
}

#[test]
fn zero_terminal_snr_ends_at_exactly_zero() {
    for kind in ScheduleKind::ALL {
        let mut cfg = ScheduleConfig::new(kind, 100);
        cfg.zero_terminal_snr = true;
        let s = cfg.build().unwrap();
        assert_eq!(s.alpha_bars[99], 0.0, "{kind}");
        assert_eq!(s.snr(99), 0.0);
        // ᾱ_1 is preserved by the rescaling.
        let plain = ScheduleConfig::new(kind, 100).build().unwrap();
        assert!(
            (s.alpha_bars[0] - plain.alpha_bars[0]).abs() < 1e-12,
            "{kind}"
        );
    }
}

#[test]
fn sigmoid_and_geodiff_sigmoid_are_different_schedules() {
    let a = ScheduleConfig::new(ScheduleKind::Sigmoid, 100)
        .build()
        .unwrap();
    let b = ScheduleConfig::new(ScheduleKind::GeodiffSigmoid, 100)
        .build()
        .unwrap();
    assert!((a.alpha_bars[50] - b.alpha_bars[50]).abs() > 0.1);
}

#[test]
fn invalid_parameters_are_clear_errors() {
    let err = |cfg: ScheduleConfig| cfg.build().unwrap_err().to_string();
    let e = err(ScheduleConfig::new(ScheduleKind::Linear, 0));
    assert!(e.contains("T = 0"), "{e}");
    let e = err(ScheduleConfig::new(ScheduleKind::Linear, 10));
    assert!(e.contains("outside (0, 1)") && e.contains("T ≥ 21"), "{e}");
    let mut c = ScheduleConfig::new(ScheduleKind::Quadratic, 100);
    c.beta_end = Some(1.5);
    assert!(err(c).contains("beta_end = 1.5"));
    let mut c = ScheduleConfig::new(ScheduleKind::ScaledLinear, 100);
    c.beta_start = Some(0.0);
    assert!(err(c).contains("beta_start = 0"));
    let mut c = ScheduleConfig::new(ScheduleKind::Linear, 100);
    c.beta_start = Some(0.05);
    c.beta_end = Some(0.01);
    assert!(err(c).contains("larger than"));
    assert!(
        "warp"
            .parse::<ScheduleKind>()
            .unwrap_err()
            .to_string()
            .contains("unknown schedule")
    );
}

#[test]
fn any_t_from_one_works_for_cosine_and_sigmoid() {
    for t in [1, 2, 3, 7, 1000, 4000] {
        for kind in [ScheduleKind::Cosine, ScheduleKind::Sigmoid] {
            let s = NoiseSchedule::from_config(&ScheduleConfig::new(kind, t)).unwrap();
            assert_eq!(s.len(), t);
            assert!(
                s.posterior_log_variance_clipped
                    .iter()
                    .all(|v| v.is_finite())
            );
        }
    }
}

#[test]
fn respacing_keeps_alpha_bar_at_visited_steps() {
    let s = ScheduleConfig::new(ScheduleKind::Cosine, 1000)
        .build()
        .unwrap();
    let ts = [99, 399, 699, 999];
    let r = s.respaced(&ts).unwrap();
    for (k, &t) in ts.iter().enumerate() {
        assert!((r.alpha_bars[k] - s.alpha_bars[t]).abs() < 1e-12);
    }
}
