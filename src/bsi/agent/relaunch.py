"""Relaunch: making running software use a supplement's new files, without a reboot.

Replacing a file does not change a process that already has it: a loaded
library stays mapped, an open file stays open, a running executable keeps
running — all of them on the *old* inode. The supplement only protects the
device once those processes have restarted, so after activation the agent

1. finds the processes still using old content (:func:`processes_using`):
   their executable (``/proc/<pid>/exe``), their memory maps
   (``/proc/<pid>/maps``) and their open files (``/proc/<pid>/fd/*``);
2. restarts what the component's manifest names (:func:`relaunch`): its
   systemd units where systemd runs, then its ``command`` if it has one (the
   manifest's contract: "run after the units and processes have been
   handled, for software that reloads some other way"; on a host without
   systemd it is the only way);
3. reports "restart pending" (:func:`restart_pending`) until no process uses
   old content any more.

A process is never killed on a guess: one that uses old content but that no
unit or command of the component restarts is *reported* (``unmanaged``),
for an administrator to restart. And the host is never restarted: commands
and units that would reboot, power off or isolate the system are refused
before anything runs (:func:`refusal`). That guard catches mistakes, not
malice — the command is the publisher's signed content either way.

Old content is recognised four ways, so that it is found whatever the
activator did with the old file: its ``(st_dev, st_ino)`` is one the
activator recorded before replacing (``old_inodes``; the swap activator keeps
originals for rollback, so they are still linked and not "deleted"); the
kernel shows a watched path as ``(deleted)``; a watched path is used with
an inode that is no longer the one at that path; or an interpreter (Python,
Perl, Ruby, Node, a shell) runs a watched script (from ``/proc/<pid>/cmdline``)
and started before the script was replaced — an interpreter reads its script
and closes it, so nothing maps the old code it keeps running.

Each process is judged by the files *it* sees: a process in another mount
namespace (a container, a chroot) is compared with the file at the watched
path under ``/proc/<pid>/root``; one that has its own copy there is not
using the host's file at all and is left alone.

The caller records ``old_inodes`` with :func:`file_ids` on the live paths
just before the activator changes anything — that works for every
activator: a swapped-out original keeps its inode in the rollback area, an
overlay's lower file keeps its own, and a file shown through an overlay that
is being unmounted keeps the overlay's.

Reading ``/proc`` races with processes starting and exiting, and some
entries are unreadable without privilege; a process that vanishes or cannot
be read mid-scan is skipped, never an error. The parsing and the decisions
are pure functions; the scan and the runner are the only I/O.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Literal

from bsi.agent.health import CommandOutcome, run_bounded
from bsi.cryptex.manifest import Component

FileId = tuple[int, int]
"""``(st_dev, st_ino)``: what identifies one version of a file."""

RELAUNCH_TIMEOUT_SECONDS = 120.0
"""Per command; ``systemctl restart`` waits up to 90 s for a unit to stop by default."""

RESTARTABLE_UNIT_TYPES = frozenset({"service", "socket", "timer", "path"})
"""Unit types whose restart touches one piece of software, not the host."""

_POWER_PROGRAMS = frozenset(
    {"reboot", "poweroff", "halt", "shutdown", "kexec", "init", "telinit", "systemd-reboot"}
)
_POWER_VERBS = frozenset(
    {
        "reboot",
        "soft-reboot",
        "poweroff",
        "halt",
        "kexec",
        "isolate",
        "rescue",
        "emergency",
        "default",
        "exit",
        "switch-root",
        "suspend",
        "hibernate",
        "hybrid-sleep",
        "suspend-then-hibernate",
        "sleep",
    }
)
_DELETED = " (deleted)"


# -- what a process uses ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class MapEntry:
    """One file-backed line of ``/proc/<pid>/maps``."""

    device: int
    inode: int
    path: str | None
    deleted: bool = False


def parse_maps(text: str) -> list[MapEntry]:
    """The file-backed mappings in a maps file, one entry per distinct file.

    A line is ``address perms offset major:minor inode [path]``; anonymous
    mappings have inode 0 and are dropped. The path may contain spaces and
    ends with `` (deleted)`` once its file was unlinked or renamed over.
    """
    seen: dict[tuple[int, int, str | None], MapEntry] = {}
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 5:
            continue
        try:
            major, minor = (int(part, 16) for part in fields[3].split(":"))
            inode = int(fields[4])
        except ValueError:
            continue
        if inode == 0:
            continue
        path: str | None = fields[5].strip() if len(fields) == 6 else None
        deleted = False
        if path is not None and path.endswith(_DELETED):
            path, deleted = path[: -len(_DELETED)], True
        device = os.makedev(major, minor)
        seen.setdefault((device, inode, path), MapEntry(device, inode, path, deleted))
    return list(seen.values())


def unit_from_cgroup(text: str) -> str | None:
    """The systemd unit a process runs in, from ``/proc/<pid>/cgroup``.

    Reads the unified hierarchy (``0::/system.slice/nginx.service``) or, on
    cgroup v1 hosts, the ``name=systemd`` one; the unit is the innermost
    ``.service`` or ``.scope`` component of the path.
    """
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not (hierarchy == "0" and controllers == "") and controllers != "name=systemd":
            continue
        for part in reversed(path.split("/")):
            if part.endswith((".service", ".scope")):
                return part
    return None


@dataclass(frozen=True, slots=True)
class OpenFile:
    """A file a process reaches through its executable link or a descriptor."""

    path: str
    id: FileId | None
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """What the scan could read of one process; whatever it could not is empty.

    ``script`` is the script an interpreter runs (absolute, as the process
    names it), ``started`` when the process started (seconds since boot,
    ``CLOCK_BOOTTIME``), ``view`` the ids of the watched paths as this
    process sees them when it lives in another mount namespace (``None``:
    the same namespace as the agent).
    """

    pid: int
    name: str = ""
    executable: OpenFile | None = None
    unit: str | None = None
    maps: tuple[MapEntry, ...] = ()
    fds: tuple[OpenFile, ...] = ()
    script: str | None = None
    started: float | None = None
    view: Mapping[str, FileId | None] | None = None


_INTERPRETER = re.compile(r"^(python|perl|ruby|node|nodejs|sh|bash|dash|zsh|ksh|mksh)[0-9.]*$")
_STOPS = {
    "python": frozenset({"-c", "-m"}),
    "perl": frozenset({"-e", "-E"}),
    "ruby": frozenset({"-e"}),
    "node": frozenset({"-e", "--eval", "-p", "--print"}),
    "shell": frozenset({"-c", "-s"}),
}
"""Options after which no script file follows: code inline, a module, standard input."""
_WITH_VALUE = {
    "python": frozenset({"-W", "-X", "--check-hash-based-pycs"}),
    "perl": frozenset(),
    "ruby": frozenset({"-I", "-r", "-C", "-E"}),
    "node": frozenset({"-r", "--require", "--import", "--loader"}),
    "shell": frozenset({"-o", "+o"}),
}
"""Options that take the next argument as their value."""


def script_of(argv: Sequence[str], executable: str | None = None) -> str | None:
    """The script file an interpreter runs, from its command line, or ``None``. No I/O.

    The interpreter is known by the executable's name (``python3.11``,
    ``perl``, ``ruby``, ``node``, ``bash``, ``dash``, ...) or, failing that,
    ``argv[0]``'s; the script is the first argument that is not an option
    (after ``--``, or after the options that take a value). ``-c``, ``-m``,
    ``-e`` and their kin mean there is no script file. A shebang line makes
    the kernel start ``interpreter [arg] script``, which this reads the same.
    """
    if not argv:
        return None
    kind = None
    for name in (executable, argv[0]):
        if name:
            match = _INTERPRETER.match(PurePosixPath(name).name)
            if match:
                kind = match.group(1)
                break
    if kind is None:
        return None
    family = "node" if kind == "nodejs" else kind
    if family in ("sh", "bash", "dash", "zsh", "ksh", "mksh"):
        family = "shell"
    args = list(argv[1:])
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            index += 1
            break
        if arg == "-" or not arg.startswith(("-", "+")):
            break
        if arg in _STOPS[family] or (family == "python" and arg.startswith(("-c", "-m"))):
            return None
        index += 2 if arg in _WITH_VALUE[family] else 1
    if index >= len(args) or args[index] == "-":
        return None
    return args[index]


@dataclass(frozen=True, slots=True)
class ProcessUse:
    """A process that still uses old content, and how.

    ``files`` are the old files as the kernel names them (for a renamed-away
    original, its new name); ``via`` says through what (``exe``, ``map``,
    ``fd``). ``unit`` is the systemd unit it runs in, if any.
    """

    pid: int
    name: str
    executable: str | None
    unit: str | None
    files: tuple[str, ...]
    via: tuple[str, ...]

    def describe(self) -> str:
        where = f" in {self.unit}" if self.unit else ""
        return f"{self.name or '?'} (pid {self.pid}{where}) uses old {', '.join(self.files)}"


@dataclass(frozen=True, slots=True)
class Watch:
    """What counts as old content: recorded inodes, and watched paths with their current inode.

    Build it with :func:`watch` just *after* activation, so that ``current``
    holds the new files' inodes. ``since`` is when the files changed
    (seconds since boot, ``CLOCK_BOOTTIME``): an interpreter that started
    before it and runs a watched script runs the old code.
    """

    old_inodes: frozenset[FileId] = frozenset()
    current: Mapping[str, FileId | None] = field(default_factory=dict)
    since: float | None = None

    def is_old(
        self,
        path: str | None,
        deleted: bool,
        file_id: FileId | None,
        view: Mapping[str, FileId | None] | None = None,
    ) -> bool:
        if path is not None and path in self.current:
            now = self.current[path]
            if view is not None and not _same(view.get(path), now):
                return False  # another namespace with its own file there: not ours
            if not deleted and _same(file_id, now):
                return False  # the file at the path now, even if its number was an old one's
        if file_id is not None and file_id in self.old_inodes:
            return True
        if path is None or path not in self.current:
            return False
        now = self.current[path]
        if deleted:
            return True
        # Inode numbers only: on btrfs the device in maps is not stat's st_dev,
        # and the same path with the same inode number is the same file.
        return file_id is not None and now is not None and file_id[1] != now[1]

    def runs_old_script(self, info: ProcessInfo) -> bool:
        script = info.script
        if script is None or script not in self.current or self.since is None:
            return False
        if info.view is not None and not _same(info.view.get(script), self.current[script]):
            return False
        return info.started is not None and info.started < self.since


def _same(seen: FileId | None, host: FileId | None) -> bool:
    return seen is not None and host is not None and seen[1] == host[1]


def uses_old_content(info: ProcessInfo, watch: Watch) -> ProcessUse | None:
    """The old files ``info`` uses, as a :class:`ProcessUse`, or ``None``. No I/O."""
    found: list[tuple[str, str]] = []  # (file, via), in scan order
    exe = info.executable
    view = info.view
    if exe is not None and watch.is_old(exe.path, exe.deleted, exe.id, view):
        found.append((exe.path, "exe"))
    for entry in info.maps:
        if watch.is_old(entry.path, entry.deleted, (entry.device, entry.inode), view):
            found.append((entry.path or f"inode {entry.inode}", "map"))
    for handle in info.fds:
        if watch.is_old(handle.path, handle.deleted, handle.id, view):
            found.append((handle.path, "fd"))
    if info.script is not None and watch.runs_old_script(info):
        found.append((info.script, "script"))
    if not found:
        return None
    return ProcessUse(
        pid=info.pid,
        name=info.name,
        executable=exe.path if exe else None,
        unit=info.unit,
        files=tuple(dict.fromkeys(name for name, _ in found)),
        via=tuple(dict.fromkeys(how for _, how in found)),
    )


# -- scanning /proc --------------------------------------------------------


def canonical_path(path: Path | str) -> str:
    """The path as the kernel shows it in maps: directories resolved, file name kept.

    ``/lib`` is a link to ``/usr/lib`` on merged-usr systems, and the kernel
    always shows the real directory; the file itself may already have been
    replaced, so only its directory is resolved.
    """
    text = os.path.abspath(os.fspath(path))
    head, tail = os.path.split(text)
    return os.path.join(os.path.realpath(head), tail)


def file_id(path: Path | str) -> FileId | None:
    """``(st_dev, st_ino)`` of ``path`` (not following a final link), or ``None``."""
    try:
        status = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (status.st_dev, status.st_ino)


def file_ids(paths: Iterable[Path | str]) -> frozenset[FileId]:
    """The ids of the files that exist among ``paths``: record them before replacing."""
    return frozenset(i for p in paths if (i := file_id(p)) is not None)


def watch(
    paths: Iterable[Path | str], old_inodes: Collection[FileId] = (), since: float | None = None
) -> Watch:
    """A :class:`Watch` for ``paths`` as they are now, plus ``old_inodes`` and ``since``."""
    current = {}
    for path in paths:
        name = canonical_path(path)
        current[name] = file_id(name)
    return Watch(old_inodes=frozenset(old_inodes), current=current, since=since)


def boot_clock() -> float:
    """Seconds since boot (``CLOCK_BOOTTIME``), the clock of ``/proc/<pid>/stat``'s start time."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _started(stat_text: str | None) -> float | None:
    """The latest instant a process may have started, seconds since boot.

    ``/proc/<pid>/stat`` field 22 (proc(5)) counts whole clock ticks, cut
    down: the true start lies within the tick after it, so that tick's end
    is returned — a process is called older than a change only when it
    surely is.
    """
    if not stat_text:
        return None
    fields = stat_text.rpartition(")")[2].split()
    try:
        return (int(fields[19]) + 1) / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError):
        return None


