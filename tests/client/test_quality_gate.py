"""``python -m flux_client quality`` against two real tiny servers (``python -m flux_server``,
random FLUX and BLIP VQA), scored by tiny random CLIP and DINOv2 models loaded by path.

The candidate serves the same preset as stable and passes; then its preset file changes
to one that draws every image at another size, so from other noise: something else
entirely (the server reloads it, as a new presets ConfigMap would roll out), and the same
gate fails it on the distance from stable. (A changed prompt template would not do: the
random FLUX draws nearly the same image for any prompt.)
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from built_once import built_once
from server_process import ServerProcess, free_port, start_server

from flux_client import FluxModelClient, StylePreset
from flux_client.__main__ import main
from flux_client.presets import presets_to_files
from flux_client.quality.collect import answer_matches, parse_endpoint
from flux_client.quality.golden import GoldenSetError, load_golden, parse_golden

# Two servers (FLUX and VQA each) and three gate runs: on a busy 2-core machine that is
# minutes, not seconds.
pytestmark = pytest.mark.timeout(900)

PRESET = "house"
GOOD = StylePreset(prompt_template="{prompt}, in the house style")
BROKEN = StylePreset(prompt_template="{prompt}, in the house style", width=256, height=256)
PROMPTS = ["a lighthouse at dawn", "a red fox in the snow"]
QUESTION = "what is in the picture?"


@dataclass
class Gate:
    stable: ServerProcess
    candidate: ServerProcess
    candidate_presets: Path
    clip: Path
    dino: Path
    golden: Path
    root: Path

    def argv(self, *extra: str, candidate: str | None = None) -> list[str]:
        return [
            "quality",
            "--stable", self.stable.url,
            "--candidate", candidate or self.candidate.url,
            "--golden", str(self.golden),
            "--clip-model", str(self.clip),
            "--similarity-model", str(self.dino),
            "--min-similarity", "0.9",
            "--device", "cpu",
            *extra,
        ]  # fmt: skip


def _presets_dir(path: Path, preset: StylePreset) -> Path:
    path.mkdir(exist_ok=True)
    for name, content in presets_to_files({PRESET: preset}).items():
        (path / name).write_text(content)
    return path


def _wait_for_preset(server: ServerProcess, preset: StylePreset) -> None:
    """Poll the server's presets until it serves ``preset`` (its reload is asynchronous)."""
    deadline = time.monotonic() + 60
    with FluxModelClient("127.0.0.1", server.http_port, "http", timeout=10) as client:
        while client.list_presets().get(PRESET) != preset:
            assert time.monotonic() < deadline, "the candidate never reloaded its preset"
            time.sleep(0.2)


def _golden(path: Path, stable: ServerProcess) -> Path:
    """The golden set; its VQA answer is what the tiny (random) VQA model says about the
    stable release's first image, so that a candidate drawing the same image passes."""
    options = {"seed": 1, "style_preset": PRESET, "steps": 2}
    with FluxModelClient("127.0.0.1", stable.http_port, "http", timeout=120) as client:
        image = client.generate_images(PROMPTS[0], **options).images[0]  # type: ignore[arg-type]
        answer = client.vqa(image.data, QUESTION)
    golden = {
        "preset": PRESET,
        "steps": 2,
        "seeds": [1],
        "prompts": [
            {"prompt": PROMPTS[0], "question": QUESTION, "expect": [answer]},
            {"prompt": PROMPTS[1], "seeds": [2]},
        ],
    }
    path.write_text(json.dumps(golden))
    return path


