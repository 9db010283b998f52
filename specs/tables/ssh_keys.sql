-- triagent fleet tables: ssh_keys (light: one row per public key line). Layout, engines and types: see hosts.sql.
CREATE EXTERNAL TABLE IF NOT EXISTS ssh_keys (
  host_key          STRING     COMMENT 'hosts.host_key',
  kind              STRING     COMMENT 'authorized_keys, user_public_key or host_public_key',
  username          STRING     COMMENT 'account the file belongs to',
  path              STRING     COMMENT 'file on the host',
  key_type          STRING     COMMENT 'ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256 ...',
  fingerprint       STRING     COMMENT 'SHA256:... fingerprint',
  bits              INT        COMMENT 'key size',
  key_comment       STRING     COMMENT 'key comment',
  options_text      STRING     COMMENT 'authorized_keys options (command=, from= ...)',
  file_mtime_utc    TIMESTAMP  COMMENT 'modification time of the file',
  member            STRING     COMMENT 'bundle member holding the record',
  line              INT        COMMENT '1-based line of the record in that member'
)
COMMENT 'triagent: SSH public keys of each bundle'
STORED AS PARQUET
LOCATION 's3://BUCKET/PREFIX/ssh_keys/';