def _namespace(link: Path) -> str | None:
    try:
        return os.readlink(link)
    except OSError:
        return None


def _open_file(link: Path) -> OpenFile | None:
    """What a ``/proc`` magic link (``exe``, ``fd/3``) points at, when it is a file."""
    try:
        target = os.readlink(link)
    except OSError:
        return None
    if not target.startswith("/"):
        return None  # socket:[…], pipe:[…], anon_inode:…
    deleted = target.endswith(_DELETED)
    if deleted:
        target = target[: -len(_DELETED)]
    try:
        status = os.stat(link)  # follows the magic link to the open file itself
        ident: FileId | None = (status.st_dev, status.st_ino)
    except OSError:
        ident = None
    return OpenFile(target, ident, deleted)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return None


def read_process(
    pid: int, *, proc: Path = Path("/proc"), watched: Collection[str] = ()
) -> ProcessInfo:
    """Everything the scan needs from one process; parts that cannot be read stay empty.

    ``watched`` paths are looked up through ``/proc/<pid>/root`` when the
    process is in another mount namespace than this one (its ``view``).
    """
    base = proc / str(pid)
    maps_text = _read_text(base / "maps")
    executable = _open_file(base / "exe")
    argv = [a for a in (_read_text(base / "cmdline") or "").split("\0") if a]
    script = script_of(argv, executable.path if executable else None)
    if script is not None and not script.startswith("/"):
        cwd = _namespace(base / "cwd")
        script = os.path.normpath(os.path.join(cwd, script)) if cwd else None
    view: dict[str, FileId | None] | None = None
    mine = _namespace(proc / "self" / "ns" / "mnt")
    theirs = _namespace(base / "ns" / "mnt")
    if mine is not None and theirs is not None and mine != theirs:
        view = {path: file_id(f"{base}/root{path}") for path in watched}
    fds: list[OpenFile] = []
    try:
        names = os.listdir(base / "fd")
    except OSError:
        names = []
    for name in names:
        handle = _open_file(base / "fd" / name)
        if handle is not None:
            fds.append(handle)
    return ProcessInfo(
        pid=pid,
        name=(_read_text(base / "comm") or "").strip(),
        executable=executable,
        unit=unit_from_cgroup(_read_text(base / "cgroup") or ""),
        maps=tuple(parse_maps(maps_text)) if maps_text else (),
        fds=tuple(fds),
        script=script,
        started=_started(_read_text(base / "stat")),
        view=view,
    )


