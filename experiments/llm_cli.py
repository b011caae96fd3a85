"""``ovt llm ...``: the LLM command group (docs/ARCHITECTURE.md, "CLI contract").

    ovt llm revisions MODEL   (this module: revision, step, tokens of a hub id, offline cache or folder)
    ovt llm pretrain ...      (``llm_pretrain_cli``: a mini pre-training series and its base perplexity)
    ovt llm perturb ...       (``llm_perturb_cli``: perplexity under Gaussian noise on every checkpoint)
    ovt llm finetune ...      (``llm_finetune_cli``: an lr grid of fine-tuning on every checkpoint)

``cli.py`` wires this in with ``llm_cli.add_parser(sub)`` and ``"llm": llm_cli.run``; what the
commands share is ``llm_series``.
"""

from __future__ import annotations

import argparse

from experiments import llm_finetune_cli, llm_perturb_cli, llm_pretrain_cli
from experiments.arguments import Parser
from experiments.llm_series import available_revisions
from llm_validation.tokens import human_tokens

LLM_COMMANDS = ("revisions", "pretrain", "perturb", "finetune")


def add_parser(subparsers, parser_class: type[argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:
    """Add ``llm`` (with ``revisions``, ``pretrain``, ``perturb``, ``finetune``) to ``subparsers``; returns it.

    ``parser_class`` is the class of the nested subcommand parsers (default ``arguments.Parser``, whose
    ``error()`` raises ``UsageError``); the ``llm`` parser itself is of ``subparsers``' class.
    """
    parser_class = parser_class or Parser
    llm = subparsers.add_parser(
        "llm", help="LLM validation: checkpoint series, pre-training, perturbation, fine-tuning"
    )
    sub = llm.add_subparsers(
        dest="llm_command", metavar="{" + ",".join(LLM_COMMANDS) + "}", required=True, parser_class=parser_class
    )

    r = sub.add_parser("revisions", help="list the checkpoint revisions of a hub id or local folder series")
    r.add_argument("model", help="hub id (ORG/NAME; HF_HUB_OFFLINE=1 lists the local hub cache) or a folder series")

    llm_perturb_cli.add_arguments(
        sub.add_parser("perturb", help="perplexity of Gaussian-perturbed checkpoints into a result store")
    )
    llm_pretrain_cli.add_arguments(
        sub.add_parser(
            "pretrain", help="train a mini OLMo checkpoint series (one run per token budget) and store its perplexity"
        )
    )
    llm_finetune_cli.add_arguments(
        sub.add_parser(
            "finetune",
            help="fine-tune every checkpoint over an lr grid: forgetting and in-task metrics into a result store",
        )
    )
    return llm


def run(args: argparse.Namespace) -> int:
    """Run the parsed ``ovt llm ...`` command; UsageError / ValueError mean bad input (exit 2)."""
    commands = {
        "revisions": _revisions,
        "perturb": llm_perturb_cli.command,
        "pretrain": llm_pretrain_cli.command,
        "finetune": llm_finetune_cli.command,
    }
    return commands[args.llm_command](args)


def _revisions(args) -> int:
    _, revisions = available_revisions(args.model)
    staged = any(r.stage for r in revisions)
    header = ("revision", "step", "tokens") + (("stage",) if staged else ())
    rows = [(r.name, str(r.step), human_tokens(r.tokens)) + ((r.stage or "",) if staged else ()) for r in revisions]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:  # names left-aligned, numbers right-aligned
        cells = (c.ljust(w) if i in (0, 3) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        print("  ".join(cells).rstrip())
    return 0
