"""The rendered manifests, once per session: the base and the overlay `make deploy` starts from."""

from __future__ import annotations

import pytest

from tests.manifests import checks
from tests.manifests.rendered import BASE, OVERLAY, Docs


@pytest.fixture(scope="session")
def base() -> Docs:
    return checks.kustomize(BASE)


@pytest.fixture(scope="session")
def overlay() -> Docs:
    return checks.kustomize(OVERLAY)

