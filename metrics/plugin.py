"""The text-to-image metrics and prompt sets as a plugin (entry point ``t2i-metrics``).

Registers the opt-in metrics ``clip_score`` (``metrics.clip_score``; with the base model's own
CLIP when it has one) and ``image_reward`` (``metrics.image_reward``), each with a cheap
availability check (``migm-bench ls`` shows why one is unavailable; a run asking for it fails
at start-up with that reason), the prompt sets
(``resolve_prompts`` hook: what ``migm-bench run --prompts SPEC`` hands a text-to-image base
model; the shipped sets and user prompt files of ``metrics.prompts``), and the command

    migm-bench prompts                      the shipped sets with their categories
    migm-bench prompts SPEC [--json]        the prompts a spec selects, e.g. parti:category=Animals,limit=20
                                            (or a set of another plugin: fashion-t2i:split=heldout,limit=20)

Heavy packages (open_clip, ImageReward) are imported only when a metric is built.
"""

from __future__ import annotations

import argparse
import json

from bench.hookspecs import hookimpl
from bench.specs import MetricSpec


def _clip_score_factory(model):
    from metrics.clip_score import clip_score_metric

    return clip_score_metric(model)


def _image_reward_factory(model):
    from metrics.image_reward import image_reward_metric

    return image_reward_metric(model)


def _clip_score_check():
    from metrics.clip_score import clip_score_unavailable

    return clip_score_unavailable()


def _clip_score_model_check(model):
    """Without $MIGM_CLIP_WEIGHTS: can the base model's own CLIP (``clip_weights()``) serve?"""
    from metrics.clip_score import clip_score_unavailable

    return clip_score_unavailable(model)


def _image_reward_check():
    from metrics.image_reward import image_reward_unavailable

    return image_reward_unavailable()


@hookimpl
def register_metrics(register):
    from metrics.clip_score import CLIP_SCORE_INFO
    from metrics.image_reward import IMAGE_REWARD_INFO

    register(MetricSpec(CLIP_SCORE_INFO, _clip_score_factory, default=False, check=_clip_score_check,
                        model_check=_clip_score_model_check))  # fmt: skip
    register(MetricSpec(IMAGE_REWARD_INFO, _image_reward_factory, default=False, check=_image_reward_check))


def _prompts(args: argparse.Namespace) -> int:
    from metrics.prompts import SETS, PromptSpecError, categories, load_prompts

    if args.spec is None:
        for name, pset in SETS.items():
            items = sum(categories(name).values())
            print(f"{name}: {items} prompts, {pset.source} ({pset.license})")
            for axis in pset.axes:
                labels = ", ".join(f"{label} ({n})" for label, n in categories(name, axis).items())
                print(f"  {axis}: {labels}")
        print("any other set: a text file, one prompt per line (e.g. my_prompts.txt:limit=50)")
        return 0
    try:
        selection = load_prompts(args.spec)
    except PromptSpecError:
        return _print_plugin_prompts(args.spec, args.json)  # a set of another plugin, or the same error
    if args.json:
        print(json.dumps({**selection.record(), "prompts": selection.prompts}, indent=1))
        return 0
    rec = selection.record()
    print(
        f"# {rec['spec']}: {rec['count']} of {rec['of']} prompts from {rec['source']}, sha256 {rec['prompts_sha256']}"
    )
    for i, item in enumerate(selection.items):
        label = item.label("category")
        print(f"{i}\t{label}\t{item.text}" if label else f"{i}\t{item.text}")
    return 0


def _print_plugin_prompts(spec: str, as_json: bool) -> int:
    """The prompts of a set another plugin owns (``resolve_prompts`` hook, e.g. the fashion-t2i
    captions), as ``migm-bench run --prompts`` resolves them; its one-line error otherwise."""
    from bench.cli import CLIError
    from bench.plugins import get_manager

    try:
        prompts, record = get_manager().resolve_prompts(spec)
    except ValueError as err:
        raise CLIError(str(err)) from None
    if as_json:
        print(json.dumps({**record, "prompts": prompts}, indent=1))
        return 0
    print(f"# {spec}: {len(prompts)} prompts, {json.dumps(record)}")
    for i, text in enumerate(prompts):
        print(f"{i}\t{text}")
    return 0


@hookimpl(trylast=True)  # the catch-all: a plugin with its own sets is asked first
def resolve_prompts(spec):
    """(prompts, record) of ``spec`` (``metrics.prompts.load_prompts``; its PromptSpecError is a
    ValueError with a one-line message, e.g. an unknown set with near matches)."""
    from metrics.prompts import load_prompts

    selection = load_prompts(spec)
    return selection.prompts, selection.record()


@hookimpl
def register_commands(subparsers):
    p = subparsers.add_parser("prompts", help="list prompt sets, or the prompts a spec selects")
    p.add_argument(
        "spec", nargs="?", help="parti, geneval (with :category=...,limit=N) or a prompt file path"
    )
    p.add_argument(
        "--json", action="store_true", help="the run record (names, filters, hash) and the prompts"
    )
    p.set_defaults(func=_prompts)
