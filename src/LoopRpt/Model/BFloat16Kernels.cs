using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Model;

/// <summary>
/// y = x Wᵀ (+ b) for many float32 rows (prefill, scoring) and bfloat16 weights on the CPU: "bfloat16 storage, float32
/// compute". A few rows (decoding) go through the weight-streaming kernel instead (<see cref="Kernels.FewRowsKernel"/>,
/// chosen by <see cref="Kernels.DecodeKernelPolicy"/>), which reads each weight as its 2 stored bytes.
/// </summary>
internal static class BFloat16Kernels
{
    /// <summary>True where the kernel can run (x86-64 with AVX2 and FMA).</summary>
    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Throws unless the kernel can run and x (rows, in) float32, weight (out, in) and bias (out) bfloat16 are CPU tensors.</summary>
    private static void CheckArguments(Tensor x, Tensor weight, Tensor? bias)
    {
        if (!IsSupported) throw new PlatformNotSupportedException("The bfloat16 kernel needs AVX2 and FMA.");
        if (x.dim() != 2 || weight.dim() != 2 || x.shape[1] != weight.shape[1])
            throw new ArgumentException($"Expected x (rows, in) and weight (out, in), got ({string.Join(", ", x.shape)}) and ({string.Join(", ", weight.shape)}).");
        if (x.dtype != ScalarType.Float32 || weight.dtype != ScalarType.BFloat16 || (bias is not null && bias.dtype != ScalarType.BFloat16))
            throw new ArgumentException("Expected float32 x and bfloat16 weight and bias.");
        if (x.device_type != DeviceType.CPU || weight.device_type != DeviceType.CPU)
            throw new ArgumentException("The bfloat16 kernel runs on CPU tensors only.");
    }

    /// <summary>Weights widened per block of <see cref="LinearBlocked"/>: about 8 MB of float32 (about the last-level cache).</summary>
    internal const int WidenBlockElements = 1 << 21;

    /// <summary>Output rows of a block are a multiple of this (and at least this): narrow products run far below the
    /// float32 product's rate.</summary>
    internal const int BlockRowMultiple = 64;

    /// <summary>
    /// The same product for many rows (prefill, scoring): the weight is widened to float32 one block of output rows at a
    /// time into a buffer that stays in cache, and each block goes through libtorch's float32 matrix product. Costs a few
    /// percent over a float32 weight instead of writing and re-reading a float32 copy of the whole matrix.
    /// </summary>
    public static Tensor LinearBlocked(Tensor x, Tensor weight, Tensor? bias, int blockElements = WidenBlockElements)
    {
        CheckArguments(x, weight, bias);
        long rows = x.shape[0];
        int inF = checked((int)x.shape[1]), outF = checked((int)weight.shape[0]);
        int block = Math.Max(1, blockElements / Math.Max(1, inF));
        if (block >= BlockRowMultiple / 2) block = Math.Max(BlockRowMultiple, (block + BlockRowMultiple - 1) / BlockRowMultiple * BlockRowMultiple);
        block = Math.Min(block, outF);
        var wc = weight.is_contiguous() ? weight : weight.contiguous();
        using var scope = NewDisposeScope();
        try
        {
            var y = empty([rows, outF], ScalarType.Float32);                       // (rows, out)
            using var buffer = Buffer((long)block * inF).narrow(0, 0, (long)block * inF).view(block, inF);   // (block, in)
            for (int o0 = 0; o0 < outF; o0 += block)
            {
                int n = Math.Min(block, outF - o0);
                using var wb = buffer.narrow(0, 0, n);                              // (n, in) float32
                using (var source = wc.narrow(0, o0, n)) wb.copy_(source);          // widened by libtorch, on its own threads
                using var yb = F.linear(x, wb);                                     // (rows, n)
                using var target = y.narrow(1, o0, n);
                target.copy_(yb);
            }
            if (bias is not null) y.PlusInPlace(bias.to_type(ScalarType.Float32));
            return y.MoveToOuterDisposeScope();
        }
        finally
        {
            if (!ReferenceEquals(wc, weight)) wc.Dispose();
        }
    }

    // One widening buffer per thread, kept between calls: a fresh 8 MB allocation per product costs page faults
    // (hundreds of products per prefill). Outside every dispose scope; it lives as long as its thread.
    [ThreadStatic] private static Tensor? _buffer;

    private static Tensor Buffer(long elements)
    {
        if (_buffer is null || _buffer.numel() < elements)
        {
            _buffer?.Dispose();
            _buffer = empty(elements, ScalarType.Float32).DetachFromDisposeScope();
        }
        return _buffer;
    }
}
