"""The gateway process never imports torch: its modules do not, and its entry point blocks it outright."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gateway_import_chain_has_no_torch():
    code = ("import sys, shared.gateway.routes, shared.gateway.runtime, services.stacking.wsgi as w\n"
            "print('torch' in sys.modules, 'shared.serving.learner' in sys.modules)\n"
            "try:\n    import torch\nexcept ImportError as e:\n    print('blocked', e.name)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"MODELS_DIR": "/nonexistent", "HISTORY_ENABLED": "0", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "blocked", "torch"]  # the entry point installed the guard


def test_keep_torch_out_makes_torch_unimportable_in_that_process():
    code = ("from shared.gateway.torch_guard import keep_torch_out; keep_torch_out()\n"
            "try:\n    import torch\nexcept ImportError as e:\n    print('blocked', e.name)\n"
            "import shared.artifacts, shared.learning.meta_model, sys; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["blocked", "torch", "False"]


def test_a_member_process_never_imports_the_gateway():
    code = ("import sys\nfrom shared.serving.app import create_app\n"
            "create_app({'SERVICE_NAME': 'ocr_nb', 'MODELS_DIR': '/nonexistent', 'LOAD_IN_BACKGROUND': False})\n"
            "print(sorted(m for m in sys.modules if m.split('.')[:2] in (['shared', 'gateway'], ['shared', 'history'],"
            " ['shared', 'ui'])))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"MODELS_DIR": "/nonexistent", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
