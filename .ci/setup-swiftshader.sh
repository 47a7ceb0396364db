#!/usr/bin/env bash
# Provide a software Vulkan driver (SwiftShader) so that Dawn (the `webgpu` npm package) finds an adapter on
# machines without a GPU, e.g. CI. Idempotent: packages are fetched once into <repo>/.cache/vk (git-ignored).
#
#   eval "$(.ci/setup-swiftshader.sh)"    # exports VK_ICD_FILENAMES and LD_LIBRARY_PATH
#
# Debian's chromium-common ships libvk_swiftshader.so + vk_swiftshader_icd.json; libvulkan1 is the Vulkan loader.
# Nothing is installed system-wide: the .debs are unpacked with `dpkg -x`. Progress goes to stderr, the
# export lines to stdout.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="${RWKV7_VK_CACHE:-$repo/.cache/vk}"
root="$dir/root"
icd="$dir/swiftshader_icd.json"

find_lib() { find "$root" -name "$1" \( -type f -o -type l \) 2>/dev/null | head -n 1; }

if [ ! -f "$icd" ] || [ -z "$(find_lib libvk_swiftshader.so)" ] || [ -z "$(find_lib 'libvulkan.so.1')" ]; then
  mkdir -p "$dir/debs" "$root"
  (
    cd "$dir/debs"
    if ! ls chromium-common_*.deb libvulkan1_*.deb >/dev/null 2>&1; then
      apt-get update -qq >&2 || echo "setup-swiftshader: apt-get update failed, trying the cached lists" >&2
      apt-get download -qq chromium-common libvulkan1 >&2
    fi
    for d in chromium-common_*.deb libvulkan1_*.deb; do dpkg -x "$d" "$root"; done
  )
  so="$(find_lib libvk_swiftshader.so)"
  src_json="$(find "$root" -name 'vk_swiftshader_icd.json' | head -n 1)"
  if [ -z "$so" ] || [ -z "$src_json" ]; then
    echo "setup-swiftshader: libvk_swiftshader.so or vk_swiftshader_icd.json not found in chromium-common" >&2
    exit 1
  fi
  # The packaged ICD json names the library relative to itself or by a system path; point it at the unpacked .so.
  sed -E "s#\"library_path\"[[:space:]]*:[[:space:]]*\"[^\"]*\"#\"library_path\": \"$so\"#" "$src_json" > "$icd"
  echo "setup-swiftshader: SwiftShader ICD at $icd" >&2
fi

# The Vulkan loader from libvulkan1 (chromium-common carries its own copy too; either works, prefer Debian's).
lib="$(find "$root/usr/lib" -path '*-linux-gnu/libvulkan.so.1' 2>/dev/null | head -n 1)"
[ -n "$lib" ] || lib="$(find_lib 'libvulkan.so.1')"
loader="$(dirname "$lib")"
echo "export VK_ICD_FILENAMES='$icd'"
echo "export LD_LIBRARY_PATH='$loader'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
