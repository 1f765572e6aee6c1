# The bfloat16 dot-product tile of the decode kernel (docs/benchmarks.md, "BF16 dot products"): GNU as, Intel syntax.
# .NET 10 exposes no AVX-512 BF16 intrinsic, so this one routine is kept as machine code: Bf16DotKernel.cs holds
# the bytes `as` makes of this file (regenerate with assemble-bf16-dot.sh; a test checks they match where `as` exists)
# and runs them only on CPUs with avx512_bf16.
#
# void tile(const uint16_t* w, int64_t wStride, const uint16_t* const* x, int64_t blocks, float* acc, const void* next)
#   System V AMD64: rdi = w, the first of four weight rows, row j at w + j·wStride bytes, bfloat16;
#   rsi = wStride, bytes between weight rows;
#   rdx = x, four pointers to bfloat16 rows of x (a row may repeat: its sums are then not used);
#   rcx = blocks, 64-byte blocks (32 values) per row; r9 = next: 2·blocks·64 bytes from there are asked for into L2,
#   128 bytes per block step, each line at two successive steps (the caller gives each of a group's two passes its
#   half of the next group);
#   r8 = acc, 16 × 16 floats out:
#   acc[16·(4i + j) + lane] = the lane's share of the dot product of x row i and weight row j, float32.
#   VDPBF16PS adds, per float32 lane, the products of one pair of adjacent bfloat16 values of each operand: the lanes
#   of acc[4i + j] sum to the dot product of the rows over the blocks.
#
# void rows(const uint16_t* w, int64_t wStride, const uint16_t* x, int64_t blocks, int64_t count, float* y)
#   One row of x against `count` consecutive weight rows (a decoding step of batch 1): the weights are read as one
#   sequential stream, row after row, asking for them 2 KiB ahead into L2; four accumulators per row, four 64-byte
#   blocks per step, then single blocks; y[r] = the dot product of x and weight row r over the blocks, float32.
#   rdi = w, rsi = wStride (bytes), rdx = x, rcx = blocks per row, r8 = count, r9 = y.

.intel_syntax noprefix
.text

# The four-row tile, written once: v = zmm or ymm, shift = log2(step), step = bytes per block.
.macro TILE4X4 name, v, shift, step
.globl \name
\name:
    push rbx
    push r12
    push r13
    push r14
    lea r10, [rdi + rsi]            # weight row 1
    lea r11, [r10 + rsi]            # weight row 2
    lea rax, [r11 + rsi]            # weight row 3
    mov r13, r9                     # what to prefetch
    mov r9, [rdx]                   # x row 0
    mov rbx, [rdx + 8]              # x row 1
    mov r12, [rdx + 16]             # x row 2
    mov r14, [rdx + 24]             # x row 3
    shl rcx, \shift
    mov rdx, rcx                    # end offset, bytes
    xor ecx, ecx                    # offset, bytes
    vpxord \v\()0, \v\()0, \v\()0
    vpxord \v\()1, \v\()1, \v\()1
    vpxord \v\()2, \v\()2, \v\()2
    vpxord \v\()3, \v\()3, \v\()3
    vpxord \v\()4, \v\()4, \v\()4
    vpxord \v\()5, \v\()5, \v\()5
    vpxord \v\()6, \v\()6, \v\()6
    vpxord \v\()7, \v\()7, \v\()7
    vpxord \v\()8, \v\()8, \v\()8
    vpxord \v\()9, \v\()9, \v\()9
    vpxord \v\()10, \v\()10, \v\()10
    vpxord \v\()11, \v\()11, \v\()11
    vpxord \v\()12, \v\()12, \v\()12
    vpxord \v\()13, \v\()13, \v\()13
    vpxord \v\()14, \v\()14, \v\()14
    vpxord \v\()15, \v\()15, \v\()15
    test rdx, rdx
    jz 2f
1:
    prefetcht1 [r13 + rcx*2]       # this step's share of what to prefetch (2 × step bytes), each line asked for
    prefetcht1 [r13 + rcx*2 + 64]  # at two successive steps: 20 % faster from memory than once (docs/benchmarks.md)
.if \step == 64
    prefetcht1 [r13 + rcx*2 + 128]
    prefetcht1 [r13 + rcx*2 + 192]
