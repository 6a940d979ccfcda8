#!/usr/bin/env bash
# deploy/make-base.sh [--no-pull] [IMAGE...]: makes sure the Docker engine has the base
# images deploy/Dockerfile starts from, `debian:12` (build stage) and `debian:12-slim`
# (runtime); both unless some are named.
#
#   - an image already present is kept as it is;
#   - otherwise the official image is pulled (skipped with --no-pull or RINGPEER_NO_PULL=1);
#   - where that fails (no registry reachable), the image is made here: debootstrap
#     --variant=minbase bookworm from the Debian mirror this machine's apt sources name,
#     imported with `docker import`. The slim one is the same tree without documentation,
#     manual pages and translations, and with dpkg told not to install them later (as the
#     official slim image does).
#
# Needs root (debootstrap), debootstrap and a running engine. Takes about a minute.
# Environment: DOCKER (the client, default `docker`), RINGPEER_DEBIAN_MIRROR (the mirror).
set -euo pipefail
DOCKER=${DOCKER:-docker}
pull=1
[ "${RINGPEER_NO_PULL:-0}" = 1 ] && pull=0
wanted=()
for arg in "$@"; do
  case "$arg" in
    --no-pull) pull=0 ;;
    debian:12 | debian:12-slim) wanted+=("$arg") ;;
    *) echo "usage: $0 [--no-pull] [debian:12] [debian:12-slim]" >&2; exit 2 ;;
  esac
done
((${#wanted[@]})) || wanted=(debian:12 debian:12-slim)

have() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

missing=()
for img in "${wanted[@]}"; do
  if have "$img"; then
    echo "make-base: $img present"
  elif ((pull)) && timeout 120 "$DOCKER" pull -q "$img" >/dev/null 2>&1; then
    echo "make-base: $img pulled"
  else
    missing+=("$img")
  fi
done
((${#missing[@]})) || exit 0

command -v debootstrap >/dev/null || { echo "make-base: debootstrap is not installed" >&2; exit 1; }

# The first Debian mirror named by apt's sources (deb822 `URIs:` or one-line `deb`).
mirror=${RINGPEER_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
    awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}
         /^deb / {for (i = 2; i <= NF; i++) if ($i ~ /^https?:.*\/debian\/?$/) {print $i; exit}}' || true)
fi
[ -n "$mirror" ] || { echo "make-base: no Debian mirror in the apt sources" >&2; exit 1; }
security=${mirror%/debian}/debian-security
security=${security%/}

root=$(mktemp -d /var/tmp/rp-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "make-base: debootstrap bookworm from $mirror"
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -20 "$root.log" >&2
  rm -f "$root.log"
  exit 1
}
rm -f "$root.log"

# The apt sources the official image has, at the same mirror.
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
# No packages cached in the image, no recommends pulled in by later installs.
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
# Files a container must not inherit from the host that made it.
: >"$root/etc/hostname"
: >"$root/etc/resolv.conf"

import() {
  # import NAME: the tree as an image, with the official image's default command.
  tar --numeric-owner -C "$root" -c . |
    "$DOCKER" import --change 'CMD ["bash"]' - "$1" >/dev/null
  echo "make-base: $1 made with debootstrap ($(du -sm "$root" | cut -f1) MB)"
}
if [[ " ${missing[*]} " == *" debian:12 "* ]]; then
  import debian:12
fi
if [[ " ${missing[*]} " == *" debian:12-slim "* ]]; then
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/groff/* "$root"/usr/share/info/* \
         "$root"/usr/share/lintian/* "$root"/usr/share/linda/*
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
    -exec rm -rf {} +
  import debian:12-slim
fi
