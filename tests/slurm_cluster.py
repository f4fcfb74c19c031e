"""A real one-node Slurm cluster on this machine, for the tests marked ``slurm``.

Debian's ``slurm-wlm`` packages are installed with apt-get when missing; then a private ``munged`` and one
``slurmctld`` + ``slurmd`` pair are started as root with every config, socket, spool and state file inside one
temporary directory (free TCP ports, nothing under /etc is touched). The node advertises one schedulable fake GPU
(``GresTypes=gpu``, gres.conf ``Name=gpu File=/dev/null``), so ``--gpus=1`` / ``--gres=gpu:1`` jobs are scheduled
on it. Accounting is off (no slurmdbd): job status comes from ``squeue``, and ``MinJobAge`` keeps finished jobs
visible long enough for Snakemake's executor plugin to see them finish.

Use :func:`start_cluster` and :meth:`SlurmCluster.stop`; every command that talks to the cluster must run with
:attr:`SlurmCluster.env` (it carries ``SLURM_CONF``). Inside a job, snakemake-executor-plugin-slurm-jobstep runs
the rule through ``srun`` with every ``SLURM_*`` variable but the job's identity removed, ``SLURM_CONF`` included,
so ``srun`` reads the compiled-in ``/etc/slurm/slurm.conf`` as on a real cluster: the cluster links its
``slurm.conf`` and ``gres.conf`` there for its lifetime (and refuses to replace a real file of the machine's own).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SLURM_PACKAGES = ("slurm-wlm", "slurmctld", "slurmd", "slurm-client", "munge")
SYSTEM_CONF_DIR = Path("/etc/slurm")
SLURM_BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "munged", "mungekey")
# Finished jobs stay visible to squeue (the plugin wants >= 3 x its first check interval) and to the tests'
# `scontrol show job` checks for the whole of a long test run.
MIN_JOB_AGE_S = 3600


class SlurmUnavailable(RuntimeError):
    """The machine cannot run a Slurm cluster (the message says why); the tests must fail with it."""


def _run(cmd: list[str], *, env: dict | None = None, timeout: float = 120, check: bool = True) -> str:
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise SlurmUnavailable(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def missing_binaries() -> list[str]:
    # sbin is not always on a non-login root PATH
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [b for b in SLURM_BINARIES if shutil.which(b, path=path) is None]


def _binary(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise SlurmUnavailable(f"{name} not found after installing {' '.join(SLURM_PACKAGES)}")
    return found


def ensure_installed() -> float:
    """Install the Debian Slurm + munge packages when any binary is missing; return seconds spent (0 if present)."""
    if not missing_binaries():
        return 0.0
    start = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update", "-q"], env=env, timeout=600)
    # policy-rc.d-free containers: the packages' postinst tries to start services; that may fail harmlessly,
    # so the check below (binaries present) decides, not apt's exit status alone.
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *SLURM_PACKAGES], env=env, timeout=900)
    still_missing = missing_binaries()
    if still_missing:
        raise SlurmUnavailable(f"after apt-get install, still missing: {still_missing}")
    return time.monotonic() - start


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_hardware() -> dict[str, str]:
    """What slurmd itself detects (``slurmd -C``): CPUs, sockets, cores, threads, RealMemory."""
    out = _run([_binary("slurmd"), "-C"])
    first = out.splitlines()[0]
    fields = dict(tok.split("=", 1) for tok in first.split() if "=" in tok)
    wanted = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    missing = [k for k in wanted if k not in fields]
    if missing:
        raise SlurmUnavailable(f"`slurmd -C` output lacks {missing}: {first!r}")
    return {k: fields[k] for k in wanted}


@dataclass
class SlurmCluster:
    root: Path                  # everything lives here
    conf: Path                  # slurm.conf
    node: str                   # the node's name (this host's short name)
    partition: str
    cpus: int
    real_memory_mb: int
    env: dict[str, str]         # os.environ + SLURM_CONF (pass to every Slurm client and to snakemake)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    startup_s: float = 0.0      # daemons started -> node idle in sinfo
    linked: list[Path] = field(default_factory=list)  # symlinks placed in /etc/slurm

    # -- client helpers -------------------------------------------------------------------------------------
    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        return _run(list(cmd), env=self.env, check=check, timeout=timeout)

    def node_state(self) -> str:
        return self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%T", check=False).strip()

    def show_job(self, job_id: str) -> dict[str, str]:
        """``scontrol -d -o show job`` as a dict (JobState, Restarts, JOB_GRES, TresPerJob, ...); {} once it is gone."""
        out = self.run("scontrol", "-d", "-o", "show", "job", str(job_id), check=False).strip()
        if not out or "Invalid job id" in out:
            return {}
        return dict(m.groups() for m in re.finditer(r"(\S+?)=(\S*)", out))

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still remembers (running, pending and finished within MinJobAge)."""
        out = self.run("scontrol", "-d", "-o", "show", "job", check=False)
        return [dict(m.groups() for m in re.finditer(r"(\S+?)=(\S*)", line)) for line in out.splitlines()
                if line.startswith("JobId=")]

    def log(self, daemon: str) -> str:
        path = self.root / "log" / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_job_state(self, job_id: str, states: set[str], timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.show_job(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} not in {states} after {timeout}s; last: {info.get('JobState')!r}\n"
                           f"slurmctld log tail:\n{self.log('slurmctld')[-3000:]}")

    # -- lifecycle ------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Cancel all jobs, stop the daemons by pid (TERM, then KILL), remove the state directory."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--user", "root", check=False)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        # munged daemonizes itself: its pid is in its pid file
        pid_file = self.root / "munge" / "munged.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        for link in self.linked:
            if link.is_symlink() and Path(os.readlink(link)).parent == self.root:
                link.unlink()
        shutil.rmtree(self.root, ignore_errors=True)

    def link_system_config(self) -> None:
        """Point /etc/slurm/{slurm,gres}.conf at this cluster's files (see the module docstring)."""
        SYSTEM_CONF_DIR.mkdir(parents=True, exist_ok=True)
        for name in ("slurm.conf", "gres.conf"):
            link = SYSTEM_CONF_DIR / name
            if link.is_symlink():
                target = Path(os.readlink(link))
                if target.exists() and target.resolve() != (self.root / name).resolve():
                    raise SlurmUnavailable(f"{link} points at {target}, another live test cluster's config; "
                                           "stop that cluster first")
                link.unlink()  # stale, from a test run that was killed
            elif link.exists():
                raise SlurmUnavailable(f"{link} is a real file: this machine has its own Slurm configuration, "
                                       "which the test cluster will not replace")
            link.symlink_to(self.root / name)
            self.linked.append(link)


