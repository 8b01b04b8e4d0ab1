#!/usr/bin/env bash
# Start the sandbox host: a Debian systemd container on this machine's network, standing in
# for a GPU server. Usage: up.sh [NAME]   (default: $SWITCHYARD_SANDBOX or switchyard-sandbox)
# A second host beside it (the fleet scenario) takes its own SSH port and service ports:
#   SWITCHYARD_SANDBOX_SSH_PORT (default 2222) and SWITCHYARD_SANDBOX_PORTS (default
#   "8000 8001 8002 8080"), the ports its inventory gives it, checked free here.
#
# The flags below are this machine's quirks, kept here and never in the roles:
#   --runtime runc          crun refuses the machine's hybrid cgroup layout
#   --ulimit ...            the machine lacks CAP_SYS_RESOURCE for podman's default rlimits
#                           (nproc above about 20000 is refused, so it is set to 4096)
#   --volume ...containers  nested podman cannot put overlay storage on the container's overlay
#   --network host          the services bind 127.0.0.1 in the host and answer there, as on a
#                           server; its SSH server too, on 127.0.0.1:2222 (or its own port)
#   --shm-size 2g           vLLM (run with --ipc host) needs more /dev/shm than podman's 64 MB;
#                           a real host's /dev/shm is half its memory
#   --volume ...images:ro   the engine images built on this machine (Infinity, vLLM: several GB,
#                           scripts/sandbox/lib.sh), read-only, named as an additional image store
#                           in the host's /etc/containers/storage.conf: Podman on the host finds
#                           them there and the roles need not copy and load them (the smaller
#                           llama.cpp and Ollama images still come in as llm_image_archives)
# With SWITCHYARD_SANDBOX_ADDRESS (the fleet's standby routers), the host has a network stack of
# its own instead: that address on the Podman bridge network SWITCHYARD_SANDBOX_NETWORK (made
# here if missing, a /24 around the address, whose .1 is this machine's side), SSH on it.
# With SWITCHYARD_SANDBOX_ENGINE=docker (a host for container_engine: docker), two more:
#   --cgroupns=private      on this machine's hybrid cgroup v1 layout, every `docker run` in
#                           the sandbox fails mounting /sys/fs/cgroup without it
#   --volume ...docker      /var/lib/docker on a volume (this machine's own file system), so
#                           dockerd's default overlay2 driver works nested; on the container's
#                           overlay root only vfs would, which copies every layer in full
set -euo pipefail

name=${1:-${SWITCHYARD_SANDBOX:-switchyard-sandbox}}
image=localhost/switchyard/sandbox-host:bookworm-ssh
ssh_port=${SWITCHYARD_SANDBOX_SSH_PORT:-2222}
root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/sandbox/lib.sh
. "$root/scripts/sandbox/lib.sh"
# This machine's key for Ansible's SSH connection to the sandbox (inventory/sandbox/hosts.yml).
key=$cache/ssh/id_ed25519

if podman container exists "$name"; then
  echo "sandbox host $name is already running" >&2
  exit 0
fi
address=${SWITCHYARD_SANDBOX_ADDRESS:-}
if [ -n "$address" ]; then
  network=${SWITCHYARD_SANDBOX_NETWORK:?SWITCHYARD_SANDBOX_ADDRESS needs SWITCHYARD_SANDBOX_NETWORK}
  podman network exists "$network" || podman network create --subnet "${address%.*}.0/24" "$network" >/dev/null
  network_flags=(--network "$network" --ip "$address")
else
  address=127.0.0.1
  network_flags=(--network host)
  for port in ${SWITCHYARD_SANDBOX_PORTS:-8000 8001 8002 8080} "$ssh_port"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port $port on 127.0.0.1 is in use; stop what holds it (another sandbox: scripts/sandbox/down.sh NAME) and retry" >&2
      exit 1
    fi
  done
fi

engine_flags=()
if [ "${SWITCHYARD_SANDBOX_ENGINE:-podman}" = docker ]; then
  engine_flags=(--cgroupns=private --volume "$name-docker:/var/lib/docker")
fi
# An empty store is a valid one (the engine images may still be building beside this host).
"${store_podman[@]}" images >/dev/null

podman --runtime runc create --name "$name" --hostname "$name" \
  --privileged --systemd=always "${network_flags[@]}" --shm-size 2g \
  --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096 \
  --volume "$name-containers:/var/lib/containers" "${engine_flags[@]}" \
  --volume "$image_store:/var/lib/switchyard-images:ro" \
  "$image" /sbin/init >/dev/null
# The image's SSH server listens on 127.0.0.1:2222 (scripts/sandbox/build.sh): this host's
# address and port instead.
sshd_config=$(mktemp)
trap 'rm -f "$sshd_config"' EXIT
podman cp "$name:/etc/ssh/sshd_config.d/sandbox.conf" "$sshd_config"
sed -i -e "s/^Port .*/Port $ssh_port/" -e "s/^ListenAddress .*/ListenAddress $address/" "$sshd_config"
podman cp "$sshd_config" "$name:/etc/ssh/sshd_config.d/sandbox.conf"
# Podman's own defaults, and the engine image store (Debian's podman ships no storage.conf).
containers_config=$(mktemp -d)
trap 'rm -rf "$sshd_config" "$containers_config"' EXIT
mkdir "$containers_config/containers"
printf '%s\n' '[storage]' 'driver = "overlay"' 'runroot = "/run/containers/storage"' \
  'graphroot = "/var/lib/containers/storage"' '[storage.options]' \
  'additionalimagestores = ["/var/lib/switchyard-images"]' >"$containers_config/containers/storage.conf"
podman cp "$containers_config/containers" "$name:/etc/"
podman start "$name" >/dev/null

if [ ! -f "$key" ]; then
  mkdir -p "$(dirname "$key")"
  ssh-keygen -q -t ed25519 -N '' -C switchyard-sandbox -f "$key"
fi
podman exec -i "$name" sh -c 'umask 077 && mkdir -p /root/.ssh && cat >/root/.ssh/authorized_keys' <"$key.pub"

# A self-signed pair for a fleet's router (molecule/fleet's inventory serves TLS with it), for
# the addresses the tests reach routers on: 127.0.0.1, and the virtual address of the standby
# pair (molecule/fleet/tests). Made under a lock, since scenarios side by side start their hosts
# at once, and made again when those addresses change.
tls="$cache/router-tls"
tls_names="IP:127.0.0.1,IP:10.89.77.100"
(
  flock 9
  if [ "$(cat "$tls/names" 2>/dev/null)" != "$tls_names" ]; then
    rm -rf "$tls"
    (umask 077 && mkdir -p "$tls" && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -nodes -days 3650 -subj /CN=switchyard-sandbox-router -addext "subjectAltName=$tls_names" \
      -keyout "$tls/router.key" -out "$tls/router.crt" 2>/dev/null)
    echo "$tls_names" >"$tls/names"
  fi
) 9>"$cache/router-tls.lock"

for _ in $(seq 60); do
  state=$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)
  case $state in
    running|degraded)
      if (exec 3<>"/dev/tcp/$address/$ssh_port") 2>/dev/null; then
        echo "sandbox host $name is up ($state), SSH on $address:$ssh_port"
        exit 0
      fi ;;
  esac
  sleep 1
done
echo "sandbox host $name did not finish booting: $state" >&2
exit 1
