#!/usr/bin/env bash
# Build the apt repository fixture that stands in for NVIDIA's CUDA and container toolkit
# repositories: packages under the real names, whose nvidia-smi and nvidia-ctk are test
# doubles (files/), in a flat repository signed by a throwaway key, in .cache/gpu-repo/.
# Served on 127.0.0.1:8765 by scripts/ci/test.sh while the gpu scenario runs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$(cd "$here/../.." && pwd)/.cache/gpu-repo"
if [ -f "$out/repo/InRelease" ] && [ "$out/repo/InRelease" -nt "$here/build_repo.sh" ] \
   && [ "$out/repo/InRelease" -nt "$here/files/nvidia-smi" ] && [ "$out/repo/InRelease" -nt "$here/files/nvidia-ctk" ]; then
  exit 0
fi
rm -rf "$out" && mkdir -p "$out/repo" "$out/build"

package() {  # name version depends [file:destination ...]
  local name=$1 version=$2 depends=$3 root="$out/build/$1-$2"
  shift 3
  mkdir -p "$root/DEBIAN"
  for spec in "$@"; do
    install -D -m 0755 "${spec%%:*}" "$root/${spec#*:}"
    # The doubles answer with the driver version of the package that ships them.
    sed -i "s/@DRIVER_VERSION@/${version%%-*}/g" "$root/${spec#*:}"
  done
  cat >"$root/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: amd64
Maintainer: Switchyard tests <tests@switchyard.invalid>
${depends:+Depends: $depends
}Description: test double standing in for NVIDIA's $name
CONTROL
  dpkg-deb --root-owner-group --build "$root" "${dest:-$out/repo}/${name}_${version}_amd64.deb" >/dev/null
}

# The driver as NVIDIA's repository ships it: the meta package depends on its libraries at
# the same version (the role holds both). A later release of the branch (580.105.08) is built
# beside the repository, in upgrade/, for the tests' "unattended upgrade" that leaves the
# loaded module behind.
mkdir -p "$out/upgrade"
for release in 580.95.05-1 580.105.08-1; do
  driver=${release%%-*}
  dest="$out/repo"
  [ "$release" = 580.95.05-1 ] || dest="$out/upgrade"
  : >"$out/build/libnvidia-ml.so.$driver"
  package libnvidia-compute-580 "$release" "" "$out/build/libnvidia-ml.so.$driver:usr/lib/x86_64-linux-gnu/libnvidia-ml.so.$driver"
  package nvidia-driver-580-open "$release" "libnvidia-compute-580 (= $release)" "$here/files/nvidia-smi:usr/bin/nvidia-smi"
done
dest="$out/repo"
package nvidia-utils-580-server 580.95.05-0ubuntu1 "" "$here/files/nvidia-smi:usr/bin/nvidia-smi"
package nvidia-headless-no-dkms-580-server-open 580.95.05-0ubuntu1 ""
package linux-modules-nvidia-580-server-open-generic 580.95.05-0ubuntu1 ""
package cuda-toolkit-12-8 12.8.1-1 ""
package nvidia-container-toolkit 1.18.0-1 "" "$here/files/nvidia-ctk:usr/bin/nvidia-ctk"

cd "$out/repo"
dpkg-scanpackages --multiversion . /dev/null 2>/dev/null >Packages
gzip -9kn Packages
{
  echo "Origin: Switchyard test fixture"
  echo "Label: NVIDIA stand-in"
  echo "Date: $(date -Ru)"
  echo "SHA256:"
  for file in Packages Packages.gz; do
    printf ' %s %s %s\n' "$(sha256sum "$file" | cut -d' ' -f1)" "$(stat -c %s "$file")" "$file"
  done
} >Release

export GNUPGHOME="$out/gnupg"
mkdir -p -m 0700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-generate-key "Switchyard test repository" rsa3072 sign never
gpg --batch --quiet --armor --export >"$out/repo/gpgkey"
gpg --batch --quiet --clearsign --output InRelease Release
gpg --batch --quiet --armor --detach-sign --output Release.gpg Release
# The two repositories NVIDIA publishes, each at its own address, as apt requires.
ln -s repo "$out/cuda"
ln -s repo "$out/libnvidia-container"
echo "==> apt repository fixture in $out/repo"
