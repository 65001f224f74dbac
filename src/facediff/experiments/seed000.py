"""Seed 000: anime faces with a VQ-VAE + latent diffusion, unconditional and from a sketch.

The write-up reports the autoencoder's reconstruction quality (PSNR 25.31 dB, LPIPS 0.1005 on Danbooru
faces) and shows samples, unconditional and sketch-conditioned. The recipe trains, within the budget, a
VQ autoencoder (f = 4) on anime SynthFaces, then a sketch-conditional LDM in its latent space (the sketch is
dropped with p = 0.1, so the same model also samples unconditionally), and reports: held-out PSNR/SSIM
and codebook usage beside the seed's numbers, FD_oracle of unconditional and sketch-conditioned samples,
and sketch fidelity (edge F1 / Chamfer distance between the sketch of each generated face and of the face
whose sketch was given).
"""
from __future__ import annotations

import time

import numpy as np
from typing import Any

from facediff.experiments.common import Ctx, config_path, finish, fmt, md_table, prepare_data

SEED000_PSNR, SEED000_LPIPS = 25.31, 0.1005  # seed 000, autoencoder on Danbooru anime faces (paper)


def run_seed000(ctx: Ctx) -> dict[str, Any]:
    from facediff.imaging import make_grid, save_png
    from facediff.pipelines.load import load_pipeline
    from facediff.evaluation.autoencoder import evaluate_autoencoder
    from facediff.evaluation.evaluate import evaluate
    from facediff.training.run import train

    data, split = prepare_data(ctx, "anime", 160 if ctx.tiny else 6000)
    ae_run, ldm_run = ctx.out / "runs" / "vq", ctx.out / "runs" / "ldm"
    train_s = max(0.05, ctx.left_s() * 0.8 / 60)  # 80 % of the budget trains, the rest evaluates
    tiny_ae = ["train.max_steps=2", "autoencoder.disc_start=1"] if ctx.tiny else []
    ae_cfg = config_path("tiny-vq" if ctx.tiny else "vq-f4-64")
    size_over = [f"data.path={data}", f"data.size={ctx.size}"]
    if not (ae_run / "export" / "vae" / "config.json").is_file():
        train("autoencoder", ae_cfg, ae_run, overrides=size_over + tiny_ae + [
            "train.max_steps=1000000" if not ctx.tiny else "train.checkpoint_every=0",
            f"train.time_budget_minutes={train_s * 0.45:.3f}"], progress=ctx.progress)
    ae_eval = evaluate_autoencoder(ae_run, data, n=32 if ctx.tiny else 256, split=split or "train")
    if not (ldm_run / "export" / "model_index.json").is_file():
        ldm_cfg = config_path("tiny-ldm")
        over = size_over + [f"latent.autoencoder={ae_run}", "latent.sketch=true", "model.conditioning=none"]
        if ctx.tiny:
            over += ["train.max_steps=2"]
        else:
            over += ["train.max_steps=1000000", f"train.time_budget_minutes={ctx.left_s() * 0.75 / 60:.3f}",
                     "model.block_out_channels=[64,128,128]", "model.layers_per_block=2",
                     "model.attention_resolutions=[8]", "model.norm_num_groups=32", "model.attention_head_dim=32",
                     "diffusion.num_train_timesteps=1000", "diffusion.schedule=cosine",
                     "diffusion.prediction_type=v_prediction", "diffusion.loss_weighting=min_snr",
                     "train.batch_size=32", "train.lr=5e-4", "train.warmup_steps=100", "train.checkpoint_every=500",
                     "train.log_every=25"]
        train("ldm", ldm_cfg, ldm_run, overrides=over, progress=ctx.progress)
    n = ctx.n_eval or (8 if ctx.tiny else 128)
    steps = ctx.steps(25)
    t = time.time()
    with_sketch = evaluate(ldm_run, data, metrics="fd,kid,sketch,diversity,timing", n=n, steps=steps,
                               split=split, out=ctx.out / "evals" / "sketch", progress=ctx.progress)
    uncond_images = load_pipeline(ldm_run)(n, steps=steps, progress=ctx.progress).images
    save_png(make_grid(uncond_images, int(np.ceil(np.sqrt(n))), scale=max(1, 96 // ctx.size)),
             ctx.out / "evals" / "unconditional.png")
    uncond = {"images": uncond_images}
    from facediff.metrics.features import OracleFeatures
    from facediff.metrics.fd import fd_from_features
    from facediff.data.prepared import PreparedDataset

    ex = OracleFeatures()
    real = PreparedDataset(data, split=split).images()[:max(n, 8)]
    fd_uncond = fd_from_features(ex(real), ex(uncond["images"]))
    rows = [
        ["autoencoder PSNR (held-out)", fmt(ae_eval["psnr"]), fmt(SEED000_PSNR), "dB"],
        ["autoencoder SSIM (held-out)", fmt(ae_eval["ssim"]), "n/a", ""],
        ["autoencoder LPIPS", "n/a (no LPIPS weights here)", fmt(SEED000_LPIPS), ""],
        ["codebook usage / perplexity", f"{fmt(ae_eval.get('codebook_usage'))} / {fmt(ae_eval.get('perplexity'))}",
         "n/a", ""],
        ["FD_oracle, unconditional samples", fmt(fd_uncond), "n/a", f"n = {n}"],
        ["FD_oracle, sketch-conditioned samples", fmt(with_sketch["fd_oracle"]), "n/a",
         f"floor {fmt(with_sketch['floor_real_vs_real']['fd_oracle'])}"],
        ["sketch fidelity: edge F1", fmt(with_sketch["sketch"]["edge_f1"]), "n/a",
         f"floor {fmt(with_sketch['floor_real_vs_real']['sketch']['edge_f1'])}"],
        ["sketch fidelity: Chamfer distance (px)", fmt(with_sketch["sketch"]["chamfer_px"]), "n/a", ""],
    ]
    md = ["Seed 000's system on anime SynthFaces: VQ autoencoder (f = 4) + sketch-conditional latent diffusion "
          f"(the same model samples unconditionally with the null sketch). {time.time() - t:.0f} s of evaluation.", "",
          *md_table(["measure", ctx.data_label(), "seed 000 (Danbooru faces, paper)", "note"], rows)]
    arms = [{"name": "autoencoder", "metrics": ae_eval},
            {"name": "ldm-sketch", "metrics": {k: with_sketch[k] for k in ("fd_oracle", "sketch", "diversity")}},
            {"name": "ldm-unconditional", "metrics": {"fd_oracle": fd_uncond}}]
    grids = {"sketch-conditioned samples": ctx.out / "evals" / "sketch" / "report_files" / "samples.png",
             "unconditional samples": ctx.out / "evals" / "unconditional.png",
             "autoencoder reconstructions": next(iter(sorted((ae_run / "samples").glob("*.png"))), None)}
    return finish(ctx, {"seed": "000", "arms": arms}, md, grids, floors=with_sketch["floor_real_vs_real"])
