#!/usr/bin/env bash
# A wireguard-go peer in a network namespace, for interop tests and
# benchmarks. Needs root.
#
#   netns.sh up ID DIR       namespace underpass-ID: veth 10.201.ID.0/24 to the
#                            host, wireguard-go on 10.202.ID.1/24 (private key
#                            DIR/peer.key, peers listed in DIR/peers: "PUBKEY
#                            ALLOWED_IPS" per line), and the servers of
#                            servers.py on 10.202.ID.1, serving DIR/www
#   netns.sh restart-wg ID DIR   kill wireguard-go and start it again
#   netns.sh client ID DIR   a second wireguard-go in the namespace, dialling the
#                            endpoint in DIR/client.endpoint with DIR/client.key,
#                            peer DIR/client.peer, address 10.203.ID.2/32, routing
#                            10.204.ID.0/24 through it; the host gets 10.204.ID.1
#                            (on its veth end), reachable from the namespace only
#                            through the tunnel (reverse interop)
#   netns.sh down ID         everything gone
#
# PIN_CPU=N pins wireguard-go and the servers to CPU N (benchmarks).
set -euo pipefail
cmd=$1 id=$2 dir=${3:-}
pin=()
if [ -n "${PIN_CPU:-}" ]; then pin=(taskset -c "$PIN_CPU"); fi
here=$(cd "$(dirname "$0")" && pwd)
ns=underpass-$id
host_if=upv$id peer_if=upp$id wg_if=wgp$id client_if=wgc$id

wg_up() {
    # wireguard-go forks and exits; the daemon keeps the interface.
    ip netns exec "$ns" "${pin[@]}" wireguard-go "$wg_if" >/dev/null 2>&1
    ip netns exec "$ns" wg set "$wg_if" private-key "$dir/peer.key" listen-port 51820
    while read -r pub allowed; do
        [ -n "$pub" ] && ip netns exec "$ns" wg set "$wg_if" peer "$pub" allowed-ips "$allowed"
    done < "$dir/peers"
    ip netns exec "$ns" ip addr add "10.202.$id.1/24" dev "$wg_if" 2>/dev/null || true
    ip netns exec "$ns" ip link set "$wg_if" mtu 1420 up
}

wg_down() {
    pkill -f "wireguard-go $wg_if\$" 2>/dev/null || true
    for _ in $(seq 100); do
        pgrep -f "wireguard-go $wg_if\$" >/dev/null || break
        sleep 0.05
    done
    pkill -9 -f "wireguard-go $wg_if\$" 2>/dev/null || true
    ip netns exec "$ns" ip link del "$wg_if" 2>/dev/null || true
    # The UDP port goes with the process; wait until it is free.
    for _ in $(seq 100); do
        ip netns exec "$ns" bash -c "ss -Hlun 'sport = :51820' | grep -q ." || return 0
        sleep 0.05
    done
}

case "$cmd" in
up)
    ip netns add "$ns"
    ip link add "$host_if" type veth peer name "$peer_if"
    ip link set "$peer_if" netns "$ns"
    ip addr add "10.201.$id.1/24" dev "$host_if"
    ip link set "$host_if" up
    ip netns exec "$ns" ip addr add "10.201.$id.2/24" dev "$peer_if"
    ip netns exec "$ns" ip link set "$peer_if" up
    ip netns exec "$ns" ip link set lo up
    wg_up
    ip netns exec "$ns" "${pin[@]}" python3 "$here/servers.py" --addr "10.202.$id.1" --dir "$dir/www" >"$dir/servers.log" 2>&1 &
    echo $! > "$dir/servers.pid"
    for _ in $(seq 100); do
        ip netns exec "$ns" bash -c "exec 3<>/dev/tcp/10.202.$id.1/8000" 2>/dev/null && exit 0
        sleep 0.05
    done
    echo "servers did not start: $(cat "$dir/servers.log")" >&2
    exit 1
    ;;
restart-wg)
    wg_down
    wg_up
    ;;
client)
    ip netns exec "$ns" wireguard-go "$client_if" >/dev/null 2>&1
    ip netns exec "$ns" wg set "$client_if" private-key "$dir/client.key" \
        peer "$(cat "$dir/client.peer")" endpoint "$(cat "$dir/client.endpoint")" \
        allowed-ips "10.204.$id.0/24" persistent-keepalive 1
    ip netns exec "$ns" ip addr add "10.203.$id.2/32" dev "$client_if"
    ip netns exec "$ns" ip link set "$client_if" mtu 1420 up
    ip netns exec "$ns" ip route add "10.204.$id.0/24" dev "$client_if"
    ip addr add "10.204.$id.1/32" dev "$host_if" 2>/dev/null || true
    ;;
down)
    pkill -f "wireguard-go (wgp|wgc)$id\$" 2>/dev/null || true
    if [ -n "$dir" ] && [ -f "$dir/servers.pid" ]; then kill "$(cat "$dir/servers.pid")" 2>/dev/null || true; fi
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip link del "$host_if" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    ;;
*)
    echo "usage: $0 up|restart-wg|client|down ID [DIR]" >&2
    exit 2
    ;;
esac
