"""MariaDB capture (binlog) and snapshot source."""
