"""The training loop behind train.py: set the run up, then per epoch train, check that the ranks agree,
evaluate (every --evaluation_interval epochs and at the end), log and checkpoint. One process, or one per
device under torchrun (DDP)."""
from __future__ import annotations

import copy
import os
import time
from contextlib import ExitStack
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from utils.cli import output_folder, select_device
from utils.darknet.cfg import Cfg, parse_cfg, read_cfg
from utils.darknet.cfg_edit import with_classes
from utils.darknet.checkpoint import load_checkpoint, load_pretrained
from utils.darknet.model import Darknet
from utils.data.cache import MEMORY_SHARE, memory_available
from utils.data.config import DataConfig, DataError, describe_source, parse_data_config
from utils.data.dataset import check_colour_input
from utils.errors import UserError
from utils.evaluation.evaluate import ImageRecord, collect_detections, format_best_f1, format_results, score
from utils.evaluation.metrics import EvalResult
from utils.fileio import atomic_write
from utils.output_files import (in_use, made_folder, named_write_errors, refuse_inputs_inside,
                                 remove_orphan_temporaries, unused_name)
from utils.training.distill import build_distiller
from utils.training.distributed import Distributed
from utils.training.epoch import EpochStats, StepContext, train_epoch
from utils.training.hyp import format_hyp, with_hyp
from utils.training.loss import YOLOLoss
from utils.training.optim import Sparsity, init_head_biases, replan_schedule
from utils.training.options import DEFAULT_DATA, DEFAULT_EPOCHS, TrainingError, TrainOptions
from utils.training.outputs import RunOutputs, add_evaluation, evaluations_since_best, results_row
from utils.training.run_files import BEST_CHECKPOINT, LAST_CHECKPOINT, RESULTS, RUN_CFG
from utils.training.runlog import RunLog, open_tensorboard
from utils.training.setup import Loaders, build_loaders, build_state, plan_rect_batches
from utils.training.startup import check_data, plot_training_labels, refuse_dataset_inside, report_anchor_fit
from utils.training.state import TrainState, check_training_checkpoint

__all__ = ["DEFAULT_DATA", "Trainer", "TrainingError", "TrainOptions"]

RUNS = Path("runs/train")  # where runs go without --output, as runs/train/expN
Evaluation = tuple[list[ImageRecord], EvalResult]  # what one evaluation gives: per image, and the scores


