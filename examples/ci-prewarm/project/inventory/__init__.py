"""A tiny inventory package: the project the CI pre-warm example builds."""

from .stock import Stock
from .report import render

__all__ = ["Stock", "render"]