def write_config(root: Path, *, partition: str = "debug", min_job_age: int = MIN_JOB_AGE_S) -> SlurmCluster:
    """Write slurm.conf + gres.conf for a one-node cluster on this host under ``root``."""
    node = socket.gethostname().split(".")[0]
    hw = _node_hardware()
    ctld_port, slurmd_port = _free_port(), _free_port()
    for sub in ("state", "spool", "log", "munge", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    os.chmod(root / "munge", 0o700)
    munge_socket = root / "munge" / "munge.socket"
    conf = root / "slurm.conf"
    conf.write_text(f"""# one-node test cluster (written by tests/slurm_cluster.py)
ClusterName=egspotest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}
SlurmdPidFile={root / 'run' / 'slurmd.pid'}
SlurmctldLogFile={root / 'log' / 'slurmctld.log'}
SlurmdLogFile={root / 'log' / 'slurmd.log'}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge={min_job_age}
KillWait=5
InactiveLimit=0
JobRequeue=1
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 {' '.join(f'{k}={v}' for k, v in hw.items())} Gres=gpu:1 State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
""")
    (root / "gres.conf").write_text(f"NodeName={node} Name=gpu File=/dev/null\n")
    env = dict(os.environ, SLURM_CONF=str(conf))
    return SlurmCluster(root=root, conf=conf, node=node, partition=partition, cpus=int(hw["CPUs"]),
                        real_memory_mb=int(hw["RealMemory"]), env=env)


def start_cluster(root: Path, *, partition: str = "debug", min_job_age: int = MIN_JOB_AGE_S,
                  timeout: float = 60) -> SlurmCluster:
    """Write the config, start munged + slurmctld + slurmd, wait until the node is idle in ``sinfo``."""
    if os.geteuid() != 0:
        raise PermissionError("a Slurm test cluster needs root (slurmd runs jobs as their users)")
    cluster = write_config(Path(root), partition=partition, min_job_age=min_job_age)
    cluster.link_system_config()
    munge_dir = cluster.root / "munge"
    key = munge_dir / "munge.key"
    _run([_binary("mungekey"), "--create", f"--keyfile={key}", "--force"])
    os.chmod(key, 0o600)
    start = time.monotonic()
    logs = cluster.root / "log"
    cluster.procs["munged"] = subprocess.Popen(
        [_binary("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={munge_dir / 'munge.socket'}",
         f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={logs / 'munged.log'}",
         f"--seed-file={munge_dir / 'munged.seed'}"],
        stdin=subprocess.DEVNULL, stdout=open(logs / "munged.out", "w"), stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: (munge_dir / "munge.socket").exists(), 10, "munged socket", cluster, "munged")
        for daemon in ("slurmctld", "slurmd"):
            cmd = [_binary(daemon), "-D", "-f", str(cluster.conf)]
            if daemon == "slurmctld":
                cmd.append("-c")  # clean start: no saved jobs
            else:
                cmd += ["-N", cluster.node]
            cluster.procs[daemon] = subprocess.Popen(cmd, env=cluster.env, stdin=subprocess.DEVNULL,
                                                     stdout=open(logs / f"{daemon}.out", "w"),
                                                     stderr=subprocess.STDOUT)
            if daemon == "slurmctld":
                _wait_for(lambda: cluster.run("scontrol", "ping", check=False).count("UP") > 0, timeout,
                          "slurmctld to answer scontrol ping", cluster, "slurmctld")
        _wait_for(lambda: cluster.node_state() == "idle", timeout, "the node to be idle in sinfo", cluster, "slurmd")
    except BaseException:
        cluster.stop()
        raise
    cluster.startup_s = time.monotonic() - start
    return cluster


def _wait_for(predicate, timeout: float, what: str, cluster: SlurmCluster, daemon: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                out = (cluster.root / "log" / f"{name}.out")
                raise SlurmUnavailable(f"{name} exited with {proc.returncode} while waiting for {what}:\n"
                                       f"{out.read_text(errors='replace')[-3000:] if out.exists() else ''}\n"
                                       f"{cluster.log(name)[-3000:]}")
        if predicate():
            return
        time.sleep(0.1)
    raise SlurmUnavailable(f"timed out after {timeout}s waiting for {what}; node state {cluster.node_state()!r}\n"
                           f"{daemon} log tail:\n{cluster.log(daemon)[-3000:]}")
