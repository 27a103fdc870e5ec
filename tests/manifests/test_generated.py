"""What the scripts generate, rendered and checked like the checked-in manifests: the kustomizations of
deploy.sh and replay.sh (scripts/cluster/kustomizations.py, run with sample values, an all-digit name
suffix among them), and lib.sh's bounded retry that e2e.sh's first authenticated call uses.
"""

from __future__ import annotations

import re
import subprocess
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


def until_status(calls: Path, answers: list[str], attempts: int, seconds: int) -> tuple[str, int]:
    """lib.sh's until_status on a command answering `answers` in turn (000 = curl failed):
    (the status it printed, how many times it ran the command)."""
    script = f"""set -euo pipefail
source {REPO / "scripts" / "cluster" / "lib.sh"}
answer() {{
  echo x >>{calls}
  local n answers=({" ".join(answers)})
  n="$(wc -l <{calls})"
  echo "${{answers[n - 1]}}"
  [[ "${{answers[n - 1]}}" != 000 ]]
}}
until_status 200 {attempts} {seconds} 0 answer
"""
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), len(calls.read_text().splitlines())


def test_e2e_retries_the_first_authenticated_call_a_bounded_number_of_times(tmp_path: Path) -> None:
    e2e = (REPO / "scripts" / "cluster" / "e2e.sh").read_text()
    assert 'status="$(until_status 200 30 60 2 call GET /goods/1 --header "Authorization: Bearer ${token}")"' in e2e
    assert until_status(tmp_path / "a", ["401", "000", "200", "200"], attempts=30, seconds=60) == ("200", 3)
    assert until_status(tmp_path / "b", ["401"] * 5, attempts=4, seconds=60) == ("401", 4)
    assert until_status(tmp_path / "c", ["503"] * 5, attempts=30, seconds=0) == ("503", 1)