def _pids(proc: Path) -> list[int]:
    try:
        return sorted(int(entry.name) for entry in os.scandir(proc) if entry.name.isdigit())
    except OSError:
        return []


def _without_reused_inodes(
    info: ProcessInfo, seen: Watch, kept_under: tuple[str, ...]
) -> ProcessInfo:
    """``info`` without the files that merely reuse a recorded inode number.

    A recorded old file that was unlinked frees its inode number, and any new
    file anywhere may get it: a process using *that* file reaches it through
    a live path outside the watched paths that still holds the number. The
    old files themselves are reached through a watched path, a path under
    ``kept_under`` (the state directory, where swap keeps originals), or a
    name that no longer exists on the host (a detached mount).
    """

    def reused(path: str | None, ident: FileId | None) -> bool:
        if path is None or ident is None or ident not in seen.old_inodes:
            return False
        if path in seen.current or path.startswith(kept_under):
            return False
        now = file_id(path)
        return now is not None and now[1] == ident[1]

    maps = tuple(e for e in info.maps if not reused(e.path, (e.device, e.inode)))
    fds = tuple(f for f in info.fds if not reused(f.path, f.id))
    exe = info.executable
    if exe is not None and reused(exe.path, exe.id):
        exe = None
    if len(maps) == len(info.maps) and len(fds) == len(info.fds) and exe is info.executable:
        return info
    return replace(info, executable=exe, maps=maps, fds=fds)