.endif
    vmovups \v\()16, [rdi + rcx]         # weight row 0
    vmovups \v\()17, [r10 + rcx]         # weight row 1
    vmovups \v\()18, [r11 + rcx]         # weight row 2
    vmovups \v\()19, [rax + rcx]         # weight row 3
    vmovups \v\()20, [r9 + rcx]         # x row 0
    vmovups \v\()21, [rbx + rcx]         # x row 1
    vmovups \v\()22, [r12 + rcx]         # x row 2
    vmovups \v\()23, [r14 + rcx]         # x row 3
    vdpbf16ps \v\()0, \v\()16, \v\()20
    vdpbf16ps \v\()1, \v\()17, \v\()20
    vdpbf16ps \v\()2, \v\()18, \v\()20
    vdpbf16ps \v\()3, \v\()19, \v\()20
    vdpbf16ps \v\()4, \v\()16, \v\()21
    vdpbf16ps \v\()5, \v\()17, \v\()21
    vdpbf16ps \v\()6, \v\()18, \v\()21
    vdpbf16ps \v\()7, \v\()19, \v\()21
    vdpbf16ps \v\()8, \v\()16, \v\()22
    vdpbf16ps \v\()9, \v\()17, \v\()22
    vdpbf16ps \v\()10, \v\()18, \v\()22
    vdpbf16ps \v\()11, \v\()19, \v\()22
    vdpbf16ps \v\()12, \v\()16, \v\()23
    vdpbf16ps \v\()13, \v\()17, \v\()23
    vdpbf16ps \v\()14, \v\()18, \v\()23
    vdpbf16ps \v\()15, \v\()19, \v\()23
    add rcx, \step
    cmp rcx, rdx
    jb 1b
2:
    vmovups [r8 + 0 * \step], \v\()0
    vmovups [r8 + 1 * \step], \v\()1
    vmovups [r8 + 2 * \step], \v\()2
    vmovups [r8 + 3 * \step], \v\()3
    vmovups [r8 + 4 * \step], \v\()4
    vmovups [r8 + 5 * \step], \v\()5
    vmovups [r8 + 6 * \step], \v\()6
    vmovups [r8 + 7 * \step], \v\()7
    vmovups [r8 + 8 * \step], \v\()8
    vmovups [r8 + 9 * \step], \v\()9
    vmovups [r8 + 10 * \step], \v\()10
    vmovups [r8 + 11 * \step], \v\()11
    vmovups [r8 + 12 * \step], \v\()12
    vmovups [r8 + 13 * \step], \v\()13
    vmovups [r8 + 14 * \step], \v\()14
    vmovups [r8 + 15 * \step], \v\()15
    vzeroupper
    pop r14
    pop r13
    pop r12
    pop rbx
    ret
.endm

TILE4X4 looprpt_bf16_tile4x4, zmm, 6, 64

.p2align 6
.globl looprpt_bf16_rows
looprpt_bf16_rows:
    test r8, r8
    jz 9f
    mov r10, rcx
    shl r10, 6                      # bytes per row in whole blocks
    mov r11, r10
    and r11, -256                   # of which in whole four-block steps
3:
    vpxord zmm0, zmm0, zmm0
    vpxord zmm1, zmm1, zmm1
    vpxord zmm2, zmm2, zmm2
    vpxord zmm3, zmm3, zmm3
    xor eax, eax                    # offset in the row, bytes
    test r11, r11
    jz 5f
4:
    prefetcht1 [rdi + rax + 2048]   # the stream 2 KiB ahead (past the row's end: the next row)
    prefetcht1 [rdi + rax + 2112]
    prefetcht1 [rdi + rax + 2176]
    prefetcht1 [rdi + rax + 2240]
    vmovups zmm4, [rdi + rax]
    vmovups zmm5, [rdi + rax + 64]
    vmovups zmm6, [rdi + rax + 128]
    vmovups zmm7, [rdi + rax + 192]
    vdpbf16ps zmm0, zmm4, [rdx + rax]
    vdpbf16ps zmm1, zmm5, [rdx + rax + 64]
    vdpbf16ps zmm2, zmm6, [rdx + rax + 128]
    vdpbf16ps zmm3, zmm7, [rdx + rax + 192]
    add rax, 256
    cmp rax, r11
    jb 4b
5:
    cmp rax, r10
    jae 6f
    vmovups zmm4, [rdi + rax]
    vdpbf16ps zmm0, zmm4, [rdx + rax]
    add rax, 64
    jmp 5b
6:
    vaddps zmm0, zmm0, zmm1
    vaddps zmm2, zmm2, zmm3
    vaddps zmm0, zmm0, zmm2
    vextractf32x8 ymm1, zmm0, 1
    vaddps ymm0, ymm0, ymm1
    vextractf128 xmm1, ymm0, 1
    vaddps xmm0, xmm0, xmm1
    vmovhlps xmm1, xmm1, xmm0
    vaddps xmm0, xmm0, xmm1
    vmovshdup xmm1, xmm0
    vaddss xmm0, xmm0, xmm1
    vmovss [r9], xmm0
    add r9, 4
    add rdi, rsi
    dec r8
    jnz 3b
9:
    vzeroupper
    ret

# void tile_ymm(...): the same tile with 256-bit vectors: blocks of 32 bytes (16 values), acc 16 × 8 floats, 64 bytes
#   of r9's region per block step (each line asked for at two successive steps). On Zen 4, whose 512-bit operations run as two 256-bit halves, the float32
#   four-row tile ran faster at 256 bits than at 512 in decoding; the policy times both widths of this one too.

.p2align 6
TILE4X4 looprpt_bf16_tile4x4_ymm, ymm, 5, 32
