"""Output paths of commands, checked before the work instead of after it."""
from __future__ import annotations

import os
from pathlib import Path


def check_output_file(path: str | Path, flag: str) -> Path:
    """``path`` can become a file: it is not a directory, and no existing folder on its way is a file. An
    evaluation or a prediction over a whole dataset otherwise ran to the end and then failed to write, with
    an OS message naming a temporary file."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {path}: is a directory; give a file path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{flag} {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(f"{flag} {path}: cannot write in {parent}")
            break
    return path