def processes_using(
    paths: Iterable[Path | str],
    *,
    old_inodes: Collection[FileId] = (),
    proc: Path = Path("/proc"),
    exclude_pids: Collection[int] | None = None,
    kept_under: Collection[Path | str] = (),
    since: float | None = None,
) -> list[ProcessUse]:
    """The processes that still use old content of ``paths``, by pid.

    ``old_inodes`` are the ``(st_dev, st_ino)`` of the replaced originals,
    as the activator recorded them; ``paths`` are the live paths, now holding
    new content. The agent's own process is left out unless
    ``exclude_pids`` says otherwise: it cannot restart itself mid-run, and
    it takes new content at its next start.
    """
    excluded = {os.getpid()} if exclude_pids is None else set(exclude_pids)
    seen = watch(paths, old_inodes, since)
    prefixes = tuple(os.path.join(os.path.realpath(p), "") for p in kept_under)
    uses = []
    for pid in _pids(proc):
        if pid in excluded:
            continue
        info = read_process(pid, proc=proc, watched=seen.current)
        use = uses_old_content(info, seen)
        if use is not None and seen.old_inodes:
            use = uses_old_content(_without_reused_inodes(info, seen, prefixes), seen)
        if use is not None:
            uses.append(use)
    return uses


def restart_pending(
    paths: Iterable[Path | str],
    *,
    old_inodes: Collection[FileId] = (),
    proc: Path = Path("/proc"),
    exclude_pids: Collection[int] | None = None,
    kept_under: Collection[Path | str] = (),
    since: float | None = None,
) -> bool:
    """True while any process still uses old content: report "restart pending"."""
    found = processes_using(
        paths,
        old_inodes=old_inodes,
        proc=proc,
        exclude_pids=exclude_pids,
        kept_under=kept_under,
        since=since,
    )
    return bool(found)


