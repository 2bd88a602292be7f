"""The seccomp filter of the code sandbox: an allowlist, as Docker's default profile is. A system call not named in
`SECCOMP_ALLOWED` gets EPERM; socket() and socketpair() only for the families a test uses (unix, inet, inet6).

bwrap loads it with `--seccomp FD`; the classic-BPF program is built here with `struct`, so no libseccomp is needed.
The list was made by running HumanEval's and MBPP's canonical solutions, threads, subprocesses, multiprocessing
(fork, spawn, forkserver), sockets, asyncio and shutil under `strace -f`, then widened by group to the calls of the
same kind a test may reach (the `*at` and vectored variants, the x86_64 legacy names glibc still uses); the test
suite runs that corpus under the filter (tests/test_sandbox.py).
"""

from __future__ import annotations

import os
import struct

# System call numbers on (x86_64, aarch64); None where the machine has no such call (aarch64 has only the *at
# forms and no legacy calls). From the kernel's uapi headers; 451 and up from the kernel's syscall tables.
# Each group is allowed for the reason in its comment.
SECCOMP_ALLOWED: dict[str, tuple[int | None, int | None]] = {
    # Processes and threads: fork, subprocess, multiprocessing, threading, their waits, signals and scheduling.
    # clone3 too: glibc tries it first and falls back to clone on ENOSYS only, not on EPERM. (A new namespace
    # needs capabilities the sandbox does not have, and bwrap's --disable-userns refuses nested user namespaces.)
    "clone": (56, 220), "clone3": (435, 435), "fork": (57, None), "vfork": (58, None), "execve": (59, 221),
    "execveat": (322, 281), "exit": (60, 93), "exit_group": (231, 94), "wait4": (61, 260), "waitid": (247, 95),
    "kill": (62, 129), "tkill": (200, 130), "tgkill": (234, 131), "getpid": (39, 172), "getppid": (110, 173),
    "gettid": (186, 178), "getpgid": (121, 155), "setpgid": (109, 154), "getpgrp": (111, None), "getsid": (124, 156),
    "setsid": (112, 157), "set_tid_address": (218, 96), "set_robust_list": (273, 99), "get_robust_list": (274, 100),
    "rseq": (334, 293), "futex": (202, 98), "futex_waitv": (449, 449), "futex_wake": (454, 454),
    "futex_wait": (455, 455), "futex_requeue": (456, 456), "sched_yield": (24, 124), "sched_getaffinity": (204, 123),
    "sched_setaffinity": (203, 122), "sched_getparam": (143, 121), "sched_setparam": (142, 118),
    "sched_getscheduler": (145, 120), "sched_setscheduler": (144, 119), "sched_get_priority_max": (146, 125),
    "sched_get_priority_min": (147, 126), "sched_rr_get_interval": (148, 127), "sched_getattr": (315, 275),
    "sched_setattr": (314, 274), "getpriority": (140, 141), "setpriority": (141, 140), "ioprio_get": (252, 31),
    "ioprio_set": (251, 30), "prctl": (157, 167), "arch_prctl": (158, None), "personality": (135, 92),
    "capget": (125, 90), "capset": (126, 91), "restart_syscall": (219, 128), "pidfd_open": (434, 434),
    "pidfd_send_signal": (424, 424), "getcpu": (309, 168), "uretprobe": (335, None),
    # Identity and limits: reading them, and the set* calls, which fail without capabilities (lowering one's own
    # rlimits is allowed; raising them past the hard limit is refused by the kernel).
    "getuid": (102, 174), "geteuid": (107, 175), "getgid": (104, 176), "getegid": (108, 177),
    "getresuid": (118, 148), "getresgid": (120, 150), "getgroups": (115, 158), "setuid": (105, 146),
    "setgid": (106, 144), "setreuid": (113, 145), "setregid": (114, 143), "setresuid": (117, 147),
    "setresgid": (119, 149), "setgroups": (116, 159), "setfsuid": (122, 151), "setfsgid": (123, 152),
    "getrlimit": (97, 163), "setrlimit": (160, 164), "prlimit64": (302, 261), "getrusage": (98, 165),
    "times": (100, 153), "uname": (63, 160), "sysinfo": (99, 179), "umask": (95, 166),
    # Memory: the allocator and the dynamic linker. All of it is address space, counted by RLIMIT_AS.
    "brk": (12, 214), "mmap": (9, 222), "munmap": (11, 215), "mremap": (25, 216), "mprotect": (10, 226),
    "madvise": (28, 233), "msync": (26, 227), "mincore": (27, 232), "membarrier": (324, 283),
    "get_mempolicy": (239, 236), "mseal": (462, 462), "map_shadow_stack": (453, 453),
    # Files, in the sandbox's own folders (the host's are read-only or absent): reading, writing, listing,
    # renaming, links, modes, reading extended attributes; sendfile and copy_file_range are shutil's copies;
    # ioctl for terminals and FIONREAD.
    "read": (0, 63), "write": (1, 64), "readv": (19, 65), "writev": (20, 66), "pread64": (17, 67),
    "pwrite64": (18, 68), "preadv": (295, 69), "pwritev": (296, 70), "preadv2": (327, 286), "pwritev2": (328, 287),
    "open": (2, None), "openat": (257, 56), "openat2": (437, 437), "creat": (85, None), "close": (3, 57),
    "close_range": (436, 436), "lseek": (8, 62), "dup": (32, 23), "dup2": (33, None), "dup3": (292, 24),
    "fcntl": (72, 25), "flock": (73, 32), "fsync": (74, 82), "fdatasync": (75, 83), "truncate": (76, 45),
    "ftruncate": (77, 46), "fallocate": (285, 47), "fadvise64": (221, 223), "readahead": (187, 213),
    "stat": (4, None), "fstat": (5, 80), "lstat": (6, None), "newfstatat": (262, 79), "statx": (332, 291),
    "statfs": (137, 43), "fstatfs": (138, 44), "access": (21, None), "faccessat": (269, 48),
    "faccessat2": (439, 439), "getdents": (78, None), "getdents64": (217, 61), "getcwd": (79, 17), "chdir": (80, 49),
    "fchdir": (81, 50), "rename": (82, None), "renameat": (264, 38), "renameat2": (316, 276), "mkdir": (83, None),
    "mkdirat": (258, 34), "rmdir": (84, None), "link": (86, None), "linkat": (265, 37), "unlink": (87, None),
    "unlinkat": (263, 35), "symlink": (88, None), "symlinkat": (266, 36), "readlink": (89, None),
    "readlinkat": (267, 78), "chmod": (90, None), "fchmod": (91, 52), "fchmodat": (268, 53), "fchmodat2": (452, 452),
    "chown": (92, None), "fchown": (93, 55), "lchown": (94, None), "fchownat": (260, 54), "utime": (132, None),
    "utimes": (235, None), "utimensat": (280, 88), "futimesat": (261, None), "mknod": (133, None),
    "mknodat": (259, 33), "getxattr": (191, 8), "lgetxattr": (192, 9), "fgetxattr": (193, 10),
    "listxattr": (194, 11), "llistxattr": (195, 12), "flistxattr": (196, 13), "getxattrat": (464, 464),
    "listxattrat": (465, 465), "sendfile": (40, 71), "copy_file_range": (326, 285), "ioctl": (16, 29),
    # Waiting on descriptors: pipes, poll/select/epoll (asyncio, selectors, subprocess), eventfd, timerfd.
    "pipe": (22, None), "pipe2": (293, 59), "poll": (7, None), "ppoll": (271, 73), "select": (23, None),
    "pselect6": (270, 72), "epoll_create": (213, None), "epoll_create1": (291, 20), "epoll_ctl": (233, 21),
    "epoll_wait": (232, None), "epoll_pwait": (281, 22), "epoll_pwait2": (441, 441), "eventfd": (284, None),
    "eventfd2": (290, 19), "signalfd": (282, None), "signalfd4": (289, 74), "timerfd_create": (283, 85),
    "timerfd_settime": (286, 86), "timerfd_gettime": (287, 87),
    # Signals, timers, clocks and randomness.
    "rt_sigaction": (13, 134), "rt_sigprocmask": (14, 135), "rt_sigreturn": (15, 139), "rt_sigpending": (127, 136),
    "rt_sigtimedwait": (128, 137), "rt_sigqueueinfo": (129, 138), "rt_tgsigqueueinfo": (297, 240),
    "rt_sigsuspend": (130, 133), "sigaltstack": (131, 132), "pause": (34, None), "alarm": (37, None),
    "getitimer": (36, 102), "setitimer": (38, 103), "timer_create": (222, 107), "timer_settime": (223, 110),
    "timer_gettime": (224, 108), "timer_getoverrun": (225, 109), "timer_delete": (226, 111),
    "clock_gettime": (228, 113), "clock_getres": (229, 114), "clock_nanosleep": (230, 115), "nanosleep": (35, 101),
    "gettimeofday": (96, 169), "time": (201, None), "getrandom": (318, 278),
    # Sockets, once made (see SOCKET_CALLS): the network namespace holds only a loopback.
    "bind": (49, 200), "listen": (50, 201), "accept": (43, 202), "accept4": (288, 242), "connect": (42, 203),
    "getsockname": (51, 204), "getpeername": (52, 205), "sendto": (44, 206), "recvfrom": (45, 207),
    "sendmsg": (46, 211), "recvmsg": (47, 212), "sendmmsg": (307, 269), "recvmmsg": (299, 243),
    "shutdown": (48, 210), "setsockopt": (54, 208), "getsockopt": (55, 209),
}  # fmt: skip
# socket() and socketpair() are allowed for these address families only (their first argument): unix (1), inet
# (2), inet6 (10). AF_VSOCK is not network-namespaced (on a VM it reaches the host's vsock services), netlink
# shows the host's kernel state, and packet, alg, bluetooth, ... are kernel surface no test needs.
SOCKET_CALLS: dict[str, tuple[int, int]] = {"socket": (41, 198), "socketpair": (53, 199)}
SOCKET_FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10}
# Everything else is refused. These are named for the docs and tests, by what they would let a sample do:
# - hold memory outside RLIMIT_AS: vmsplice, splice and tee (a pipe slot keeps a whole transparent huge page of
#   an unmapped region alive: 1.6 GB of host memory for a sample of 9 MB RSS), memfds, System V IPC, POSIX
#   message queues, mlock, extended attributes set on tmpfs files (kernel memory), inotify and fanotify watches;
# - reach host kernel state shared across samples: the keyrings (the launching shell's session keyring holds its
#   secrets), AF_VSOCK, netlink;
# - kernel attack surface a sample has no use for: io_uring, AIO, bpf, perf events, userfaultfd, ptrace and
#   process_vm_*, pidfd_getfd, kcmp, mounts and namespaces, modules, kexec, clocks, swap, quotas, NUMA policy,
#   sync (which flushes every file system of the host).
SECCOMP_DENIED: dict[str, tuple[int, int]] = {
    "vmsplice": (278, 75), "splice": (275, 76), "tee": (276, 77),
    "memfd_create": (319, 279), "memfd_secret": (447, 447), "shmget": (29, 194), "msgget": (68, 186),
    "semget": (64, 190), "mq_open": (240, 180), "mlock": (149, 228), "setxattr": (188, 5),
    "inotify_init1": (294, 26), "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "io_setup": (206, 0), "bpf": (321, 280), "perf_event_open": (298, 241), "userfaultfd": (323, 282),
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "pidfd_getfd": (438, 438), "kcmp": (312, 272), "mount": (165, 40), "umount2": (166, 39),
    "pivot_root": (155, 41), "unshare": (272, 97), "setns": (308, 268), "chroot": (161, 51),
    "open_by_handle_at": (304, 265), "init_module": (175, 105), "kexec_load": (246, 104), "reboot": (169, 142),
    "swapon": (167, 224), "settimeofday": (164, 170), "clock_settime": (227, 112), "mbind": (237, 235),
    "set_mempolicy": (238, 237), "sync": (162, 81), "syslog": (103, 116),
}  # fmt: skip
# Calls numbered above this are newer than this list: ENOSYS, which libc reads as "not there" and falls back from
# (EPERM would make it give up).
HIGHEST_KNOWN = 470
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000
RET_ALLOW, RET_EPERM, RET_ENOSYS = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38  # SECCOMP_RET_ERRNO | errno
# Classic BPF opcodes: load a word of seccomp_data, compare, jump, return.
LD_W_ABS, JEQ_K, JGE_K, JGT_K, RET_K = 0x20, 0x15, 0x35, 0x25, 0x06
NR, ARCH, ARG0 = 0, 4, 16  # offsets in struct seccomp_data (the low word of args[0] on little-endian machines)


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """The classic-BPF program bwrap loads with `--seccomp FD`: allow `SECCOMP_ALLOWED` (and socket calls for
    `SOCKET_FAMILIES`), ENOSYS past `HIGHEST_KNOWN`, EPERM for the rest.

    Calls from another ABI than the host's (32-bit `int 0x80`, x32 on x86_64), whose numbers differ, are all
    refused. None on a machine we have no syscall numbers for (the sandbox then runs without the filter).
    """
    machine = machine or os.uname().machine
    if machine not in AUDIT_ARCH:
        return None
    column = 0 if machine == "x86_64" else 1
    allowed = sorted({nrs[column] for nrs in SECCOMP_ALLOWED.values() if nrs[column] is not None})
    # (opcode, jump-if-true, jump-if-false, k): a jump names a label, resolved to an offset below.
    program: list[tuple[int, int | str, int | str, int]] = [
        (LD_W_ABS, 0, 0, ARCH),
        (JEQ_K, 1, 0, AUDIT_ARCH[machine]),
        (RET_K, 0, 0, RET_EPERM),
        (LD_W_ABS, 0, 0, NR),
    ]
    if machine == "x86_64":
        program += [(JGE_K, 0, 1, X32_SYSCALL_BIT), (RET_K, 0, 0, RET_EPERM)]
    program += [(JGT_K, 0, 1, HIGHEST_KNOWN), (RET_K, 0, 0, RET_ENOSYS)]
    # Socket calls: only the allowed families.
    socket_nrs = [nrs[column] for nrs in SOCKET_CALLS.values()]
    program.append((JEQ_K, "family", 0, socket_nrs[0]))
    program.append((JEQ_K, "family", "calls", socket_nrs[1]))
    program.append(("family", 0, 0, 0))  # a label
    program.append((LD_W_ABS, 0, 0, ARG0))
    for family in SOCKET_FAMILIES.values():
        program += [(JEQ_K, 0, 1, family), (RET_K, 0, 0, RET_ALLOW)]
    program.append((RET_K, 0, 0, RET_EPERM))
    program.append(("calls", 0, 0, 0))
    program.append((LD_W_ABS, 0, 0, NR))
    # Each allowed number is followed by its own return, so every jump is short (classic BPF jumps at most 255).
    for nr in allowed:
        program += [(JEQ_K, 0, 1, nr), (RET_K, 0, 0, RET_ALLOW)]
    program.append((RET_K, 0, 0, RET_EPERM))
    return _assemble(program)


def _assemble(program: list) -> bytes:
    labels, code = {}, []
    for item in program:
        if isinstance(item[0], str):
            labels[item[0]] = len(code)
        else:
            code.append(item)
    out = bytearray()
    for i, (op, jt, jf, k) in enumerate(code):
        jt, jf = (labels[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf))
        if not (0 <= jt <= 255 and 0 <= jf <= 255):
            raise ValueError(f"seccomp jump out of range at instruction {i}")
        out += struct.pack("=HBBI", op, jt, jf, k)
    return bytes(out)
