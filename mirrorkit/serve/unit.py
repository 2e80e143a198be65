"""``serve --print-systemd-unit``: a unit file running this very command as a service.

The unit repeats the options given (absolute paths, as systemd needs), restarts the
server if it fails, and stops it with SIGTERM, which the server honours within 5 s.
The sandboxing keeps it read-only on the system; the bundle and key files stay readable.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from mirrorkit.serve.run import ServeOptions

UNIT = """\
[Unit]
Description=mirrorkit read-only registry serving bundle {name}
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart={command}
Restart=on-failure
RestartSec=5
KillSignal=SIGTERM
TimeoutStopSec=10
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
AmbientCapabilities=CAP_NET_BIND_SERVICE

[Install]
WantedBy=multi-user.target
"""


def _arg(value: str) -> str:
    """One ExecStart word: systemd expands % and $, and splits on spaces unless quoted."""
    value = value.replace("%", "%%").replace("$", "$$")
    if any(c in value for c in ' \t"\\\''):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def systemd_unit(opts: ServeOptions) -> str:
    program = shutil.which("mirrorkit")
    words = [program] if program else [sys.executable, "-m", "mirrorkit.cli.main"]
    words += ["serve", *(str(p.resolve()) for p in opts.bundle), "--addr", f"{opts.host}:{opts.port}"]
    if opts.tls_cert and opts.tls_key:
        words += ["--tls-cert", str(opts.tls_cert.resolve()), "--tls-key", str(opts.tls_key.resolve())]
    if opts.htpasswd:
        words += ["--htpasswd", str(opts.htpasswd.resolve())]
    if opts.prefix is not None:
        words += ["--prefix", opts.prefix or "/"]
    words += ["--log-format", opts.log_format]
    if opts.trust_checksums:
        words.append("--trust-checksums")
    name = Path(opts.bundle[0]).name if opts.bundle else "?"
    return UNIT.format(name=name, command=" ".join(_arg(w) for w in words))