def wait_until_relaunched(
    paths: Iterable[Path | str],
    *,
    old_inodes: Collection[FileId] = (),
    timeout: float,
    interval: float = 0.2,
    proc: Path = Path("/proc"),
    exclude_pids: Collection[int] | None = None,
    kept_under: Collection[Path | str] = (),
    since: float | None = None,
) -> list[ProcessUse]:
    """Poll until no process uses old content or ``timeout`` passes; what still does.

    A restarted service takes a moment to exit and come back, so a single
    scan straight after ``systemctl restart`` can still see the old process.
    """
    watched = list(paths)
    deadline = time.monotonic() + timeout
    while True:
        uses = processes_using(
            watched,
            old_inodes=old_inodes,
            proc=proc,
            exclude_pids=exclude_pids,
            kept_under=kept_under,
            since=since,
        )
        if not uses or time.monotonic() >= deadline:
            return uses
        time.sleep(interval)


def own_unit(proc: Path = Path("/proc")) -> str | None:
    """The systemd unit this process runs in (the agent's own), from its cgroup."""
    return unit_from_cgroup(_read_text(proc / "self" / "cgroup") or "")


def systemd_running(root: Path = Path("/")) -> bool:
    """Whether systemd is the init system, by the test sd_booted(3) uses."""
    return (root / "run/systemd/system").is_dir()


