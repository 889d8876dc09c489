"""Reference values for ddlab-core's schedule and sampler tests, computed by the reference
implementations themselves (not by ddlab):

  * improved-diffusion (openai, commit 1bc7bbb): linear and cosine betas and every derived
    quantity (GaussianDiffusion, float64);
  * denoising-diffusion-pytorch (lucidrains, 2.x): the Chen sigmoid schedule (float64);
  * diffusers: GeoDiff `sigmoid`, `scaled_linear`, zero-terminal-SNR rescaling, timestep
    spacing, and one DDIM / DDPM step (float32).

Usage (not run in CI; needs torch and diffusers):
  python make_reference.py /path/to/improved-diffusion /path/to/denoising_diffusion_pytorch.py > reference.json
"""
import ast, json, math, sys

import numpy as np
import torch

sys.path.insert(0, sys.argv[1])
from improved_diffusion import gaussian_diffusion as gd  # noqa: E402
import diffusers  # noqa: E402
from diffusers import DDIMScheduler, DDPMScheduler  # noqa: E402

# lucidrains' schedule functions, lifted out of the module (the module imports torchvision).
src = open(sys.argv[2]).read()
ns = {"torch": torch, "math": math}
for node in ast.parse(src).body:
    if isinstance(node, ast.FunctionDef) and node.name in ("sigmoid_beta_schedule",):
        exec(compile(ast.Module([node], []), "lucidrains", "exec"), ns)


def derived(betas):
    if len(betas) == 1:  # improved-diffusion's class needs T >= 2; keep the betas alone.
        b = float(betas[0])
        return {"beta": [b], "alpha_bar": [1.0 - b], "snr": [(1.0 - b) / b]}
    d = gd.GaussianDiffusion(
        betas=np.asarray(betas, dtype=np.float64),
        model_mean_type=gd.ModelMeanType.EPSILON,
        model_var_type=gd.ModelVarType.FIXED_SMALL,
        loss_type=gd.LossType.MSE,
    )
    ab = d.alphas_cumprod
    with np.errstate(divide="ignore"):
        snr = ab / (1.0 - ab)
    return {
        "beta": list(map(float, d.betas)),
        "alpha_bar": list(map(float, ab)),
        "snr": list(map(float, snr)),
        "posterior_variance": list(map(float, d.posterior_variance)),
        "posterior_log_variance_clipped": list(map(float, d.posterior_log_variance_clipped)),
        "posterior_mean_coef1": list(map(float, d.posterior_mean_coef1)),
        "posterior_mean_coef2": list(map(float, d.posterior_mean_coef2)),
    }


