"""Twilio, emulated: the REST API (call updates) and the phone network side (calls placed at the router).

``rest.TwilioRestEmulator`` is the fake ``api.twilio.com``; ``caller.TwilioCallSimulator`` places calls the way
Twilio does (signed webhooks, TwiML execution, Media Streams) and measures what the caller hears.
"""
