#!/bin/sh
# A Sentinel watching the Valkey primary `redis` (quorum 2 of 3). Its config is written at the first start only:
# Sentinel rewrites it as it learns (the replicas, the other sentinels, the primary after a failover), and a
# restarted sentinel must remember who the primary is now.
set -eu
conf=/data/sentinel.conf
if [ ! -s "$conf" ]; then
    cat > "$conf" <<CONF
port 26379
dir /data
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip ${SENTINEL_ANNOUNCE_HOSTNAME}
requirepass ${VALKEY_PASSWORD}
sentinel sentinel-pass ${VALKEY_PASSWORD}
sentinel monitor freqfleet redis 6379 2
sentinel auth-pass freqfleet ${VALKEY_PASSWORD}
sentinel down-after-milliseconds freqfleet 5000
sentinel failover-timeout freqfleet 60000
sentinel parallel-syncs freqfleet 1
CONF
    chmod 600 "$conf"
fi
exec valkey-sentinel "$conf"
