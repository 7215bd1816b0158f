"""The ``inception`` command: parse arguments, call the library, print. Nothing else."""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import shlex
import sys
import textwrap
from pathlib import Path

from ._version import __version__
from .config import choices
from .errors import UserError
from .extras import extra_of


def _write_json(path: str, obj) -> None:
    """``obj`` as indented JSON, written atomically."""
    import json

    from .utils import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _fmt_count(n: int) -> str:
    return f"{n / 1e6:,.2f}M" if n >= 1e6 else f"{n:,}"


def _init_gradients(names: list[str], image_size: int, batch_size: int) -> int:
    from .engine.diagnose import init_gradient_scale

    print(f"one fp32 backward pass at init: batch {batch_size}, {image_size}x{image_size}, 10 classes, "
          "label smoothing 0.1; |grad| / |w| of each convolution's weight")
    print(f"{'model':<22} {'grad norm':>10} {'max |g|/|w|':>12}  {'median':>7}  layer of the max")
    for name in names:
        r = init_gradient_scale(name, image_size=image_size, batch_size=batch_size)
        print(f"{name:<22} {r.grad_norm:>10.1f} {r.max_ratio:>12.2f}  {r.median_ratio:>7.3f}  {r.max_layer}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models import get_model_info, list_models, model_summary

    if args.init_gradients:
        return _init_gradients([args.name] if args.name else list_models(), args.image_size, args.batch_size)
    if args.name:
        info = get_model_info(args.name)
        dc = info.data_config
        print(f"{info.name}: {info.description}")
        print(f"  parameters {info.params:,}   MACs {info.macs / 1e9:.2f} G at {dc.input_size[1]}x{dc.input_size[2]}")
        print(f"  input {dc.input_size[1]}x{dc.input_size[2]} (minimum {dc.min_input_size}x{dc.min_input_size}), "
              f"{dc.interpolation}, crop {dc.crop_pct}, mean {dc.mean}, std {dc.std}, features {info.num_features}")
        if info.init:
            print(textwrap.fill(info.init, width=110, initial_indent="  init (from scratch): ",
                                subsequent_indent="    "))
        card = info.card
        print(textwrap.fill(card.origin, width=110, initial_indent="  origin: ", subsequent_indent="    "))
        if card.layouts:
            loads = [layout.label + "".join(f" ({k}={v})" for k, v in layout.options.items())
                     for layout in card.layouts]
            print(f"  loads weights of: {', '.join(loads)} (--pretrained, inception convert)")
        if card.vendor_names:
            print("  vendor configs: " + ", ".join(f"{v.zoo} {v.name}" for v in card.vendor_names)
                  + " (inception convert-config)")
        print()
        rows = model_summary(args.name)
        print(f"  {'block':<16} {'type':<18} {'output shape':<22} {'params':>12}")
        for name, kind, shape, params in rows:
            shown = "x".join(map(str, shape[1:])) if shape else "(train only)"
            print(f"  {name:<16} {kind:<18} {shown:<22} {params:>12,}")
        return 0
    print(f"{'model':<22} {'params':>10} {'GMACs':>7} {'input':>8} {'min':>5}  {'interp':<9} {'crop':>6}")
    for name in list_models():
        info = get_model_info(name)
        dc = info.data_config
        print(f"{name:<22} {_fmt_count(info.params):>10} {info.macs / 1e9:>7.2f} {dc.input_size[1]:>4}x"
              f"{dc.input_size[2]:<3} {dc.min_input_size:>5}  {dc.interpolation:<9} {dc.crop_pct:>6}")
    return 0


def _one_of(key: str) -> str:
    *rest, last = choices(key)
    return f"{', '.join(rest)} or {last}"


# Shortcut flags for the most used config keys; any key can be set with --set KEY=VALUE.
# A flag may be a tuple of spellings; the first names the argparse destination.
TRAIN_FLAGS = [
    ("--model", "model.name", str, "model name (see `inception models`)"),
    ("--num-classes", "model.num_classes", int, "classifier outputs (default: from the data)"),
    ("--pretrained", "model.pretrained", str, "start from these weights (ours, torchvision or timm)"),
    ("--dataset", "data.dataset", str, _one_of("data.dataset")),
    ("--data-dir", "data.data_dir", str, "dataset root"),
    ("--image-size", "data.image_size", int, "train/eval resolution (default: the model's)"),
    ("--workers", "data.workers", int, "DataLoader worker processes"),
    ("--holdout", "data.holdout", float, "validate on this fraction of the train split, held out from training "
                                         "(tuning), instead of the val split"),
    ("--epochs", "train.epochs", int, "training epochs"),
    ("--batch-size", "train.batch_size", int, "images per step"),
    ("--lr", "optim.lr", float, "peak learning rate"),
    ("--opt", "optim.name", str, "optimizer: " + _one_of("optim.name")),
    ("--momentum", "optim.momentum", float, "sgd / rmsprop momentum"),
    (("--wd", "--weight-decay"), "optim.weight_decay", float, "weight decay, e.g. 1e-4"),
    ("--sched", "schedule.name", str, "lr schedule: " + _one_of("schedule.name") + " (see --help-config)"),
    ("--warmup-epochs", "schedule.warmup_epochs", float, "linear lr warmup in epochs (may be fractional)"),
    ("--label-smoothing", "train.label_smoothing", float, "label smoothing of the loss, e.g. 0.1"),
    ("--output-dir", "train.output_dir", str, "run directory"),
    ("--device", "train.device", str, "auto, cpu, cuda, cuda:N, mps, npu or npu:N (Ascend: needs torch_npu)"),
    ("--seed", "train.seed", int, "random seed"),
    ("--precision", "train.precision", str, _one_of("train.precision") + " (auto: bf16 where the CPU or GPU "
                                            "has native bf16, else fp32)"),
    ("--backbone-lr-scale", "model.backbone_lr_scale", float, "fine-tuning: backbone lr = lr x this"),
    ("--time-limit", "train.time_limit", str, "stop cleanly after this wall time (3600, 90m, 1h30m, 2h), "
                                              "checkpoint, evaluate and report"),
]

# Switches: present means true.
TRAIN_SWITCHES = [
    ("--freeze-backbone", "model.freeze_backbone", "fine-tuning: train only the classifier (and aux heads)"),
    ("--freeze-bn", "model.freeze_bn", "keep every BatchNorm's running statistics as loaded"),
    ("--tensorboard", "train.tensorboard", "also log metrics to RUN/tensorboard (needs tensorboard)"),
]


def _config_default(key: str):
    from .config import Config

    section, name = key.split(".")
    return getattr(getattr(Config(), section), name)


RECIPES = Path(__file__).resolve().parent / "configs"


def resolve_config_path(value: str | None) -> str:
    """A YAML path, or the name of a bundled recipe (``configs/NAME.yaml``, e.g. ``demo``);
    no value means the demo recipe."""
    if value is None:
        return str(RECIPES / "demo.yaml")
    if Path(value).exists():
        return value
    recipe = RECIPES / f"{value}.yaml"
    if recipe.is_file():
        return str(recipe)
    from .errors import UserError

    names = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
    raise UserError(f"config '{value}' is neither a file nor a bundled recipe ({names})")


def _flag_names(flag: str | tuple[str, ...]) -> tuple[str, ...]:
    return (flag,) if isinstance(flag, str) else flag


def _dest(flag: str | tuple[str, ...]) -> str:
    return _flag_names(flag)[0].lstrip("-").replace("-", "_")


def train_overrides(args: argparse.Namespace) -> dict:
    from .config import parse_override

    overrides = {}
    for flag, key, _, _ in TRAIN_FLAGS:
        value = getattr(args, _dest(flag), None)
        if value is not None:
            overrides[key] = value
    for flag, key, _ in TRAIN_SWITCHES:
        if getattr(args, flag.lstrip("-").replace("-", "_"), False):
            overrides[key] = True
    for item in getattr(args, "set", None) or []:
        key, value = parse_override(item)
        overrides[key] = value
    return overrides


def cmd_train(args: argparse.Namespace) -> int:
    from .config import describe, to_yaml
    from .vendor_config import load_config  # our recipes, and MindSpore / PaddleClas configs translated

    if args.help_config:
        print(describe())
        return 0
    resume = getattr(args, "resume", None)
    if resume:
        from .engine.loop import resume_config

        cfg = resume_config(resume, train_overrides(args))
    else:
        cfg = load_config(resolve_config_path(getattr(args, "config", None)), train_overrides(args))
    nproc = getattr(args, "nproc", None)
    if nproc and nproc > 1 and "WORLD_SIZE" not in os.environ and not args.print_config:
        # The config is valid (checked above): start the processes.
        from .accel import resolve_device
        from .engine.distributed import check_sync_bn, launch_torchrun

        if cfg.train.sync_bn:
            check_sync_bn(resolve_device(cfg.train.device))
        argv = _without_flag(_without_flag(args.argv, "--nproc"), "--max-restarts")
        return launch_torchrun(nproc, argv, max_restarts=getattr(args, "max_restarts", 0) or 0)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from .engine.loop import train

    result = train(cfg, resume=resume, auto_resume=not args.no_resume)
    if result.stopped_by == "time limit":
        if os.environ.get("RANK", "0") in ("", "0"):
            m = result.last_metrics
            print(f"time limit {cfg.train.time_limit} reached after {m['elapsed_s']:.0f} s: run {result.run_dir}, "
                  f"epoch {m['epoch_progress']:.2f} of {cfg.train.epochs} (step {result.global_step}), loss "
                  f"{m['train_loss']:.4f}, val top-1 {m['val_top1']:.2f}% top-5 {m['val_top5']:.2f}%; checkpoint "
                  "saved, the same command without --time-limit continues")
        return 0
    if result.stopped_by:
        print(f"stopped by {result.stopped_by} at step {result.global_step}; checkpoint in "
              f"{result.run_dir / 'checkpoints'}; run the same command to continue", file=sys.stderr)
        return result.exit_code
    if os.environ.get("RANK", "0") not in ("", "0"):
        return 0
    m = result.last_metrics
    print(f"run {result.run_dir}: {result.epochs_done} epochs, {result.global_step} steps, "
          f"best val top-1 {result.best_top1:.2f}%"
          + (f", last val top-1 {m['val_top1']:.2f}% top-5 {m['val_top5']:.2f}%" if "val_top1" in m else ""))
    return 0


def _without_flag(argv: list[str], flag: str) -> list[str]:
    """``argv`` without ``flag VALUE`` / ``flag=VALUE``."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == flag:
            skip = True
        elif not item.startswith(flag + "="):
            out.append(item)
    return out


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert

    r = convert(args.src, args.dst, model=args.model, num_classes=args.num_classes, class_names=args.classes)
    print(r.line())
    if r.load.reinitialized:
        print(f"note: {len(r.load.reinitialized)} classifier tensors left at their initialisation (--num-classes "
              "differs from the file's)")
    print(f"next: inception eval --checkpoint {r.path} --data-dir DATA   |   inception export --checkpoint {r.path}"
          if r.path.suffix != ".safetensors" else f"next: inception train ... --pretrained {r.path}")
    return 0


def cmd_convert_config(args: argparse.Namespace) -> int:
    from .utils import atomic_write_text
    from .vendor_config import convert_file

    translation = convert_file(args.src, model=args.model)
    if args.output:
        atomic_write_text(args.output, translation.to_yaml())
        n = len(translation.notes)
        print(f"wrote {args.output}: {len(translation.rows)} settings translated, {n} note{'s' * (n != 1)}, "
              f"{len(translation.untranslated)} keys not translated (listed in it); train with: inception train "
              f"--config {args.output}")
    else:
        print(translation.to_yaml(), end="")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .engine.evaluate import evaluate_checkpoint

    r = evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir, dataset=args.dataset, split=args.split,
                            batch_size=args.batch_size, device=args.device, workers=args.workers,
                            json_path=args.json, progress=sys.stderr.isatty(), report_dir=args.report,
                            tta_flip=args.tta_flip, precision=args.precision, channels_last=args.channels_last,
                            image_size=args.image_size, crop_pct=args.crop_pct)
    print(f"top1={r['top1']:.2f}% top5={r['top5']:.2f}% loss={r['loss']:.4f} images={r['count']} "
          f"img/s={r['img_per_s']:.1f} ({r['arch']}{', EMA weights' if r['weights'] == 'ema' else ''}, "
          f"{r['image_size']} px crop_pct {r['crop_pct']:g}"
          f"{', flip TTA' if r['tta_flip'] else ''}, {r['speed']}, "
          f"{r['dataset']} {r['split']}, {r['checkpoint']})")
    for line in r.get("report_lines", []):
        print(line)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .report import plot_runs

    print(f"wrote {plot_runs(args.runs, args.output)}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from .runs import format_runs, list_runs

    infos = list_runs(args.dir)
    if args.json:
        import json

        print(json.dumps(infos, indent=1))
    else:
        for line in format_runs(infos):
            print(line)
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from .checkdata import check_data

    report = check_data(args.path, workers=args.workers, min_size=args.min_size, progress=sys.stderr.isatty())
    for line in report.lines(max_listed=args.max_listed):
        print(line)
    return 0 if report.ok else 1


def cmd_prepare(args: argparse.Namespace) -> int:
    from .data.cache import prepare

    s = prepare(args.src, args.dst, max_size=args.max_size, layout=args.format, quality=args.quality,
                workers=args.workers, shard_mb=args.shard_mb, progress=sys.stderr.isatty())
    splits = ", ".join(f"{k} {v:,}" for k, v in s["splits"].items())
    print(f"wrote {s['destination']} ({s['layout']}, shorter side <= {s['max_size']}): {splits} images in "
          f"{s['classes']} classes, {s['bytes'] / 2**20:,.1f} MB, {s['seconds']:.1f} s ({s['img_per_s']:,.0f} img/s)")
    if s["skipped"]:
        print(f"skipped {s['skipped']} unreadable files, listed in {s['destination']}/skipped.txt")
    print(f"train on it with: inception train --data-dir {s['destination']} --set data.dataset=folder ...")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_checkpoint

    if args.batch_size is not None and args.dynamic_batch:
        raise UserError("give --batch-size N (a fixed batch) or --dynamic-batch, not both")
    r = export_checkpoint(args.checkpoint, fmt=args.format, output=args.output, batch_size=args.batch_size,
                          opset=args.opset, image_size=args.image_size, check=not args.no_check,
                          tolerance=args.tolerance, int8=args.int8, calibration_data=args.calibration_data,
                          calibration_size=args.calibration_size, holdout_size=args.holdout_size,
                          reduce_range=args.reduce_range, per_channel=args.per_channel,
                          max_int8_drop=args.max_int8_drop, workers=args.workers)
    m = r.metadata
    print(f"wrote {r.path} ({r.format}{', int8' if args.int8 else ''}, {m['model']}, {m['image_size']}x"
          f"{m['image_size']}, batch {m['batch_size'] or 'dynamic'}, {m['num_classes']} classes)")
    if r.sidecar:
        print(f"metadata: {r.sidecar}")
    if r.parity:
        print(r.parity.line())
    if r.int8:
        q = r.int8
        if q.get("labelled"):
            print(f"int8 on {q['labelled']} held-out images: top-1 {q['int8_top1']:.2f}% vs fp32 {q['fp32_top1']:.2f}% "
                  f"({q['delta']:+.2f} points), top-1 agreement {q['top1_agreement']:.1f}%")
        else:
            print(f"int8 on {q['images']} held-out images (no labels): top-1 agreement with fp32 "
                  f"{q['top1_agreement']:.1f}%")
    for note in r.notes:
        print(f"note: {note}")
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from .infer import accuracy_lines, load_predictor, run_inference, write_predictions

    predictor = load_predictor(args.model, runtime=args.runtime, device=args.device, threads=args.threads)
    logging.getLogger("inception").info("model %s", predictor.describe())
    r = run_inference(predictor, args.input, batch_size=args.batch_size, topk=args.topk, workers=args.workers,
                      root=args.root, progress=sys.stderr.isatty())
    if args.output:
        write_predictions(r, args.output, model=str(args.model))
    elif len(r.predictions) <= args.show:
        for p in r.predictions:
            top = ", ".join(f"{c} {100 * q:.1f}%" for c, q in p["topk"])
            print(f"{p['path']}: {top}")
    print(f"predicted {r.images} images in {r.seconds:.1f} s ({r.img_per_s:,.1f} img/s, {predictor.describe()})"
          + (f"; wrote {args.output}" if args.output else ""))
    if r.skipped:
        print(f"skipped {len(r.skipped)} file(s) that could not be read as images:")
        for item in r.skipped[:20]:
            print(f"  {item['path']}")
        if len(r.skipped) > 20:
            print(f"  ... and {len(r.skipped) - 20} more" + (f" (all listed in {args.output})"
                                                              if args.output and args.output.endswith(".json") else ""))
    for line in accuracy_lines(r.metrics):
        print(line)
    if args.json:
        _write_json(args.json, {**r.metrics, "img_per_s": r.img_per_s, "model": str(args.model),
                                "skipped_files": r.skipped})
    return 0


API_KEY_ENV = "INCEPTION_API_KEY"
# What `inception serve` imports beyond the core dependencies (the `serve` extra and what it pulls in).
SERVE_MODULES = ("fastapi", "uvicorn", "starlette", "multipart", "python_multipart", "prometheus_client", "pydantic")


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .serve import run_server
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in SERVE_MODULES:
            raise
        raise UserError(f"inception serve needs the '{e.name}' package; install the serving extra: "
                        "pip install 'inception[serve]'") from None
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    summary = run_server(args.model, host=args.host, port=args.port, runtime=args.runtime, device=args.device,
                         threads=args.threads, workers=args.workers, max_batch=args.max_batch,
                         max_wait_ms=args.max_wait_ms, spin=args.spin, api_key=api_key,
                         max_upload_mb=args.max_upload_mb, max_images=args.max_images,
                         max_pixels=int(args.max_megapixels * 1e6), name=args.name,
                         max_queue=args.max_queue, unhealthy_after=args.unhealthy_after,
                         max_concurrency=args.max_concurrency, body_timeout_s=args.body_timeout_s,
                         request_timeout_s=args.request_timeout_s, drain_timeout_s=args.drain_timeout_s,
                         unready_s=args.unready_s,
                         access_log=args.access_log, http=args.http, loop=args.loop,
                         announce=lambda line: print(line, flush=True))
    print(f"stopped: answered {summary.answered} inference requests ({summary.images} images) in "
          f"{summary.seconds:.1f} s", flush=True)
    return 0


LAYOUTS = {"auto": None, "nchw": False, "channels_last": True}   # bench --layout: train.channels_last


def cmd_bench_model(args: argparse.Namespace) -> int:
    from .bench import bench_data, bench_model, format_data, format_results, parse_model_options
    from .models import list_models

    models = list_models() if args.models == ["all"] else args.models
    modes = ["train", "infer"] if args.mode == "both" else [args.mode]
    layouts = args.layout if args.channels_last is None else ["channels_last" if args.channels_last else "nchw"]
    options = parse_model_options(args.option)
    results, data = [], []
    skipped: dict[str, str] = {}
    for name in models:
        for mode in modes:
            for batch in args.batch_size:
                if args.data_dir or args.dataset:   # the pipeline this mode consumes; first: a bad path fails fast
                    data.append(bench_data(args.data_dir, dataset=args.dataset, model_name=name,
                                           model_options=options, image_size=args.image_size,
                                           pipeline="train" if mode == "train" else "eval", batch_size=batch,
                                           workers=args.workers, device_resident=args.device_resident,
                                           steps=args.data_steps, device=args.device,
                                           channels_last=LAYOUTS[layouts[0]]))
                for precision, layout, peer in itertools.product(args.precision, layouts, [None, *args.peer]):
                    if peer is not None and peer in skipped:
                        continue
                    try:
                        results.append(bench_model(
                            name, mode=mode, batch_size=batch, image_size=args.image_size, precision=precision,
                            compile=args.compile, compile_mode=args.compile_mode, device=args.device,
                            channels_last=LAYOUTS[layout], steps=args.steps, warmup=args.warmup,
                            num_classes=args.num_classes, peak_tflops=args.peak_tflops, model_options=options,
                            peer=peer, profile=args.profile and peer is None))
                    except UserError as e:      # a peer library missing, or without this model: say so, go on
                        if peer is None:
                            raise
                        skipped[peer] = str(e)
                        print(f"note: peer {peer} not measured: {e}", file=sys.stderr)
    print(format_results(results))
    ours = [r for r in results if r.implementation == "inception"]
    for d, r in zip(data, ours):
        print(format_data(d, r))
    if args.json:
        _write_json(args.json, {"results": [r.to_dict() for r in results], "data": data, "skipped_peers": skipped})
    return 0


def cmd_bench_data(args: argparse.Namespace) -> int:
    from .bench import bench_pipeline, format_pipeline

    result = bench_pipeline(args.path, pipeline=args.pipeline, dataset=args.dataset, model_name=args.model,
                            image_size=args.image_size, batch_size=args.batch_size, workers=args.workers,
                            steps=args.steps, rounds=args.rounds, device=args.device, baseline=args.baseline,
                            gpu_decode=args.gpu_decode)
    print(format_pipeline(result))
    if args.json:
        _write_json(args.json, result)
    return 0


def cmd_bench_runtime(args: argparse.Namespace) -> int:
    from .bench import bench_runtimes, format_runtime_results, parse_model_options

    results = bench_runtimes(args.models, runtimes=args.runtime, batch_sizes=args.batch_size,
                             image_size=args.image_size, steps=args.steps, warmup=args.warmup, device=args.device,
                             threads=args.threads, num_classes=args.num_classes,
                             model_options=parse_model_options(args.option))
    print(format_runtime_results(results))
    if args.json:
        _write_json(args.json, {"runtimes": [r.to_dict() for r in results]})
    return 0


def cmd_bench_serve(args: argparse.Namespace) -> int:
    try:
        import httpx  # noqa: F401  (the load generator's client)

        from .bench.serve import bench_serve, format_serve
        from .serve import ServerProcess  # noqa: F401
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in SERVE_MODULES + ("httpx",):
            raise
        raise UserError(f"inception bench serve needs the '{e.name}' package; install the serving extra: "
                        "pip install 'inception[serve]'") from None
    if args.overload:
        from .bench.serve import bench_overload, format_overload
        result = bench_overload(args.model, images=args.images, num_images=min(args.num_images, 64),
                                requests=args.requests, clients=args.clients, threads=args.threads,
                                workers=args.workers, max_batch=args.max_batch, runtime=args.runtime,
                                device=args.device, image_size=args.image_size, num_classes=args.num_classes,
                                serve_args=shlex.split(args.serve_args))
        print(format_overload(result))
        if args.json:
            _write_json(args.json, result.to_dict())
        return 1 if result.lost or result.retry_after_missing else 0
    bench = bench_serve(args.model, images=args.images, num_images=args.num_images, concurrency=args.concurrency,
                        duration=args.duration, warmup=args.warmup, max_batch=args.max_batch,
                        max_wait_ms=args.max_wait_ms, threads=args.threads, workers=args.workers,
                        baseline=args.baseline, infer=args.infer, infer_passes=args.infer_passes,
                        image_size=args.image_size, num_classes=args.num_classes, runtime=args.runtime,
                        device=args.device, serve_args=shlex.split(args.serve_args))
    print(format_serve(bench))
    if args.json:
        _write_json(args.json, bench.to_dict())
    return 0


def cmd_bench_gpu_report(args: argparse.Namespace) -> int:
    from .bench import gpu_report

    report = gpu_report(device=args.device, quick=args.quick, data=args.data, cifar=args.cifar, workers=args.workers,
                        budget=args.budget, only=args.only, output=args.output, json_path=args.json,
                        log_dir=args.log_dir)
    print(report.to_markdown(), end="")
    for path in (args.output, args.json):
        if path:
            print(f"wrote {path}")
    return 0


def _is_model_file(name: str) -> bool:
    return Path(name).is_file() or name.endswith((".onnx", ".pt2", ".safetensors", ".pt", ".pth"))


BENCH_SUBCOMMANDS = ("model", "data", "runtime", "serve", "gpu-report")
BENCH_DEPRECATED = ("note: 'inception bench ...' without a subcommand is deprecated; use 'inception bench "
                    "model|data|runtime' (it goes away in the next release)")
# The options of the old `inception bench` (no subcommand) that take values: how many (0: one or more).
_OLD_BENCH_VALUES = {"--mode": 1, "--batch-size": 0, "--runtime": 0, "--threads": 1, "--image-size": 1,
                     "--precision": 1, "--device": 1, "--steps": 1, "--warmup": 1, "--num-classes": 1,
                     "--peak-tflops": 1, "--option": 1, "--data-dir": 1, "--data": 1, "--dataset": 1, "--workers": 1,
                     "--data-steps": 1, "--pipeline": 1, "--rounds": 1, "--json": 1}


def _bench_alias(argv: list[str]) -> tuple[list[str], bool]:
    """``(argv, True)`` with an old ``inception bench ...`` command line (no subcommand; kept
    for one release) spelled with the subcommand it meant: ``--pipeline`` -> ``data`` (``--data
    PATH`` -> ``PATH``, ``--data-steps`` -> ``--steps``, a model -> ``--model``), ``--runtime`` or
    model files -> ``runtime``, else ``model``. Any other command line: ``(argv, False)``."""
    i = next((k for k, a in enumerate(argv) if not a.startswith("-")), len(argv))
    tail = argv[i + 1:]
    if argv[i:i + 1] != ["bench"] or not tail or tail[0] in ("-h", "--help"):
        return argv, False
    positionals, options, k = [], [], 0     # options: (flag, values)
    while k < len(tail):
        flag, k = tail[k], k + 1
        if not flag.startswith("-"):
            positionals.append(flag)
        elif "=" in flag:
            options.append(tuple(flag.split("=", 1)))
        else:
            n = _OLD_BENCH_VALUES.get(flag)
            end = k if n is None else k + n if n else next(
                (j for j in range(k, len(tail)) if tail[j].startswith("-")), len(tail))
            options.append((flag, *tail[k:end]))
            k = end
    if positionals[:1] and positionals[0] in BENCH_SUBCOMMANDS:     # `inception bench [-q] SUBCOMMAND ...`
        return argv, False
    flags = {o[0] for o in options}
    if "--pipeline" in flags:
        data = [o[1:] for o in options if o[0] in ("--data", "--data-dir")]
        rename = {"--data-steps": "--steps"}
        options = [(rename.get(o[0], o[0]), *o[1:]) for o in options
                   if o[0] not in ("--data", "--data-dir", "--steps", "--warmup")]
        new = ["data", *(v for d in data for v in d), *(v for m in positionals for v in ("--model", m))]
    elif "--runtime" in flags or any(_is_model_file(m) for m in positionals):
        options = [o for o in options if o not in (("--mode", "infer"), ("--mode", "both"))]
        new = ["runtime", *positionals]
    else:
        new = ["model", *positionals]
    return argv[:i + 1] + new + [v for o in options for v in o], True


def _add_verbosity(parser: argparse.ArgumentParser, default) -> None:
    off = " (default: off)" if default is argparse.SUPPRESS else ""    # else the formatter adds the default
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help=f"debug logging{off}")
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help=f"warnings and results only, no progress or per-step lines{off}")


class _CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: it also takes -v/-q (``inception train -q``). Its defaults are
    SUPPRESS, so an absent flag leaves ``inception -q train`` as it was."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _add_verbosity(self, default=argparse.SUPPRESS)


_FMT = argparse.ArgumentDefaultsHelpFormatter


def _add_models(sub) -> None:
    """``inception models``."""
    p = sub.add_parser("models", help="list the models, or summarise one",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("name", nargs="?", default=None, help="a model name: print its blocks and output shapes")
    p.add_argument("--init-gradients", action="store_true",
                   help="for the model (default: every model), how hard one SGD step hits each convolution at init: "
                        "the gradient norm and |grad| / |w| of the convolutions' weights, one fp32 pass on random "
                        "images (a high ratio needs a small lr, a long warmup or AdamW)")
    p.add_argument("--image-size", type=int, default=128, help="--init-gradients: image side")
    p.add_argument("--batch-size", type=int, default=32, help="--init-gradients: images in the batch")
    p.set_defaults(func=cmd_models)



def _add_train(sub) -> None:
    """``inception train``."""
    p = sub.add_parser("train", help="train a model from a YAML recipe and overrides", formatter_class=_FMT,
                       description="Train a model. With no arguments: GoogLeNet on the built-in digits data.")
    p.add_argument("--config", default=argparse.SUPPRESS,
                   help="YAML recipe: a path or a bundled recipe name from configs/ (e.g. googlenet_cifar10); "
                        "default: demo (GoogLeNet on the built-in digits)")
    for flag, key, typ, text in TRAIN_FLAGS:
        p.add_argument(*_flag_names(flag), dest=_dest(flag), type=typ, default=argparse.SUPPRESS,
                       help=f"{text} [{key}; default: the recipe's, else {_config_default(key)!r}]")
    for flag, key, text in TRAIN_SWITCHES:
        p.add_argument(flag, action="store_true", default=argparse.SUPPRESS,
                       help=f"{text} [{key}=true; default: the recipe's, else false]")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=argparse.SUPPRESS,
                   help="override any config key, e.g. --set optim.name=rmsprop --set schedule.warmup_epochs=2; "
                        "a path into a mapping sets one entry: --set model.options.aux_logits=true "
                        "(repeatable; default: none)")
    p.add_argument("--resume", default=argparse.SUPPRESS, metavar="RUN_DIR|CKPT",
                   help="continue a run from its last checkpoint (same LR schedule, epoch and step); default: "
                        "--output-dir's newest checkpoint when it has one (see --no-resume)")
    p.add_argument("--nproc", type=int, default=argparse.SUPPRESS, metavar="N",
                   help="data-parallel training on N devices of this node: starts torchrun with N processes "
                        "(for several nodes, run torchrun yourself; see docs/training.md); default: 1, or torchrun's")
    p.add_argument("--no-resume", action="store_true",
                   help="start from scratch even if --output-dir already holds checkpoints (by default the run "
                        "continues from its newest good checkpoint)")
    p.add_argument("--max-restarts", type=int, default=argparse.SUPPRESS, metavar="N",
                   help="with --nproc: torchrun restarts the processes up to N times when one dies; they resume "
                        "from the newest checkpoint (default: 0)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as YAML (usable as --config) and exit; keys that have no effect "
                        "with these settings are marked '# not used with ...'")
    p.add_argument("--help-config", action="store_true", help="list every config key with its default and exit")
    p.set_defaults(func=cmd_train)


def _add_convert(sub) -> None:
    """``inception convert``."""
    p = sub.add_parser("convert", formatter_class=_FMT,
                       help="a MindSpore .ckpt, PaddleClas .pdparams, timm/torchvision/Cadene file as our checkpoint",
                       description="Read weights from the vendor zoos (MindSpore GoogLeNet/InceptionV4 .ckpt or "
                                   "safetensors, PaddleClas GoogLeNet/InceptionV4 .pdparams), timm, torchvision, "
                                   "Cadene / Ascend-PyTorch .pth, or ours, and write our checkpoint (DST.pt: eval, "
                                   "export, infer and --pretrained take it) or safetensors with the export metadata "
                                   "(DST.safetensors). The model and its options (variant=mindspore...) and the class "
                                   "count come from the file.")
    p.add_argument("src", metavar="SRC", help="the weights file")
    p.add_argument("dst", metavar="DST", help="output: .pt (our checkpoint) or .safetensors")
    p.add_argument("--model", default=None, help="check that the file holds this model (read from the file anyway)")
    p.add_argument("--num-classes", type=int, default=None, metavar="N",
                   help="classes of the classifier (default: the file's; another count re-initialises it)")
    p.add_argument("--classes", default=None, metavar="FILE",
                   help="class names, one per line in the classifier's order (PaddleClas 'index name' label lists "
                        "too); default: 0..N-1")
    p.set_defaults(func=cmd_convert)


def _add_convert_config(sub) -> None:
    """``inception convert-config``."""
    p = sub.add_parser("convert-config", formatter_class=_FMT,
                       help="translate a MindSpore model-zoo or PaddleClas config file into a recipe",
                       description="Print (or write with -o) the recipe equivalent to a vendor model zoo's own config "
                                   "file: a MindSpore model-zoo default_config.yaml / cifar10_config.yaml or a "
                                   "PaddleClas ppcls/configs/*.yaml. Each key says which vendor key it came from; the "
                                   "keys with no equivalent are listed as comments with the reason. `inception train "
                                   "--config VENDOR_FILE` reads such files directly, with the same translation.")
    p.add_argument("src", metavar="SRC", help="the vendor config file")
    p.add_argument("-o", "--output", default=None, metavar="OUT.yaml", help="write the recipe here (atomically) "
                                                                             "instead of printing it")
    p.add_argument("--model", default=None, help="our model name, for a MindSpore file that does not say which "
                                                 "model it trains")
    p.set_defaults(func=cmd_convert_config)


def _add_eval(sub) -> None:
    """``inception eval``."""
    p = sub.add_parser("eval", help="top-1/top-5 of a checkpoint", formatter_class=_FMT)
    p.add_argument("--checkpoint", required=True, metavar="CKPT|RUN_DIR", help="checkpoint file or run directory")
    p.add_argument("--data-dir", default=None, help="dataset root (default: the one the checkpoint was trained on)")
    p.add_argument("--dataset", default=None, help="dataset kind (default: the checkpoint's)")
    p.add_argument("--split", default=None,
                   help="split to evaluate (default: the validation split); holdout: the part of the train split a "
                        "run with data.holdout validated on")
    p.add_argument("--image-size", type=int, default=None,
                   help="evaluate at this size: resize the short side to image_size / crop_pct, crop image_size "
                        "(default: the run's data.eval_image_size, else its data.image_size)")
    p.add_argument("--crop-pct", type=float, default=None,
                   help="fraction of the resized image that is center-cropped, 1.0 = the whole image (default: the "
                        "run's data.crop_pct, else the model's)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the training batch size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps, npu or npu:N")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the checkpoint's)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures to this JSON file")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="write a confusion-matrix PNG, per_class.csv and report.json to DIR and print per-class "
                        "accuracy")
    p.add_argument("--tta-flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average each image's logits with its horizontal mirror's (default: as the run evaluated, "
                        "train.tta_flip)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto: bf16 autocast where the CPU or GPU has native bf16, else fp32")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC model and inputs (default: on for CUDA and x86 CPUs with AVX-512)")
    p.set_defaults(func=cmd_eval)


def _add_plot(sub) -> None:
    """``inception plot``."""
    p = sub.add_parser("plot", help="PNG curves of one or more runs (loss, lr, top-1/top-5, img/s)",
                       formatter_class=_FMT,
                       description="Plot training loss, learning rate, validation top-1/top-5 and img/s from each "
                                   "run's metrics.jsonl; several runs are overlaid for comparison.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories written by `inception train`")
    p.add_argument("--output", "-o", default=None, metavar="FILE.png",
                   help="default: RUN_DIR/curves.png for one run, ./curves.png for several")
    p.set_defaults(func=cmd_plot)


def _add_runs(sub) -> None:
    """``inception runs``."""
    p = sub.add_parser("runs", help="list runs: model, dataset, epochs, best top-1, status", formatter_class=_FMT,
                       description="List the runs under DIR (folders with config.yaml and metrics.jsonl), newest "
                                   "first, with their status: running, finished, interrupted (a signal or a time "
                                   "limit; resumable), failed (an error) or failed (killed).")
    p.add_argument("dir", nargs="?", default="runs", help="folder holding run directories")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_runs)


def _add_check_data(sub) -> None:
    """``inception check-data``."""
    p = sub.add_parser("check-data", help="scan a dataset for unreadable images and report per-class counts",
                       formatter_class=_FMT,
                       description="Decode every file of a dataset folder (root/<split>/<class>/* or root/<class>/*) "
                                   "or list file as training would; report corrupt, empty, non-image and oversized "
                                   "files, converted images (CMYK, 16-bit, palette) and per-class counts. Exit status "
                                   "0: no problems, 1: problems found, 2: the path is wrong.")
    p.add_argument("path", help="dataset folder or list file")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: min(4, cores))")
    p.add_argument("--min-size", type=int, default=32, help="note images smaller than this on a side")
    p.add_argument("--max-listed", type=int, default=30, help="problem files listed")
    p.set_defaults(func=cmd_check_data)


def _add_prepare(sub) -> None:
    """``inception prepare``."""
    p = sub.add_parser("prepare", help="write a pre-resized copy of a dataset (folders or packed shards)",
                       formatter_class=_FMT,
                       description="Write a copy of the dataset SRC (a folder dataset SRC/<split>/<class>/*, a list "
                                   "dataset with SRC/<split>_list.txt, or a .tar/.tar.gz of class folders) whose "
                                   "images are JPEGs at most --max-size on their shorter side, for faster epochs on "
                                   "slow disks and CPUs. Training with --data-dir DST reads it with the source's class "
                                   "order. Unreadable files are skipped and listed in DST/skipped.txt.")
    p.add_argument("src", help="dataset folder, list dataset folder or .tar/.tar.gz archive")
    p.add_argument("dst", help="the cache folder to write (new, empty, or an earlier cache)")
    p.add_argument("--max-size", type=int, default=256,
                   help="shorter side at most N pixels (aspect kept; smaller JPEGs are copied unchanged)")
    p.add_argument("--format", choices=["folder", "shards"], default="folder",
                   help="folder: DST/<split>/<class>/*.jpg + list files; shards: large files of JPEGs + an index")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of re-encoded images")
    p.add_argument("--shard-mb", type=int, default=256, help="shards: size of each shard file in MB")
    p.add_argument("--workers", type=int, default=None, help="processes (default: the CPU cores)")
    p.set_defaults(func=cmd_prepare)


def _add_export(sub) -> None:
    """``inception export``."""
    p = sub.add_parser("export", help="export a checkpoint to ONNX (fp32 or INT8), TorchScript, ExportedProgram or "
                                      "safetensors, and check it against PyTorch", formatter_class=_FMT,
                       description="Export a checkpoint for deployment. The file carries the class names and the "
                                   "eval preprocessing (input size, mean/std, interpolation, crop): ONNX in its "
                                   "metadata_props, the other formats in a sidecar <file>.json. The exported model is "
                                   "then run next to the PyTorch model on the same inputs; the max abs difference "
                                   "and top-1 agreement are printed, and an export beyond tolerance is rejected.")
    p.add_argument("--checkpoint", required=True, metavar="CKPT|RUN_DIR", help="checkpoint file or run directory")
    p.add_argument("--format", choices=["onnx", "torchscript", "exported-program", "safetensors"], default="onnx",
                   help="onnx (ONNX Runtime, TensorRT...), torchscript (.torchscript.pt), exported-program (.pt2, "
                        "torch.export), safetensors (plain weights)")
    p.add_argument("--output", default=None, metavar="FILE",
                   help="default: RUN/export/<model>[-int8].<ext> (beside the checkpoint outside a run)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N", help="a fixed batch size (default: dynamic)")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size (the default)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset, 18-23 (default: 18)")
    p.add_argument("--image-size", type=int, default=None, help="input side (default: the training resolution)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check against PyTorch")
    p.add_argument("--tolerance", type=float, default=None,
                   help="max abs logit difference allowed (default: 1e-4 x max(1, max |logit|))")
    p.add_argument("--int8", action="store_true",
                   help="ONNX Runtime static INT8 quantization (QDQ), calibrated on --calibration-data")
    p.add_argument("--calibration-data", default=None, metavar="PATH",
                   help="images to calibrate on: a dataset folder (class sub-folders), an image folder or a list file")
    p.add_argument("--calibration-size", type=int, default=300, help="images used for calibration")
    p.add_argument("--holdout-size", type=int, default=500,
                   help="further images of the calibration data on which the accuracy change is measured")
    p.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=True,
                   help="7-bit weights: avoids int16 saturation on x86 CPUs without VNNI")
    p.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                   help="one weight scale per output channel")
    p.add_argument("--max-int8-drop", type=float, default=2.0,
                   help="reject the INT8 model when held-out top-1 drops by more points than this")
    p.add_argument("--workers", type=int, default=None, help="image decoding workers for calibration")
    p.set_defaults(func=cmd_export)


def _add_infer(sub) -> None:
    """``inception infer``."""
    p = sub.add_parser("infer", help="predict images with an exported model (ONNX Runtime) or a checkpoint (PyTorch)",
                       formatter_class=_FMT,
                       description="Predict an image, a folder of images, a dataset folder with class sub-folders or "
                                   "a list file. Preprocessing comes from the model's metadata. Files that cannot be "
                                   "read as images are reported and skipped. When labels are known (class folders, "
                                   "list files) prints top1_correct=..., tot=..., acc=...% and top-5.")
    p.add_argument("--model", required=True, metavar="FILE",
                   help=".onnx (fp32 or int8), a checkpoint or run directory, .torchscript.pt, .pt2 or .safetensors")
    p.add_argument("--input", required=True, metavar="PATH", help="image, folder, dataset folder or list file")
    p.add_argument("--output", default=None, metavar="FILE.csv|FILE.json",
                   help="write predictions (path, label, top-k classes and probabilities)")
    p.add_argument("--topk", type=int, default=5, help="classes per prediction")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch")
    p.add_argument("--runtime", choices=["auto", "onnxruntime", "torch"], default="auto",
                   help="auto: ONNX Runtime for .onnx, PyTorch for the rest")
    p.add_argument("--device", default="auto",
                   help="auto, cpu, cuda (ONNX Runtime: also tensorrt; PyTorch: also cuda:N, mps, npu, npu:N)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the usable cores)")
    p.add_argument("--workers", type=int, default=None, help="image decoding workers (default: min(4, cores))")
    p.add_argument("--root", default=None, help="list files: folder the paths are relative to "
                                                "(default: the list file's folder)")
    p.add_argument("--show", type=int, default=20, help="without --output, print predictions when at most this many")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the accuracy figures to this JSON file")
    p.set_defaults(func=cmd_infer)


def _add_serve(sub) -> None:
    """``inception serve``."""
    p = sub.add_parser("serve", help="an HTTP inference server with dynamic batching, the OIP v2 API and a web page",
                       formatter_class=_FMT,
                       description="Serve a model over HTTP: POST /v1/classify (images), the Open Inference "
                                   "Protocol v2 under /v2 (tensors), GET /metrics (Prometheus), a web page at / and "
                                   "the API reference at /docs. Concurrent requests are batched into one model call "
                                   "(up to --max-batch images or --max-wait-ms). Preprocessing comes from the "
                                   "model's metadata, exactly as in `inception infer`. SIGTERM or Ctrl-C: finish "
                                   "the requests in flight, then exit. Needs the serve extra: "
                                   "pip install 'inception[serve]'.")
    p.add_argument("--model", required=True, metavar="FILE|RUN",
                   help=".onnx (fp32 or int8), a checkpoint or run directory, .torchscript.pt, .pt2 or .safetensors")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: every interface; then set an API key)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: a free one, printed at start)")
    p.add_argument("--runtime", choices=["auto", "onnxruntime", "torch"], default="auto",
                   help="auto: ONNX Runtime for .onnx, PyTorch for the rest")
    p.add_argument("--device", default="auto",
                   help="auto, cpu, cuda (ONNX Runtime: also tensorrt; PyTorch: also cuda:N, mps, npu, npu:N)")
    p.add_argument("--max-batch", type=int, default=32, help="most images per model call (1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="longest wait for more images after the first of a batch")
    p.add_argument("--workers", type=int, default=None,
                   help="image decoding threads (default: min(4, usable cores))")
    p.add_argument("--threads", type=int, default=None, help="the model's CPU threads (default: the usable cores)")
    p.add_argument("--spin", action=argparse.BooleanOptionalAction, default=True,
                   help="ONNX Runtime's threads spin-wait briefly between model calls (--no-spin: they sleep, leaving "
                        "the cores to decoding)")
    p.add_argument("--api-key", default=None,
                   help=f"require 'Authorization: Bearer KEY' on every endpoint but health (default: ${API_KEY_ENV}; "
                        "the variable keeps the key out of the process list)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body (413 above it)")
    p.add_argument("--max-images", type=int, default=64, help="most images in one request")
    p.add_argument("--max-concurrency", type=int, default=32,
                   help="inference requests in flight; past it a request gets 503 with Retry-After at once, its "
                        "body unread (default 32)")
    p.add_argument("--body-timeout-s", type=float, default=60.0,
                   help="seconds a request body may take to arrive; slower clients get 408 (default 60)")
    p.add_argument("--request-timeout-s", type=float, default=120.0,
                   help="seconds a request may take in all; past it 504 and its images leave the queue (default 120)")
    p.add_argument("--drain-timeout-s", type=float, default=30.0,
                   help="on SIGTERM: seconds in-flight requests get to finish before the server exits (default 30)")
    p.add_argument("--unready-s", type=float, default=2.0,
                   help="on SIGTERM: seconds readiness answers 503 while new connections are still accepted, so that "
                        "load balancers stop sending before the socket closes (default 2; Ctrl-C skips it)")
    p.add_argument("--max-queue", type=int, default=256,
                   help="images waiting for the model before new requests get 503 with Retry-After (default 256: "
                        "about 275 MB of 299-px inputs)")
    p.add_argument("--unhealthy-after", type=int, default=5,
                   help="images in a row the model fails on (raises, or answers NaN/Inf) before readiness turns 503; "
                        "the next success turns it back (default 5)")
    p.add_argument("--max-image-mp", "--max-megapixels", dest="max_megapixels", type=float, default=25.0,
                   help="largest image in megapixels (width x height / 1e6), checked from its header before "
                        "decoding: 413 above it (default 25, as training's limit)")
    p.add_argument("--name", default=None, help="the model's name in /v2/models/NAME (default: the file name)")
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                   help="log one line per request")
    p.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto",
                   help="uvicorn's HTTP parser (auto: httptools when installed, as with the serve extra; else h11)")
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                   help="the event loop (auto: uvloop when installed, as with the serve extra; else asyncio)")
    p.set_defaults(func=cmd_serve)


def _add_bench(sub) -> None:
    """``inception bench``."""
    p = sub.add_parser("bench", help="throughput of models (img/s, ms/step, memory, MFU), of the input pipeline and "
                                     "of inference runtimes; the GPU report",
                       formatter_class=_FMT,
                       description="Honest throughput figures: medians over timed steps, warmup and compilation "
                                   "excluded. `inception bench SUBCOMMAND --help` for each.")
    bench = p.add_subparsers(dest="bench", metavar="SUBCOMMAND", required=True)
    for add in (_add_bench_model, _add_bench_data, _add_bench_runtime, _add_bench_serve, _add_bench_gpu_report):
        add(bench)


def _add_bench_model(bench) -> None:
    """``inception bench model``."""
    b = bench.add_parser("model", formatter_class=_FMT,
                         help="training and inference of models on synthetic data (default: both modes)",
                         description="Time training steps (forward, loss, backward, SGD step) and eval-mode "
                                     "inference of models on synthetic data already on the device: img/s, ms/step, "
                                     "p90, peak memory, GMACs, TFLOPS and MFU. With --data or --dataset, also time "
                                     "the trainer's input pipeline and say whether training would be input-bound or "
                                     "compute-bound.")
    b.add_argument("models", nargs="+", metavar="MODEL", help="model names (see `inception models`), or all")
    b.add_argument("--mode", choices=["train", "infer", "both"], default="both",
                   help="train: forward, loss, backward, SGD step; infer: eval-mode forward")
    b.add_argument("--batch-size", type=int, nargs="+", default=[64], metavar="N", help="images per step, one or more")
    b.add_argument("--image-size", type=int, default=None, help="input side (default: each model's own)")
    b.add_argument("--precision", nargs="+", choices=["auto", "fp32", "bf16", "fp16"], default=["auto"],
                   metavar="P", help="auto (the trainer's default here: bf16 autocast where the CPU or GPU has native "
                                     "bf16, else fp32), fp32, bf16 or fp16; several are timed side by side, e.g. "
                                     "--precision fp32 auto")
    b.add_argument("--compile", action="store_true",
                   help="torch.compile the step as the trainer does (forward and loss in one graph; compile time "
                        "reported apart)")
    b.add_argument("--compile-mode", choices=["default", "reduce-overhead", "max-autotune",
                                              "max-autotune-no-cudagraphs"], default="default",
                   help="torch.compile mode (reduce-overhead: CUDA graphs) [train.compile_mode]")
    b.add_argument("--peer", nargs="+", choices=["torchvision", "timm"], default=[], metavar="LIB",
                   help="also time the same architecture as torchvision and/or timm build it, in their users' plain "
                        "loop (with --compile: torch.compile(model)), side by side; the ratio column compares")
    b.add_argument("--profile", action="store_true",
                   help="also profile 5 steps (CUDA): kernel time by kind, device idle time, top kernels")
    b.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps, npu or npu:N")
    b.add_argument("--layout", nargs="+", choices=list(LAYOUTS), default=["auto"], metavar="L",
                   help="memory format: auto (the trainer's: channels_last on CUDA and x86 CPUs with AVX-512), nchw "
                        "or channels_last; several are timed side by side (each precision with each layout; the "
                        "ratio column compares every row with the first: --precision fp32 auto --layout nchw auto "
                        "puts today's plain fp32 NCHW first)")
    b.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="the same as --layout channels_last / --layout nchw")
    b.add_argument("--steps", type=int, default=20, help="timed steps")
    b.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    b.add_argument("--num-classes", type=int, default=1000, help="classifier outputs")
    b.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's dense peak TFLOPS for this precision, for MFU (default: from a table of common "
                        "GPUs)")
    b.add_argument("--option", action="append", metavar="KEY=VALUE", default=None,
                   help="model option, e.g. --option aux_logits=true (repeatable)")
    b.add_argument("--data", "--data-dir", dest="data_dir", default=None, metavar="PATH",
                   help="also time the trainer's input pipeline on this dataset root")
    b.add_argument("--dataset", default=None, choices=["folder", "list", "cifar10", "cifar100", "digits"],
                   help="dataset kind for the pipeline: folder (default with --data), list, cifar10, cifar100, or "
                        "digits (built in, needs no --data)")
    b.add_argument("--workers", type=int, default=None, help="DataLoader workers for the pipeline (default: 2)")
    b.add_argument("--device-resident", action=argparse.BooleanOptionalAction, default=None,
                   help="batch in-memory datasets (digits, CIFAR files) on the device, as the trainer does by "
                        "default with the cifar preset [data.device_resident]")
    b.add_argument("--data-steps", type=int, default=50, help="timed batches of the pipeline")
    b.add_argument("--json", default=None, metavar="FILE", help="also write every figure to this JSON file")
    b.set_defaults(func=cmd_bench_model)


def _add_bench_data(bench) -> None:
    """``inception bench data``."""
    b = bench.add_parser("data", formatter_class=_FMT,
                         help="the trainer's input pipeline against plain torchvision (default: train)",
                         description="Time the trainer's loader on a dataset against the plain torchvision pipeline "
                                     "(ImageFolder + PIL + the same presets) with the same workers, batch, output "
                                     "size and seeds, in alternating rounds; print img/s in total and per worker, "
                                     "the ratio, and the outputs' statistics.")
    b.add_argument("path", metavar="PATH", help="a folder dataset (PATH/train/<class>/...), a list dataset, or a "
                                                "cache from `inception prepare`")
    b.add_argument("--dataset", choices=["folder", "list"], default="folder", help="dataset kind of PATH")
    b.add_argument("--pipeline", choices=["train", "eval"], default="train",
                   help="train: random resized crops and flips, shuffled; eval: resize and center crop")
    b.add_argument("--model", default="googlenet", help="the model whose input size and mean/std are used")
    b.add_argument("--image-size", type=int, default=None, help="output side (default: the model's own)")
    b.add_argument("--batch-size", type=int, default=64, help="images per batch")
    b.add_argument("--workers", type=int, default=2, help="DataLoader workers, the same for both pipelines")
    b.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported")
    b.add_argument("--steps", type=int, default=50, help="batches per round at most (one epoch if fewer)")
    b.add_argument("--gpu-decode", action="store_true",
                   help="decode the JPEGs on --device in batches (data.gpu_decode; nvJPEG on CUDA)")
    b.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the torchvision baseline (needs class folders)")
    b.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, npu or npu:N")
    b.add_argument("--json", default=None, metavar="FILE", help="also write every figure to this JSON file")
    b.set_defaults(func=cmd_bench_data)


def _add_bench_runtime(bench) -> None:
    """``inception bench runtime``."""
    b = bench.add_parser("runtime", formatter_class=_FMT,
                         help="inference runtimes side by side (default: PyTorch eager and ONNX Runtime)",
                         description="Compare inference runtimes: img/s and latency per batch size, in interleaved "
                                     "rounds, ratios against the first model/runtime of each batch size.")
    b.add_argument("models", nargs="+", metavar="MODEL|FILE",
                   help="model names (random weights, run on every --runtime) or exported model files (.onnx, "
                        "INT8 included, checkpoints...; each on its own runtime)")
    b.add_argument("--runtime", nargs="+", choices=["torch", "onnxruntime"], default=["torch", "onnxruntime"],
                   help="PyTorch eager fp32 and ONNX Runtime (the model exported, BatchNorm folded); the first is "
                        "the baseline of the ratios")
    b.add_argument("--batch-size", type=int, nargs="+", default=[1, 32], metavar="N", help="batch sizes")
    b.add_argument("--threads", type=int, default=None, help="CPU threads for every runtime (default: the usable "
                                                             "cores)")
    b.add_argument("--image-size", type=int, default=None, help="input side (default: each model's own)")
    b.add_argument("--steps", type=int, default=20, help="timed rounds")
    b.add_argument("--warmup", type=int, default=5, help="untimed batches of each before them")
    b.add_argument("--device", default="cpu",
                   help="cpu or cuda (ONNX Runtime: also tensorrt; PyTorch alone: also npu, npu:N, mps)")
    b.add_argument("--num-classes", type=int, default=1000, help="classifier outputs of named models")
    b.add_argument("--option", action="append", metavar="KEY=VALUE", default=None,
                   help="model option, e.g. --option aux_logits=true (repeatable)")
    b.add_argument("--json", default=None, metavar="FILE", help="also write every figure to this JSON file")
    b.set_defaults(func=cmd_bench_runtime)


def _add_bench_serve(bench) -> None:
    """``inception bench serve``."""
    b = bench.add_parser("serve", formatter_class=_FMT,
                         help="load-test `inception serve`: dynamic batching vs --max-batch 1 vs `inception infer`",
                         description="Start `inception serve` on 127.0.0.1 (dynamic batching, then --max-batch 1) "
                                     "and load it with closed-loop HTTP clients (one image per POST /v1/classify) at "
                                     "each --concurrency: requests/s, img/s, p50/p90/p99 latency, mean batch, errors, "
                                     "and where the time goes (decode, queue, model, HTTP: from the server's "
                                     "/metrics). The baseline is `inception infer` over the same files with the same "
                                     "model, batch size and threads; every answer's top-1 is checked against it.")
    b.add_argument("--model", required=True, metavar="FILE|NAME",
                   help="a model file `inception serve` accepts (.onnx, checkpoint, ...) or a zoo model name "
                        "(random weights, exported to ONNX)")
    b.add_argument("--images", default=None, metavar="PATH",
                   help="a folder of images or a .tar.gz of them (its val split if it has one); default: "
                        "synthetic 320x240 JPEGs")
    b.add_argument("--num-images", type=int, default=256, help="distinct images sent, round-robin")
    b.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], metavar="N",
                   help="clients sending at once (each waits for its answer before the next request)")
    b.add_argument("--duration", type=float, default=20.0, help="timed seconds per level")
    b.add_argument("--warmup", type=float, default=3.0, help="untimed seconds of load before each level")
    b.add_argument("--max-batch", type=int, default=32, help="the server's --max-batch, and infer's batch size")
    b.add_argument("--max-wait-ms", type=float, default=5.0, help="the server's --max-wait-ms")
    b.add_argument("--threads", type=int, default=None, help="the model's CPU threads, on both sides (default: "
                                                             "the usable cores)")
    b.add_argument("--workers", type=int, default=None,
                   help="the server's decode threads and infer's DataLoader workers (default: min(4, cores))")
    b.add_argument("--runtime", choices=["auto", "onnxruntime", "torch"], default="auto",
                   help="auto: ONNX Runtime for .onnx, PyTorch for the rest (a model name then runs from "
                        "safetensors)")
    b.add_argument("--device", default="cpu",
                   help="where the model runs, for the server, infer and the model alone: cpu, cuda, cuda:N (ONNX "
                        "Runtime: its CUDA provider; PyTorch: also mps, npu)")
    b.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure the server with --max-batch 1 (the ratios' baseline)")
    b.add_argument("--infer", action=argparse.BooleanOptionalAction, default=True,
                   help="also time `inception infer` on the same files (--no-infer: one untimed pass still gives "
                        "the answers every response is checked against)")
    b.add_argument("--serve-args", default="", metavar="'ARGS'",
                   help="more `inception serve` options for both servers, e.g. --serve-args='--no-spin'")
    b.add_argument("--infer-passes", type=int, default=3, help="timed infer passes (the median is reported)")
    b.add_argument("--overload", action="store_true",
                   help="instead of the load table: one burst of --requests from --clients at once against a server "
                        "with --serve-args (e.g. --serve-args='--max-concurrency 16 --max-queue 64'): what the "
                        "clients got (200, 503 with Retry-After, ...), latency, and the server's memory; exit 1 if a "
                        "request got no HTTP answer or a 503 lacked Retry-After")
    b.add_argument("--requests", type=int, default=1000, help="--overload: requests in the burst")
    b.add_argument("--clients", type=int, default=200, help="--overload: concurrent clients")
    b.add_argument("--image-size", type=int, default=None, help="input side of a named model (default: its own)")
    b.add_argument("--num-classes", type=int, default=1000, help="classifier outputs of a named model")
    b.add_argument("--json", default=None, metavar="FILE", help="also write every figure to this JSON file")
    b.set_defaults(func=cmd_bench_serve)


def _add_bench_gpu_report(bench) -> None:
    """``inception bench gpu-report``."""
    b = bench.add_parser("gpu-report", formatter_class=_FMT,
                         help="every GPU figure of docs/performance.md, with its peers, as one Markdown table",
                         description="In one short GPU window, most important first: GoogLeNet training at 224 in "
                                     "bf16 (eager, profiled, then compiled) against torchvision's, the fast CIFAR-10 "
                                     "recipe to its accuracy timed from the command's start, Inception v4 at 299 "
                                     "against timm's, `inception train` end to end on 10,000 real JPEG photos "
                                     "against torchvision's ImageFolder pipeline, CUDA graphs, and ONNX Runtime's "
                                     "CUDA provider. Each step is a child process with a time limit inside --budget; "
                                     "the Markdown and JSON are rewritten as each step ends, so a cut run keeps its "
                                     "figures. Without CUDA a tiny version of the same steps (CPU smoke figures).")
    b.add_argument("--quick", action="store_true", help="fewer timed steps")
    b.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="the whole report's time (default: 480 on a GPU); steps that do not fit are skipped")
    b.add_argument("--only", nargs="+", default=None, metavar="STEP",
                   help="run only these steps: googlenet, googlenet-compiled, cifar, inception-v4, "
                        "inception-v4-compiled, photos, googlenet-cudagraphs, onnxruntime")
    b.add_argument("--output", default=None, metavar="FILE.md", help="also write the table to this file")
    b.add_argument("--device", default="auto",
                   help="auto, cuda, cuda:N or cpu (not CUDA, npu included: the smoke version)")
    b.add_argument("--data", default=None, metavar="PATH",
                   help="photos for the end-to-end step: a folder dataset or a .tar.gz of class folders (default: "
                        "data/imagewoof-sample.tar.gz or data/imagenette-160.tar.gz)")
    b.add_argument("--cifar", default=None, metavar="PATH",
                   help="CIFAR-10 for the recipe step (default: data/cifar10-jpg.tar.gz)")
    b.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: 16 on a GPU, 2 on a CPU)")
    b.add_argument("--json", default=None, metavar="FILE", help="also write every figure to this JSON file")
    b.add_argument("--log-dir", default=None, metavar="DIR", help="keep each step's full output there (STEP.log)")
    b.set_defaults(func=cmd_bench_gpu_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inception",
        description="Train, evaluate, export and deploy Inception-family image classifiers.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"inception {__version__}")
    _add_verbosity(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_CommandParser)
    # one function per command, in the order --help lists them
    for add in (_add_models, _add_train, _add_convert, _add_convert_config, _add_eval, _add_plot, _add_runs,
                _add_check_data, _add_prepare, _add_export, _add_infer, _add_serve, _add_bench):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    argv, deprecated = _bench_alias(argv)
    if deprecated:
        print(BENCH_DEPRECATED, file=sys.stderr)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:   # a usage error, which argparse printed: its exit status (--help, --version: exit)
        if e.code in (0, None):
            raise
        return e.code
    args.argv = argv
    rank = int(os.environ.get("RANK", "0") or 0)   # under torchrun only rank 0 talks
    level = logging.DEBUG if args.verbose else logging.INFO if rank == 0 and not args.quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    for handler in logging.getLogger().handlers:  # step lines already shown in a progress bar
        handler.addFilter(lambda record: not getattr(record, "in_progress_bar", False))
    try:
        return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except ModuleNotFoundError as e:      # a command of an extra the install left out: say which one
        extra = extra_of(e.name or "")
        if extra is None:
            raise
        print(f"error: `inception {args.command}` needs the '{extra}' extra ({e.name} is not installed): "
              f"pip install 'inception[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
