"""Files the image recipe bakes into every node image: the persistence contract's early-boot machinery.

The contract (docs/node-image.md): a node keeps across reboots exactly what lives on its state volume,
``/var/lib/corral``. ``corral-persist.service`` binds the persisted directories from there before any
service starts; a generator makes units enabled on the state volume part of the very first transaction;
sshd reads its host keys from the state volume; ``/etc/machine-id`` is a link into it.
"""

from __future__ import annotations

STATE_VOLUME = "/var/lib/corral"
PERSIST_STORE = f"{STATE_VOLUME}/persist"

# Directories bound from the state volume (seeded from the image on a node's first boot). Roles may add
# their own in /var/lib/corral/persist.d/*.list (one absolute directory per line).
PERSISTED_DIRECTORIES: tuple[str, ...] = (
    "/root/.ssh",
    "/etc/corral",
    "/etc/ceph",
    "/var/lib/ceph",
    "/etc/zookeeper",
    "/var/lib/zookeeper",
    "/etc/keepalived",
    "/etc/haproxy",
)

PERSIST_SCRIPT = f"""#!/bin/sh
# corral-persist: bind the persisted paths from the state volume before any service starts.
# Part of the Corral node image (docs/node-image.md). At boot (corral-persist.service): no arguments.
# `corral-persist add DIR...`: persist more directories from now on (their current content is kept).
set -eu
state={STATE_VOLUME}
store={PERSIST_STORE}
mkdir -p "$store/ssh" "$store/dirs" "$store/systemd/upper" "$store/systemd/work"

# One persisted directory: seeded from what is there the first time, then bound over it.
persist_dir() {{
  path="$1"
  case "$path" in
    /*) ;;
    *) echo "corral-persist: not an absolute path: $path" >&2; return 1 ;;
  esac
  src="$store/dirs$path"
  if [ ! -d "$src" ]; then
    mkdir -p "$src"
    if [ -d "$path" ]; then
      cp -a "$path/." "$src/"
      chown --reference="$path" "$src"
      chmod --reference="$path" "$src"
    fi
  fi
  mkdir -p "$path"
  mountpoint -q "$path" || mount --bind "$src" "$path"
}}

if [ "${{1:-}}" = add ]; then
  shift
  [ "$#" -gt 0 ] || {{ echo "usage: corral-persist add DIR..." >&2; exit 2; }}
  mkdir -p "$state/persist.d"
  local_list="$state/persist.d/local.list"
  for path in "$@"; do
    path="${{path%/}}"
    persist_dir "$path" || exit 2
    grep -qxF "$path" "$local_list" 2>/dev/null || echo "$path" >> "$local_list"
  done
  exit 0
fi

# SSH host keys: one per node, made on its first boot unless provisioning put one there already.
if [ ! -s "$store/ssh/ssh_host_ed25519_key" ]; then
  ssh-keygen -q -t ed25519 -N '' -C "$(hostname)" -f "$store/ssh/ssh_host_ed25519_key"
fi
chmod 0600 "$store/ssh/ssh_host_ed25519_key"

# Persisted directories: the image's list, then those roles added on the state volume.
for list in /usr/lib/corral/persist.d/*.list "$state"/persist.d/*.list; do
  [ -f "$list" ] || continue
  while read -r path _; do
    case "$path" in ''|'#'*) continue ;; esac
    persist_dir "$path" || echo "corral-persist: $list: skipped $path" >&2
  done < "$list"
done

# Units the roles enable or install: /etc/systemd/system gets a persistent upper layer, so
# `systemctl enable` and unit files written by roles survive; the generator loads them at the next boot.
units="lowerdir=/etc/systemd/system,upperdir=$store/systemd/upper,workdir=$store/systemd/work"
if ! mountpoint -q /etc/systemd/system; then
  mount -t overlay corral-units -o "$units" /etc/systemd/system
  # The units the generator loaded from the state volume now live in /etc: reload so that they can be
  # enabled and disabled again (a unit from a generator directory cannot).
  if [ -n "$(ls -A "$store/systemd/upper")" ]; then systemctl daemon-reload; fi
fi
"""

PERSIST_UNIT = f"""[Unit]
Description=Corral: bind persisted paths from the state volume ({STATE_VOLUME})
Documentation=file:/usr/share/doc/corral/node-image.md
DefaultDependencies=no
RequiresMountsFor={STATE_VOLUME}
ConditionPathIsDirectory={STATE_VOLUME}
Before=local-fs.target sysinit.target ssh.service systemd-tmpfiles-setup.service
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/lib/corral/corral-persist

[Install]
WantedBy=local-fs.target
"""

# A generator runs before systemd loads any unit, so units enabled on the state volume are part of the boot
# transaction itself (the overlay above only exists once corral-persist has run).
UNITS_GENERATOR = f"""#!/bin/sh
# corral-persisted-units: load the units roles enabled (kept on the state volume) at boot.
upper={PERSIST_STORE}/systemd/upper
early="${{2:-/run/systemd/generator.early}}"
[ -d "$upper" ] || exit 0
# Once corral-persist has mounted the persistent layer, systemd sees those units in /etc itself.
mountpoint -q /etc/systemd/system && exit 0
cp -a "$upper/." "$early/" 2>/dev/null || true
find "$early" -type c -delete 2>/dev/null || true
exit 0
"""

SSHD_DROPIN = f"""# Corral node image: the host key is on the state volume (kept across reboots and images).
HostKey {PERSIST_STORE}/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
"""

JOURNALD_DROPIN = """[Journal]
# The node runs from a RAM disk: keep the journal in memory, bounded.
Storage=volatile
RuntimeMaxUse=32M
"""

POLICY_RC_D = """#!/bin/sh
# Image build: never start services inside the build chroot.
exit 101
"""


def persist_list() -> str:
    return "# Directories bound from the state volume at early boot (docs/node-image.md)\n" + "".join(
        f"{d}\n" for d in PERSISTED_DIRECTORIES
    )


def image_files() -> dict[str, tuple[str, int]]:
    """Path inside the image -> (content, mode) for every file the recipe writes."""
    return {
        "/usr/lib/corral/corral-persist": (PERSIST_SCRIPT, 0o755),
        "/usr/lib/corral/persist.d/image.list": (persist_list(), 0o644),
        "/usr/lib/systemd/system/corral-persist.service": (PERSIST_UNIT, 0o644),
        "/usr/lib/systemd/system-generators/corral-persisted-units": (UNITS_GENERATOR, 0o755),
        "/etc/ssh/sshd_config.d/corral.conf": (SSHD_DROPIN, 0o644),
        "/etc/systemd/journald.conf.d/corral.conf": (JOURNALD_DROPIN, 0o644),
    }
