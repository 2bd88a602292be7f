"""Process bookkeeping for the code sandbox: waiting, killing a run's whole tree or uid, counting its tasks,
and draining its output through pipes with a byte cap (so neither a flood nor `fallocate` on a file reaches the
host's disk)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time
from pathlib import Path


def wait_for_exit(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait up to `timeout` s for the process to exit; True if it did. It is not reaped (a pidfd becomes readable
    when it exits), so its pid, which is also its process group id, stays reserved until `kill_group_and_reap`."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is None:
        # No pidfd (not Linux, or an old kernel): waiting reaps it, and the group is killed just after.
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(max(0.0, timeout) * 1000))
    finally:
        os.close(pidfd)


def kill_child(parent: int, child: int | None) -> None:
    """SIGKILL `child` if it is still a child of `parent`. The pidfd pins the process before the check, so a pid
    reused by an unrelated process is never signalled."""
    if child is None:
        return
    try:
        pidfd = os.pidfd_open(child)
    except OSError:
        return
    try:
        if proc_status(f"/proc/{child}").get("PPid", "").strip() == str(parent):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(pidfd)


def kill_group_and_reap(proc: subprocess.Popen) -> None:
    """SIGKILL whatever is left in the process group (what an unsandboxed program left behind), then reap."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def kill_uid(uid: int, patience: float = 5.0) -> None:
    """Wait until no process of the run's uid is left, SIGKILLing stragglers.

    The pid namespace dies with bwrap, but asynchronously; the slot's uid must have no process left before the
    next run gets it (its RLIMIT_NPROC budget, and the promise that nothing outlives a run). The uid is ours alone
    while we hold its lock, so every process of it is one we started.
    """
    deadline = time.monotonic() + patience
    while True:
        pids = pids_of_uid(uid)
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)


def proc_status(pid_dir: str) -> dict[str, str]:
    try:
        text = Path(pid_dir, "status").read_text()
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def pids_of_uid(uid: int) -> list[int]:
    """Live processes (not zombies, which hold nothing but a pid) whose real uid is `uid`."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            status = proc_status(entry.path)
            if status and int(status["Uid"].split()[0]) == uid and not status["State"].strip().startswith("Z"):
                pids.append(int(entry.name))
    return pids


class OutputDrain(threading.Thread):
    """Reads a pipe to its end, keeping the first `limit` bytes and counting (then dropping) the rest: a program
    that floods one stream is neither blocked (which would turn a correct answer into a timeout) nor stored."""

    def __init__(self, fd: int, limit: int):
        super().__init__(daemon=True, name="sandbox-drain")
        self.fd, self.limit = fd, limit
        self.kept = bytearray()
        self.total = 0
        self._halt = threading.Event()

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN | select.POLLHUP)
        while True:
            if not poller.poll(100):
                if self._halt.is_set():
                    return
                continue
            try:
                chunk = os.read(self.fd, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            self.total += len(chunk)
            room = self.limit + 1 - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]

    def finish(self, grace: float = 2.0) -> None:
        """Wait for the end of the stream; past `grace` s (a process of an unsandboxed run that outlived it still
        holds the pipe), stop reading. Then close our end."""
        if self.is_alive():
            self.join(grace)
            self._halt.set()
            self.join()
        os.close(self.fd)

    def text(self) -> tuple[str, bool]:
        return self.kept[: self.limit].decode("utf-8", errors="replace"), self.total > self.limit


def read_status(path: Path) -> dict:
    """bwrap's --json-status-fd output: one JSON object per line (child-pid on start, exit-code at the end)."""
    status: dict = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            status.update(json.loads(line))
        except ValueError:
            continue
    return status


def count_tasks(uid: int) -> int:
    """Threads count towards RLIMIT_NPROC too, so sum the Threads of every process whose real uid is `uid`."""
    total = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            status = proc_status(entry.path)
            if status and int(status["Uid"].split()[0]) == uid:
                total += int(status.get("Threads", "1"))
    return total


class MemoryWatch(threading.Thread):
    """Holds a sandboxed run's whole process tree to `limit` bytes of memory: every `interval` s it sums the
    resident memory of every process in the run's pid namespace and, past the limit, kills the namespace.

    RLIMIT_AS bounds each process, not the tree: 8 children of 300 MB each held 1.7 GB under a 512 MB limit. The
    namespace's processes are listed from its own /proc, seen through its init's root (`/proc/PID/root/proc`), so
    neither a double fork nor a new session hides one. RSS counts pages a fork shares with its parent once per
    process, so past the limit the proportional share (PSS, smaps_rollup) decides: a fork of a 400 MB process that
    only reads is not 800 MB. The tree can outgrow the limit by what it touches in one interval before the kill.
    """

    def __init__(self, status_path: Path, parent: int, limit: int, interval: float = 0.05):
        super().__init__(daemon=True, name="sandbox-memory")
        self.status_path, self.parent, self.limit, self.interval = status_path, parent, limit, interval
        self.exceeded = 0  # the tree's memory in bytes when it was killed; 0 while under the limit
        self.peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        init = namespace = None
        while not self._halt.wait(self.interval):
            if init is None:
                init = read_status(self.status_path).get("child-pid")
                continue
            # bwrap reports its child before the child has its own root and /proc: until then /proc/PID/root/proc
            # is the host's. The namespace's /proc is the one whose pid 1 is in the child's pid namespace; the
            # namespace is recorded so that a pid reused after the run is never taken for it.
            current = pid_namespace(f"/proc/{init}")
            if current is None or namespace is not None and current != namespace:
                return
            if namespace is None:
                if pid_namespace(f"/proc/{init}/root/proc/1") != current:
                    continue
                namespace = current
            used = tree_memory(init, self.limit)
            if used is None:  # the namespace is gone
                return
            self.peak = max(self.peak, used)
            if used > self.limit:
                self.exceeded = used
                kill_child(self.parent, init)
                return

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join()


def pid_namespace(pid_dir: str) -> int | None:
    try:
        return os.stat(f"{pid_dir}/ns/pid").st_ino
    except OSError:
        return None


PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def tree_memory(init: int, limit: int) -> int | None:
    """Bytes of memory held by the processes of `init`'s pid namespace: RSS summed, or PSS when RSS is past
    `limit`; None when the namespace's /proc cannot be read (it has exited)."""
    root = f"/proc/{init}/root/proc"
    try:
        pids = [name for name in os.listdir(root) if name.isdigit()]
    except OSError:
        return None
    rss = 0
    for pid in pids:
        try:
            with open(f"{root}/{pid}/statm", "rb") as fh:
                rss += int(fh.read().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            continue  # exited between the listing and the read
    if rss <= limit:
        return rss
    pss = 0
    for pid in pids:
        try:
            with open(f"{root}/{pid}/smaps_rollup", "rb") as fh:
                for line in fh:
                    if line.startswith(b"Pss:"):
                        pss += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            continue
    return pss
