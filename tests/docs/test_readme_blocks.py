"""How the README test reads blocks: markers, commands, flags, paths."""

from __future__ import annotations

from readme_blocks import (
    commands,
    flags_of,
    make_targets,
    module_calls,
    repository_paths,
    shell_blocks,
    subcommand_choices,
)

TEXT = """# Title

## One

<!-- readme: run -->
```bash
echo hi
```

```bash
echo unmarked
```

- item

  <!-- readme: needs a cluster -->
  ```bash
  kubectl apply -f crds/ && python -m flux_operator history x -n ns
  ```

```python
print("not shell")
```
"""


def test_blocks_carry_their_line_section_and_marker() -> None:
    blocks = shell_blocks(TEXT)
    assert [(b.line, b.heading, b.marker) for b in blocks] == [
        (7, "One", "run"),
        (11, "One", None),
        (18, "One", "needs a cluster"),
    ]
    assert blocks[2].code.startswith("kubectl apply")  # the list's indentation is removed
    assert blocks[0].runnable and not blocks[2].runnable


def test_commands_split_on_operators_and_skip_comments_and_heredocs() -> None:
    code = "a x && b 'y z' | c # d\ne \\\n  --f 1 &\npython - <<'EOF'\nimport os\nEOF\ng\n"
    assert list(commands(code)) == [
        ["a", "x"],
        ["b", "y z"],
        ["c"],
        ["e", "--f", "1"],
        ["python", "-"],
        ["g"],
    ]


def test_module_calls_flags_targets_and_paths() -> None:
    code = (
        "FOO=1 python3 -m flux_server --model ./tiny --port=8080 keys add a --priority\n"
        "make install TORCH_VERSION=1\n"
        "kubectl apply -f deploy/argocd/x.yaml --from-file=keys=keys ghcr.io/a/b\n"
    )
    (call,) = module_calls(code)
    assert call.module == "flux_server"
    assert flags_of(call.words) == ["--model", "--port", "--priority"]
    assert list(make_targets(code)) == ["install"]
    assert list(repository_paths(code, {"deploy", "crds"})) == ["deploy/argocd/x.yaml"]


def test_subcommands_are_read_from_the_positional_arguments() -> None:
    help_text = (
        "usage: x [-h] [--device {auto,cpu}] {run,render} ...\n\n"
        "positional arguments:\n  {run,render}\n    run   runs\n"
    )
    assert subcommand_choices(help_text) == {"run", "render"}
