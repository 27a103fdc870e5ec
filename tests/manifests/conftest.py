"""The rendered manifests, once per session: the base, the overlay `make deploy` starts from, and what
deploy.sh's generated kustomization makes of it."""

from __future__ import annotations

import pytest

from tests.manifests import checks
from tests.manifests.rendered import BASE, DIGEST, OVERLAY, VERSIONS, Docs, generate


@pytest.fixture(scope="session")
def base() -> Docs:
    return checks.kustomize(BASE)


@pytest.fixture(scope="session")
def overlay() -> Docs:
    return checks.kustomize(OVERLAY)


@pytest.fixture(scope="session")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Docs:
    """What `make deploy` applies: the kustomization deploy.sh generates (sample digest), rendered."""
    out = tmp_path_factory.mktemp("deploy")
    result = generate("deploy", str(out), "--image", VERSIONS["FUNCTION_IMAGE"], "--digest", DIGEST)
    assert result.returncode == 0, result.stderr
    return checks.kustomize(out)
