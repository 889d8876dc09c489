//! Training: reproducibility, exact resume from a checkpoint, and that it actually learns.

use candle_core::{Device, Tensor};
use ddlab_core::checkpoint::Checkpoint;
use ddlab_core::data::{DatasetConfig, batch_indices};
use ddlab_core::diffusion::Objective;
use ddlab_core::nn::UNetConfig;
use ddlab_core::schedule::{ScheduleConfig, ScheduleKind};
use ddlab_core::train::{LoadedModel, TrainConfig, Trainer};

fn setup(objective: Objective, min_snr: Option<f64>) -> (Trainer, ddlab_core::data::ImageDataset) {
    let data = DatasetConfig {
        shapes_count: 256,
        ..Default::default()
    }
    .load()
    .unwrap()
    .train;
    let cfg = UNetConfig {
        in_channels: 3,
        dropout: 0.1,
        ..UNetConfig::tiny()
    };
    let schedule = ScheduleConfig::new(ScheduleKind::Cosine, 100)
        .build()
        .unwrap();
    let train = TrainConfig {
        batch_size: 8,
        warmup_steps: 2,
        lr: 1e-3,
        objective,
        min_snr_gamma: min_snr,
        seed: 11,
        ..Default::default()
    };
    (
        Trainer::new(&cfg, schedule, train, &Device::Cpu).unwrap(),
        data,
    )
}

fn run(trainer: &mut Trainer, data: &ddlab_core::data::ImageDataset, steps: usize) -> Vec<f64> {
    (0..steps)
        .map(|_| {
            let idx = batch_indices(data.len(), 8, 11, trainer.step_count());
            let x = data.batch(&idx, &Device::Cpu).unwrap();
            trainer.train_step(&x, None).unwrap().loss
        })
        .collect()
}

fn weights(t: &Trainer) -> Vec<Vec<f32>> {
    t.params
        .vars()
        .iter()
        .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
        .collect()
}

#[test]
fn resuming_from_a_checkpoint_continues_bit_for_bit() {
    for (objective, min_snr) in [(Objective::Eps, None), (Objective::V, Some(5.0))] {
        let (mut a, data) = setup(objective, min_snr);
        run(&mut a, &data, 3);
        let bytes = a
            .checkpoint(Default::default())
            .unwrap()
            .to_bytes()
            .unwrap();
        let losses_a = run(&mut a, &data, 3);

        let (mut b, _) = setup(objective, min_snr);
        b.restore(&Checkpoint::from_bytes(&bytes, &Device::Cpu).unwrap())
            .unwrap();
        assert_eq!(b.step_count(), 3);
        let losses_b = run(&mut b, &data, 3);
        assert_eq!(losses_a, losses_b, "{objective}");
        assert_eq!(
            weights(&a),
            weights(&b),
            "{objective}: weights differ after resume"
        );
        let (ck_a, ck_b) = (
            a.checkpoint(Default::default()).unwrap(),
            b.checkpoint(Default::default()).unwrap(),
        );
        assert_eq!(ck_a.metadata, ck_b.metadata);
        for (k, ta) in &ck_a.tensors {
            let (va, vb): (Vec<f32>, Vec<f32>) = (
                ta.flatten_all().unwrap().to_vec1().unwrap(),
                ck_b.tensors[k].flatten_all().unwrap().to_vec1().unwrap(),
            );
            assert_eq!(va, vb, "{objective}: `{k}` differs after resume");
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_does_not() {
    let (mut a, data) = setup(Objective::Eps, None);
    let (mut b, _) = setup(Objective::Eps, None);
    assert_eq!(run(&mut a, &data, 2), run(&mut b, &data, 2));
    let (mut c, _) = setup(Objective::Eps, None);
    c.config.seed = 12;
    assert_ne!(run(&mut c, &data, 2), run(&mut a, &data, 2));
}

#[test]
fn loss_falls_on_the_shapes_data() {
    for objective in [Objective::Eps, Objective::X0, Objective::V] {
        let (mut t, data) = setup(objective, None);
        let losses = run(&mut t, &data, 80);
        let head: f64 = losses[..10].iter().sum::<f64>() / 10.0;
        let tail: f64 = losses[70..].iter().sum::<f64>() / 10.0;
        assert!(
            tail < 0.75 * head,
            "{objective}: loss {head:.4} -> {tail:.4}"
        );
    }
}

#[test]
fn a_checkpoint_loads_for_sampling_with_its_configs() {
    let (mut t, data) = setup(Objective::V, None);
    run(&mut t, &data, 2);
    let bytes = t
        .checkpoint(Default::default())
        .unwrap()
        .to_bytes()
        .unwrap();
    let m = LoadedModel::from_checkpoint(
        &Checkpoint::from_bytes(&bytes, &Device::Cpu).unwrap(),
        &Device::Cpu,
        true,
    )
    .unwrap();
    assert_eq!(m.step, 2);
    assert_eq!(m.train.objective, Objective::V);
    assert_eq!(m.schedule.len(), 100);
    let x = Tensor::zeros((1, 3, 16, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
    let ema_out = m.model.forward(&x, &[5], None, None).unwrap();
    let ema_direct = t
        .ema_model()
        .unwrap()
        .forward(&x, &[5], None, None)
        .unwrap();
    let d = (ema_out - ema_direct)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(d, 0.0);
    assert!(Checkpoint::from_bytes(b"not a checkpoint", &Device::Cpu).is_err());
}

#[test]
fn invalid_training_settings_are_refused() {
    let cfg = UNetConfig::tiny();
    let s = || {
        ScheduleConfig::new(ScheduleKind::Cosine, 10)
            .build()
            .unwrap()
    };
    let bad = |t: TrainConfig| {
        Trainer::new(&cfg, s(), t, &Device::Cpu)
            .err()
            .unwrap()
            .to_string()
    };
    assert!(
        bad(TrainConfig {
            lr: -1.0,
            ..Default::default()
        })
        .contains("lr")
    );
    assert!(
        bad(TrainConfig {
            batch_size: 0,
            ..Default::default()
        })
        .contains("batch_size")
    );
    let mut zt = ScheduleConfig::new(ScheduleKind::Cosine, 10);
    zt.zero_terminal_snr = true;
    let e = Trainer::new(
        &cfg,
        zt.build().unwrap(),
        TrainConfig::default(),
        &Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("zero terminal SNR"), "{e}");
}
