"""How a sandbox worker walls programs off: namespaces, else Landlock, else nothing.

- **namespaces**: as root, new mount, network and PID namespaces and programs run as `nobody`;
  otherwise a user namespace (the user mapped to uid 0 inside, every capability dropped before
  a program runs) with the same three. In the mount namespace the whole filesystem is
  read-only (`mount_setattr(2)`, Linux >= 5.12), `/tmp`, `/var/tmp`, `/dev/shm`, `/run/lock`,
  `/home`, `/root` and the user's home are hidden under private tmpfs, and what the programs
  must read (the interpreter, its libraries, the failtune package) is put back read-only at
  its own path (`open_tree(2)`/`move_mount(2)`), wherever it lives. A program's own temp dir,
  on a private tmpfs, is the only writable place.
- **landlock** (user namespaces refused): writes confined to the program's temp dir, TCP
  bind/connect refused and signals kept inside the program (when the kernel's Landlock ABI
  has them), sockets disabled in-process.
- **none**: only the in-process guards; the caller refuses this unless explicitly allowed.

Standard library only: the worker loads this file by path (`python -I sandbox.py`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import pwd
import signal
import struct

FORCE_ENV = "FAILTUNE_SANDBOX"  # "userns", "landlock" or "none": the most a worker may use
WORK_ROOT = "/tmp/.failtune-programs"  # programs' temp dirs, on a private tmpfs (namespaces)
SANDBOX_UID = SANDBOX_GID = 65534  # nobody: owns nothing, may write only where it is given
_HIDDEN = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/home", "/root")
_CLONE_NEWNS, _CLONE_NEWUSER = 0x00020000, 0x10000000
_CLONE_NEWPID, _CLONE_NEWNET = 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REC, _MS_PRIVATE = 0x4000, 0x40000
# Syscalls added after Linux 5.1 share one number on every architecture (x86_64, aarch64, ...).
_OPEN_TREE, _MOVE_MOUNT, _MOUNT_SETATTR = 428, 429, 442
_LANDLOCK_CREATE, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT = 444, 445, 446
_AT_FDCWD, _AT_EMPTY_PATH, _AT_RECURSIVE = -100, 0x1000, 0x8000
_OPEN_TREE_CLONE, _MOVE_MOUNT_F_EMPTY_PATH, _MOUNT_ATTR_RDONLY = 1, 4, 1
_PR_CAPBSET_DROP, _PR_SET_SECUREBITS, _PR_SET_NO_NEW_PRIVS = 24, 28, 38
_PR_SET_CHILD_SUBREAPER, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 36, 47, 4
_SECURE_NOROOT_LOCKED_NO_AMBIENT = 0x01 | 0x02 | 0x40 | 0x80
# Landlock: every right that changes the filesystem, by the ABI version that brought it.
_LL_WRITES = {1: 0b1_1111_1111_0010, 2: 1 << 13, 3: 1 << 14}  # write/remove/make*, refer, truncate
_LL_WRITE_FILE, _LL_TRUNCATE, _LL_TCP, _LL_SCOPES = 1 << 1, 1 << 14, 0b11, 0b11

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int) -> int:
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _syscall(number: int, *args: object) -> int:
    wide = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]  # registers are 64-bit
    return _check(_libc.syscall(ctypes.c_long(number), *wide))


def _bytes(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None


def _mount(source: str | None, target: str, kind: str | None, flags: int, data: str = "") -> None:
    args = (
        _bytes(source),
        target.encode(),
        _bytes(kind),
        ctypes.c_ulong(flags),
        _bytes(data or None),
    )
    _check(_libc.mount(*args))


def _prctl(option: int, value: int = 0) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0))


# ---------------------------------------------------------------- choosing and entering a level


def isolate_worker(force: str, home: str, keep: list[str]) -> dict:
    """Enter the strongest isolation permitted; returns what holds, in the serving process.

    After namespaces are entered the worker forks: the child (pid 1 of the new PID namespace)
    returns and serves; the parent only waits for it and leaves with its status.
    """
    as_root = os.geteuid() == 0  # taken now: inside a user namespace everyone is uid 0
    root = as_root and force not in ("userns", "landlock", "none")
    missing: list[str] = []
    entered = False  # in new network and PID namespaces (pid 1), even if the mounts then fail
    if force not in ("landlock", "none"):
        try:
            _enter_namespaces(root)
            entered = True
            _build_filesystem(_hidden_dirs(home), keep)
            return _policy("namespaces", root, missing, network=True, pids=True)
        except OSError as e:
            missing.append(_userns_refusal(e, root))
    else:
        missing.append(f"user namespaces not tried ({FORCE_ENV}={force})")
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # leftovers come back to the worker to be killed
    abi = landlock_abi() if force != "none" else 0
    if not abi:
        missing.append(
            f"Landlock is not usable ({FORCE_ENV}=none)"
            if force == "none"
            else "Landlock is not available (it needs Linux >= 5.13 with Landlock enabled)"
        )
    level = "landlock" if abi else "none"
    return _policy(level, as_root, missing, network=entered, pids=entered, abi=abi)


def _policy(
    level: str, root: bool, missing: list[str], *, network: bool = False, pids: bool = False,
    abi: int = 0,
) -> dict:  # fmt: skip
    return {
        "level": level,
        "as_root": root,
        "drop_user": root,  # as root programs run as nobody, whatever the level
        "network_namespace": network,
        "pid_namespace": pids,
        "landlock_abi": abi,
        "last_cap": _last_cap(),
        "missing": missing,
    }


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 63


def _enter_namespaces(root: bool) -> None:
    uid, gid = os.geteuid(), os.getegid()
    flags = _CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWPID | (0 if root else _CLONE_NEWUSER)
    _check(_libc.unshare(flags))
    if not root:
        for name, text in (("uid_map", f"0 {uid} 1"), ("setgroups", "deny"),
                           ("gid_map", f"0 {gid} 1")):  # fmt: skip
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    pid = os.fork()
    if pid:  # the outer process: stay until the namespace's init ends, then leave
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _userns_refusal(error: OSError, root: bool) -> str:
    """Why namespaces could not be entered, in the words of the setting that refused them."""
    settings = (
        ("/proc/sys/kernel/unprivileged_userns_clone", "0", "kernel.unprivileged_userns_clone=0"),
        ("/proc/sys/user/max_user_namespaces", "0", "user.max_user_namespaces=0"),
        ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1",
         "AppArmor restricts unprivileged user namespaces"),
    )  # fmt: skip
    for path, value, name in settings:
        with contextlib.suppress(OSError), open(path) as f:
            if f.read().strip() == value and not root:
                return f"user namespaces are refused ({name})"
    if error.errno == errno.ENOSYS:
        return "the kernel lacks mount_setattr/open_tree (Linux >= 5.12 needed)"
    what = "namespaces" if root else "user namespaces"
    return f"{what} are refused ({error.strerror})"


# ---------------------------------------------------------------- the read-only filesystem


def _hidden_dirs(home: str) -> list[str]:
    """Directories to hide: the world-writable ones and every home, outermost only."""
    homes = [home] if home else []
    with contextlib.suppress(KeyError):
        homes.append(pwd.getpwuid(os.getuid()).pw_dir)
    found: list[str] = []
    for path in dict.fromkeys([*_HIDDEN, *homes]):
        real = os.path.realpath(path)
        if real != "/" and os.path.isdir(real) and not _under_any(real, found):
            found = [p for p in found if not _under(p, real)] + [real]
    return found


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _under_any(path: str, tops: list[str]) -> bool:
    return any(_under(path, top) for top in tops)


def _build_filesystem(hidden: list[str], keep: list[str]) -> None:
    """Hide `hidden`, put `keep` back, then make everything read-only but a fresh WORK_ROOT."""
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    _hide(hidden, keep)
    quiet = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    os.makedirs(WORK_ROOT, mode=0o755, exist_ok=True)
    with contextlib.suppress(OSError):  # a /proc of the new PID namespace, where allowed
        _mount("proc", "/proc", "proc", quiet)
    attr = struct.pack("=QQQQ", _MOUNT_ATTR_RDONLY, 0, 0, 0)
    _syscall(_MOUNT_SETATTR, _AT_FDCWD, b"/", _AT_RECURSIVE, attr, len(attr))
    _mount("tmpfs", WORK_ROOT, "tmpfs", quiet, "mode=0755,size=512m")


def _hide(hidden: list[str], keep: list[str]) -> None:
    """Cover each `hidden` dir with an empty tmpfs; what of `keep` lies beneath reappears at
    its own path (a detached copy taken before the cover, moved onto it after)."""
    kept: list[str] = []
    for path in sorted({os.path.realpath(p) for p in keep if os.path.isdir(p)}, key=len):
        if _under_any(path, hidden) and not _under_any(path, kept):
            kept.append(path)
    flags = _OPEN_TREE_CLONE | _AT_RECURSIVE | os.O_CLOEXEC
    trees = [(path, _syscall(_OPEN_TREE, _AT_FDCWD, path.encode(), flags)) for path in kept]
    for path in hidden:
        _mount("tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "mode=0755,size=16m")
    for path, fd in trees:
        os.makedirs(path, mode=0o755, exist_ok=True)
        _syscall(_MOVE_MOUNT, fd, b"", _AT_FDCWD, path.encode(), _MOVE_MOUNT_F_EMPTY_PATH)
        os.close(fd)


def reveal_only(closed: list[str], keep: list[str]) -> None:
    """As root, in a new private mount namespace: replace the `closed` dirs by ones anyone may
    enter, holding only `keep` (lets an ordinary user run a Python installed under /root)."""
    _check(_libc.unshare(_CLONE_NEWNS))
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    _hide([d for d in closed if not _under_any(os.path.dirname(d), closed)], keep)


# ---------------------------------------------------------------- in each program's process


def confine(policy: dict, workdir: str) -> None:
    """In the forked program, before its code runs: take away what the level says it loses."""
    if policy["drop_user"]:
        os.setgroups([])
        os.setgid(SANDBOX_GID)
        os.setuid(SANDBOX_UID)
    elif policy["level"] == "namespaces":
        _drop_capabilities(policy["last_cap"])
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    if policy["level"] == "landlock":
        _restrict_writes(workdir, policy["landlock_abi"])


def _drop_capabilities(last_cap: int) -> None:
    """Uid 0 of the user namespace keeps nothing: no capability now, none regained by exec."""
    _prctl(_PR_SET_SECUREBITS, _SECURE_NOROOT_LOCKED_NO_AMBIENT)
    for cap in range(last_cap + 1):
        _prctl(_PR_CAPBSET_DROP, cap)
    with contextlib.suppress(OSError):  # no ambient capabilities before Linux 4.3
        _check(_libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0))
    header = ctypes.create_string_buffer(struct.pack("=Ii", 0x20080522, 0))
    data = ctypes.create_string_buffer(24)  # two zeroed {effective, permitted, inheritable}
    _check(_libc.capset(header, data))


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is missing or disabled."""
    try:
        return _syscall(_LANDLOCK_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except OSError:
        return 0


def _restrict_writes(workdir: str, abi: int) -> None:
    writes = sum(bits for version, bits in _LL_WRITES.items() if version <= abi)
    fields = [writes] + ([_LL_TCP] if abi >= 4 else []) + ([_LL_SCOPES] if abi >= 6 else [])
    attr = struct.pack(f"={len(fields)}Q", *fields)
    ruleset = _syscall(_LANDLOCK_CREATE, attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    null_rights = _LL_WRITE_FILE | (_LL_TRUNCATE if abi >= 3 else 0)
    for path, rights in ((workdir, writes), ("/dev/null", null_rights)):
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = struct.pack("=Qi", rights, fd)
        _syscall(_LANDLOCK_ADD_RULE, ruleset, 1, rule, 0)
        os.close(fd)
    _syscall(_LANDLOCK_RESTRICT, ruleset, 0)
    os.close(ruleset)


def disable_sockets() -> None:
    """Without a network namespace: any socket creation in Python raises."""
    import _socket
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("network access is disabled in the sandbox")

    for module in (socket, _socket):
        for name in ("socket", "socketpair", "create_connection", "fromfd", "create_server"):
            if hasattr(module, name):
                setattr(module, name, refuse)


# ---------------------------------------------------------------- after each program


def kill_descendants() -> None:
    """Without a PID namespace: kill every process a program left (this worker is their
    subreaper, so even a program's daemonised grandchildren come back to it)."""
    for _ in range(1000):
        children = _children()
        if not children:
            return
        for pid in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for _ in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(-1, 0)


def _children() -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                found += [int(c) for c in f.read().split()]
    return found


# ---------------------------------------------------------------- what the caller is told


def describe(policy: dict) -> str:
    """One line for the terminal and the manifest."""
    who = "as root, programs run as nobody" if policy["as_root"] else "unprivileged"
    if policy["level"] == "namespaces":
        how = "user namespace, " if not policy["as_root"] else ""
        return (
            f"namespaces ({who}; {how}mount, network and PID namespaces, read-only filesystem, "
            "writes only to the program's temp dir)"
        )
    why = "; ".join(policy["missing"])
    if policy["level"] == "landlock":
        return f"landlock ({who}; writes only to the program's temp dir, sockets disabled; {why})"
    return f"none (allowed by --allow-unsandboxed-code; {who}; {why})"


def refusal(policy: dict) -> str:
    """The one sentence that stops a run which would execute code without a sandbox."""
    return (
        "refusing to run model-written code without a sandbox: "
        + " and ".join(policy["missing"])
        + "; pass --allow-unsandboxed-code to run it with only in-process guards"
    )
