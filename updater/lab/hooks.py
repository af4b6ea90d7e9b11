"""The LXC hooks of a lab node: the lab's stand-in for network boot.

``pre-start`` picks the image the way a boot service would (the one-shot "next" image if set, clearing it,
else the default), mounts a fresh overlay root (image as the read-only lower layer, a new tmpfs as the upper:
the node boots into a RAM disk) and appends a line to the lab's boot log. ``post-stop`` unmounts it. They are
plain shell so a node boots without the Python environment that created it.
"""

from __future__ import annotations

from pathlib import Path

PRE_START = r"""#!/bin/sh
# Corral lab pre-start hook (written by corral-lab up): boot pointer -> overlay root, a line in the boot log.
set -eu
node="$1"
lab=@LAB_DIR@
images=@IMAGES@
dir="$lab/nodes/$node"
boot="$dir/boot"
if [ -s "$boot/next" ]; then
  image=$(cat "$boot/next"); kind=once
  rm -f "$boot/next"   # boot-once: cleared before the attempt, so a failed trial falls back by itself
else
  image=$(cat "$boot/default"); kind=default
fi
lower="$images/$image/rootfs"
for m in "$dir/rootfs" "$dir/ram"; do
  if mountpoint -q "$m"; then umount -l "$m"; fi
done
if [ ! -d "$lower" ]; then
  echo "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ) $node $image $kind failed:no-such-image" >> "$lab/boot.log"
  echo "corral-lab: $node: image $image is not in $images" >&2
  exit 1
fi
mkdir -p "$dir/rootfs" "$dir/ram"
mount -t tmpfs -o "mode=0755,size=@RAM_SIZE@" "corral-ram-$node" "$dir/ram"
mkdir "$dir/ram/upper" "$dir/ram/work"
mount -t overlay "corral-root-$node" \
  -o "lowerdir=$lower,upperdir=$dir/ram/upper,workdir=$dir/ram/work" "$dir/rootfs"
printf '%s\n' "$image" > "$boot/current"
echo "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ) $node $image $kind" >> "$lab/boot.log"
"""

POST_STOP = r"""#!/bin/sh
# Corral lab post-stop hook: the node's RAM disk and overlay root go away with it.
node="$1"
dir=@LAB_DIR@/nodes/$node
for m in "$dir/rootfs" "$dir/ram"; do
  if mountpoint -q "$m"; then umount -l "$m"; fi
done
rm -f "$dir/boot/current"
exit 0
"""


def render(template: str, lab_dir: Path, images: Path, ram_size: str) -> str:
    return (
        template.replace("@LAB_DIR@", str(lab_dir))
        .replace("@IMAGES@", str(images))
        .replace("@RAM_SIZE@", ram_size)
    )


def install(hooks_dir: Path, lab_dir: Path, images: Path, ram_size: str = "4g") -> tuple[Path, Path]:
    hooks_dir.mkdir(parents=True, exist_ok=True)
    pre, post = hooks_dir / "pre-start", hooks_dir / "post-stop"
    for path, template in ((pre, PRE_START), (post, POST_STOP)):
        path.write_text(render(template, lab_dir, images, ram_size), encoding="utf-8")
        path.chmod(0o755)
    return pre, post
