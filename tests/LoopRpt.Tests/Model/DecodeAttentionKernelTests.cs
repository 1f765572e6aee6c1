using LoopRpt.Model.Kernels;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Tests.Model;

/// <summary>
/// The decoding step's attention kernel (<see cref="DecodeAttentionKernel"/>) against libtorch's attention computed in
/// float64 on the same (widened) inputs: an independent computation, compared within float32 (or, for bfloat16
/// outputs, bfloat16) rounding.
/// </summary>
public class DecodeAttentionKernelTests
{
    static DecodeAttentionKernelTests() => LoopRpt.Native.TorchNative.EnsureLoaded();

    public enum MaskCase { None, Bool, Additive, AdditiveFloat32, Causal }

    /// <summary>
    /// Keys and values are transposed views of a (B, L, kv, D) cache, as the decoders pass them; grouped heads (h = 2·kv
    /// or 4·kv); D = 128 (whole vectors) or 20 (a tail); masks boolean and additive (-inf), per row, broadcast over heads;
    /// one and two workers.
    /// </summary>
    [Theory]
    [InlineData(ScalarType.Float32, MaskCase.None, 8, 4, 2, 17, 128, 1)]
    [InlineData(ScalarType.BFloat16, MaskCase.None, 8, 4, 2, 17, 128, 2)]
    [InlineData(ScalarType.Float32, MaskCase.Bool, 3, 8, 2, 9, 20, 2)]
    [InlineData(ScalarType.BFloat16, MaskCase.Bool, 3, 8, 2, 9, 20, 1)]
    [InlineData(ScalarType.Float32, MaskCase.Additive, 5, 4, 4, 33, 64, 2)]
    [InlineData(ScalarType.BFloat16, MaskCase.Additive, 5, 4, 4, 33, 64, 2)]
    [InlineData(ScalarType.BFloat16, MaskCase.AdditiveFloat32, 2, 2, 1, 6, 128, 1)]
    [InlineData(ScalarType.Float32, MaskCase.Causal, 2, 4, 2, 5, 32, 1)]
    [InlineData(ScalarType.Float32, MaskCase.None, 1, 1, 1, 4200, 16, 1)]   // more keys than the stack buffer holds
    public void MatchesAFloat64Reference(ScalarType dtype, MaskCase maskCase, int b, int h, int kv, int len, int d, int threads)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(3);
        var q = randn([b, h, 1, d], generator: g).to_type(dtype);
        var cache = randn([b, len + 3, kv, d], generator: g).to_type(dtype);     // room past len: the views do not end the storage
        var cacheV = randn([b, len + 3, kv, d], generator: g).to_type(dtype);
        var k = cache.narrow(1, 0, len).transpose(1, 2);                          // (B, kv, L, D), strided
        var v = cacheV.narrow(1, 0, len).transpose(1, 2);
        Tensor? mask = null;
        var visible = rand([b, 1, 1, len], generator: g) > 0.3;
        visible[.., .., .., 0] = tensor(true);                                    // every row sees at least one key
        if (maskCase == MaskCase.Bool) mask = visible;
        if (maskCase is MaskCase.Additive or MaskCase.AdditiveFloat32)
        {
            var bias = zeros([b, 1, 1, len]).masked_fill(visible.logical_not(), float.NegativeInfinity);
            mask = maskCase == MaskCase.Additive ? bias.to_type(dtype) : bias;
        }
        bool causal = maskCase == MaskCase.Causal;
        Assert.True(DecodeAttentionKernel.Supports(q, k, v, mask));
        var actual = DecodeAttentionKernel.Attend(q, k, v, mask, causal, threads);
        Assert.Equal(dtype, actual.dtype);
        Assert.Equal(new long[] { b, h, 1, d }, actual.shape);

