"""The switchover and failover cases' client (deploy/continuity.py, shared with bench/continuity.py)."""

from deploy.continuity import Ack, AckClient, multi_host_dsn

__all__ = ["Ack", "AckClient", "multi_host_dsn"]
