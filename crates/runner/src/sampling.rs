//! Drawing samples from a trained U-Net, guided or not: the one path that a run's sample grids,
//! its guided evaluation and `ddlab sample` all take.

use anyhow::{Context, Result};
use ddlab_config::Guidance;
use ddlab_core::Tensor;
use ddlab_core::diffusion::{Diffusion, Objective};
use ddlab_core::nn::UNet;
use ddlab_core::rng::Rng;
use ddlab_core::sampler::{CfgDenoiser, Denoiser, Guide, SamplerConfig, UNetDenoiser, sample};

use crate::guidance::Prepared;

/// A trained network ready to denoise (inference weights, no autograd graph).
pub struct Network<'a> {
    pub model: &'a UNet,
    pub diffusion: &'a Diffusion,
    pub objective: Objective,
}

/// The images of one draw: `shape` = (n, channels, height, width).
pub struct Draw<'a> {
    pub sampler: &'a SamplerConfig,
    pub guidance: &'a Prepared,
    pub shape: (usize, usize, usize, usize),
}

/// Samples `draw.shape` images, reporting each step to `progress`.
pub fn draw_images(
    net: &Network,
    draw: &Draw,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    let guided = draw.guidance;
    let sampler = draw.sampler.build(&net.diffusion.schedule)?;
    let guide = guided.clip_guide(&net.diffusion.schedule)?;
    let guide = guide.as_ref().map(|g| g as &dyn Guide);
    let shape = draw.shape;
    if guided.kind == Guidance::Cfg {
        let prompts: Vec<&str> = guided.prompts.iter().map(String::as_str).collect();
        let denoiser = CfgDenoiser::new(
            net.model,
            net.diffusion,
            net.objective,
            &prompts,
            guided.scale,
        )
        .context("--guidance cfg")?;
        return run_sampler(&*sampler, &denoiser, guide, net, shape, rng, progress);
    }
    let denoiser = UNetDenoiser {
        model: net.model,
        diffusion: net.diffusion,
        objective: net.objective,
        // A caption-conditioned network reads ∅ (unguided, or CLIP-guided) without one.
        cond: None,
    };
    run_sampler(&*sampler, &denoiser, guide, net, shape, rng, progress)
}

fn run_sampler(
    sampler: &dyn ddlab_core::sampler::Sampler,
    denoiser: &dyn Denoiser,
    guide: Option<&dyn Guide>,
    net: &Network,
    shape: (usize, usize, usize, usize),
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    Ok(sample(
        sampler,
        denoiser,
        guide,
        net.diffusion,
        shape,
        rng,
        progress,
    )?)
}
