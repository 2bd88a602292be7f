"""The seccomp filter of the code sandbox: system calls a sample never needs, refused with EPERM.

bwrap loads it with `--seccomp FD`; the classic-BPF program is built here with `struct`, so no libseccomp is needed.
"""

from __future__ import annotations

import os
import struct

# System calls a sample never needs, refused with EPERM, by number on (x86_64, aarch64). Most are what Docker's
# default profile refuses; a few are here for what they let a sample hold or see outside its limits:
# - memory outside RLIMIT_AS: memfds (`memfd_create`, `memfd_secret`: file pages no rlimit counts, each under the
#   file-size limit) and System V IPC (`shmget` segments stay when detached; `msgget` and `semget` queue kernel
#   memory), POSIX message queues (`mq_open`);
# - host kernel state shared across samples: the keyrings (`keyctl`, `add_key`, `request_key`: the session keyring
#   of the shell that launched us holds its secrets, and a key added there is read by the next sample);
# - kernel attack surface a sample has no use for: io_uring, bpf, perf events, userfaultfd, ptrace and
#   process_vm_*, mounts and namespaces, modules, kexec, clocks, swap, quotas, NUMA policy.
SECCOMP_DENIED: dict[str, tuple[int, int]] = {
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "memfd_create": (319, 279),
    "memfd_secret": (447, 447),
    "shmget": (29, 194),
    "msgget": (68, 186),
    "semget": (64, 190),
    "mq_open": (240, 180),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "pidfd_getfd": (438, 438),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "unshare": (272, 97),
    "setns": (308, 268),
    "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264),
    "fanotify_init": (300, 262),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "reboot": (169, 142),
    "acct": (163, 89),
    "syslog": (103, 116),
    "vhangup": (153, 58),
    "quotactl": (179, 60),
    "quotactl_fd": (443, 443),
    "settimeofday": (164, 170),
    "clock_settime": (227, 112),
    "clock_adjtime": (305, 266),
    "adjtimex": (159, 171),
    "mbind": (237, 235),
    "set_mempolicy": (238, 237),
    "migrate_pages": (256, 238),
    "move_pages": (279, 239),
}
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """The classic-BPF program bwrap loads with `--seccomp FD`: refuse `SECCOMP_DENIED` with EPERM, allow the rest.

    Calls from another ABI than the host's (32-bit `int 0x80`, x32 on x86_64), whose numbers differ, are all
    refused. None on a machine we have no syscall numbers for (the sandbox then runs without the filter).
    """
    machine = machine or os.uname().machine
    if machine not in AUDIT_ARCH:
        return None
    column = 0 if machine == "x86_64" else 1
    numbers = sorted({nrs[column] for nrs in SECCOMP_DENIED.values()})
    ld_w_abs, jeq_k, jge_k, ret_k = 0x20, 0x15, 0x35, 0x06
    allow, deny = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW; SECCOMP_RET_ERRNO | EPERM
    program: list[tuple[int, int, int, int]] = [(ld_w_abs, 0, 0, 4)]  # seccomp_data.arch
    program.append((jeq_k, 0, 0xFF, AUDIT_ARCH[machine]))  # jf patched to the deny below
    program.append((ld_w_abs, 0, 0, 0))  # seccomp_data.nr
    if machine == "x86_64":
        program.append((jge_k, 0xFF, 0, X32_SYSCALL_BIT))
    for nr in numbers:
        program.append((jeq_k, 0xFF, 0, nr))
    program.append((ret_k, 0, 0, allow))
    deny_at = len(program)
    program.append((ret_k, 0, 0, deny))
    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(program):
        jt, jf = (deny_at - i - 1 if j == 0xFF else j for j in (jt, jf))
        out += struct.pack("=HBBI", code, jt, jf, k)
    return bytes(out)
