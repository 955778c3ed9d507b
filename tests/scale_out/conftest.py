import pytest

from tests.generation.diffusion.tiny import build_tiny_pipeline
from tests.scale_out.harness import build_stack

FAST_RECOVERY = dict(LDM_HEARTBEAT_SECONDS="1", LDM_HEARTBEAT_TIMEOUT_SECONDS="12", LDM_RECOVERY_INTERVAL_SECONDS="1",
                     LDM_REQUEUE_AFTER_SECONDS="5")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-model"), with_clip=True)


@pytest.fixture
def stack(tmp_path, tiny_model_dir):
    stack = build_stack(tmp_path, tiny_model_dir, **FAST_RECOVERY)
    yield stack
    stack.stop()
