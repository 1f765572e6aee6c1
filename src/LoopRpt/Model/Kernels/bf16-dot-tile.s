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
#   128 bytes per block step (the caller gives each of a group's two passes its half of the next group);
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
.globl looprpt_bf16_tile4x4
looprpt_bf16_tile4x4:
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
    shl rcx, 6
    mov rdx, rcx                    # end offset, bytes
    xor ecx, ecx                    # offset, bytes
    vpxord zmm0, zmm0, zmm0
    vpxord zmm1, zmm1, zmm1
    vpxord zmm2, zmm2, zmm2
    vpxord zmm3, zmm3, zmm3
    vpxord zmm4, zmm4, zmm4
    vpxord zmm5, zmm5, zmm5
    vpxord zmm6, zmm6, zmm6
    vpxord zmm7, zmm7, zmm7
    vpxord zmm8, zmm8, zmm8
    vpxord zmm9, zmm9, zmm9
    vpxord zmm10, zmm10, zmm10
    vpxord zmm11, zmm11, zmm11
    vpxord zmm12, zmm12, zmm12
    vpxord zmm13, zmm13, zmm13
    vpxord zmm14, zmm14, zmm14
    vpxord zmm15, zmm15, zmm15
    test rdx, rdx
    jz 2f
1:
    prefetcht1 [r13 + rcx*2]       # this step's share of what to prefetch (2 × 64 bytes)
    prefetcht1 [r13 + rcx*2 + 64]
    vmovups zmm16, [rdi + rcx]         # weight row 0
    vmovups zmm17, [r10 + rcx]         # weight row 1
    vmovups zmm18, [r11 + rcx]         # weight row 2
    vmovups zmm19, [rax + rcx]         # weight row 3
    vmovups zmm20, [r9 + rcx]         # x row 0
    vmovups zmm21, [rbx + rcx]         # x row 1
    vmovups zmm22, [r12 + rcx]         # x row 2
    vmovups zmm23, [r14 + rcx]         # x row 3
    vdpbf16ps zmm0, zmm16, zmm20
    vdpbf16ps zmm1, zmm17, zmm20
    vdpbf16ps zmm2, zmm18, zmm20
    vdpbf16ps zmm3, zmm19, zmm20
    vdpbf16ps zmm4, zmm16, zmm21
    vdpbf16ps zmm5, zmm17, zmm21
    vdpbf16ps zmm6, zmm18, zmm21
    vdpbf16ps zmm7, zmm19, zmm21
    vdpbf16ps zmm8, zmm16, zmm22
    vdpbf16ps zmm9, zmm17, zmm22
    vdpbf16ps zmm10, zmm18, zmm22
    vdpbf16ps zmm11, zmm19, zmm22
    vdpbf16ps zmm12, zmm16, zmm23
    vdpbf16ps zmm13, zmm17, zmm23
    vdpbf16ps zmm14, zmm18, zmm23
    vdpbf16ps zmm15, zmm19, zmm23
    add rcx, 64
    cmp rcx, rdx
    jb 1b
2:
    vmovups [r8 + 0], zmm0
    vmovups [r8 + 64], zmm1
    vmovups [r8 + 128], zmm2
    vmovups [r8 + 192], zmm3
    vmovups [r8 + 256], zmm4
    vmovups [r8 + 320], zmm5
    vmovups [r8 + 384], zmm6
    vmovups [r8 + 448], zmm7
    vmovups [r8 + 512], zmm8
    vmovups [r8 + 576], zmm9
    vmovups [r8 + 640], zmm10
    vmovups [r8 + 704], zmm11
    vmovups [r8 + 768], zmm12
    vmovups [r8 + 832], zmm13
    vmovups [r8 + 896], zmm14
    vmovups [r8 + 960], zmm15
    vzeroupper
    pop r14
    pop r13
    pop r12
    pop rbx
    ret

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
#   of r9's region asked for per block step. On Zen 4, whose 512-bit operations run as two 256-bit halves, the float32
#   four-row tile ran faster at 256 bits than at 512 in decoding; the policy times both widths of this one too.

.p2align 6
.globl looprpt_bf16_tile4x4_ymm
looprpt_bf16_tile4x4_ymm:
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
    shl rcx, 5
    mov rdx, rcx                    # end offset, bytes
    xor ecx, ecx                    # offset, bytes
    vpxord ymm0, ymm0, ymm0
    vpxord ymm1, ymm1, ymm1
    vpxord ymm2, ymm2, ymm2
    vpxord ymm3, ymm3, ymm3
    vpxord ymm4, ymm4, ymm4
    vpxord ymm5, ymm5, ymm5
    vpxord ymm6, ymm6, ymm6
    vpxord ymm7, ymm7, ymm7
    vpxord ymm8, ymm8, ymm8
    vpxord ymm9, ymm9, ymm9
    vpxord ymm10, ymm10, ymm10
    vpxord ymm11, ymm11, ymm11
    vpxord ymm12, ymm12, ymm12
    vpxord ymm13, ymm13, ymm13
    vpxord ymm14, ymm14, ymm14
    vpxord ymm15, ymm15, ymm15
    test rdx, rdx
    jz 2f
1:
    prefetcht1 [r13 + rcx*2]       # this step's share of what to prefetch (64 bytes)
    vmovups ymm16, [rdi + rcx]         # weight row 0
    vmovups ymm17, [r10 + rcx]         # weight row 1
    vmovups ymm18, [r11 + rcx]         # weight row 2
    vmovups ymm19, [rax + rcx]         # weight row 3
    vmovups ymm20, [r9 + rcx]         # x row 0
    vmovups ymm21, [rbx + rcx]         # x row 1
    vmovups ymm22, [r12 + rcx]         # x row 2
    vmovups ymm23, [r14 + rcx]         # x row 3
    vdpbf16ps ymm0, ymm16, ymm20
    vdpbf16ps ymm1, ymm17, ymm20
    vdpbf16ps ymm2, ymm18, ymm20
    vdpbf16ps ymm3, ymm19, ymm20
    vdpbf16ps ymm4, ymm16, ymm21
    vdpbf16ps ymm5, ymm17, ymm21
    vdpbf16ps ymm6, ymm18, ymm21
    vdpbf16ps ymm7, ymm19, ymm21
    vdpbf16ps ymm8, ymm16, ymm22
    vdpbf16ps ymm9, ymm17, ymm22
    vdpbf16ps ymm10, ymm18, ymm22
    vdpbf16ps ymm11, ymm19, ymm22
    vdpbf16ps ymm12, ymm16, ymm23
    vdpbf16ps ymm13, ymm17, ymm23
    vdpbf16ps ymm14, ymm18, ymm23
    vdpbf16ps ymm15, ymm19, ymm23
    add rcx, 32
    cmp rcx, rdx
    jb 1b
2:
    vmovups [r8 + 0], ymm0
    vmovups [r8 + 32], ymm1
    vmovups [r8 + 64], ymm2
    vmovups [r8 + 96], ymm3
    vmovups [r8 + 128], ymm4
    vmovups [r8 + 160], ymm5
    vmovups [r8 + 192], ymm6
    vmovups [r8 + 224], ymm7
    vmovups [r8 + 256], ymm8
    vmovups [r8 + 288], ymm9
    vmovups [r8 + 320], ymm10
    vmovups [r8 + 352], ymm11
    vmovups [r8 + 384], ymm12
    vmovups [r8 + 416], ymm13
    vmovups [r8 + 448], ymm14
    vmovups [r8 + 480], ymm15
    vzeroupper
    pop r14
    pop r13
    pop r12
    pop rbx
    ret
