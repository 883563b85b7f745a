"""Arguments shared by `clipae train` and `clipae ablate`: config file, switches, seed, device."""
from __future__ import annotations

import argparse

SWITCH_FLAGS = ("caf", "ccp", "selfsup", "audio", "clip")


def add_config_args(p: argparse.ArgumentParser, switches: bool = True) -> None:
    p.add_argument("--config", default=None, help="model YAML (default: configs/models/clipae.yaml)")
    p.add_argument("--mode", choices=["utal", "weak"], default=None, help="unsupervised (default) or weakly supervised")
    p.add_argument("--rounds", type=int, default=None, help="UTAL cluster/train rounds")
    p.add_argument("--epochs", type=int, default=None, help="epochs per round (utal) / in total (weak)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the model config's)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda[:N]")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    if switches:
        for name in SWITCH_FLAGS:
            p.add_argument(f"--no-{name}", dest=f"no_{name}", action="store_true", help=f"switch {name} off")


def config_from_args(args: argparse.Namespace):
    from models.config import load_config

    cfg = load_config(args.config)
    train: dict = {}
    if args.mode:
        train["mode"] = args.mode
    if args.rounds is not None:
        train["rounds"] = args.rounds
    if args.epochs is not None:
        train["epochs_per_round" if (args.mode or cfg.train.mode) == "utal" else "weak_epochs"] = args.epochs
    if args.seed is not None:
        train["seed"] = args.seed
    if args.device:
        train["device"] = args.device
    if args.no_progress:
        train["progress"] = False
    sw = {n: False for n in SWITCH_FLAGS if getattr(args, f"no_{n}", False)}
    return cfg.replace(train=train, switches=sw)


def open_inputs(store_path: str, dataset_name: str):
    from storage import FeatureStore
    from storage.datasets import load_dataset

    return FeatureStore.open(store_path), load_dataset(dataset_name)
