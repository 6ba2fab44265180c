"""``ark agent NODE``: the node agent (failover/node_agent.py) in the foreground, until stopped."""

from __future__ import annotations

import signal

import click

from ops.context import CliContext, metrics_options

pass_ctx = click.make_pass_decorator(CliContext)


@click.command("agent")
@click.argument("node")
@metrics_options
@pass_ctx
def agent(obj: CliContext, node: str, metrics_port: int | None, metrics_host: str) -> None:
    """Run the node agent of NODE: check its database every second, restart it locally first (runs until stopped).

    \b
    Checks: the server process (pid file, when the data directory is on this host), the listener,
    login + SELECT 1 within agent.check_timeout_s, writable on the primary, disk free under the data
    and WAL directories (agent.disk_min_free_pct), and the services the node's agent.services name.
    A check failing agent.failures_before_restart rounds in a row runs agent.restart_command, up to
    agent.restart_tries times with agent.restart_backoff_s (doubling) between tries; then the node is
    'failed' and the controller may fail over. A node demoted or fenced by a handover is never restarted.

    \b
    On the primary, no heartbeat acknowledged by Kafka for agent.fence_lease_s (3 s) makes the agent
    fence its database read-only (agent.self_fence: false turns it off): a controller, which fails over
    after 5 s without heartbeats, never promotes a standby while the old primary still takes writes.

    \b
    Its heartbeat (agent "node", state healthy | restarting | failed | fenced) goes out every second and
    at once on each change; 'ark status' shows it. Settings: the node's agent: block (README, "Node agent").
    """
    from common.heartbeat import agent_on_kafka
    from common.roles import node as node_of
    from failover.node_agent import NodeAgent

    cfg = obj.config()
    node_of(cfg, node)  # an unknown node fails here, naming the known ones
    cfg.control_key_bytes()  # a missing or short key fails here, before anything starts
    runner = agent_on_kafka(cfg, NodeAgent(cfg, node), metrics_port=metrics_port, metrics_host=metrics_host)

    def stop(_sig: int, _frame: object) -> None:
        runner.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner.run()
