"""The sandbox launcher: run as ``python -I -S -B launcher.py CONFIG`` by the caller, it starts the sandboxed
child (namespaces, the allow-listed file-system view of fs_view.py, rlimits, credentials), execs the harness in it, relays the child's wait status on
the control fd, and kills whatever the child left. Standard library only; never imported by the child.

Isolation, strongest first: ``namespace`` (new PID, mount, network, IPC and UTS namespaces; user namespace too when
not root) or ``basic`` (as root a fresh uid whose processes are all killed afterwards; as a user a sub-reaper that
kills leftover descendants). See docs/sandbox.md.
"""

import os
import sys

RESULT_FD = 3  # harness -> parent: "<nonce> <event> ..." lines
NONCE_FD = 4  # parent -> harness: the nonce, read and closed before the candidate runs
SETUP_FAILED_EXIT = 125

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MS_NOATIME, _MS_NODIRATIME, _MS_BIND, _MS_REC, _MS_PRIVATE = 1024, 2048, 4096, 16384, 1 << 18

_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS = 1, 36, 38
_SANDBOX_HOME = "/tmp/sandbox"  # the program's working directory in namespace mode (on the private tmpfs)

def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return libc

def _check(ret, what):
    if ret != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")

def _mount(libc, source, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")

def traversable(path, uid, gid):
    """Whether ``uid:gid`` may enter directory ``path`` (its x bit for owner, group or other)."""
    st = os.stat(path)
    if st.st_uid == uid:
        return bool(st.st_mode & 0o100)
    if st.st_gid == gid:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)

_SCRATCH_MOUNTS = ("/tmp", "/var/tmp", "/dev/shm")  # a private tmpfs each in namespace mode
_MNT_DETACH = 2
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}

