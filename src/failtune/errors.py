"""One exception type for mistakes a user can fix; the CLI prints it as one sentence."""

import errno


class FailtuneError(Exception):
    """A user-facing error: bad input, missing file, unknown category, unusable model."""


def describe_os_error(error: OSError) -> str:
    """One sentence for what the operating system refused: full disk, permissions, paths.

    Writers name the file they were writing (failtune.files.naming); every output is written
    atomically or appended whole batches at a time, so what was written before is intact.
    """
    name = error.filename
    where = f" {name}" if name else ""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"the disk is full while writing{where}; everything written so far is kept, "
            "free space and rerun to resume"
        )
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied:{where} (check its owner and permissions)"
    if error.errno == errno.EROFS:
        return f"cannot write{where}: the file system is read-only"
    if error.errno == errno.EEXIST and name:
        return f"{name} is a file, not a folder: move it away or write somewhere else"
    if error.errno == errno.ENOTDIR and name:
        return f"{name}: part of this path is a file, not a folder"
    if error.errno == errno.EISDIR and name:
        return f"{name} is a folder, not a file"
    if error.errno == errno.ENOENT and name:
        return f"no such file or folder: {name}"
    reason = error.strerror or str(error) or type(error).__name__
    return f"{reason}:{where}" if where else reason