@pytest.fixture(scope="module")
def gate(
    tmp_path_factory: pytest.TempPathFactory, tiny_flux_dir: Path, tiny_vqa_dir: Path
) -> Iterator[Gate]:
    from tiny_scorers import write_tiny_clip, write_tiny_dinov2

    clip = built_once(tmp_path_factory, "tiny-clip-scorer-seed0", write_tiny_clip)
    dino = built_once(tmp_path_factory, "tiny-dinov2-scorer-seed0", write_tiny_dinov2)
    root = tmp_path_factory.mktemp("quality")
    args = ["--vqa-model", str(tiny_vqa_dir), "--cache-bytes", "0", "--log-level", "warning"]
    servers = []
    try:
        for side in ("stable", "candidate"):
            presets = _presets_dir(root / f"{side}-presets", GOOD)
            servers.append(
                start_server(tiny_flux_dir, root, [*args, "--presets-dir", str(presets)])
            )
        for server in servers:
            server.wait_ready(timeout=300)  # two servers start at once on a busy machine
        golden = _golden(root / "golden.json", servers[0])
        yield Gate(servers[0], servers[1], root / "candidate-presets", clip, dino, golden, root)
    finally:
        for server in servers:
            server.stop()


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_a_candidate_identical_to_stable_passes_then_a_broken_preset_fails(gate: Gate) -> None:
    _wait_for_preset(gate.candidate, GOOD)
    log = gate.root / "termination-log"
    code, out, err = _run(gate.argv("--json", "--termination-log", str(log)))
    assert code == 0, out + err
    report = json.loads(out)
    assert report["verdict"] == "pass"
    scores = report["scores"]
    assert scores["items"] == 2 and scores["failure_rate"] == 0.0
    assert scores["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert scores["clip_score_drop"] == pytest.approx(0.0, abs=1e-4)
    assert scores["vqa_questions"] == 1 and scores["vqa_pass_rate"] == 1.0
    assert report["thresholds"]["min_similarity"] == 0.9
    assert {c["name"] for c in report["checks"]} == {
        "failure-rate",
        "clip-score-drop",
        "similarity",
        "vqa-pass-rate",
    }
    assert json.loads(log.read_text()) == {
        "verdict": "pass",
        "message": json.loads(log.read_text())["message"],
        "failed": [],
    }
    assert json.loads(log.read_text())["message"].startswith("quality pass: ")

    # The candidate's preset now draws something else: the same gate fails it.
    _presets_dir(gate.candidate_presets, BROKEN)
    _wait_for_preset(gate.candidate, BROKEN)
    code, out, err = _run(gate.argv("--termination-log", str(log)))
    assert code == 1, out + err
    assert out.startswith("quality gate: FAIL")
    verdict = json.loads(log.read_text())
    assert verdict["verdict"] == "fail" and verdict["message"].startswith("quality fail: ")
    similarity = next(c for c in verdict["failed"] if c["name"] == "similarity")
    assert similarity["min"] == 0.9 and similarity["value"] < 0.9 and similarity["max"] is None
    failed = [line for line in out.splitlines() if line.endswith("FAIL")]
    assert any(line.startswith("similarity") for line in failed), out
    _presets_dir(gate.candidate_presets, GOOD)


def test_a_candidate_that_answers_nothing_fails_on_its_failure_rate(gate: Gate) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    code, out, err = _run(gate.argv("--json", candidate=dead))
    assert code == 1, out + err
    report = json.loads(out)
    assert report["scores"]["failure_rate"] == 1.0
    assert [c["name"] for c in report["checks"] if not c["passed"]] == [
        "failure-rate",
        "vqa-pass-rate",
    ]


def test_a_bad_golden_set_is_exit_2_naming_the_field(tmp_path: Path) -> None:
    golden = tmp_path / "golden.yaml"
    golden.write_text("prompts:\n  - prompt: a fox\n    seeds: [one]\n")
    command = [
        sys.executable, "-m", "flux_client", "quality",
        "--stable", "http://127.0.0.1:1", "--candidate", "http://127.0.0.1:1",
        "--golden", str(golden),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "prompts.0.seeds.0" in lines[0], result.stderr


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("prompts: []", "prompts"),
        (
            "prompts: [{prompt: x, question: is it red}]",
            "prompts.0: Value error, question and expect",
        ),
        ("prompts: [{prompt: x}]\nwidth: 100", "width"),
        ("prompts: [{prompt: x}]\nstyle: y", "style"),
        ("- just a list", "expected a mapping"),
    ],
)
def test_golden_set_errors_name_the_field(text: str, field: str) -> None:
    with pytest.raises(GoldenSetError, match=field):
        parse_golden(text)


def test_a_bare_yes_in_yaml_is_the_word() -> None:
    golden = parse_golden("prompts: [{prompt: x, question: is there a tag, expect: [yes, no]}]")
    assert golden.prompts[0].expect == ["yes", "no"]


def test_golden_set_items_and_options() -> None:
    golden = parse_golden(
        "preset: p\nseeds: [1, 2]\nguidanceScale: 3.5\n"
        "prompts: [{prompt: a}, {prompt: b, seeds: [9], preset: q}]"
    )
    items = [(i.prompt.prompt, i.seed, i.preset) for i in golden.items()]
    assert items == [("a", 1, "p"), ("a", 2, "p"), ("b", 9, "q")]
    assert golden.options(golden.items()[2]) == {
        "seed": 9,
        "style_preset": "q",
        "guidance_scale": 3.5,
    }


def test_endpoints_and_answers() -> None:
    assert parse_endpoint("--stable", "grpc://flux:50051").transport == "grpc"
    https = parse_endpoint("--stable", "https://flux.example")
    assert (https.port, https.secure, https.transport) == (443, True, "http")
    with pytest.raises(ValueError, match="--candidate"):
        parse_endpoint("--candidate", "flux:8080")
    assert answer_matches("Yes, there is a tag", ["yes"])
    assert not answer_matches("yesterday", ["yes"])
    assert answer_matches("a red tag here", ["no", "red tag"])


def test_the_promotion_example_golden_set_parses() -> None:
    """The golden set the GitOps example ships is one the gate reads."""
    example = Path(__file__).parents[2] / "examples/promotion/presets/fluxserve/golden.yaml"
    golden = load_golden(example)
    assert len(golden.prompts) == 3 and golden.seeds == [1, 2]
