"""What every test shares: Ctrl-C reaches the CLI processes the tests start.

A shell that starts a command in the background (`.ci/run &`, nohup) makes it
ignore SIGINT, and an ignored signal stays ignored across exec: the devmesh
processes a test starts would then never see the Ctrl-C the test sends them.
A handled signal is reset to its default across exec, so handling it here is
enough.
"""

from __future__ import annotations

import signal

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
