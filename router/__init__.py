"""voice-router: routes Twilio calls between the legacy pipeline and Azure AI Voice Live."""
