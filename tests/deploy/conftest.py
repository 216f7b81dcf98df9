"""The session's trained synthetic model and its export (built once, see deploy_world.py)."""

from __future__ import annotations

import pytest
from deploy_world import Trained, train_and_export


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train_and_export(tmp_path_factory.mktemp("deploy"))
