"""Pointing jaxplain's warnings at the user's line: the first frame outside jaxplain and JAX."""

import os
import sys

import jax

# the packages whose frames a warning skips to point at the user's line
INTERNAL = tuple(package + os.sep for package in (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.path.dirname(jax.__file__)))


def user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning issued by the caller at the first frame outside
    jaxplain and JAX: the user's line, wherever it reaches the kernel from."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(INTERNAL):
        frame, level = frame.f_back, level + 1
    return level