def _make_mountpoint(path, like):
    """Create ``path`` (and its parents) as a directory or an empty file, matching what ``like`` is."""
    if os.path.isdir(like):
        os.makedirs(path, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        if not os.path.lexists(path):
            open(path, "a").close()

def _bind_read_only(libc, source, target):
    """Bind ``source`` at ``target`` read-only, keeping its noexec / noatime flags (a user namespace may not drop
    them; statvfs's ST_ bits equal the MS_ bits for these three)."""
    _make_mountpoint(target, source)
    _mount(libc, source, target, None, _MS_BIND | _MS_REC)
    kept = os.statvfs(source).f_flag & (_MS_NOEXEC | _MS_NOATIME | _MS_NODIRATIME)
    _mount(libc, None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV | kept)

def _pivot_root(libc, new_root):
    """Make ``new_root`` the root and detach the old one (``pivot_root(".", ".")``, then unmount ".")."""
    import platform

    os.chdir(new_root)
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(f"pivot_root: unknown syscall number on {platform.machine()}")
    _check(libc.syscall(number, b".", b"."), "pivot_root")
    _check(libc.umount2(b".", _MNT_DETACH), "umount old root")
    os.chdir("/")

def _build_fs_view(libc, cfg):
    """Namespace mode, still root in the new mount namespace: build the allow-listed root described in
    ``egspo.sandbox.fs_view`` on a tmpfs, pivot into it, and create the working directory. Returns its path."""
    view, uid, gid = cfg["fs_view"], cfg["uid"], cfg["gid"]
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    root = os.path.join(cfg["staging"], "root")
    os.mkdir(root, 0o755)
    _mount(libc, "tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=4m,mode=0755")
    size = f"size={cfg['tmpfs_bytes']}"
    for point in _SCRATCH_MOUNTS:  # first: an interpreter installed under /tmp is bound inside it below
        os.makedirs(root + point, mode=0o755, exist_ok=True)
        _mount(libc, "tmpfs", root + point, "tmpfs", _MS_NOSUID | _MS_NODEV, f"{size},mode=1777")
    for path in view["visible"]:
        if os.path.islink(path):
            os.makedirs(os.path.dirname(root + path), mode=0o755, exist_ok=True)
            os.symlink(os.readlink(path), root + path)
        else:
            _bind_read_only(libc, path, root + path)
    for link, target in view["links"]:
        if not os.path.lexists(root + link):
            os.makedirs(os.path.dirname(root + link), mode=0o755, exist_ok=True)
            os.symlink(target, root + link)
    for directory in view["covered"]:  # an empty directory over every package directory ...
        os.makedirs(root + directory, mode=0o755, exist_ok=True)
        _mount(libc, "tmpfs", root + directory, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    for package in view["packages"]:  # ... holding only the packages the tests import
        _bind_read_only(libc, package, root + package)
    for directory in view["covered"]:
        _mount(libc, None, root + directory, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, "size=1m")
    os.makedirs(root + "/dev", mode=0o755, exist_ok=True)
    for device in view["devices"]:
        if os.path.exists(device):
            _make_mountpoint(root + device, device)
            _mount(libc, device, root + device, None, _MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    os.makedirs(root + "/proc", mode=0o555, exist_ok=True)
    _mount(libc, "proc", root + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    os.mkdir(root + _SANDBOX_HOME, 0o700)
    if uid is not None:
        os.chown(root + _SANDBOX_HOME, uid, gid)
    _pivot_root(libc, root)
    _mount(libc, None, "/", None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, "size=4m,mode=0755")
    return _SANDBOX_HOME

def _child_exec(cfg, libc, alive_r, job_bytes):
    """In the forked child: file-system view, limits, credentials, then exec the harness. Never returns."""
    import resource
    import select

    if cfg["mode"] == "namespace":
        workdir = _build_fs_view(libc, cfg)
        with open(os.path.join(workdir, "job.bin"), "wb") as f:
            f.write(job_bytes)
        if cfg["uid"] is not None:
            os.chown(os.path.join(workdir, "job.bin"), cfg["uid"], cfg["gid"])
    else:
        workdir = cfg["staging"]
    os.chdir(workdir)
    lim = cfg["limits"]
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (lim["as_bytes"], lim["as_bytes"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["fsize_bytes"], lim["fsize_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if cfg["uid"] is not None:
        os.setgroups([])
        os.setgid(cfg["gid"])
        os.setuid(cfg["uid"])
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    # Set after the uid change (a credential change clears it); then make sure the launcher did not die first.
    _check(libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0), "prctl(PDEATHSIG)")
    if select.select([alive_r], [], [], 0)[0]:
        os._exit(SETUP_FAILED_EXIT)
    os.dup2(cfg["result_fd"], RESULT_FD)
    os.dup2(cfg["nonce_fd"], NONCE_FD)
    os.closerange(NONCE_FD + 1, 65536)
    python = cfg["python"]
    os.execve(python, [python, "-I", "-B", "-c", cfg["harness_source"], str(RESULT_FD), str(NONCE_FD)], {})

def _write_user_maps(uid, gid):
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")

def _children_of(pid):
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat_line = f.read()
            except OSError:
                continue
            if int(stat_line.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(name))
    return kids

def launcher_main(config_path):
    """Start the sandboxed child, relay its wait status on the control fd, and clean up everything it left."""
    import marshal
    import signal

    with open(config_path, "rb") as f:
        cfg = marshal.load(f)
    ctl = cfg["control_fd"]

    def report(msg):
        os.write(ctl, (msg + "\n").encode())

    child = None
    child_reaped = False

    def reap_all():
        while True:  # every child of ours (the sandbox and, as sub-reaper, its orphans) until none is left
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                return
            except InterruptedError:
                continue

    def kill_everything():
        if child is None:
            return
        if cfg["mode"] == "namespace":
            if not child_reaped:  # init of the PID namespace: the kernel kills the rest before it is reaped
                os.kill(child, signal.SIGKILL)
        elif cfg["uid"] is not None:
            sweeper = os.fork()
            if sweeper == 0:  # every process of the sandbox uid, wherever it went (kill(-1) skips the caller)
                try:
                    os.setuid(cfg["uid"])
                    os.kill(-1, signal.SIGKILL)
                finally:
                    os._exit(0)
        else:
            for _ in range(1000):  # orphans re-parent to us (sub-reaper); kill until none is left
                kids = _children_of(os.getpid())
                if not kids:
                    break
                for k in kids:
                    try:
                        os.kill(k, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    try:
                        os.waitpid(k, 0)
                    except ChildProcessError:
                        pass
        reap_all()

    def on_term(signum, frame):
        kill_everything()
        os._exit(SETUP_FAILED_EXIT)

    signal.signal(signal.SIGTERM, on_term)
    try:
        libc = _libc()
        with open(os.path.join(cfg["staging"], "job.bin"), "rb") as f:
            job_bytes = f.read()
        if cfg["mode"] == "namespace":
            flags = _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS
            if os.geteuid() != 0:
                flags |= _CLONE_NEWUSER
            _check(libc.unshare(flags), "unshare")
            if flags & _CLONE_NEWUSER:
                _write_user_maps(cfg["caller_uid"], cfg["caller_gid"])
        else:
            _check(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(CHILD_SUBREAPER)")
        alive_r, alive_w = os.pipe()
        child = os.fork()
        if child == 0:
            try:
                os.close(alive_w)
                _child_exec(cfg, libc, alive_r, job_bytes)
            except BaseException as exc:  # noqa: BLE001 - report any set-up failure, never run the program
                try:
                    report(f"error {type(exc).__name__}: {exc}")
                finally:
                    os._exit(SETUP_FAILED_EXIT)
        os.close(alive_r)
        os.close(cfg["result_fd"])
        os.close(cfg["nonce_fd"])
        while True:
            try:
                _, status = os.waitpid(child, 0)
                child_reaped = True
                break
            except InterruptedError:
                continue
        kill_everything()
        report(f"exit {status}")
        os._exit(0)
    except BaseException as exc:  # noqa: BLE001
        kill_everything()
        report(f"error {type(exc).__name__}: {exc}")
        os._exit(SETUP_FAILED_EXIT)

if __name__ == "__main__":
    launcher_main(sys.argv[1])
