//! Guidance: the CLIP gradient against finite differences, scale 0 against unguided sampling,
//! and the CLIP and judge learning something.

use candle_core::{DType, Device, Tensor};
use ddlab_core::clip::{
    Clip, ClipConfig, ClipGuide, ClipTrainConfig, ClipTrainer, zero_shot_accuracy,
};
use ddlab_core::data::{DatasetConfig, DatasetKind};
use ddlab_core::diffusion::Diffusion;
use ddlab_core::judge::{JudgeConfig, JudgeTrainConfig, JudgeTrainer, accuracy};
use ddlab_core::nn::{ParamBuilder, ParamStore};
use ddlab_core::rng::Rng;
use ddlab_core::sampler::{
    Ddim, Ddpm, DdpmVariance, GaussianOracle, Sampler, TimestepSpacing, sample,
};
use ddlab_core::schedule::{ScheduleConfig, ScheduleKind};

fn random_clip(seed: u64) -> Clip {
    let cfg = ClipConfig::for_dataset(DatasetKind::Mnist, 1, 12).unwrap();
    let store = ParamStore::new();
    Clip::new(&ParamBuilder::new(&store, seed, &Device::Cpu), &cfg).unwrap()
}

#[test]
fn clip_guidance_gradient_matches_finite_differences() {
    let dev = Device::Cpu;
    let clip = random_clip(3);
    let schedule = ScheduleConfig::new(ScheduleKind::Cosine, 1000)
        .build()
        .unwrap();
    let text = clip
        .encode_text(&["a handwritten three", "the digit 7"], &dev)
        .unwrap();
    let guide = ClipGuide {
        clip: &clip,
        schedule: &schedule,
        text,
        scale: 1.0,
    };
    let x = Rng::new(1, 1).randn((2, 1, 12, 12), &dev).unwrap();
    let t = [10, 600];
    let (_, grad) = guide.score_and_grad(&x, &t).unwrap();
    let grad: Vec<f32> = grad.flatten_all().unwrap().to_vec1().unwrap();
    let base: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let score = |v: &[f32]| -> f64 {
        let xx = Tensor::from_vec(v.to_vec(), (2, 1, 12, 12), &dev).unwrap();
        let (s, _) = guide.score_and_grad(&xx, &t).unwrap();
        s.to_dtype(DType::F64)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    for idx in [0usize, 17, 77, 150, 287] {
        let h = 1e-2f32;
        let (mut up, mut down) = (base.clone(), base.clone());
        up[idx] += h;
        down[idx] -= h;
        let fd = (score(&up) - score(&down)) / (2.0 * h as f64);
        let g = grad[idx] as f64;
        assert!(
            (g - fd).abs() < 2e-2 * (fd.abs() + g.abs()) + 2e-4,
            "pixel {idx}: autograd {g}, finite difference {fd}"
        );
    }
}

/// GLIDE's `cond_fn` differentiates exp(ℓ)·f·g: the guide's gradient is s·e^ℓ times the bare
/// score's, with ℓ the CLIP's learned log logit scale.
#[test]
fn clip_guidance_includes_the_learned_logit_scale() {
    use ddlab_core::sampler::Guide;
    let dev = Device::Cpu;
    let cfg = ClipConfig::for_dataset(DatasetKind::Mnist, 1, 12).unwrap();
    let store = ParamStore::new();
    let clip = Clip::new(&ParamBuilder::new(&store, 3, &dev), &cfg).unwrap();
    let mut tensors: std::collections::HashMap<String, Tensor> = store
        .tensors("")
        .into_iter()
        .map(|(k, v)| (k, v.copy().unwrap()))
        .collect();
    let ell = (1.0f32 / 0.07).ln();
    tensors.insert("log_scale".into(), Tensor::new(&[ell], &dev).unwrap());
    store.load(&tensors, "").unwrap();
    let schedule = ScheduleConfig::new(ScheduleKind::Cosine, 1000)
        .build()
        .unwrap();
    let text = clip.encode_text(&["the digit 7"], &dev).unwrap();
    let guide = ClipGuide {
        clip: &clip,
        schedule: &schedule,
        text,
        scale: 2.0,
    };
    let x = Rng::new(1, 1).randn((1, 1, 12, 12), &dev).unwrap();
    let (_, bare) = guide.score_and_grad(&x, &[300]).unwrap();
    let g = guide.gradient(&x, &[300]).unwrap();
    let ratio = (g / bare)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let want = 2.0 / 0.07;
    assert!(
        ratio.iter().all(|r| (*r as f64 / want - 1.0).abs() < 1e-4),
        "gradient ratio {:?}, want {want}",
        &ratio[..4]
    );
}

#[test]
fn guidance_at_scale_zero_reproduces_unguided_sampling_bit_for_bit() {
    let dev = Device::Cpu;
    let clip = random_clip(5);
    let schedule = ScheduleConfig::new(ScheduleKind::Linear, 100)
        .build()
        .unwrap();
    let diffusion = Diffusion::new(schedule.clone(), &dev);
    let oracle = GaussianOracle {
        diffusion: &diffusion,
        mean: 0.1,
        std: 0.5,
    };
    let text = clip.encode_text(&["a handwritten three"; 3], &dev).unwrap();
    let ddpm = Ddpm::new(
        &schedule,
        20,
        TimestepSpacing::Trailing,
        DdpmVariance::BetaTilde,
        true,
    )
    .unwrap();
    let ddim = Ddim::new(&schedule, 10, TimestepSpacing::Trailing, 0.5, true).unwrap();
    for sampler in [&ddpm as &dyn Sampler, &ddim] {
        let run = |scale: Option<f64>| {
            let guide = scale.map(|s| ClipGuide {
                clip: &clip,
                schedule: &schedule,
                text: text.clone(),
                scale: s,
            });
            let mut rng = Rng::new(9, 9);
            let g = guide.as_ref().map(|g| g as &dyn ddlab_core::sampler::Guide);
            let x = sample(
                sampler,
                &oracle,
                g,
                &diffusion,
                (3, 1, 12, 12),
                &mut rng,
                &mut |_, _| {},
            )
            .unwrap();
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let plain = run(None);
        assert_eq!(
            plain,
            run(Some(0.0)),
            "{}: scale 0 must change nothing",
            sampler.name()
        );
        assert_ne!(
            plain,
            run(Some(50.0)),
            "{}: a large scale must change the samples",
            sampler.name()
        );
    }
}

#[test]
fn a_short_clip_training_reads_digits_zero_shot() {
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/mnist");
    if !dir.join("t10k-images-idx3-ubyte.gz").is_file() {
        eprintln!("SKIPPED: ../shared/data/mnist is not present");
        return;
    }
    let dev = Device::Cpu;
    let data = DatasetConfig {
        kind: DatasetKind::Mnist,
        dir: Some(dir),
        ..Default::default()
    }
    .load()
    .unwrap();
    let cfg = ClipConfig::for_dataset(DatasetKind::Mnist, 1, 28).unwrap();
    let mut trainer = ClipTrainer::new(
        &cfg,
        ClipTrainConfig {
            steps: 40,
            batch_size: 64,
            lr: 1e-3,
            warmup_steps: 4,
            seed: 1,
        },
        &dev,
    )
    .unwrap();
    let losses: Vec<f64> = (0..40)
        .map(|_| trainer.train_step(&data.train).unwrap().loss)
        .collect();
    let head: f64 = losses[..5].iter().sum::<f64>() / 5.0;
    let tail: f64 = losses[35..].iter().sum::<f64>() / 5.0;
    assert!(tail < 0.8 * head, "CLIP loss {head:.3} -> {tail:.3}");
    // Ten classes: chance is 10%.
    let acc = zero_shot_accuracy(&trainer.clip, &data.heldout, 300, 0, 0, &dev).unwrap();
    assert!(acc > 0.4, "zero-shot accuracy {acc}");
}

#[test]
fn the_judge_learns_the_shapes_attributes() {
    let dev = Device::Cpu;
    let data = DatasetConfig {
        shapes_count: 1000,
        ..Default::default()
    }
    .load()
    .unwrap();
    let cfg = JudgeConfig::for_dataset(DatasetKind::Shapes, 3, 16).unwrap();
    let mut t = JudgeTrainer::new(
        &cfg,
        JudgeTrainConfig {
            steps: 120,
            batch_size: 32,
            lr: 3e-3,
            seed: 0,
        },
        &dev,
    )
    .unwrap();
    for _ in 0..120 {
        t.train_step(&data.train).unwrap();
    }
    // All three attributes right: chance is 1/162; after 120 steps it reads about a fifth.
    let acc = accuracy(&t.judge, &data.heldout, 100, &dev).unwrap();
    assert!(acc > 0.08, "judge accuracy {acc}");
    assert!(cfg.check_compatible(DatasetKind::Mnist, 1, 28).is_err());
}

fn captioned_unet_config() -> ddlab_core::nn::UNetConfig {
    use ddlab_core::nn::unet::CaptionConditioning;
    let mut cfg = ddlab_core::nn::UNetConfig::tiny();
    let tok = ddlab_core::text::dataset_tokenizer(DatasetKind::Mnist).unwrap();
    let text = CaptionConditioning::new(tok, cfg.time_embed_dim());
    cfg.cond_dim = Some(text.encoder.out_dim);
    cfg.text = Some(text);
    cfg
}

#[test]
fn classifier_free_guidance_at_w_1_is_the_conditional_model_and_at_w_0_the_unconditional() {
    use ddlab_core::diffusion::Objective;
    use ddlab_core::nn::UNet;
    use ddlab_core::sampler::{CfgDenoiser, Denoiser, UNetDenoiser};
    let dev = Device::Cpu;
    let cfg = captioned_unet_config();
    let store = ParamStore::new();
    let model = UNet::new(&ParamBuilder::new(&store, 5, &dev), &cfg).unwrap();
    // Zero-initialised output layers would make every prediction 0: perturb all weights.
    for (i, v) in store.vars().iter().enumerate() {
        let noise = Rng::new(9, i as u64)
            .randn(v.as_tensor().shape(), &dev)
            .unwrap();
        v.set(&(v.as_tensor() + (noise * 0.05).unwrap()).unwrap())
            .unwrap();
    }
    let diffusion = Diffusion::new(
        ScheduleConfig::new(ScheduleKind::Linear, 100)
            .build()
            .unwrap(),
        &dev,
    );
    let prompts = ["a handwritten three", "the digit 7", "nine"];
    let x = Rng::new(2, 2).randn((3, 1, 8, 8), &dev).unwrap();
    let t = [5, 50, 99];
    let eps = |d: &dyn Denoiser| -> Vec<f32> {
        d.predict(&x, &t)
            .unwrap()
            .eps
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let with = |prompts: &[&str]| {
        let cond = model.embed_captions(prompts, &dev).unwrap();
        eps(&UNetDenoiser {
            model: &model,
            diffusion: &diffusion,
            objective: Objective::Eps,
            cond: Some(&cond),
        })
    };
    let conditional = with(&prompts);
    let unconditional = with(&["", "", ""]);
    let cfg_at =
        |w: f64| eps(&CfgDenoiser::new(&model, &diffusion, Objective::Eps, &prompts, w).unwrap());
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    assert!(
        max_diff(&conditional, &unconditional) > 1e-3,
        "the caption matters"
    );
    // No caption at all is ∅.
    let no_caption = eps(&UNetDenoiser {
        model: &model,
        diffusion: &diffusion,
        objective: Objective::Eps,
        cond: None,
    });
    assert!(max_diff(&no_caption, &unconditional) < 1e-6);
    assert!(max_diff(&cfg_at(1.0), &conditional) < 1e-5);
    assert!(max_diff(&cfg_at(0.0), &unconditional) < 1e-5);
    // w = 3 extrapolates: ε(∅) + 3(ε(c) − ε(∅)).
    let expected: Vec<f32> = conditional
        .iter()
        .zip(&unconditional)
        .map(|(c, u)| u + 3.0 * (c - u))
        .collect();
    assert!(max_diff(&cfg_at(3.0), &expected) < 1e-4);
}

#[test]
fn caption_dropout_drops_about_p_and_the_caption_encoder_trains() {
    use ddlab_core::train::{TrainConfig, Trainer};
    let dev = Device::Cpu;
    let cfg = captioned_unet_config();
    let schedule = ScheduleConfig::new(ScheduleKind::Linear, 50)
        .build()
        .unwrap();
    let train = TrainConfig {
        batch_size: 4,
        caption_dropout: 0.25,
        warmup_steps: 0,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&cfg, schedule, train, &dev).unwrap();
    let captions = vec!["a handwritten three"; 4000];
    let dropped = trainer
        .drop_captions(&captions)
        .iter()
        .filter(|c| c.is_empty())
        .count();
    assert!(
        (850..1150).contains(&dropped),
        "{dropped} of 4000 at p = 0.25"
    );

    let before: Vec<f32> = trainer
        .model
        .embed_captions(&["the digit 3"], &dev)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let x0 = Rng::new(4, 4)
        .randn((4, 1, 8, 8), &dev)
        .unwrap()
        .tanh()
        .unwrap();
    for _ in 0..3 {
        let s = trainer
            .train_step_captioned(&x0, &["the digit 3", "a five", "", "7"])
            .unwrap();
        assert!(s.loss.is_finite());
    }
    let after: Vec<f32> = trainer
        .model
        .embed_captions(&["the digit 3"], &dev)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_ne!(
        before, after,
        "the caption encoder is trained with the U-Net"
    );
    // Its weights are in the checkpoint and come back.
    let ck = trainer.checkpoint(Default::default()).unwrap();
    assert!(ck.tensors.keys().any(|k| k.starts_with("model.text.")));
    let loaded = ddlab_core::train::LoadedModel::from_checkpoint(&ck, &dev, false).unwrap();
    let again: Vec<f32> = loaded
        .model
        .embed_captions(&["the digit 3"], &dev)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(after, again);
}
