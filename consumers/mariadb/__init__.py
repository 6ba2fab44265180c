"""MariaDB standby: the applier dialect."""
