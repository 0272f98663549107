"""The recipe as an installed command runs it: `jepa plan` from any folder, not only the checkout's root."""

import os
import subprocess
import sys


def test_evaluate_stage_imports_from_outside_the_checkout(tmp_path):
    # run_recipe's last stage imports eval.planning; a console script has no checkout on sys.path
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", "from eval.planning import evaluate_run; import jepa.planning.recipe"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
