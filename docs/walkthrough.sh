#!/usr/bin/env bash
# README "### Walkthrough", one step at a time, each on the host it names:
#
#   docs/walkthrough.sh ca         # the registry's host: a private CA and the registry's certificate
#   docs/walkthrough.sh registry   # the registry's host: configuration, first account, start
#   docs/walkthrough.sh network    # the registry's host (or any host with the CA and the admin token)
#   NAME=node-a ENDPOINT=198.51.100.11:51820 ROLE=server BOOTSTRAP=true docs/walkthrough.sh node
#   docs/walkthrough.sh watch      # the registry's host again
#   docs/walkthrough.sh check      # any node
#
# Run from a checkout (the registry step installs config/sdwan-registry.example.toml), as root, with the
# binaries on PATH.
# Each step runs under systemd when systemd is PID 1 (`/run/systemd/system` exists) and as plain
# background processes otherwise.
#
# The lines between "# >>> STEP" and "# <<< STEP" are the README's blocks, character for character:
# netns-tests/tests/readme_walkthrough.rs fails when they differ, and the netns test `walkthrough` runs
# them on a registry and three nodes in network namespaces.
set -euo pipefail
case ${1:-} in
ca)
# >>> ca
install -d -m 755 /etc/sdwan-registry && cd /etc/sdwan-registry
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj /CN=sdwan-ca -keyout ca.key -out ca.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -subj /CN=registry.example.net -addext subjectAltName=DNS:registry.example.net \
    -addext basicConstraints=critical,CA:FALSE -CA ca.pem -CAkey ca.key -keyout key.pem -out cert.pem
chmod 600 ca.key key.pem    # keep ca.key offline once the certificates you need are issued
# <<< ca
;;
registry)
# >>> registry
install -D -m 644 config/sdwan-registry.example.toml /etc/sdwan-registry/registry.toml
sdwan-registry --config /etc/sdwan-registry/registry.toml check-config
if [ -d /run/systemd/system ]; then    # the unit: from the package, or systemd/sdwan-registry.service
    systemd-run --wait --pipe --quiet -p DynamicUser=yes -p StateDirectory=sdwan-registry \
        sdwan-registry init-account --name acme --json \
        | jq -r .admin_token | install -m 600 /dev/stdin /root/acme.token
    systemctl enable --now sdwan-registry
else
    sdwan-registry init-account --name acme --token-file /root/acme.token
    sdwan-registry --config /etc/sdwan-registry/registry.toml >>/var/log/sdwan-registry.log 2>&1 &
fi
# <<< registry
;;
network)
# >>> network
R=https://registry.example.net:7443; A="Authorization: Bearer $(cat /root/acme.token)"
NET=$(curl -sS --fail-with-body --cacert /etc/sdwan-registry/ca.pem -H "$A" \
    -H 'Content-Type: application/json' $R/v1/networks \
    -d '{"name":"prod","overlay_prefix":"fd00:5d::/32","vip_pool":"fd00:5d:f::/64"}' | jq -r .id)
S="sdwanctl registry --url $R --ca-file /etc/sdwan-registry/ca.pem --token-file /root/acme.token"
$S tokens create --network "$NET" --expires-in 1h --max-uses 3 --json \
    | jq -r .token | install -m 600 /dev/stdin /root/enrollment-token
# <<< network
;;
node)
# >>> node
install -d -m 755 /etc/sdwand
cat >/etc/sdwand/sdwand.toml <<EOF
[interface]
name = "sdwan0"

[registry]
url = "https://registry.example.net:7443"
ca_file = "/etc/sdwand/registry-ca.pem"
enrollment_token_file = "/etc/sdwand/enrollment-token"
name = "$NAME"
endpoint = "$ENDPOINT"

[k3s]
role = "$ROLE"
bootstrap = $BOOTSTRAP

[k3s.health]
kind = "tcp"
target = "[::1]:6443"
EOF
sdwand check-config /etc/sdwand/sdwand.toml
if [ -d /run/systemd/system ]; then    # the unit: from the package, or systemd/sdwand.service
    systemctl enable --now sdwand
else
    sdwand --config /etc/sdwand/sdwand.toml >>/var/log/sdwand.log 2>&1 &
fi
# <<< node
;;
watch)
# >>> watch
S="sdwanctl registry --url https://registry.example.net:7443 --ca-file /etc/sdwan-registry/ca.pem \
    --token-file /root/acme.token"
$S clusters                        # NAME  ID  STATE  API  HOLDER  MEMBERS
$S vips                            # ADDRESS  ID  CLUSTER  HOLDER  EPOCH  CONFIRMED  CANDIDATES  MOVE
$S peers                           # NAME  ID  ADDRESS  V4  PREFIXES  CLASS  ROLES  CLUSTER  LAST SEEN  STATE
$S move fd00:5d:f::1 --to node-b   # the holder hands the VIP over, make-before-break
# <<< watch
;;
check)
# >>> check
sdwanctl status                    # this node, its registry link, its peers (handshakes), its VIPs
sdwanctl vip list                  # the VIP: holder, epoch, candidates with liveness and health
ping -c 3 fd00:5d:f::1             # the VIP answers from its holder, over the overlay
# <<< check
;;
*)
    sed -n '2,17s/^# \{0,1\}//p' "$0" >&2
    exit 2
    ;;
esac