# -- deciding what to restart ---------------------------------------------


def refusal(argv: Sequence[str]) -> str | None:
    """Why ``argv`` must not run during a relaunch, or ``None``: it would take the host down."""
    if not argv:
        return "the command is empty"
    program = PurePosixPath(argv[0]).name
    if program in _POWER_PROGRAMS:
        return f"{program!r} would restart or stop the whole host"
    if program in ("systemctl", "loginctl"):
        # Unit names always have a type suffix, so "-.mount" (the root file
        # system) is a unit, not an option.
        verbs = [arg for arg in argv[1:] if not arg.startswith("-") or "." in arg]
        for verb in verbs:
            if verb in _POWER_VERBS:
                return f"'{program} {verb}' would restart, stop or isolate the whole host"
        for unit in verbs[1:]:
            problem = unit_refusal(unit)
            if problem:
                return problem
    return None


def unit_refusal(unit: str) -> str | None:
    """Why restarting ``unit`` is not a relaunch, or ``None``.

    Restarting a ``.target`` (``reboot.target``!), ``.mount``, ``.slice`` or
    other host-level unit changes the whole system's state; only units that
    run one piece of software are relaunched.
    """
    _, dot, kind = unit.rpartition(".")
    if dot and kind not in RESTARTABLE_UNIT_TYPES:
        return (
            f"restarting {unit!r} acts on the host, not on one component; "
            f"only {', '.join(sorted(RESTARTABLE_UNIT_TYPES))} units are relaunched"
        )
    return None


def _named(use: ProcessUse, names: Collection[str], root: Path) -> bool:
    """Whether ``use`` is one of the manifest's ``relaunch.processes``.

    A name matches ``/proc/<pid>/comm``, which the kernel cuts to 15
    bytes; an absolute path matches the executable, below ``root``.
    """
    for name in names:
        if name.startswith("/"):
            exe = use.executable
            if exe is not None and exe in (name, str(root / name.lstrip("/"))):
                return True
        elif use.name and use.name == name.encode()[:15].decode(errors="ignore"):
            return True
    return False


@dataclass(frozen=True, slots=True)
class RelaunchStep:
    """One command to run: ``systemctl restart UNIT`` or the component's own command."""

    kind: Literal["systemd", "command"]
    argv: tuple[str, ...]
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class RelaunchPlan:
    """What :func:`relaunch` will do for one component, decided without running anything.

    ``skipped_units`` are the component's units left alone because systemd
    does not run here; ``refused`` says what the host-restart guard stopped;
    ``unmanaged`` are processes on old content that no step is expected to
    restart — reported, never killed.
    """

    component: str
    steps: tuple[RelaunchStep, ...]
    skipped_units: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()
    unmanaged: tuple[ProcessUse, ...] = ()


