"""Greets, and says whether each module's pyc was there for CPython."""

import importlib.util
import os

from app import greet, numbers

print(greet.greet("worktree"), numbers.factorial(10), numbers.fibonacci(8))
for module in (greet, numbers):
    pyc = importlib.util.cache_from_source(module.__file__)
    print(f"{module.__name__}: pyc {'present' if os.path.exists(pyc) else 'missing'}")
