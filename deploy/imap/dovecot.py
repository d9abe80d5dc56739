#!/usr/bin/env python3
"""A throwaway Dovecot IMAP server for tests and local trials of the email connector.

Standard library only. It needs Debian's ``dovecot-imapd`` package; ``ensure`` installs
it when ``dovecot`` is missing and this process may use apt-get (root). The server
itself runs as the current user from a generated configuration in a temporary folder:
plaintext login on 127.0.0.1, one passwd-file user, Maildir mail under that folder, a
free port. Nothing outside the folder is touched and it is removed on stop.

    dovecot.py ensure            install dovecot-imapd if dovecot is missing
    dovecot.py run -- CMD ...    a server around CMD, with WARROOM_IMAP_HOST, _PORT,
                                 _USER and _PASSWORD set for it

A user without root: ask an administrator to install ``dovecot-imapd`` once (or point
``WARROOM_DOVECOT`` at a dovecot binary built or unpacked elsewhere); the server then
runs unprivileged.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "dovecot-imapd"
BINARY_ENV = "WARROOM_DOVECOT"
INSTALL_TIMEOUT = 600.0
START_TIMEOUT = 30.0
HOST = "127.0.0.1"


class DovecotUnavailable(RuntimeError):
    """Dovecot is not installed and could not be installed, or did not start."""


def find_binary() -> str | None:
    configured = os.environ.get(BINARY_ENV)
    if configured:
        return configured if Path(configured).exists() else None
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if Path(p).exists()), None
    )


def ensure_installed(log: Path | None = None) -> str:
    """The dovecot binary, installing ``dovecot-imapd`` with apt-get when it is missing
    (``apt-get update`` only when the package is unknown to apt). Raises
    :class:`DovecotUnavailable` saying why when that is not possible."""
    found = find_binary()
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise DovecotUnavailable(
            f"dovecot is not installed and this user (uid {os.geteuid()}) cannot install it: "
            f"ask an administrator for `apt-get install {PACKAGE}`, or set {BINARY_ENV} to a "
            "dovecot binary"
        )
    if shutil.which("apt-get") is None:
        raise DovecotUnavailable(
            f"dovecot is not installed and there is no apt-get to install {PACKAGE}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    known = (
        subprocess.run(
            ["apt-cache", "show", PACKAGE], capture_output=True, env=env, check=False
        ).returncode
        == 0
    )
    steps = [] if known else [["apt-get", "update"]]
    steps.append(["apt-get", "install", "-y", "--no-install-recommends", PACKAGE])
    for step in steps:
        try:
            done = subprocess.run(
                step, capture_output=True, env=env, timeout=INSTALL_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise DovecotUnavailable(
                f"`{' '.join(step)}` did not finish in {INSTALL_TIMEOUT:.0f} s"
            ) from None
        if log is not None:
            with log.open("ab") as out:
                out.write(done.stdout + done.stderr)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()[-5:]
            raise DovecotUnavailable(
                f"`{' '.join(step)}` failed with exit code {done.returncode}: " + " | ".join(tail)
            )
    found = find_binary()
    if found is None:
        raise DovecotUnavailable(f"{PACKAGE} installed but no dovecot binary found")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Server:
    host: str
    port: int
    user: str
    password: str
    folder: Path

    def env(self) -> dict[str, str]:
        return {
            "WARROOM_IMAP_HOST": self.host,
            "WARROOM_IMAP_PORT": str(self.port),
            "WARROOM_IMAP_USER": self.user,
            "WARROOM_IMAP_PASSWORD": self.password,
        }


def _unprivileged(names: Sequence[str]) -> str:
    for name in names:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name).pw_name
    raise DovecotUnavailable(f"expected one of the users {', '.join(names)}, found none")


def _config(folder: Path, port: int, user: str, password: str) -> Path:
    me = pwd.getpwuid(os.getuid())
    group = grp.getgrgid(os.getgid()).gr_name
    if os.getuid() == 0:
        # Dovecot refuses to run its login and internal processes as root: they take the
        # package's unprivileged users; mail and authentication stay with root.
        login_user = _unprivileged(("dovenull", "nobody"))
        internal_user = _unprivileged(("dovecot", "nobody"))
        mail_user = pwd.getpwnam(internal_user)  # imap refuses to serve mail as uid 0
        internal_group = grp.getgrgid(mail_user.pw_gid).gr_name
        folder.chmod(0o755)
    else:
        login_user = internal_user = me.pw_name
        internal_group = group
        mail_user = me
    uid, gid = mail_user.pw_uid, mail_user.pw_gid
    (folder / "run").mkdir()
    (folder / "state").mkdir()
    (folder / "mail").mkdir()
    os.chown(folder / "mail", uid, gid)
    passwd = folder / "passwd"
    passwd.write_text(f"{user}:{{PLAIN}}{password}:{uid}:{gid}::{folder / 'mail'}\n")
    passwd.chmod(0o600)
    config = folder / "dovecot.conf"
    config.write_text(
        f"""\
base_dir = {folder / "run"}
state_dir = {folder / "state"}
log_path = {folder / "dovecot.log"}
protocols = imap
listen = {HOST}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
mail_location = maildir:{folder / "mail"}/%u
mail_privileged_group =
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={folder / "mail"}/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {HOST}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service auth {{
  user = {me.pw_name}
  group = {group}
}}
service auth-worker {{
  user = {me.pw_name}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0600
  }}
}}
"""
    )
    return config


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1) as s:
            if s.recv(64).startswith(b"* OK"):
                return
        if process.poll() is not None and not _master_running(log):
            break
        time.sleep(0.1)
    text = log.read_text(errors="replace") if log.exists() else "(no log)"
    raise DovecotUnavailable(
        f"dovecot did not answer on {HOST}:{port} within {START_TIMEOUT:.0f} s; "
        f"log:\n{text[-3000:]}"
    )


def _master_running(log: Path) -> bool:
    pid_file = log.parent / "run" / "master.pid"
    if not pid_file.exists():
        return False
    with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
        os.kill(int(pid_file.read_text().strip()), 0)
        return True
    return False


@contextlib.contextmanager
def server(user: str = "sales") -> Iterator[Server]:
    """A running dovecot (installed first when missing) for the length of the block."""
    binary = ensure_installed()
    folder = Path(tempfile.mkdtemp(prefix="warroom-imap-"))
    password = secrets.token_hex(12)
    port = free_port()
    config = _config(folder, port, user, password)
    log = folder / "dovecot.log"
    process = subprocess.Popen(
        [binary, "-F", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "stderr.log").open("wb"),
        start_new_session=True,
    )
    try:
        _wait_listening(port, process, log)
        yield Server(HOST, port, user, password, folder)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ensure", help=f"install {PACKAGE} when dovecot is missing")
    run = commands.add_parser("run", help="a throwaway server around a command")
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.command == "ensure":
            print(ensure_installed())
            return 0
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            parser.error("run: expected a command after --")
        with server() as running:
            print(f"dovecot on {running.host}:{running.port} (user {running.user})", flush=True)
            return subprocess.run(cmd, env={**os.environ, **running.env()}, check=False).returncode
    except DovecotUnavailable as exc:
        print(f"dovecot.py: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
