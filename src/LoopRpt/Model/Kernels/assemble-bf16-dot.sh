#!/usr/bin/env bash
# Prints the machine code of bf16-dot-tile.s as the lines of Bf16DotKernel.Code (GNU binutils: as, objcopy, nm; od),
# then a comment line with the offset of each later routine in it (Bf16DotKernel.RowsOffset, TileYmmOffset).
# Regenerate after editing the .s file: paste the output between the brackets of Code (the test
# Bf16DotKernelTests.CodeIsWhatTheAssemblerMakesOfTheSource checks that they match).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
as --64 -o "$tmp/tile.o" "$here/bf16-dot-tile.s"
objcopy -O binary --only-section=.text "$tmp/tile.o" "$tmp/tile.bin"
od -An -v -tx1 -w16 "$tmp/tile.bin" | sed -E 's/^ +//; s/ +$//; s/([0-9a-f]{2})/0x\1,/g; s/,$/,/; s/^/        /'
for f in looprpt_bf16_rows looprpt_bf16_tile4x4_ymm; do
  echo "        // $f at $((16#$(nm "$tmp/tile.o" | awk -v f="$f" '$3 == f { print $1 }')))"
done
