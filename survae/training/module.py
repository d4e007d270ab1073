"""The Lightning module: maximum-likelihood training of a flow built from a model spec, or
(``data=target``) training towards an unnormalised target density by reverse KL or an
alpha-divergence (:mod:`survae.training.variational`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from survae import registry
from survae.metrics import importance_weighted_log_prob, metric_for
from survae.models import build_model
from survae.runtime.speed import apply_speed_options, compile_if_it_pays
from survae.training.optim import build_optimizer, build_scheduler
from survae.training.variational import (
    check_loss,
    divergence_loss,
    importance_diagnostics,
    sample_log_weights,
)


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(x, context)`` of a batch: a conditional data set yields the pair, others ``x``."""
    if isinstance(batch, (tuple, list)):
        x, context = batch
        return x, context
    return batch, None


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the message names the step and the layer."""


class FlowModule(pl.LightningModule):
    """Trains ``build_model(model_spec)`` by maximum likelihood and logs the papers' units.

    Per split (``train/``, ``val/``, ``test/``) it logs the data kind's metric — bits/dim for
    images, per-point log-likelihood for point sets, nats for tabular and 2-D data — as
    ``{split}/{metric}``, and ``{split}/exact`` (1 when the value is an exact likelihood, 0
    when it is a lower bound). The training loss is the metric oriented for minimisation.
    """

    def __init__(
        self,
        model_spec: Mapping[str, Any],
        data_info: Mapping[str, Any],
        optim: Mapping[str, Any] | None = None,
        ema_decay: float | None = None,
        test_iw_samples: int = 1,
        test_iw_chunk: int | None = None,
        check_finite: bool = True,
        nonfinite_checkpoint_dir: str | None = None,
        data_config: Mapping[str, Any] | None = None,
        speed: Mapping[str, Any] | None = None,
        loss: Mapping[str, Any] | None = None,
        imports: list[str] | None = None,
    ):
        super().__init__()
        # data_config is stored (not used) so evaluation scripts can rebuild the data, and
        # imports so that load_model can import the modules that register the run's own layers
        self.save_hyperparameters(ignore=["nonfinite_checkpoint_dir"])
        self.model = build_model(
            model_spec,
            data_info["shape"],
            data_info.get("num_bins"),
            data_info.get("context_features"),
        )
        # speed preset, compile / bf16 couplings / channels-last / memory-saving backprop /
        # fused attention (before the EMA copy)
        self.model = apply_speed_options(self.model, speed or {}, kind=data_info["kind"])
        self.kind = data_info["kind"]
        self.metric = metric_for(self.kind)
        shape = list(data_info["shape"])
        # bits/dim count sub-pixels (C·H·W); PPLL counts points (N of an (N, D) set)
        self.metric_size = shape[0] if self.kind == "points" else math.prod(shape)
        self.optim_cfg = dict(optim or {})
        self.ema = (
            AveragedModel(
                self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True
            )
            if ema_decay
            else None
        )
        self.test_iw_samples = int(test_iw_samples)
        self.test_iw_chunk = test_iw_chunk
        self.check_finite = check_finite
        self.nonfinite_checkpoint_dir = nonfinite_checkpoint_dir
        # data=target: trained towards data.target by reverse KL / alpha-divergence
        self.loss_kind, self.alpha = check_loss(loss, self.kind)
        self.target = None
        if self.kind == "target" and data_config is not None:
            self.target = registry.build_from_spec("target", data_config["target"])

    # ---------------------------------------------------------------- objective
    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights used for validation, testing and sampling (EMA when enabled)."""
        return self.ema.module if self.ema is not None else self.model

    def _log_metric(self, split: str, log_prob: torch.Tensor, exact: bool) -> torch.Tensor:
        value = self.metric(log_prob, self.metric_size).mean()
        on_step = split == "train"
        self.log(
            f"{split}/{self.metric.name}",
            value,
            prog_bar=True,
            on_step=on_step,
            on_epoch=True,
            sync_dist=not on_step,
            batch_size=log_prob.shape[0],
        )
        self.log(
            f"{split}/exact",
            float(exact),
            on_step=False,
            on_epoch=True,
            batch_size=log_prob.shape[0],
        )
        return value

    def _target_step(self, split: str, batch: torch.Tensor) -> torch.Tensor:
        """Samples from the flow scored by the target: logs ``{split}/reverse_kl`` (the
        metric), ``ess`` and ``log_z`` (and ``kl``/``log_z_error`` when ``log Z`` is known);
        returns the training loss of ``loss.kind``."""
        if self.target is None:
            raise ValueError("data=target: the module needs data_config with a 'target'")
        model = self.model if split == "train" else self.eval_model
        log_w = sample_log_weights(model, self.target, split_batch(batch)[0].shape[0])
        value = self._log_metric(split, log_w, model.exact)
        stats = importance_diagnostics(log_w)
        log_z = self.target.log_normalizer
        if log_z is not None:
            stats["kl"] = value.detach() + log_z
            stats["log_z_error"] = stats["log_z"] - log_z
        on_step = split == "train"
        for key, v in stats.items():
            self.log(f"{split}/{key}", v, on_step=on_step, on_epoch=True,
                     sync_dist=not on_step, batch_size=log_w.shape[0])  # fmt: skip
        return divergence_loss(log_w, self.loss_kind, self.alpha)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if self.kind == "target":
            loss = self._target_step("train", batch)
            if self.check_finite and not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"Loss became {loss.item()} at step {self.global_step}; lower the "
                    "learning rate or check the target's support"
                )
            return loss
        x, context = split_batch(batch)
        # == log_prob; goes through the compiled graph if enabled
        log_prob = self.model(x) if context is None else self.model(x, context)
        value = self._log_metric("train", log_prob, self.model.exact)
        loss = value if not self.metric.higher_is_better else -value
        if self.check_finite and not torch.isfinite(loss):  # one host sync per step
            self._stop_on_nonfinite(batch, loss)
        return loss

    def _stop_on_nonfinite(self, batch: torch.Tensor, loss: torch.Tensor) -> None:
        x, context = split_batch(batch)
        layer = (
            self.model.first_nonfinite_layer(x, context) or "unknown (non-finite only in the sum)"
        )
        saved = ""
        if self.nonfinite_checkpoint_dir is not None and self.trainer is not None:
            path = f"{self.nonfinite_checkpoint_dir}/nonfinite-step{self.global_step}.ckpt"
            self.trainer.save_checkpoint(path)  # weights are still finite: no update yet
            saved = f" Weights before this step were saved to {path}."
        raise NonFiniteLossError(
            f"Loss became {loss.item()} at step {self.global_step} "
            f"(epoch {self.current_epoch}); first non-finite layer: {layer}.{saved} "
            "Lower the learning rate, enable gradient clipping, or check the data range."
        )

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        if self.kind == "target":
            self._target_step("val", batch)
            return
        model = self.eval_model
        x, context = split_batch(batch)
        self._log_metric("val", model.log_prob(x, context), model.exact)

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        if self.kind == "target":
            self._target_step("test", batch)
            return
        model = self.eval_model
        x, context = split_batch(batch)
        if model.exact or self.test_iw_samples <= 1:
            log_prob = model.log_prob(x, context)
        elif context is None:
            log_prob = importance_weighted_log_prob(
                model.log_prob, x, self.test_iw_samples, chunk_size=self.test_iw_chunk
            )
        else:

            def log_prob_fn(v: torch.Tensor) -> torch.Tensor:
                # the copies of x come as [copy, batch] blocks: repeat the context the same way
                reps = v.shape[0] // context.shape[0]
                return model.log_prob(v, context.repeat(reps, *([1] * (context.dim() - 1))))

            log_prob = importance_weighted_log_prob(
                log_prob_fn, x, self.test_iw_samples, chunk_size=self.test_iw_chunk, exact=False
            )
        self._log_metric("test", log_prob, model.exact)

    # ---------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        optim_cfg = dict(self.optim_cfg)
        if optim_cfg.get("fused") is None and self._uses_grad_scaler():
            # Lightning cannot clip the gradients of a fused optimiser that unscales them itself
            optim_cfg["fused"] = False
        optimizer = build_optimizer(self.model.parameters(), optim_cfg)
        steps_per_epoch = self._steps_per_epoch()
        scheduler = build_scheduler(optimizer, self.optim_cfg, steps_per_epoch)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def _uses_grad_scaler(self) -> bool:
        """float16 mixed precision (``trainer.precision=16-mixed``) trains with a GradScaler."""
        trainer = self._trainer
        return trainer is not None and str(getattr(trainer, "precision", "")).startswith("16")

    def on_train_start(self) -> None:
        """The speed preset's compile decision, now that the run's length is known
        (:func:`~survae.runtime.speed.compile_if_it_pays`); ``optim.reset_lr_on_resume``: a
        resumed run continues with the config's learning rate and schedule instead of the
        checkpoint's (e.g. SurVAE's 50-epoch cooldown at 2e-5), keeping the weights, the
        optimiser moments and the step count."""
        compile_if_it_pays(self.model, float(self.trainer.estimated_stepping_batches))
        if not (self.optim_cfg.get("reset_lr_on_resume") and self.trainer.ckpt_path):
            return
        lr = float(self.optim_cfg.get("lr", 1e-3))
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] = lr
        for config in self.trainer.lr_scheduler_configs:
            config.scheduler.base_lrs = [lr] * len(config.scheduler.base_lrs)

    def _steps_per_epoch(self) -> int:
        trainer = self.trainer
        if trainer is None:
            return 1
        total = trainer.estimated_stepping_batches
        if trainer.max_epochs and trainer.max_epochs > 0 and math.isfinite(total):
            return max(1, int(total) // trainer.max_epochs)
        return max(1, int(total)) if math.isfinite(total) else 1

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self, num_samples: int, temperature: float = 1.0, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Samples from the evaluation weights; a conditional model needs ``context`` with
        ``num_samples`` rows (e.g. one-hot classes)."""
        model = self.eval_model
        was_training = model.training
        model.eval()
        try:
            if context is None:
                return model.sample(num_samples, temperature=temperature)
            context = context.to(self.device)
            return model.sample(num_samples, temperature=temperature, context=context)
        finally:
            model.train(was_training)
