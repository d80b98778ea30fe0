"""The glibc allocator settings applied by the mtpeft command."""

import subprocess
import sys


def run(env_extra: dict) -> str:
    code = "from mtpeft.allocator import configure_allocator; print(configure_allocator())"
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "MTPEFT_MALLOC"))} | env_extra
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.strip()


def test_allocator_is_tuned_on_glibc_unless_asked_not_to():
    assert run({}) == "True"
    assert run({"MTPEFT_MALLOC": "default"}) == "False"