def plan_relaunch(
    component: Component,
    uses: Iterable[ProcessUse],
    *,
    systemd_available: bool,
    root: Path = Path("/"),
    own_unit: str | None = None,
) -> RelaunchPlan:
    """Decide the relaunch of ``component`` for the processes in ``uses``. No I/O.

    Where systemd runs, the units to restart are the component's own and
    every ``.service`` a stale process runs in (``/proc/<pid>/cgroup``), so
    the spec need not list them — except ``own_unit``, the agent's, which
    restarting would kill mid-cycle. A process counts as managed when it
    runs in one of the units being restarted, or when the component has a
    command and the process is one it names (any process, when it names
    none: the command is then the component's whole relaunch).
    """
    uses = list(uses)
    relaunch = component.relaunch
    steps: list[RelaunchStep] = []
    refused: list[str] = []
    restarted: set[str] = set()
    skipped: tuple[str, ...] = ()
    if systemd_available:
        found = [u.unit for u in uses if u.unit and u.unit.endswith(".service")]
        units = list(dict.fromkeys([*relaunch.systemd, *found]))
        for unit in units:
            if unit == own_unit:
                continue
            problem = unit_refusal(unit)
            if problem:
                refused.append(problem)
                continue
            steps.append(RelaunchStep("systemd", ("systemctl", "restart", "--", unit), unit))
            restarted.add(unit)
    else:
        skipped = relaunch.systemd
    has_command = False
    if relaunch.command:
        problem = refusal(relaunch.command)
        if problem:
            refused.append(f"command {list(relaunch.command)!r}: {problem}")
        else:
            steps.append(RelaunchStep("command", relaunch.command))
            has_command = True
    unmanaged = tuple(
        use
        for use in uses
        if use.unit not in restarted
        and not (has_command and (not relaunch.processes or _named(use, relaunch.processes, root)))
    )
    return RelaunchPlan(
        component=component.name,
        steps=tuple(steps),
        skipped_units=skipped,
        refused=tuple(refused),
        unmanaged=unmanaged,
    )


# -- carrying it out -------------------------------------------------------

Runner = Callable[[tuple[str, ...]], CommandOutcome]
"""Runs one argv to completion; :func:`default_runner` for real, any callable in tests."""


def default_runner(
    root: Path, component: str, *, timeout: float = RELAUNCH_TIMEOUT_SECONDS
) -> Runner:
    """Run each step with a time limit, in ``root``, telling it the root and component."""

    def run(argv: tuple[str, ...]) -> CommandOutcome:
        return run_bounded(
            argv,
            timeout=timeout,
            cwd=root,
            env={"BSI_ROOT": str(root), "BSI_COMPONENT": component},
        )

    return run


@dataclass(frozen=True, slots=True)
class RelaunchResult:
    """What :func:`relaunch` did: the plan, and how each step ended."""

    plan: RelaunchPlan
    outcomes: tuple[CommandOutcome, ...]

    @property
    def component(self) -> str:
        return self.plan.component

    @property
    def unmanaged(self) -> tuple[ProcessUse, ...]:
        return self.plan.unmanaged

    @property
    def ok(self) -> bool:
        """Every step ran and succeeded, and nothing was refused."""
        return not self.plan.refused and all(outcome.ok for outcome in self.outcomes)

    @property
    def failures(self) -> tuple[str, ...]:
        """One sentence per refused or failed step, for logs and the failure reason."""
        failed = tuple(
            f"relaunch of {self.component}: {outcome.describe()}"
            for outcome in self.outcomes
            if not outcome.ok
        )
        refused = tuple(f"relaunch of {self.component} refused: {r}" for r in self.plan.refused)
        return refused + failed

    def describe(self) -> list[str]:
        lines = [f"relaunch of {self.component}: {outcome.describe()}" for outcome in self.outcomes]
        lines += [f"relaunch of {self.component} refused: {r}" for r in self.plan.refused]
        if self.plan.skipped_units:
            lines.append(
                f"relaunch of {self.component}: systemd is not running, did not restart "
                + ", ".join(self.plan.skipped_units)
            )
        lines += [f"restart by hand: {use.describe()}" for use in self.unmanaged]
        return lines


def relaunch(
    component: Component,
    uses: Iterable[ProcessUse],
    *,
    systemd_available: bool,
    root: Path = Path("/"),
    runner: Runner | None = None,
    own_unit: str | None = None,
) -> RelaunchResult:
    """Restart what ``component`` names so that the processes in ``uses`` take new content.

    Steps run in order — units, then the command — and a failing step does
    not stop the next one: each one restarted is one less process on old
    content. Nothing is killed here and the host is never restarted; check
    :func:`restart_pending` (or :func:`wait_until_relaunched`) afterwards.
    """
    plan = plan_relaunch(
        component, uses, systemd_available=systemd_available, root=root, own_unit=own_unit
    )
    run = runner if runner is not None else default_runner(root, component.name)
    outcomes = tuple(run(step.argv) for step in plan.steps)
    return RelaunchResult(plan, outcomes)
