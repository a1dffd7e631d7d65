"""Local stand-ins for the cloud services voice-router talks to.

Each emulator speaks the real wire protocol over a real socket and can inject faults. They power the
offline demo, the benchmarks and the outage drills. Production code never imports this package; only the
local profile (``python -m router serve --local``) and the tests wire emulators in, explicitly.
"""
