-- triagent fleet tables: connections (light: one row per socket record). Layout, engines and types: see hosts.sql.
CREATE EXTERNAL TABLE IF NOT EXISTS connections (
  host_key          STRING     COMMENT 'hosts.host_key',
  proto             STRING     COMMENT 'tcp, udp, tcp6, udp6',
  local_ip          STRING     COMMENT 'local address',
  local_port        INT        COMMENT 'local port',
  remote_ip         STRING     COMMENT 'peer address',
  remote_port       INT        COMMENT 'peer port',
  state             STRING     COMMENT 'socket state (LISTEN, ESTABLISHED ...)',
  listening         BOOLEAN    COMMENT 'a listening socket',
  remote_is_public  BOOLEAN    COMMENT 'the peer is a public address, as the collector judged it',
  owner_pids        ARRAY<BIGINT> COMMENT 'processes holding the socket',
  owner_names       ARRAY<STRING> COMMENT 'their names',
  member            STRING     COMMENT 'bundle member holding the record',
  line              INT        COMMENT '1-based line of the record in that member'
)
COMMENT 'triagent: live sockets of each bundle'
STORED AS PARQUET
LOCATION 's3://BUCKET/PREFIX/connections/';
