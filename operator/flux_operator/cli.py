"""The command line: argument parsing and the subcommands; settings are built here only."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from flux_operator.render import Owner, render_all
from flux_operator.spec import KIND, FluxDeploymentSpec
from flux_operator.validation import spec_problems

COMMANDS = ("run", "render", "history", "rollback")


def render_file(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Objects for every FluxDeployment in a YAML file, and the problems found."""
    objects: list[dict[str, Any]] = []
    problems: list[str] = []
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    for doc in yaml.safe_load_all(text):
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            continue
        meta = doc.get("metadata") or {}
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            problems.append(f"{KIND} without a metadata.name (every child is named after it)")
            continue
        name = meta["name"]
        found = spec_problems(doc)
        if found:
            problems += [f"{name}: {p}" for p in found]
            continue
        spec = FluxDeploymentSpec.model_validate(doc["spec"])
        objects += render_all(Owner(name=name, namespace=meta.get("namespace")), spec)
    return objects, problems


def _cmd_render(args: argparse.Namespace) -> int:
    try:
        objects, problems = render_file(args.file)
    except (OSError, yaml.YAMLError) as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    if not objects:
        print(f"error: {args.file}: no {KIND} found", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flux_operator",
        description="The fluxserve operator: FluxDeployment → Deployment, Service, HPA, presets.",
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the operator (the default)")
    _add_run_arguments(run)
    render = sub.add_parser("render", help="print the objects a FluxDeployment turns into")
    render.add_argument("file", type=Path, help="YAML file with FluxDeployment(s), or -")
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
    return parser


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        dest="namespaces",
        help="watch this namespace (repeatable); all namespaces when absent",
    )
    parser.add_argument("--peering", default=None, help="kopf peering name (leader election)")
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="priority among peers (highest acts); default: a hash of the peer identity ($POD_ID)",
    )
    parser.add_argument("--health-port", type=int, default=8080, help="liveness port (/healthz)")
    parser.add_argument("--log-format", choices=("json", "plain"), default="json")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("--kubeconfig", type=Path, default=None, help="kubeconfig file")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv.insert(0, "run")
    args = build_parser().parse_args(argv)
    if args.command == "render":
        return _cmd_render(args)
    from flux_operator import commands  # the cluster-facing commands import kopf/kubernetes

    if args.command == "history":
        return commands.history(args.name, args.namespace, args.output, args.kubeconfig)
    if args.command == "rollback":
        return commands.rollback(args.name, args.namespace, args.to_release, args.kubeconfig)
    return commands.run(args)
