"""Real nginx (Debian's) in front of gateway nodes, running ``deploy/nginx/herald.conf``.

The deployment file is used as written; only the addresses change: its
``upstream`` servers become the test's nodes and its ``listen`` a free
loopback port. nginx runs in the foreground with a prefix, config, logs and
temp directories of its own in a temp dir. A test that needs nginx and cannot
start it fails with nginx's log (``scripts/install-system-deps.sh`` installs it).
``running_nginx(..., canary=[...])`` runs ``deploy/nginx/canary.conf`` the same way,
with its njs script and Debian's ``libnginx-mod-http-js`` module loaded.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.redis import free_port
from tests.support.waiting import wait_until_sync

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "herald.conf"
CANARY = DEPLOY.with_name("canary.conf")
#: Debian's nginx JavaScript module (libnginx-mod-http-js), for canary.conf.
JS_MODULE = "/usr/lib/nginx/modules/ngx_http_js_module.so"

_MAIN = """
{modules}
daemon off;
worker_processes 1;
worker_rlimit_nofile {files};
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections {connections}; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/herald.conf;
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        raise RuntimeError("nginx is not installed: run scripts/install-system-deps.sh")
    return found


def site_config(upstreams: Sequence[int], port: int, template: str | None = None) -> str:
    """``deploy/nginx/herald.conf`` pointed at ``upstreams`` and listening on ``port``."""
    text = _servers(template if template is not None else DEPLOY.read_text(), upstreams)
    text, listens = re.subn(r"^(\s*)listen\s+\S+;", rf"\1listen 127.0.0.1:{port};", text, flags=re.MULTILINE)
    assert listens == 1, "the deployment file has one listen directive"
    return text


def _servers(text: str, upstreams: Sequence[int]) -> str:
    """The first run of ``server host:port ...;`` lines in ``text`` replaced by ``upstreams``."""
    servers = re.findall(r"^(\s*)server\s+\S+:\d+(.*);$", text, flags=re.MULTILINE)
    assert servers, "the deployment file lists its upstream servers"
    indent, options = servers[0]
    nodes = "".join(f"{indent}server 127.0.0.1:{p}{options};\n" for p in upstreams)
    return re.sub(r"(^\s*server\s+\S+:\d+.*;\n)+", nodes, text, count=1, flags=re.MULTILINE)


def canary_site_config(stable: Sequence[int], canary: Sequence[int], port: int, directory: Path) -> str:
    """``deploy/nginx/canary.conf`` with its pools pointed at ``stable`` and ``canary``,
    listening on ``port``, its njs script copied into ``directory``."""
    shutil.copy(CANARY.with_name("herald_user.js"), directory / "herald_user.js")
    text = CANARY.read_text().replace("/etc/nginx/njs/", f"{directory}/")
    for pool, ports in (("herald_stable", stable), ("herald_canary", canary)):
        block = re.search(rf"upstream {pool} \{{(.*?)\n\}}", text, flags=re.DOTALL)
        assert block, f"the canary file has an upstream {pool}"
        text = text.replace(block[1], _servers(block[1] + "\n", ports).removesuffix("\n"))
    text, listens = re.subn(r"^(\s*)listen\s+\S+;", rf"\1listen 127.0.0.1:{port};", text, flags=re.MULTILINE)
    assert listens == 1, "the canary file has one listen directive"
    return text


@dataclass
class Nginx:
    port: int
    dir: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


@contextlib.contextmanager
def running_nginx(
    upstreams: Sequence[int],
    *,
    connections: int = 1024,
    canary: Sequence[int] | None = None,
) -> Iterator[Nginx]:
    """``connections``: nginx's worker_connections (two per proxied stream). ``canary``:
    run ``deploy/nginx/canary.conf`` instead, ``upstreams`` its stable pool and these
    nodes its canary pool (with the njs module loaded)."""
    directory = Path(tempfile.mkdtemp(prefix="herald-nginx-"))
    port = free_port()
    if canary is None:
        site, modules = site_config(upstreams, port), ""
    else:
        site, modules = canary_site_config(upstreams, canary, port, directory), f"load_module {JS_MODULE};"
    (directory / "herald.conf").write_text(site)
    (directory / "nginx.conf").write_text(
        _MAIN.format(dir=directory, connections=connections, files=connections + 64, modules=modules)
    )
    binary = nginx_binary()
    check = subprocess.run(
        [
            binary,
            "-t",
            "-p",
            str(directory),
            "-c",
            str(directory / "nginx.conf"),
            "-e",
            str(directory / "error.log"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"nginx refused the configuration:\n{check.stderr}")
    process = subprocess.Popen(
        [
            binary,
            "-p",
            str(directory),
            "-c",
            str(directory / "nginx.conf"),
            "-e",
            str(directory / "error.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Nginx(port, directory, process)
    try:
        with contextlib.suppress(TimeoutError):
            wait_until_sync(lambda: _accepts(port) or process.poll() is not None, timeout=10)
        if process.poll() is not None or not _accepts(port):
            raise RuntimeError(f"nginx did not start:\n{server.log()}")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        shutil.rmtree(directory, ignore_errors=True)
