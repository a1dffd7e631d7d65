"""Shared state: rollout config, breaker state and window, audit log, call records, conversations."""

from router.store.base import AuditEntry, StateStore, StoreUnavailable

__all__ = ["AuditEntry", "StateStore", "StoreUnavailable"]
