#!/bin/bash
# strace-iperf.sh BUILD_DIR: system calls of tunnel-server per 64 KiB during a 3 s single-stream
# iperf3 through tunnel-server + tunnel-client --pool 0 (BUILD_DIR/server, BUILD_DIR/client).
B=$1; W=$(mktemp -d)
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
IP=$(port); PA=$(port); PB=$(port)
iperf3 -s -p $IP -1 > /dev/null 2>&1 & I=$!
$B/server/tunnel-server --listen-a 127.0.0.1:$PA --listen-b 127.0.0.1:$PB --log-level warn > $W/s.log 2>&1 & S=$!
sleep 0.5
$B/client/tunnel-client --server 127.0.0.1:$PB --target 127.0.0.1:$IP --log-level warn --pool 0 > $W/c.log 2>&1 & C=$!
sleep 1
strace -c -f -p $S -o $W/s.strace & T1=$!
sleep 0.3
iperf3 -c 127.0.0.1 -p $PA -t 3 -J > $W/i.json 2>/dev/null
BYTES=$(python3 -c "import json;print(json.load(open('$W/i.json'))['end']['sum_received']['bytes'])")
kill -INT $T1; wait $T1 2>/dev/null
kill $S $C $I 2>/dev/null; wait 2>/dev/null
echo "bytes=$BYTES"
awk -v b=$BYTES 'NR>2 && $4+0>0 && $NF!="total" {printf "%-14s %8.1f per 64KiB  errors %s\n", $NF, $4/(b/65536), $5}' $W/s.strace
