"""The command line: argument parsing and the subcommands; settings are built here only.

Only ``settings`` is imported up front: ``--help`` works without the ``operator`` extra,
and a command that needs it says which extra to install in one line.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

from flux_operator.settings import ENV_PREFIX, SettingsError, add_arguments, settings_from

COMMANDS = ("run", "render", "history", "rollback", "promote", "abort")

EXTRA_MODULES = frozenset({"kopf", "kubernetes", "yaml", "urllib3", "aiohttp", "ecs_logging"})
"""What ``pip install 'fluxserve[operator]'`` brings (and its dependencies bring)."""


class MissingExtra(Exception):
    """The ``operator`` extra is not installed."""


def _needs_extra(module: str) -> ModuleType:
    """Import a module of this package that needs the ``operator`` extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in EXTRA_MODULES:
            raise MissingExtra(
                f"{exc.name} is not installed: the operator needs its extra, "
                "pip install 'fluxserve[operator]'"
            ) from None
        raise


def _read_docs(path: Path) -> list[Any]:
    import yaml

    # Bytes: YAML is UTF-8 (or says otherwise with a BOM) whatever the locale, and preset
    # names may be in any script.
    text = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    return list(yaml.safe_load_all(text))


def flux_deployments(docs: list[Any]) -> tuple[list[tuple[dict[str, Any], Any]], list[str]]:
    """Every FluxDeployment among the documents with its parsed spec, and the problems
    of those that cannot be served."""
    from flux_operator.spec import KIND, FluxDeploymentSpec
    from flux_operator.validation import spec_problems

    found: list[tuple[dict[str, Any], Any]] = []
    problems: list[str] = []
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            continue
        meta = doc.get("metadata") or {}
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            problems.append(f"{KIND} without a metadata.name (every child is named after it)")
            continue
        errors = spec_problems(doc)
        if errors:
            problems += [f"{meta['name']}: {p}" for p in errors]
            continue
        found.append((doc, FluxDeploymentSpec.model_validate(doc["spec"])))
    return found, problems


def render_file(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Objects for every FluxDeployment and FluxLoRATraining in a YAML file, and the
    problems found."""
    from flux_operator.render import Owner, render_all
    from flux_operator.training_render import render_training_docs

    docs = _read_docs(path)
    found, problems = flux_deployments(docs)
    objects: list[dict[str, Any]] = []
    for doc, spec in found:
        meta = doc["metadata"]
        objects += render_all(Owner(name=meta["name"], namespace=meta.get("namespace")), spec)
    jobs, job_problems = render_training_docs(docs)
    return objects + jobs, problems + job_problems


def render_kargo_file(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Kargo's objects (and the AnalysisTemplate) for every FluxDeployment in a YAML file,
    and the problems found."""
    from flux_operator.render.kargo import KargoInputError, render_kargo

    found, problems = flux_deployments(_read_docs(path))
    objects: list[dict[str, Any]] = []
    for doc, spec in found:
        try:
            objects += render_kargo(doc, spec)
        except KargoInputError as exc:
            problems.append(f"{doc['metadata']['name']}: {exc}")
    return objects, problems


def _cmd_render(args: argparse.Namespace) -> int:
    yaml = _needs_extra("yaml")
    from flux_operator.spec import KIND

    try:
        objects, problems = (render_kargo_file if args.kargo else render_file)(args.file)
    except (OSError, yaml.YAMLError) as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    if not objects:
        wanted = KIND if args.kargo else f"{KIND} or FluxLoRATraining"
        print(f"error: {args.file}: no {wanted} found", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    return 0


class _Parser(argparse.ArgumentParser):
    """A bad flag is one line (argparse would print the whole usage first)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m flux_operator",
        description="The fluxserve operator: FluxDeployment → Deployment, Service, HPA, "
        "presets. Without a command it runs the operator (run); every run flag is also an "
        f"environment variable {ENV_PREFIX}<FLAG_IN_UPPER_SNAKE>.",
    )
    # The run flags, for --help: argv without a command is parsed as `run ...`.
    add_arguments(parser.add_argument_group("run options (the default command)"))
    sub = parser.add_subparsers(dest="command", title="commands")
    run = sub.add_parser(
        "run",
        help="run the operator (the default)",
        description="Run the operator. Every flag is also an environment variable "
        f"{ENV_PREFIX}<FLAG_IN_UPPER_SNAKE>; a flag wins over its variable.",
    )
    add_arguments(run)
    render = sub.add_parser(
        "render",
        help="print the objects a FluxDeployment turns into (a FluxLoRATraining: its Job)",
    )
    render.add_argument(
        "file", type=Path, help="YAML file with FluxDeployment(s) or FluxLoRATraining(s), or -"
    )
    render.add_argument(
        "--kargo",
        action="store_true",
        help="print instead the Kargo Project, Warehouse and Stages (staging, production) "
        "and the quality gate's AnalysisTemplate that promote the FluxDeployment(s) "
        "(see docs/PROMOTION.md)",
    )
    history = sub.add_parser("history", help="print a FluxDeployment's revisions")
    history.add_argument("name")
    history.add_argument("-n", "--namespace", default=None, help="namespace (kubeconfig's default)")
    history.add_argument("-o", "--output", choices=("table", "yaml"), default="table")
    history.add_argument("--kubeconfig", type=Path, default=None, help="kubeconfig file")
    rollback = sub.add_parser("rollback", help="roll back to a release in the history")
    rollback.add_argument("name")
    rollback.add_argument("--to", required=True, dest="to_release", help="release in history")
    rollback.add_argument(
        "-n", "--namespace", default=None, help="namespace (kubeconfig's default)"
    )
    rollback.add_argument("--kubeconfig", type=Path, default=None, help="kubeconfig file")
    for action, text in (
        ("promote", "promote the running canary now, skipping the steps left"),
        ("abort", "abort the running canary: all traffic back to the stable release"),
    ):
        canary = sub.add_parser(action, help=text)
        canary.add_argument("name")
        canary.add_argument(
            "-n", "--namespace", default=None, help="namespace (kubeconfig's default)"
        )
        canary.add_argument("--kubeconfig", type=Path, default=None, help="kubeconfig file")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv.insert(0, "run")
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except MissingExtra as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "render":
        return _cmd_render(args)
    # The cluster-facing commands import kopf and kubernetes.
    commands: Any = _needs_extra("flux_operator.commands")
    if args.command == "history":
        return int(commands.history(args.name, args.namespace, args.output, args.kubeconfig))
    if args.command == "rollback":
        return int(commands.rollback(args.name, args.namespace, args.to_release, args.kubeconfig))
    if args.command in ("promote", "abort"):
        return int(
            commands.canary_request(args.command, args.name, args.namespace, args.kubeconfig)
        )
    flags = {k: v for k, v in vars(args).items() if k != "command"}
    return int(commands.run(settings_from(flags, os.environ)))
