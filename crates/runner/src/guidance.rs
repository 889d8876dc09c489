//! Guided sampling requests: prompts, the guidance kind and scale, and the checks that turn a
//! bad request into one sentence (an empty prompt, a negative scale, `--guidance clip` without
//! a CLIP, a CLIP or judge made for other images).
//!
//! The prompt `*` means "every class in turn": row i of a batch gets class i mod K, which is
//! how sweeps measure prompt accuracy over all classes at once.

use anyhow::{Context, Result, bail};
use ddlab_config::Guidance;
use ddlab_core::Device;
use ddlab_core::Tensor;
use ddlab_core::clip::{Clip, ClipGuide, load_clip};
use ddlab_core::data::DatasetKind;
use ddlab_core::judge::{Judge, load_judge, prompt_accuracy};
use ddlab_core::schedule::NoiseSchedule;
use ddlab_core::text::{Constraint, class_prompts, dataset_tokenizer, parse_prompt};
use std::path::Path;

use crate::files::read_checkpoint;

pub struct Request<'a> {
    pub prompt: Option<&'a str>,
    pub kind: Guidance,
    pub clip: Option<&'a Path>,
    pub scale: f64,
    pub dataset: DatasetKind,
    pub channels: usize,
    pub image_size: usize,
    /// Samples in the batch.
    pub n: usize,
}

/// A checked request, ready for sampling.
pub struct Prepared {
    pub kind: Guidance,
    pub scale: f64,
    /// The prompt of each sample row (empty without a prompt).
    pub prompts: Vec<String>,
    /// What each row's prompt asks for, when it can be read.
    pub constraints: Vec<Option<Constraint>>,
    pub clip: Option<Clip>,
    clip_text: Option<Tensor>,
    pub warnings: Vec<String>,
}

pub fn prepare(req: &Request, device: &Device) -> Result<Prepared> {
    if !req.scale.is_finite() || req.scale < 0.0 {
        bail!(
            "the guidance scale must be a finite number ≥ 0, not {}",
            req.scale
        );
    }
    let prompt = req.prompt;
    match (req.kind, prompt) {
        (k, None) if k.is_guided() => bail!(
            "--guidance {} needs a prompt (--prompt \"…\", or \"*\" for every class)",
            k.name()
        ),
        (Guidance::None, Some(_)) => bail!("a prompt needs --guidance clip or --guidance cfg"),
        _ => {}
    }
    let mut warnings = vec![];
    let (prompts, constraints): (Vec<String>, Vec<Option<Constraint>>) = match prompt {
        None => (vec![String::new(); req.n], vec![None; req.n]),
        Some("*") => {
            let classes = class_prompts(req.dataset)?;
            (0..req.n)
                .map(|i| {
                    let p = &classes[i % classes.len()];
                    (p.text.clone(), Some(p.constraint))
                })
                .unzip()
        }
        Some(p) => {
            let tok = dataset_tokenizer(req.dataset)?;
            let enc = tok.encode_prompt(p)?;
            if !enc.unknown.is_empty() {
                warnings.push(format!(
                    "the prompt's words {} are not in the {} captions' vocabulary and are read as <unk>",
                    enc.unknown.iter().map(|w| format!("`{w}`")).collect::<Vec<_>>().join(", "),
                    req.dataset
                ));
            }
            let c = parse_prompt(req.dataset, p).ok();
            (vec![p.to_string(); req.n], vec![c; req.n])
        }
    };
    let (clip, clip_text) = if req.kind == Guidance::Clip {
        let path = req.clip.ok_or_else(|| {
            anyhow::anyhow!("--guidance clip needs --clip FILE (train one with `ddlab train-clip`)")
        })?;
        let clip = load_clip(&read_checkpoint(path, device)?, device)
            .with_context(|| path.display().to_string())?;
        let c = &clip.config;
        if c.dataset != req.dataset
            || c.in_channels != req.channels
            || c.image_size != req.image_size
        {
            bail!(
                "{} is a CLIP for {} images of {}×{}×{}, but the model makes {} images of {}×{}×{}",
                path.display(),
                c.dataset,
                c.in_channels,
                c.image_size,
                c.image_size,
                req.dataset,
                req.channels,
                req.image_size,
                req.image_size
            );
        }
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let text = clip.encode_text(&refs, device)?.detach();
        (Some(clip), Some(text))
    } else {
        (None, None)
    };
    Ok(Prepared {
        kind: req.kind,
        scale: req.scale,
        prompts,
        constraints,
        clip,
        clip_text,
        warnings,
    })
}

impl Prepared {
    /// `n` unguided samples: no prompt, no CLIP.
    pub fn unguided(n: usize) -> Self {
        Self {
            kind: Guidance::None,
            scale: 0.0,
            prompts: vec![String::new(); n],
            constraints: vec![None; n],
            clip: None,
            clip_text: None,
            warnings: vec![],
        }
    }

    /// The CLIP guide for a sampler on `schedule` (None unless CLIP guidance was asked for).
    pub fn clip_guide<'a>(&'a self, schedule: &'a NoiseSchedule) -> Result<Option<ClipGuide<'a>>> {
        Ok(match (&self.clip, &self.clip_text) {
            (Some(clip), Some(text)) => Some(ClipGuide {
                clip,
                schedule,
                text: text.clone(),
                scale: self.scale,
            }),
            _ => None,
        })
    }

    /// The prompt shared by every row, or `*` when rows differ.
    pub fn prompt_label(&self) -> Option<String> {
        let first = self.prompts.first()?;
        if first.is_empty() {
            None
        } else if self.prompts.iter().all(|p| p == first) {
            Some(first.clone())
        } else {
            Some("*".into())
        }
    }
}

/// The judge at `path`, checked to read images like the model's, and its own held-out
/// accuracy. Loaded before sampling, so a bad file is reported before the work.
pub fn load_checked_judge(
    path: &Path,
    dataset: DatasetKind,
    channels: usize,
    size: usize,
    device: &Device,
) -> Result<(Judge, f64)> {
    let (judge, own) = load_judge(&read_checkpoint(path, device)?, device)
        .with_context(|| path.display().to_string())?;
    judge
        .config
        .check_compatible(dataset, channels, size)
        .with_context(|| path.display().to_string())?;
    Ok((judge, own))
}

/// The share of `images` the judge reads as their prompts.
pub fn prompt_share(judge: &Judge, images: &Tensor, prepared: &Prepared) -> Result<f64> {
    let wanted: Vec<Constraint> = prepared
        .constraints
        .iter()
        .map(|c| c.ok_or_else(|| anyhow::anyhow!("the prompt names nothing the judge can check")))
        .collect::<Result<_>>()?;
    Ok(prompt_accuracy(judge, images, &wanted)?)
}
