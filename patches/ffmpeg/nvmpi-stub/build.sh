#!/usr/bin/env bash
# Builds the COMPILE-CHECK STUB of libnvmpi into PREFIX (include/nvmpi.h, lib/libnvmpi.so,
# lib/pkgconfig/nvmpi.pc) so FFmpeg's --enable-nvmpi can be configured, compiled and linked
# without a Jetson. Usage: build.sh PREFIX [CC]
set -euo pipefail
prefix=${1:?usage: build.sh PREFIX [CC]}
cc=${2:-${CC:-cc}}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$prefix/include" "$prefix/lib/pkgconfig"
cp "$here/nvmpi.h" "$prefix/include/nvmpi.h"
"$cc" -shared -fPIC -O2 -Wall -Wextra -Werror -o "$prefix/lib/libnvmpi.so" "$here/nvmpi_stub.c"
sed "s|@PREFIX@|$prefix|" "$here/nvmpi.pc.in" >"$prefix/lib/pkgconfig/nvmpi.pc"
