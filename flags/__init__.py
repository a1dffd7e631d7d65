"""Routing flags: sticky percentage rollout, operator overrides and the realtime circuit breaker."""
