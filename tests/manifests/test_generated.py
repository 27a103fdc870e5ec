"""What the scripts generate, rendered and checked like the checked-in manifests: the kustomizations of
deploy.sh and replay.sh (scripts/cluster/kustomizations.py, run with sample values, an all-digit name
suffix among them).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.manifests import checks
from tests.manifests.checks import REPO
from tests.manifests.rendered import DIGEST, SCRIPTS, VERSIONS, Docs, generate, manifest_problems, replay_job_problems

pytestmark = pytest.mark.filterwarnings("ignore:Field name .* shadows an attribute:UserWarning")


def test_what_deploy_sh_applies_renders_and_passes_every_check(overlay: Docs, deployed: Docs) -> None:
    assert {(d["kind"], d["metadata"]["name"]) for d in deployed} == {
        (d["kind"], d["metadata"]["name"]) for d in overlay}
    problems = manifest_problems(deployed) + manifest_problems(overlay)  # the same rules for both
    assert not problems, "\n".join(problems)


# All digits (what `date +%Y%m%d%H%M%S` gives, and what kustomize read as a number), and other suffixes
# a YAML reader may take for a number or a boolean once pasted after the `-`.
@pytest.mark.parametrize("suffix", ["20261130101010", "1e3", "0o17", "0x1f", "true", "y", "7-run"])
def test_the_replay_job_replay_sh_creates_renders_and_passes_every_check(
        tmp_path: Path, overlay: Docs, suffix: str) -> None:
    args = ["--trigger", "order-saga", "--from", "2026-11-25T10:00:00Z", "--wait"]
    result = generate("replay", str(tmp_path), "--suffix", suffix, "--image", VERSIONS["FUNCTION_IMAGE"],
                      "--digest", DIGEST, "--", *args)
    assert result.returncode == 0, result.stderr
    [job] = checks.kustomize(tmp_path)
    assert job["metadata"]["name"] == result.stdout.strip() == f"saga-replay-{suffix}"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == args
    assert container["image"] == f"{VERSIONS['FUNCTION_IMAGE']}@{DIGEST}"
    problems = manifest_problems([job]) + replay_job_problems([job], overlay)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("argv", [
    ["replay", "--suffix", "Run_1", "--image", "localhost:5001/x", "--digest", DIGEST, "--", "--dry-run"],
    ["replay", "--suffix", "1" * 60, "--image", "localhost:5001/x", "--digest", DIGEST, "--", "--dry-run"],
    ["replay", "--suffix", "1", "--image", "localhost:5001/x", "--digest", DIGEST],  # no arguments
    ["replay", "--suffix", "1", "--image", "localhost:5001/x", "--digest", "sha256:abc", "--", "--dry-run"],
    ["deploy", "--image", "localhost:5001/x", "--digest", "sha256:abc"],
    ["deploy", "--image", "localhost:5001/x:dev", "--digest", DIGEST],
    ["deploy", "--image", "", "--digest", DIGEST],
])
def test_kustomizations_refuse_what_would_not_apply(tmp_path: Path, argv: list[str]) -> None:
    result = generate(argv[0], str(tmp_path), *argv[1:])
    assert result.returncode != 0 and not (tmp_path / "kustomization.yaml").exists()


def test_scripts_write_yaml_only_through_the_tested_generator() -> None:
    def text(name: str) -> str:  # backslash-continued lines joined, whitespace collapsed
        return " ".join((REPO / "scripts" / "cluster" / name).read_text().replace("\\\n", " ").split())

    assert ('kustomization deploy "${render_dir}" --image "${FUNCTION_IMAGE}" --digest "${FUNCTION_IMAGE_DIGEST}"'
            in text("deploy.sh"))
    assert ('job="$(kustomization replay "${STATE_DIR}/replay" --suffix "${suffix}" --image "${FUNCTION_IMAGE}" '
            '--digest "${FUNCTION_IMAGE_DIGEST}" -- "${args[@]}")"' in text("replay.sh"))
    assert '"${VENV_PYTHON}" "${ROOT}/scripts/cluster/kustomizations.py" "$@"' in text("lib.sh")
    # No YAML pasted together in a here-document: a value's type would depend on its text.
    for script in SCRIPTS:
        assert not re.search(r"<<-?\s*['\"]?[A-Z]+['\"]?\s*$", script.read_text(), re.M), script.name
