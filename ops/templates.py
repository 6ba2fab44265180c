"""The commented example config written by ``ark init`` (``KEYFILE`` is replaced by the control key's path)."""

from __future__ import annotations

EXAMPLE_CONFIG = """\
# Ark: one file per replication group. Validate it with:  ark -c ark.yaml check
#
# Secrets are never written here: give {env: NAME} or {file: /path} and Ark reads them when it connects.

group: bank                      # letters, digits, '_' or '-'; names the topics ark.<group>.*
control_key: {file: KEYFILE}     # signs every control record and heartbeat (HMAC-SHA256): the same key on every
                                 # node of the group, readable only by Ark's user. 'ark keygen FILE' makes one.

kafka:
  bootstrap: 127.0.0.1:9092      # host:port[,host:port...]
  redo_retention_hours: 168      # the redo topic IS the archive: keep longer than the longest delay + the margin
  retention_margin_hours: 24     # 'ark check'/'ark status' warn when retention < longest delay + this
                                 # ('ark purge' frees space below what every standby still needs)
  compression: lz4               # or auto (follows the link: README), none, zstd, snappy, gzip
  # replication_factor: 3        # on a real cluster
  # sasl_username: ark
  # sasl_password: {env: ARK_KAFKA_PASSWORD}
  # client: {security.protocol: SASL_SSL, sasl.mechanisms: SCRAM-SHA-512}

primary:
  name: node1                    # node name, unique in the group
  engine: postgresql
  host: 127.0.0.1
  port: 5432
  dbname: bank
  user: postgres                 # needs REPLICATION (and ownership of the tables for the publication); a superuser
                                 # also installs the DDL hook (DDL followed exactly, keyless tables handled in the
                                 # DDL's own transaction): without it 'ark check' says what is not followed
  password: {env: ARK_PRIMARY_PASSWORD}
  tables: ["public.*"]           # schema.table patterns; new matching tables are picked up as they are created
  keyless: full                  # tables without a usable key: full (REPLICA IDENTITY FULL, every change
                                 # replicated) | insert-only (only INSERT/TRUNCATE) | skip (not replicated).
                                 # The primary's UPDATE and DELETE never fail either way; 'ark status' lists what
                                 # is not fully protected
  # slot: ark_bank               # default ark_<group>
  # publication: ark_bank        # default ark_<group> (and ark_<group>_inserts for keyless: insert-only)
  agent:                         # 'ark agent node1' on this node: checks it every second, restarts it locally
                                 # first, and only then reports it 'failed' (README, "Node agent"); every node
                                 # (standbys too) may have this block
    restart_command: "systemctl restart postgresql@15-main"  # run without a shell; none: 'failed' at once
    restart_tries: 3             # local restarts before the node is 'failed'
    restart_backoff_s: 2         # before the second try; doubles with each further try
    check_interval_s: 1
    check_timeout_s: 3           # login + SELECT 1
    disk_min_free_pct: 5         # warn below this much free under the data and WAL directories
    self_fence: true             # on the primary: cut off from Kafka for fence_lease_s -> made read-only, so that
    fence_lease_s: 3             # a promoted standby never overlaps a writable old primary: fence_lease_s +
                                 # check_interval_s + 1 s must be <= controller.ttl_s (checked at load)
    # data_dir: /var/lib/postgresql/15/main   # default: what the server says
    # services:                  # application processes and ports on this node, restarted the same way
    #   - {name: app, process: gunicorn, port: 8000, restart_command: "systemctl restart app"}

capture:
  chunk_rows: 5000               # a large transaction travels as chunks of this many rows
  batch_max_txns: 500            # source transactions per Kafka transaction
  batch_max_ms: 100
  retransmit_window_s: 900       # the source keeps this much log (PostgreSQL: WAL ~ window x WAL rate) so that a
                                 # corrupt entry is re-read and republished; keep it above the longest apply delay.
                                 # 0 = no retransmission (a corrupt entry then stops the standby: 'ark resync')

standbys:
  - name: node2
    engine: postgresql
    host: 127.0.0.1
    port: 5433
    dbname: bank
    user: postgres
    password: {env: ARK_STANDBY_PASSWORD}
    delay_seconds: 0             # 0 = real time
    on_data_error: stop          # stop | resync-table
    follow_drop: false           # true: follow DROP TABLE / DROP SCHEMA of the primary (default: keep the data)
  - name: node3-delayed
    engine: postgresql
    host: 127.0.0.1
    port: 5434
    dbname: bank
    user: postgres
    password: {env: ARK_STANDBY_PASSWORD}
    delay_seconds: 3600          # one hour behind: undo a user's mistake ('ark delay node3-delayed 0' to catch up)

# Automatic failover ('ark controller'; README, "Automatic failover"):
controller:
  ttl_s: 5                       # fail over when the primary is silent this long ('ark controller --ttl' overrides)
  anti_flapping_s: 300           # no second automatic failover within this long
# The active controller runs this once per event (README, "Events and alerts"); 'ark alert test' checks it:
# alerts:
#   command: /usr/local/bin/page-oncall --team dba   # gets ARK_GROUP, ARK_EVENT_KIND, ARK_EVENT_NODE,
#                                # ARK_EVENT_TIME, ARK_EVENT_MESSAGE and the event as JSON on stdin; no shell
#   kinds: [failover, failover-done, failover-failed, node-failed, node-fenced, controller-error]  # default
#   timeout_s: 10                # then killed, and retried once

# The address clients use, held by whichever node is the primary (moved by the node agents, 'ark agent NODE').
# Either an IP address on an interface (ip addr add/del, announced by gratuitous ARP; the agent runs as root):
# service_address:
#   address: 10.0.0.100/24       # with the segment's prefix length
#   interface: eth0              # on every node; per node: interfaces: {node3: ens4}
# or commands that move it (a load balancer, a cloud floating IP); they get ARK_NODE and ARK_GROUP:
# service_address:
#   claim_command: /usr/local/bin/lb-point-to "$ARK_NODE"
#   release_command: /usr/local/bin/lb-unpoint "$ARK_NODE"
#   check_command: /usr/local/bin/lb-points-to "$ARK_NODE"   # optional: exit 0 when this node holds it
"""


def example_config(key_file: str) -> str:
    """The example config, its control key read from ``key_file``."""
    return EXAMPLE_CONFIG.replace("KEYFILE", key_file)
