"""``python -m emulators.twilio --port P``: the Twilio REST emulator as a process."""

from emulators.twilio.rest import main

main()
