"""Loading a benchmark script (benchmarks/NAME.py, not a package) as a module for its tests."""

import importlib.util
import sys
from types import ModuleType

from tests.conftest import REPO_ROOT

BENCHMARKS_DIR = REPO_ROOT / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as the module `benchmark_<name>`; its sibling scripts (plots.py)
    import as they do when it runs."""
    if str(BENCHMARKS_DIR) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS_DIR))
    module_name = f"benchmark_{name}"
    spec = importlib.util.spec_from_file_location(module_name, BENCHMARKS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module
