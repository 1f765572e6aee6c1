#!/usr/bin/env bash
# Prints the machine code of bf16-dot-tile.s as the lines of Bf16DotKernel.Code (GNU binutils: as, objcopy, nm; od),
# then a comment line with the offset of looprpt_bf16_rows in it (Bf16DotKernel.RowsOffset).
# Regenerate after editing the .s file: paste the output between the brackets of Code (the test
# Bf16DotKernelTests.CodeIsWhatTheAssemblerMakesOfTheSource checks that they match).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
as --64 -o "$tmp/tile.o" "$here/bf16-dot-tile.s"
objcopy -O binary --only-section=.text "$tmp/tile.o" "$tmp/tile.bin"
od -An -v -tx1 -w16 "$tmp/tile.bin" | sed -E 's/^ +//; s/ +$//; s/([0-9a-f]{2})/0x\1,/g; s/,$/,/; s/^/        /'
echo "        // looprpt_bf16_rows at $((16#$(nm "$tmp/tile.o" | awk '$3 == "looprpt_bf16_rows" { print $1 }')))"
