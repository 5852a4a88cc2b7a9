# The tiny Llama of the reward-model tests scores here too.
from tests.rm.conftest import smollm2_dir, tiny_llama_dir  # noqa: F401