class Trainer:
    """``Trainer(options).run()`` trains one run and returns its summary."""

    def __init__(self, options: TrainOptions):
        self.opt = options
        self.dist = Distributed.from_environment()
        self.device = select_device(options.device, self.dist.local_rank if self.dist.world_size > 1 else 0)
        self.log = self.dist.log
        self.resumed_from: Path | None = None  # the checkpoint --resume names, once read
        self.runlog: RunLog | None = None  # the main process's pictures and TensorBoard events

    def run(self) -> dict:
        """Train; ``{"run_dir", "best_map50", "map50", "map"}``, the last two from the last evaluation
        (None when this call evaluated nothing)."""
        with self.dist.process_group(self.device):
            return self._run()

    def _run(self) -> dict:
        run_dir, claimed, checkpoint = self._prepare_run()  # with --resume this takes the run's own options
        with ExitStack() as stack:
            if self.dist.is_main:
                stack.enter_context(made_folder(run_dir, "--output", RESULTS, claimed))
            self.dist.from_main(lambda: stack.enter_context(in_use(run_dir, "trained")))
            if self.dist.is_main:
                removed = remove_orphan_temporaries(run_dir)
                if removed:
                    self.log(f"removed {len(removed)} temporary file(s) that a killed run left in {run_dir}: "
                             + ", ".join(path.name for path in removed))
            self.dist.barrier()
            return self._train(run_dir, checkpoint)

    def _train(self, run_dir: Path, checkpoint: dict | None) -> dict:
        torch.manual_seed(self.opt.seed)
        self._ensure_demo_data()
        with self.dist.warnings_once():
            data = parse_data_config(self.opt.data_config)
        data = data.single_class() if self.opt.single_cls else data
        model = self._build_model(run_dir, data, checkpoint)
        loaders = build_loaders(data, self.opt, model.hyperparams, self.dist)
        refuse_dataset_inside(run_dir, data, loaders)
        self._write_run_cfg(model.cfg, run_dir / RUN_CFG)  # after every check: a reused folder keeps its own
        self._check_data(loaders, data, model, run_dir)
        if self.opt.cache_images:
            self._cache_images(loaders)
        if self.opt.rect:
            self.log(plan_rect_batches(loaders, self.dist, self.opt.img_size))
        steps_per_epoch = loaders.steps_per_epoch(self.opt.gradient_accumulations)
        state = build_state(model, self.opt, steps_per_epoch, self.device, data.names)
        if self.opt.amp and self.device.type != "cuda":
            self.log("--amp on CPU: the forward pass in bfloat16 (the loss, gradients and weights stay float32)")
        outputs = RunOutputs(run_dir)
        if checkpoint is not None:
            self._resume(state, checkpoint, outputs, steps_per_epoch)
        step = self._step_context(state, run_dir)
        if self.dist.is_main and state.epoch + 1 < self.opt.epochs:  # a resumed run may have none left: no log
            self.runlog = RunLog(run_dir, data.names, open_tensorboard(run_dir, state.scheduler.last_epoch))
            step.observer = self.runlog.step
        try:
            result = self._epochs(state, loaders, step, outputs)
        finally:
            if self.runlog is not None:
                self.runlog.close()
        self.log(f"done: best mAP@0.5 {state.best_fitness:.4f}; checkpoints and logs in {run_dir}")
        return {"run_dir": str(run_dir), "best_map50": state.best_fitness,
                "map50": result.map50 if result is not None else None,
                "map": result.map if result is not None else None}

    def _epochs(self, state: TrainState, loaders: Loaders, step: StepContext, outputs: RunOutputs
                ) -> EvalResult | None:
        """Train the epochs left, or until --patience runs out; the last evaluation's result."""
        result = None
        for _ in range(state.epoch + 1, self.opt.epochs):
            # only the main process evaluates, so it decides for all (and the others ask only with --patience)
            if self.opt.patience and self.dist.main_decides(self.dist.is_main and self._patience_exhausted(outputs),
                                                            self.device):
                break
            evaluated = self._epoch(state, loaders, step, outputs)
            result = evaluated if evaluated is not None else result
        return result

    # -- set-up --------------------------------------------------------------------------------

    def _prepare_run(self) -> tuple[Path, bool, dict | None]:
        """The run directory, whether it was claimed for this run (a new runs/train/expN, created empty;
        any other folder is created later), and with --resume the checkpoint to continue from."""
        checkpoint, resumed_dir = None, None
        if self.opt.resume is not None:
            checkpoint = self._take_over_run()
            resumed_dir = self.resumed_from.parent
        else:
            self.opt = self.opt.fresh()
        claimed = self.opt.output is None and resumed_dir is None
        run_dir = self.dist.from_main(lambda: self._run_dir(resumed_dir)) if claimed else self._run_dir(resumed_dir)
        self.dist.barrier()  # every process has chosen the folder before the main one creates it
        return run_dir, claimed, checkpoint

    def _take_over_run(self) -> dict:
        """--resume: the run's checkpoint, whose options become these (but for where it runs and how long)."""
        resume = Path(self.opt.resume) if self.opt.resume else self._newest_run()
        if resume.is_dir() and not (resume / LAST_CHECKPOINT).exists():
            refuse_folder_of_runs(resume)
        resume = resume / LAST_CHECKPOINT if resume.is_dir() else resume
        checkpoint = load_checkpoint(resume)
        check_training_checkpoint(checkpoint, resume)
        ignored = self.opt.ignored_on_resume(checkpoint["options"])
        self.opt = self.opt.resumed(checkpoint["options"], resume)
        if ignored:
            self.log(f"--resume: {resume} goes on with its own options, so these are not applied: "
                     f"{', '.join(ignored)}; --pretrained_weights {resume} --output NEW starts a new run with them")
        self.resumed_from = resume
        self._refuse_finished_elsewhere(checkpoint)
        return checkpoint

    def _refuse_finished_elsewhere(self, checkpoint: dict) -> None:
        """A finished run resumed into another folder would leave there a run without checkpoints."""
        own_folder = self.resumed_from.parent.resolve()
        if self.opt.output is None or Path(self.opt.output).resolve() == own_folder:
            return
        history = RunOutputs(own_folder)
        history.take_back(own_folder, checkpoint["epoch"] + 1)
        why = self._nothing_left(checkpoint["epoch"], history)
        if why:
            raise UserError(f"--resume {self.resumed_from}: nothing to train into --output {self.opt.output}: {why}")

    def _newest_run(self) -> Path:
        """What --resume without a path continues: the most recently written runs/train/*/last.pth."""
        candidates = [path for path in RUNS.glob(f"*/{LAST_CHECKPOINT}") if path.is_file()]
        if not candidates:
            raise UserError(f"--resume without a path continues the newest {RUNS}/*/last.pth, and there is none "
                            f"(from {Path.cwd()}); name the run folder or checkpoint to resume")
        newest = max(candidates, key=lambda path: path.stat().st_mtime)
        written = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(newest.stat().st_mtime))
        self.log(f"--resume: continuing the newest run, {newest.parent} (its last.pth was written {written}, the "
                 f"latest of {len(candidates)} under {RUNS})")
        return newest

    def _run_dir(self, resumed_dir: Path | None) -> Path:
        """Where the run writes: the resumed run's folder, else --output if it is new or empty (or with
        --exist_ok), else the next runs/train/expN; an earlier run is never replaced unasked."""
        requested = self.opt.output
        if resumed_dir is not None and (requested is None or Path(requested).resolve() == resumed_dir.resolve()):
            last = resumed_dir / LAST_CHECKPOINT
            if last.is_file() and not last.samefile(self.resumed_from) and not self.opt.exist_ok:
                raise UserError(f"--resume {self.resumed_from}: going on from it in {resumed_dir} would replace that "
                                f"run's own last.pth and later results.csv rows; pass --output NEW to continue it in "
                                f"a new folder, or --exist_ok to rewind the run")
            return resumed_dir
        if requested and (Path(requested) / LAST_CHECKPOINT).is_file() and not self.opt.exist_ok:
            raise UserError(f"--output {requested} holds a training run (last.pth): --resume {requested} continues "
                            f"it, --exist_ok trains a new run there (replacing its checkpoints and results.csv); or "
                            f"choose another folder, or leave --output out for the next {RUNS}/expN")
        run_dir = output_folder(requested, RUNS, self.opt.exist_ok)
        refuse_inputs_inside(run_dir, self._input_files(), "--output")
        return run_dir

    def _input_files(self) -> list[tuple[str, Path]]:
        """(flag, path) of each file the run reads: none may lie in the folder it writes (--exist_ok or not)."""
        resumed = [("--resume", self.resumed_from)] if self.resumed_from is not None else []
        return self.opt.input_files() + resumed

    def _ensure_demo_data(self) -> None:
        """Without --data_config, the demo's data, generated on first use (by the main process, which every other
        one waits for) into a new or empty folder only: files a user put there are never written over."""
        if self.opt.data_config == DEFAULT_DATA:
            self.dist.from_main(self._generate_demo_data)

    def _generate_demo_data(self) -> None:
        from utils.data.synthetic import DEMO_DIR, write_dataset
        if Path(DEFAULT_DATA).exists():
            return
        if DEMO_DIR.is_dir() and any(DEMO_DIR.iterdir()):
            raise UserError(f"{DEMO_DIR} holds files but no {Path(DEFAULT_DATA).name}, so train.py will not generate "
                            f"the demo's data there; name your dataset with --data_config, or empty {DEMO_DIR}, or "
                            f"generate into it anyway: python -m utils.data.synthetic --out {DEMO_DIR} --exist_ok")
        self.log(f"{DEFAULT_DATA} is missing: generating the synthetic shapes dataset (seed 0) ...")
        write_dataset(DEMO_DIR)

    def _run_cfg(self, cfg_path: Path, classes: int, checkpoint: dict | None) -> Cfg:
        """The resumed run's cfg (named as ``cfg_path``, where it was written), or --model_def adapted to the
        data's class count (its errors still name the user's file and lines)."""
        if checkpoint is not None:
            return parse_cfg(checkpoint["cfg_text"], str(cfg_path))  # with the --hyp values it was started with
        cfg = with_hyp(with_classes(read_cfg(self.opt.model_def), classes), self.opt.hyp or {})
        if self.opt.hyp:
            # --hyp's values, or an --evolve trial's
            self.log("hyperparameters set: " + format_hyp(self.opt.hyp).strip().replace("\n", ", "))
        return cfg

    def _write_run_cfg(self, cfg: Cfg, cfg_path: Path) -> None:
        """model.cfg, unless it already holds this text (a resumed run's folder: its file is left untouched)."""
        unchanged = cfg_path.is_file() and cfg_path.read_bytes() == cfg.text.encode()
        if self.dist.is_main and not unchanged:
            if self.resumed_from is not None and cfg_path.parent.resolve() == self.resumed_from.parent.resolve():
                self._keep_edited_cfg(cfg_path)
            with named_write_errors(cfg_path, "model cfg"), atomic_write(cfg_path) as f:
                f.write(cfg.text.encode())
        self.dist.barrier()

    def _keep_edited_cfg(self, cfg_path: Path) -> None:
        """A resumed run's model.cfg edited since is moved aside, not lost: the run goes on with its checkpoint's
        cfg, and the edited one can start a new run."""
        if not cfg_path.is_file():
            return
        aside = unused_name(cfg_path.with_name(f"{cfg_path.name}.edited"))
        with named_write_errors(aside, "edited model cfg"):
            os.replace(cfg_path, aside)
        self.log(f"warning: {cfg_path} differs from the cfg the run trains (its checkpoint's), so the edit has no "
                 f"effect on a resumed run; it is kept as {aside.name}, and --pretrained_weights {self.resumed_from} "
                 f"--model_def {aside} starts a new run with it")

    def _check_trainable(self, model: Darknet) -> None:
        if not model.yolo_layers:
            raise UserError(f"{self.opt.model_def}: the cfg has no [yolo] layer, so there is no detection loss to "
                            f"train; end the network in [yolo] heads, as cfg/yolov3-tiny.cfg does")
        check_colour_input(model.input_channels, self.opt.model_def, "training")

    def _build_model(self, run_dir: Path, data: DataConfig, checkpoint: dict | None) -> Darknet:
        """The model on its device: initialised, or loaded from --pretrained_weights, with --freeze applied
        (a resumed run's weights come with its state later)."""
        cfg_path = run_dir / RUN_CFG
        cfg = self._run_cfg(cfg_path, data.classes, checkpoint)
        with self.dist.warnings_once():
            model = Darknet(cfg)
        self._check_trainable(model)
        if checkpoint is not None and model.num_classes != data.classes:
            raise UserError(f"--resume {self.resumed_from}: the run trains {model.num_classes} classes, but "
                            f"{self.opt.data_config} now has {data.classes} ({', '.join(data.names)}); resume with "
                            f"the data it was started with, or start a new run from its weights: --pretrained_weights "
                            f"{self.resumed_from} --output NEW")
        self.log(f"run directory: {run_dir}   model: {self.opt.model_def} -> {cfg_path} "
                 f"({data.classes} classes: {', '.join(data.names)})")
        if checkpoint is None:
            init_head_biases(model)
            if self.opt.pretrained_weights:
                self.log(load_pretrained(model, self.opt.pretrained_weights, self.opt.cutoff))
                refuse_non_finite(model, f"--pretrained_weights {self.opt.pretrained_weights}")
        self._freeze(model)
        model.to(self.device)
        return model.prepare_training() if self.opt.channels_last else model

    def _freeze(self, model: Darknet) -> None:
        """Freeze layers 0..--freeze-1 (a count past the model's layers, or one that would leave no weight
        to train, is refused with the layer count), and with --freeze_bn every BN."""
        count, layers = self.opt.freeze, len(model.layers)
        weighted = [i for i, layer in enumerate(model.layers) if any(p.numel() for p in layer.parameters())]
        if count > layers:
            raise UserError(f"--freeze {count}: {self.opt.model_def} has only {layers} layers (0..{layers - 1})")
        if weighted and count > weighted[-1]:
            raise UserError(f"--freeze {count} leaves nothing to train: layer {weighted[-1]} is the last of the "
                            f"{layers} layers of {self.opt.model_def} with weights; freeze at most {weighted[-1]}")
        for layer in list(model.layers)[:count]:
            layer.requires_grad_(False)
        if self.opt.freeze_bn:
            model.freeze_batchnorm()

    def _cache_images(self, loaders: Loaders) -> None:
        """--cache_images: the training images in every process, the validation images where they are scored.
        The budget is the main process's reading, shared among this machine's processes, so every process
        caches alike or stops alike."""
        available = self.dist.from_main(memory_available)
        budget = None if available is None else int(MEMORY_SHARE * available) // self.dist.local_world_size
        held = loaders.train.dataset.cache_images("train", budget, show_progress=self.dist.is_main)  # one bar
        self._log_cached("train", len(loaders.train.dataset), held)
        left = None if budget is None else budget - held
        held = self.dist.from_main(lambda: loaders.valid_set.cache_images("valid", left))
        if self.dist.is_main:
            self._log_cached("valid", len(loaders.valid_set), held)

    def _log_cached(self, name: str, count: int, held: int) -> None:
        self.log(f"--cache_images: {count} {name} images held in memory, decoded: {held / 1e6:,.0f} MB")

    def _check_data(self, loaders: Loaders, data: DataConfig, model: Darknet, run_dir: Path) -> None:
        """The dataset check of both lists (every process stops alike), then on the main process labels.png
        (a resumed run's is rewritten only when the labels changed) and the anchors' fit to the training boxes."""
        if loaders.valid is not None:
            self.log(f"train: {len(loaders.train.dataset)} images ({describe_source(data.train)}); "
                     f"valid: {len(loaders.valid_set)} images ({describe_source(data.valid)})")
        with self.dist.warnings_once():  # every process checks, so that all stop alike; one warns
            check_data(loaders, data, self.opt, self.log)
        if not self.dist.is_main:
            return
        plot_training_labels(loaders, data.names, run_dir)
        report_anchor_fit(model.cfg, loaders, self.opt, self.log)

    def _resume(self, state: TrainState, checkpoint: dict, outputs: RunOutputs, steps_per_epoch: int) -> None:
        state.load_state_dict(checkpoint, self.resumed_from)
        outputs.take_back(self.resumed_from.parent, state.epoch + 1)
        if self.dist.is_main:
            carried = outputs.carry_best(self.resumed_from.parent)
            if carried:
                self.log(f"the best model so far comes along from {self.resumed_from.parent}: "
                         + ", ".join(path.name for path in carried))
            for weights in outputs.reexport_stale_weights():
                self.log(f"{weights}: exported again from its .pth, which it no longer matched (a killed save)")
            best = self.resumed_from.parent / BEST_CHECKPOINT  # carry_best brought it here, where it was
            if state.best_fitness >= 0 and not best.is_file():
                self.log(f"warning: {best} is missing, so the best model so far (mAP@0.5 {state.best_fitness:.4f}) is "
                         f"lost; {best.name} is written again once an evaluation beats it")
        self.log(f"resumed after epoch {state.epoch + 1} of {self.opt.epochs} (best mAP@0.5 {state.best_fitness:.4f})")
        planned = int(checkpoint["options"].get("epochs", DEFAULT_EPOCHS))
        reached = (state.epoch + 1) * steps_per_epoch
        if state.scheduler.last_epoch != reached:
            taken = state.scheduler.last_epoch // (state.epoch + 1)
            before, now = replan_schedule(state.scheduler, steps_per_epoch * planned, reached)
            self.log(f"--resume: an epoch is {steps_per_epoch} steps here and was {taken} (another number of "
                     f"processes or another image list), so the learning-rate schedule goes on from the end of "
                     f"epoch {state.epoch + 1} in steps of this run: the lr goes from {before:.4g} to {now:.4g}")
        if self.opt.epochs > planned:
            before, now = replan_schedule(state.scheduler, steps_per_epoch * self.opt.epochs)
            self.log(f"--epochs {self.opt.epochs}: the run, planned for {planned} epochs, goes on to "
                     f"{self.opt.epochs}; its learning-rate schedule now spans {self.opt.epochs} epochs, so the lr "
                     f"at step {state.scheduler.last_epoch} goes from {before:.4g} to {now:.4g}")
        why = self._nothing_left(state.epoch, outputs)
        if why:
            self.log(f"nothing left to train: {why}")

    def _nothing_left(self, epoch: int, outputs: RunOutputs) -> str | None:
        """Why a run that finished ``epoch``, with ``outputs``' history, has nothing left to train; None if not."""
        if epoch + 1 >= self.opt.epochs:
            return f"the run's {self.opt.epochs} epochs are done (--resume with a larger --epochs trains more)"
        if self._patience_exhausted(outputs):
            return (f"the run stopped early, mAP@0.5 not having improved for {self.opt.patience} evaluations; "
                    f"--resume with a larger --patience (or 0: none) goes on")
        return None

    def _patience_exhausted(self, outputs: RunOutputs) -> bool:
        """Whether --patience evaluations have passed without a better mAP@0.5 (never without --patience)."""
        return bool(self.opt.patience) and evaluations_since_best(outputs.rows)[0] >= self.opt.patience

    def _step_context(self, state: TrainState, run_dir: Path) -> StepContext:
        opt = self.opt
        network = self.dist.wrap(state.model, opt.sync_bn, self.device)
        if opt.sync_bn and self.dist.world_size == 1:
            self.log("--sync_bn: one process, whose BNs have nothing to synchronise with (it acts under torchrun)")
        sparsity = Sparsity.of(state.model, opt.s) if opt.sr else None  # after wrap: finds SyncBatchNorm
        if sparsity is not None:
            self.log(f"sparsity training: L1 {opt.s} on {len(sparsity.bns)} BN scale vectors: |gamma| shrinks by "
                     f"lr x s after every step, {sparsity.budget(state.scheduler):.3g} in all over this run's "
                     f"schedule (gammas start near 1)")
        distiller = build_distiller(state.model, opt, self.device)
        if distiller is not None:
            self.log(f"distilling from {opt.teacher_weights} (weight {opt.distill_weight:g}): KL toward the teacher's "
                     f"objectness on every cell, its class scores and boxes weighted by its objectness, per [yolo]")
        return StepContext(network, YOLOLoss(state.model.yolo_layers), self.device, run_dir,
                           opt.amp, opt.gradient_accumulations, sparsity, self.dist.world_size,
                           distiller)

    # -- one epoch -----------------------------------------------------------------------------

    def _epoch(self, state: TrainState, loaders: Loaders, step: StepContext, outputs: RunOutputs) -> EvalResult | None:
        """Train the next epoch; on the main process evaluate it when due, log it and checkpoint it."""
        epoch = state.epoch + 1
        loaders.plan.set_epoch(epoch)
        step.network.train()
        with tqdm(total=len(loaders.train), desc=f"epoch {epoch + 1}/{self.opt.epochs}",
                  disable=not self.dist.is_main, dynamic_ncols=True, leave=True) as bar:
            stats = train_epoch(state, loaders.train, step, bar)
        state.epoch = epoch
        if not stats.images:
            raise DataError(f"epoch {epoch + 1}: not one training image could be read ({len(stats.skipped)} "
                            f"unreadable, e.g. {stats.skipped[0] if stats.skipped else '?'}); check the images "
                            f"that the train list of {self.opt.data_config} names")
        if stats.skipped:
            shown = ", ".join(stats.skipped[:5]) + (" ..." if len(stats.skipped) > 5 else "")
            self.log(f"epoch {epoch + 1}: skipped {len(stats.skipped)} unreadable image(s): {shown}")
        self.dist.check_in_sync(state.model, self.device)
        result = None
        if self.dist.is_main:
            result = self._report(state, stats, loaders.valid, outputs, step.sparsity)
        self.dist.barrier()
        return result

    def _report(self, state: TrainState, stats: EpochStats, valid: DataLoader, outputs: RunOutputs,
                sparsity: Sparsity | None) -> EvalResult | None:
        """Evaluate the finished epoch when due, add its results row and write the checkpoints due; after the
        run's last epoch (or the one --patience stops at) also the evaluation pictures."""
        opt, epoch = self.opt, state.epoch
        last_epoch = epoch == opt.epochs - 1
        row = results_row(epoch, state.optimizer.param_groups[0]["lr"], stats, self.dist.world_size)
        evaluation = None
        if (epoch + 1) % opt.evaluation_interval == 0 or last_epoch:
            evaluation = self._evaluate_after_saving_on_failure(state, valid, row, outputs)
            add_evaluation(row, evaluation[1])
            if sparsity is not None:
                outputs.record_gammas(epoch, sparsity.gammas())
        outputs.add_row(row)
        improved = evaluation is not None and evaluation[1].map50 > state.best_fitness
        if evaluation is not None:
            state.best_fitness = max(state.best_fitness, evaluation[1].map50)
        stopping = not last_epoch and self._patience_exhausted(outputs)
        if (epoch + 1) % opt.checkpoint_interval == 0 or last_epoch or stopping or improved:
            outputs.save_checkpoints(state, best=improved)
        if stopping:
            best = evaluations_since_best(outputs.rows)[1]
            self.log(f"stopping early after epoch {epoch + 1}: mAP@0.5 has not improved for {opt.patience} "
                     f"evaluations (--patience); the best, {best['mAP50']:.4f} after epoch {int(best['epoch']) + 1}, "
                     f"is in {outputs.run_dir / BEST_CHECKPOINT}")
        self._record(row, evaluation, last_epoch or stopping, outputs.run_dir)
        return evaluation[1] if evaluation is not None else None

    def _record(self, row: dict, evaluation: Evaluation | None, final: bool, run_dir: Path) -> None:
        """The epoch in TensorBoard and, after the run's final epoch, its evaluation pictures."""
        self.runlog.epoch(row)
        if evaluation is None:
            return
        self.runlog.evaluation(evaluation[0], int(row["epoch"]))
        if final:
            from utils.evaluation.confusion import write_evaluation_pictures  # these load matplotlib
            from utils.plots import CONFUSION_PICTURE
            with named_write_errors(run_dir / CONFUSION_PICTURE, "evaluation pictures"):
                pictures = write_evaluation_pictures(evaluation[0], evaluation[1], run_dir)
            self.log(f"{format_best_f1(pictures.best)}; {CONFUSION_PICTURE} and the F1, P and R curves of this "
                     f"last evaluation are in {run_dir}")

    def _evaluate_after_saving_on_failure(self, state: TrainState, valid: DataLoader, row: dict,
                                          outputs: RunOutputs) -> Evaluation:
        """Evaluate the epoch just trained. Should evaluation fail, the epoch's results row and checkpoint
        are written before the error goes on: a failed evaluation never costs the training before it."""
        try:
            return self._evaluate(state.final_model, valid, state.names)
        except (Exception, KeyboardInterrupt) as err:
            outputs.add_row(row)
            outputs.save_checkpoints(state, best=False)
            saved = (f"epoch {state.epoch + 1} is saved, unevaluated, in {outputs.run_dir / LAST_CHECKPOINT}; "
                     f"--resume {outputs.run_dir} goes on from it")
            if isinstance(err, UserError):
                raise TrainingError(f"evaluation after epoch {state.epoch + 1} failed: {err}; {saved}") from err
            self.log(f"evaluation after epoch {state.epoch + 1} failed; {saved}")
            raise

    def _evaluate(self, model: Darknet, loader: DataLoader, names: list[str]) -> Evaluation:
        """Score ``model`` as test.py would: on a copy prepared for inference (fused, channels-last)."""
        opt = self.opt
        prepared = copy.deepcopy(model).prepare_inference()
        records = collect_detections(prepared, loader, self.device, opt.conf_thres, opt.nms_thres,
                                     progress=True).records
        result = score(records, names, opt.ap_method)
        self.log(format_results(result, opt.conf_thres, opt.nms_thres,
                                "letterboxed" if loader.dataset.keep_ratio else "stretched"))
        return records, result


def refuse_non_finite(model: Darknet, source: str) -> None:
    """Weights holding NaN or inf make every loss NaN, which the first step would blame on the learning rate."""
    for layer, block in zip(model.layers, model.blocks):
        if any(t.is_floating_point() and not torch.isfinite(t).all() for t in layer.state_dict().values()):
            raise UserError(f"{source}: {block.where()} holds NaN or infinite weights, so training from them cannot "
                            f"work (a run that diverged wrote them?); start from other weights")


def refuse_folder_of_runs(folder: Path, shown: int = 5) -> None:
    """--resume of a folder whose subfolders hold runs (an --evolve search) names them and the newest."""
    runs = sorted((path.parent for path in folder.glob(f"*/{LAST_CHECKPOINT}")),
                  key=lambda run: (run / LAST_CHECKPOINT).stat().st_mtime)
    if runs:
        names = ", ".join(run.name for run in runs[:shown]) + (f" and {len(runs) - shown} more" if len(runs) > shown
                                                              else "")
        raise UserError(f"--resume {folder}: the folder holds {len(runs)} runs, not one ({names}: an --evolve "
                        f"search?); resume one of them, e.g. the newest: --resume {runs[-1]}")
