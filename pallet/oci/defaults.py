"""Docker's defaults, as Pallet's own data: the capability set and the seccomp profile of `docker run`.

The profile allows the same syscalls under the same conditions as moby's profiles/seccomp/default.json:
an allow list for everyone, blocks that depend on the container's capabilities (a container with
CAP_SYS_ADMIN may mount, one with CAP_SYS_TIME may set the clock, ...), blocks for one architecture,
and argument conditions (clone without namespace flags, personality with the harmless personas, no
AF_VSOCK sockets). Everything else fails with EPERM, and clone3 with ENOSYS so that libc falls back to
clone, whose flags can be checked.

    from pallet.oci.defaults import DOCKER_DEFAULT_CAPABILITIES, docker_seccomp_profile
    spec["linux"]["seccomp"] = docker_seccomp_profile(list(DOCKER_DEFAULT_CAPABILITIES))

stdlib only, like the rest of oci/.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: annotations only
    from typing import Any


# `docker run` without --cap-add/--cap-drop (moby oci/caps/defaults.go)
DOCKER_DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)  # fmt: skip

# allowed for every container, on every architecture (a name the kernel or libseccomp lacks is skipped)
_ALLOWED = """
accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32 clock_adjtime
clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64 clock_nanosleep
clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2 dup3 epoll_create
epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2
execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir
fchmod fchmodat fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork
fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex
futex_time64 futex_waitv futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32
getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority
getrandom getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid
getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr inotify_add_watch
inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents
io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit io_uring_enter io_uring_register
io_uring_setup ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32
lgetxattr link linkat listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64
madvise membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap
mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock munlockall munmap
name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open pidfd_send_signal
pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2
prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink
readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr rename
renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo
rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity
sched_getattr sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler
sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop semtimedop_time64 send
sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32
setgroups setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid setresgid32 setresuid
setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid setsockopt set_thread_area
set_tid_address setuid setuid32 setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4
sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync
sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun timer_gettime
timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64
timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat
utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
""".split()

# the namespace flags of clone(2): CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
_CLONE_NS_FLAGS = 0x7E020000
_AF_VSOCK = 40
# personas that change nothing dangerous: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, query
_PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)


class _Block:
    """Syscalls allowed (or answered with an errno) when the container's caps and arch say so (a plain
    class: a dataclass would import dataclasses, ~3.5 ms of every `pallet run`)."""

    def __init__(
        self,
        names: tuple[str, ...],
        needs_cap: str = "",  # only with this capability
        unless_cap: str = "",  # only without this capability
        arches: tuple[str, ...] = (),  # only on these architectures (uname -m spelling)
        not_arches: tuple[str, ...] = (),
        min_kernel: tuple[int, int] = (0, 0),
        args: tuple[dict[str, Any], ...] = (),
        errno_ret: int = 0,  # 0: allow; else SCMP_ACT_ERRNO with this errno
    ) -> None:
        self.names = names
        self.needs_cap = needs_cap
        self.unless_cap = unless_cap
        self.arches = arches
        self.not_arches = not_arches
        self.min_kernel = min_kernel
        self.args = args
        self.errno_ret = errno_ret


def _b(names: str, **kw: Any) -> _Block:
    return _Block(tuple(names.split()), **kw)


_S390 = ("s390", "s390x")
_BLOCKS: tuple[_Block, ...] = (
    _b(
        "process_vm_readv process_vm_writev ptrace", min_kernel=(4, 8)
    ),  # ptrace can bypass seccomp before 4.8
    _b("socket", args=({"index": 0, "value": _AF_VSOCK, "op": "SCMP_CMP_NE"},)),
    *(_b("personality", args=({"index": 0, "value": p, "op": "SCMP_CMP_EQ"},)) for p in _PERSONAS),
    _b("sync_file_range2 swapcontext", arches=("ppc64le",)),
    _b(
        "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
        arches=("arm", "aarch64"),
    ),  # fmt: skip
    _b("arch_prctl", arches=("x86_64", "x32")),
    _b("modify_ldt", arches=("x86_64", "x32", "x86")),
    _b("s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr", arches=_S390),
    _b("riscv_flush_icache", arches=("riscv64",)),
    _b("open_by_handle_at", needs_cap="CAP_DAC_READ_SEARCH"),
    _b(
        "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount mount_setattr "
        "move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog "
        "umount umount2 unshare",
        needs_cap="CAP_SYS_ADMIN",
    ),  # fmt: skip
    # without CAP_SYS_ADMIN: threads and forks, but no new namespaces (s390 swaps clone's first two args)
    _b(
        "clone",
        unless_cap="CAP_SYS_ADMIN",
        not_arches=_S390,
        args=({"index": 0, "value": _CLONE_NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"},),
    ),  # fmt: skip
    _b(
        "clone",
        unless_cap="CAP_SYS_ADMIN",
        arches=_S390,
        args=({"index": 1, "value": _CLONE_NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"},),
    ),  # fmt: skip
    # clone3 keeps its flags in memory a filter cannot read: ENOSYS makes libc fall back to clone
    _b("clone3", unless_cap="CAP_SYS_ADMIN", errno_ret=38),
    _b("reboot", needs_cap="CAP_SYS_BOOT"),
    _b("chroot", needs_cap="CAP_SYS_CHROOT"),
    _b("delete_module init_module finit_module", needs_cap="CAP_SYS_MODULE"),
    _b("acct", needs_cap="CAP_SYS_PACCT"),
    _b(
        "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
        needs_cap="CAP_SYS_PTRACE",
    ),
    _b("iopl ioperm", needs_cap="CAP_SYS_RAWIO"),
    _b("settimeofday stime clock_settime clock_settime64", needs_cap="CAP_SYS_TIME"),
    _b("vhangup", needs_cap="CAP_SYS_TTY_CONFIG"),
    _b("get_mempolicy mbind set_mempolicy set_mempolicy_home_node", needs_cap="CAP_SYS_NICE"),
    _b("syslog", needs_cap="CAP_SYSLOG"),
    _b("bpf", needs_cap="CAP_BPF"),
    _b("perf_event_open", needs_cap="CAP_PERFMON"),
)

# the seccomp architectures a filter must cover on each host: the native one and those it can run
_ARCHES = {
    "x86_64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "aarch64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"),
    "mips64": ("SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32"),
    "mips64n32": ("SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64"),
    "mipsel64": ("SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32"),
    "mipsel64n32": ("SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64"),
    "s390x": ("SCMP_ARCH_S390X", "SCMP_ARCH_S390"),
    "riscv64": ("SCMP_ARCH_RISCV64",),
}
_UNAME_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "i386": "x86", "i686": "x86", "armv7l": "arm"}


def _kernel() -> tuple[int, int]:
    rel = os.uname().release.split("-")[0].split(".")
    try:
        return int(rel[0]), int(rel[1])
    except (IndexError, ValueError):
        return (0, 0)


def _applies(b: _Block, caps: set[str], arch: str, kernel: tuple[int, int]) -> bool:
    if b.needs_cap and b.needs_cap not in caps:
        return False
    if b.unless_cap and b.unless_cap in caps:
        return False
    if b.arches and arch not in b.arches:
        return False
    if arch in b.not_arches:
        return False
    return kernel >= b.min_kernel


def docker_seccomp_profile(
    caps: list[str], *, arch: str | None = None, kernel: tuple[int, int] | None = None
) -> dict[str, Any]:
    """A runtime-spec `linux.seccomp` object equivalent to Docker's default for a container whose
    bounding set is `caps` (CAP_ names), on `arch` (uname -m spelling; the host's by default)."""
    arch = arch or os.uname().machine
    arch = _UNAME_ARCH.get(arch, arch)
    have = {c.upper() if c.upper().startswith("CAP_") else "CAP_" + c.upper() for c in caps}
    kern = kernel or _kernel()
    syscalls: list[dict[str, Any]] = [{"names": list(_ALLOWED), "action": "SCMP_ACT_ALLOW"}]
    for b in _BLOCKS:
        if not _applies(b, have, arch, kern):
            continue
        rule: dict[str, Any] = {"names": list(b.names), "action": "SCMP_ACT_ALLOW"}
        if b.errno_ret:
            rule.update(action="SCMP_ACT_ERRNO", errnoRet=b.errno_ret)
        if b.args:
            rule["args"] = [dict(a) for a in b.args]
        syscalls.append(rule)
    profile: dict[str, Any] = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "syscalls": syscalls}
    if arch in _ARCHES:
        profile["architectures"] = list(_ARCHES[arch])
    return profile
