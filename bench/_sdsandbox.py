"""A minimal driver for ../shared/tools/sd-sandbox (the real systemd 252 as PID 1 in private
namespaces), for benchmarks: standard library only, unlike tests/helpers/sandbox.py, which imports
the checkout's cortex_hook. One instance per name and directory, always brought `down`.

Inside, /tmp, /work and the venvs are the host's; /run and /dev are the sandbox's own; the clocks
(CLOCK_MONOTONIC included) are the host's, so the unit timestamps systemd records
(`...TimestampMonotonic`, microseconds) compare with `time.monotonic()` here.
"""

import os
import shutil
import subprocess

import common as C

SD_SANDBOX = os.path.join(C.SHARED, "tools", "sd-sandbox", "sd-sandbox.sh")


def missing():
    """Why no sandbox can run here (a sentence), or None."""
    if not os.path.exists(SD_SANDBOX):
        return f"sd-sandbox ({SD_SANDBOX}) is missing"
    if os.geteuid() != 0:
        return "sd-sandbox needs root (it boots systemd in namespaces)"
    if not (shutil.which("nsenter") and shutil.which("unshare")):
        return "nsenter/unshare (util-linux) are missing"
    return None


class Sandbox:
    """One sandbox named NAME, its state under DIRECTORY (which the caller removes afterwards)."""

    def __init__(self, name, directory):
        self.name, self.dir = name, directory
        self.env = dict(os.environ, SDSANDBOX_NAME=name, SDSANDBOX_DIR=directory)
        self.running = False

    def up(self):
        """Boot it; True once systemd runs (set before the call returns, so `down` always follows)."""
        self.running = True
        r = subprocess.run([SD_SANDBOX, "up"], env=self.env, capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            raise SystemExit(f"bench: sd-sandbox up failed:\n{r.stderr}{r.stdout}")

    def down(self):
        """`sd-sandbox.sh down` (once): systemd exits, and the script checks nothing of it is left."""
        if not self.running:
            return
        self.running = False
        r = subprocess.run([SD_SANDBOX, "down"], env=self.env, capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            C.log(f"sd-sandbox down exited {r.returncode}: {r.stderr.strip()}")

    def run(self, *cmd, check=False, timeout=120):
        """CMD inside every namespace of the sandbox."""
        r = subprocess.run([SD_SANDBOX, "exec", *cmd], env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise SystemExit(f"bench: in the sandbox, {' '.join(cmd)} exited {r.returncode}:\n{r.stderr}{r.stdout}")
        return r

    def systemctl(self, *args, check=False):
        return self.run("systemctl", *args, check=check)

    def show(self, unit, *props):
        """{property: value} from `systemctl show UNIT -p ...`."""
        out = self.systemctl("show", unit, *[f"-p{p}" for p in props], check=True).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def write_unit(self, name, text):
        """/etc/systemd/system/NAME inside (NAME may be `UNIT.d/FILE.conf`)."""
        path = os.path.join(self.dir, "etc-systemd", "system", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    def journal(self, unit, lines=30):
        """The last LINES of UNIT's journal (for error messages)."""
        self.run("journalctl", "--sync")
        return self.run("journalctl", "-u", unit, "--no-pager", "-o", "cat", "-n", str(lines)).stdout