def pick(rows, T):
    """Keep every t for small T, a spread of t for large T (1-based t)."""
    ts = list(range(1, T + 1)) if T <= 60 else sorted({1, 2, 3, 10, 100, T // 2, T - 1, T})
    return {"t": ts, **{k: [v[t - 1] for t in ts] for k, v in rows.items()}}


cases = []
for T in (1, 21, 50, 1000):
    cases.append({"kind": "linear", "T": T, "tol": 1e-12, "source": "improved-diffusion",
                  **pick(derived(gd.get_named_beta_schedule("linear", T)), T)})
for T in (1, 2, 10, 50, 1000):
    cases.append({"kind": "cosine", "T": T, "tol": 1e-12, "source": "improved-diffusion",
                  **pick(derived(gd.get_named_beta_schedule("cosine", T)), T)})
for T in (2, 10, 50, 1000):
    betas = ns["sigmoid_beta_schedule"](T).numpy()
    # lucidrains takes sigmoid(start/τ), sigmoid(end/τ) of float32 tensors: float32 rounding,
    # amplified near ᾱ_T. With float64 constants its formula gives our values to 1e-15.
    cases.append({"kind": "sigmoid", "T": T, "tol": 1e-5, "source": "denoising-diffusion-pytorch",
                  **pick(derived(betas), T)})
# diffusers computes these betas in float32.
for kind, name, rng in (("geodiff-sigmoid", "sigmoid", (1e-4, 0.02)),
                        ("scaled-linear", "scaled_linear", (0.00085, 0.012)),
                        ("quadratic", "scaled_linear", (1e-4, 0.02))):
    for T in (10, 1000):
        s = DDPMScheduler(num_train_timesteps=T, beta_schedule=name,
                          beta_start=rng[0], beta_end=rng[1])
        cases.append({"kind": kind, "T": T, "tol": 2e-6, "source": f"diffusers {diffusers.__version__}",
                      **pick(derived(s.betas.double().numpy()), T)})
# Zero terminal SNR: diffusers rescales in float32; compare ᾱ only, loosely.
for kind, name in (("linear", "linear"), ("scaled-linear", "scaled_linear")):
    T = 1000
    s = DDPMScheduler(num_train_timesteps=T, beta_schedule=name,
                      beta_start=1e-4 if kind == "linear" else 0.00085,
                      beta_end=0.02 if kind == "linear" else 0.012,
                      rescale_betas_zero_snr=True)
    ab = s.alphas_cumprod.double().numpy()
    ts = [1, 2, 10, 100, 500, 999, 1000]
    cases.append({"kind": kind, "T": T, "zero_terminal_snr": True, "tol": 2e-5,
                  "source": f"diffusers {diffusers.__version__}",
                  "t": ts, "alpha_bar": [float(ab[t - 1]) for t in ts]})

spacing = []
for T, S in ((1000, 50), (1000, 7), (100, 30), (10, 3), (1000, 1000), (250, 17), (1000, 1)):
    for sp in ("linspace", "leading", "trailing"):
        s = DDIMScheduler(num_train_timesteps=T, timestep_spacing=sp)
        s.set_timesteps(S)
        spacing.append({"T": T, "S": S, "spacing": sp,
                        "timesteps": sorted(int(x) for x in s.timesteps)})

# One DDIM and one DDPM trajectory on fixed inputs, noise removed, on the improved-diffusion
# cosine schedule at T = 100 with 10 trailing steps.
g = torch.Generator().manual_seed(0)
T, S = 100, 10
betas = gd.get_named_beta_schedule("cosine", T)
x = torch.randn(2, 1, 2, 2, generator=g, dtype=torch.float64)
eps = torch.randn(2, 1, 2, 2, generator=g, dtype=torch.float64)
steps = []
for eta in (0.0, 1.0):
    s = DDIMScheduler(num_train_timesteps=T, trained_betas=betas, timestep_spacing="trailing",
                      clip_sample=False, set_alpha_to_one=True)
    s.set_timesteps(S)
    s.alphas_cumprod = s.alphas_cumprod.double()
    for t in s.timesteps[:3].tolist() + s.timesteps[-1:].tolist():
        out = s.step(eps, t, x, eta=eta, variance_noise=torch.zeros_like(x)).prev_sample
        steps.append({"sampler": "ddim", "eta": eta, "t": int(t), "x": x.flatten().tolist(),
                      "eps": eps.flatten().tolist(), "mean": out.flatten().tolist()})
import diffusers.schedulers.scheduling_ddpm as ddpm_mod  # noqa: E402
ddpm_mod.randn_tensor = lambda shape, **kw: torch.zeros(shape, dtype=kw.get("dtype", torch.float64))
s = DDPMScheduler(num_train_timesteps=T, trained_betas=betas, timestep_spacing="trailing",
                  clip_sample=False, variance_type="fixed_small")
s.set_timesteps(S)
s.alphas_cumprod = s.alphas_cumprod.double()
s.alphas = s.alphas.double(); s.betas = s.betas.double()
for t in s.timesteps[:3].tolist() + s.timesteps[-1:].tolist():
    out = s.step(eps, t, x).prev_sample
    prev_t = s.previous_timestep(t)
    var = float(s._get_variance(t, prev_t)) if t > 0 else 0.0
    steps.append({"sampler": "ddpm", "t": int(t), "x": x.flatten().tolist(),
                  "eps": eps.flatten().tolist(), "mean": out.flatten().tolist(), "variance": var})

json.dump({"schedules": cases, "spacing": spacing, "steps": steps,
           "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__}},
          sys.stdout, indent=1)