        int rep = h / kv;
        var k64 = k.to_type(ScalarType.Float64).repeat_interleave(rep, dim: 1);
        var v64 = v.to_type(ScalarType.Float64).repeat_interleave(rep, dim: 1);
        var m64 = mask is null || mask.dtype == ScalarType.Bool ? mask : mask.to_type(ScalarType.Float64);
        var expected = F.scaled_dot_product_attention(q.to_type(ScalarType.Float64), k64, v64, m64, 0.0, causal);
        // float32 sums over D and the keys: 1e-5 relative; a bfloat16 output adds its rounding (2⁻⁸ relative).
        double rtol = dtype == ScalarType.BFloat16 ? 1.0 / 256 : 1e-5;
        var diff = (actual.to_type(ScalarType.Float64) - expected).abs();
        var allowed = expected.abs() * rtol + 1e-5;
        Assert.True(diff.le(allowed).all().item<bool>(), $"largest difference {diff.max().item<double>():G4}");
    }

    /// <summary>A row that may see no key: libtorch's float32 CPU attention gives zeros there; so does the kernel.</summary>
    [Fact]
    public void ARowThatSeesNoKeyGetsWhatLibTorchGives()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(4);
        var q = randn([2, 2, 1, 16], generator: g);
        var k = randn([2, 2, 5, 16], generator: g);
        var v = randn([2, 2, 5, 16], generator: g);
        var visible = ones([2, 1, 1, 5], ScalarType.Bool);
        visible[1] = tensor(false);                                                  // row 1 sees nothing
        var expected = F.scaled_dot_product_attention(q, k, v, visible);
        var actual = DecodeAttentionKernel.Attend(q, k, v, visible, causal: false, threads: 1);
        Assert.True(expected[1].eq(0).all().item<bool>(), "libtorch no longer gives zeros for a row without keys: update the kernel");
        Assert.True(actual[1].eq(0).all().item<bool>());
        Assert.True((actual[0] - expected[0]).abs().max().item<float>() < 1e-5f);
    }

    /// <summary>The public entry point gives the kernel's result, and a clear error for tensors it does not take.</summary>
    [Fact]
    public void ThePublicEntryPointIsTheKernel()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(6);
        var q = randn([2, 4, 1, 32], generator: g);
        var k = randn([2, 2, 7, 32], generator: g);
        var v = randn([2, 2, 7, 32], generator: g);
        var expected = F.scaled_dot_product_attention(q, k.repeat_interleave(2, dim: 1), v.repeat_interleave(2, dim: 1));
        Assert.True((DecodeKernelPolicy.Attention(q, k, v) - expected).abs().max().item<float>() < 1e-5f);
        var e = Assert.Throws<ArgumentException>(() => DecodeKernelPolicy.Attention(randn([2, 4, 3, 32]), k, v));
        Assert.Contains("q (2, 4, 3, 32)", e.Message);
    }

    [Fact]
    public void RefusesWhatItDoesNotTake()
    {
        using var scope = NewDisposeScope();
        var q = randn([2, 4, 1, 8]);
        var k = randn([2, 2, 3, 8]);
        Assert.False(DecodeAttentionKernel.Supports(randn([2, 4, 2, 8]), k, k, null));                   // two queries per row
        Assert.False(DecodeAttentionKernel.Supports(q, randn([2, 3, 3, 8]), randn([2, 3, 3, 8]), null));  // 4 heads over 3 kv heads
        Assert.False(DecodeAttentionKernel.Supports(q, randn([2, 2, 8, 3]).transpose(2, 3), k, null));    // key rows not contiguous
        Assert.False(DecodeAttentionKernel.Supports(q.to_type(ScalarType.Float64), k.to_type(ScalarType.Float64), k.to_type(ScalarType.Float64), null));
        Assert.False(DecodeAttentionKernel.Supports(q, k, k, zeros([2, 4, 1, 4])));                        // mask of the wrong length
        Assert.False(DecodeAttentionKernel.Supports(q.requires_grad_(true), k, k, null));                 // gradients wanted
        Assert.True(DecodeAttentionKernel.Supports(randn([2, 4, 1, 8]), k, k, zeros([2, 1, 1, 3])));
    }
}
