"""The kustomizations `make deploy` and `make replay` write before `kubectl apply -k` / `kubectl create`.

Each one is built as data and written by PyYAML's safe dumper, never by pasting strings into YAML: a
value keeps the type it has here (an all-digit name suffix pasted into YAML read back as a number, and
kustomize refused the replay Job's kustomization). The inputs are checked before anything is
written. Run by scripts/cluster/deploy.sh and replay.sh with the venv's Python; tests/manifests runs
this same command with sample values and renders the result with `kubectl kustomize`.

    kustomizations.py deploy OUT_DIR --image IMAGE --digest sha256:...
    kustomizations.py replay OUT_DIR --suffix SUFFIX --image IMAGE --digest sha256:... -- ARG...

`replay` prints the name of the Job the kustomization creates.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_OVERLAY = ROOT / "deploy" / "kind"
REPLAY_JOB = ROOT / "knative" / "replay" / "job"
REPLAY_JOB_NAME = "saga-replay"  # metadata.name in knative/replay/job/job.yaml
IMAGE_PLACEHOLDER = "knative-saga-functions"  # the function image's name in the checked-in manifests

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# An image name without tag or digest: registry host[:port] and lowercase path components.
_IMAGE = re.compile(r"[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# Plain scalars some YAML reader takes for another type. Go's, which kustomize reads with, tries a number
# on anything that starts with a digit, a sign or a dot (`-20261130101010`, `-1e3`, `-0o17`) and reads
# y/n/yes/no/on/off/true/false/null/~ as booleans or null; PyYAML quotes only YAML 1.1's own forms.
# Such strings are double-quoted; a few quoted without need is harmless.
_MAYBE_NOT_A_STRING = re.compile(r"[-+.0-9].*|y|n|yes|no|on|off|true|false|null|~|", re.IGNORECASE | re.DOTALL)
_HEADER = "# Written by scripts/cluster/kustomizations.py ({what}); regenerated on every run.\n"


class KustomizationError(ValueError):
    """An input that would produce a kustomization kustomize or the API server refuses."""


class _Dumper(yaml.SafeDumper):
    """Double-quotes every string that some YAML reader could take for another type."""

    def represent_str(self, data: str) -> yaml.ScalarNode:
        if _MAYBE_NOT_A_STRING.fullmatch(data):
            return self.represent_scalar("tag:yaml.org,2002:str", data, style='"')
        return super().represent_str(data)


_Dumper.add_representer(str, _Dumper.represent_str)


def deploy(out_dir: Path, *, image: str, digest: str) -> dict[str, Any]:
    """deploy/kind with the function image pinned by digest."""
    _check_image(image, digest)
    return _kustomization(out_dir, DEPLOY_OVERLAY, images=[{"name": image, "digest": digest}])


def replay(out_dir: Path, *, suffix: str, image: str, digest: str, args: Sequence[str]) -> dict[str, Any]:
    """The replay Job, named saga-replay-SUFFIX, running `saga replay ARGS` in the deployed image."""
    _check_image(image, digest)
    if not _DNS_LABEL.fullmatch(suffix) or len(replay_job_name(suffix)) > 63:
        # The Job's name is also its pods' job-name label value: a DNS label, at most 63 characters.
        raise KustomizationError(f"name suffix {suffix!r}: lowercase letters, digits and '-', Job name <= 63")
    if not args or not all(isinstance(arg, str) for arg in args):
        raise KustomizationError("the replay Job needs the arguments of `saga replay`")
    operations = [{"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": list(args)}]
    return _kustomization(
        out_dir, REPLAY_JOB,
        nameSuffix=f"-{suffix}",
        images=[{"name": IMAGE_PLACEHOLDER, "newName": image, "digest": digest}],
        patches=[{"target": {"kind": "Job", "name": REPLAY_JOB_NAME}, "patch": json.dumps(operations)}],
    )


def replay_job_name(suffix: str) -> str:
    return f"{REPLAY_JOB_NAME}-{suffix}"


def write(out_dir: Path, kustomization: dict[str, Any], what: str) -> Path:
    """OUT_DIR/kustomization.yaml, replaced whole."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "kustomization.yaml"
    path.write_text(_HEADER.format(what=what) + yaml.dump(kustomization, Dumper=_Dumper, sort_keys=False))
    return path


def _kustomization(out_dir: Path, resource: Path, **fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # Relative: kustomize loads a resource directory by path from the kustomization's own.
        "resources": [os.path.relpath(resource, out_dir.resolve())],
        **fields,
    }


def _check_image(image: str, digest: str) -> None:
    if not _IMAGE.fullmatch(image):
        raise KustomizationError(f"image {image!r}: a repository name without tag or digest")
    if not _DIGEST.fullmatch(digest):
        raise KustomizationError(f"digest {digest!r}: sha256:<64 hex digits>")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after `--` is `saga replay`'s, passed through untouched (it has options of its own).
    split = argv.index("--") if "--" in argv else len(argv)
    argv, replay_args = argv[:split], argv[split + 1:]
    parser = argparse.ArgumentParser(prog="kustomizations.py", description="Write the kustomization a script applies.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("deploy", "replay"):
        command = commands.add_parser(name)
        command.add_argument("out_dir", type=Path)
        command.add_argument("--image", required=True)
        command.add_argument("--digest", required=True)
        if name == "replay":
            command.add_argument("--suffix", required=True)
    options = parser.parse_args(argv)
    try:
        if options.command == "deploy":
            if replay_args:
                raise KustomizationError("deploy takes no arguments after `--`")
            write(options.out_dir, deploy(options.out_dir, image=options.image, digest=options.digest),
                  "deploy/kind, function image pinned by digest")
        else:
            kustomization = replay(options.out_dir, suffix=options.suffix, image=options.image,
                                   digest=options.digest, args=replay_args)
            write(options.out_dir, kustomization, "the replay Job with this run's arguments and image")
            print(replay_job_name(options.suffix))
    except KustomizationError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
