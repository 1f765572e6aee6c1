using LoopRpt.Inference;
using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Model;

/// <summary>A [Fact] that needs the bfloat16 kernel's instructions (AVX2 and FMA on x86-64); skipped, with the reason, elsewhere.</summary>
public sealed class Avx2FactAttribute : FactAttribute
{
    public override string? Skip
    {
        get => base.Skip ?? (BFloat16Kernels.IsSupported ? null : "no AVX2/FMA: the bfloat16 kernel cannot run on this CPU");
        set => base.Skip = value;
    }
}

public class BFloat16ComputeTests
{
    static BFloat16ComputeTests() => LoopRpt.Native.TorchNative.EnsureLoaded();

    /// <summary>The many-rows path: weights widened in blocks of 3 output rows (so 13 outputs take 4 full blocks and a
    /// partial one), each through libtorch's float32 product, against the same float64 reference.</summary>
    [Avx2Theory]
    [InlineData(9, 45, 13, true)]
    [InlineData(32, 64, 13, false)]
    public void BlockedProductMatchesAFloat64Reference(int rows, int inF, int outF, bool withBias)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(8);
        var x = randn([rows, inF], generator: g);
        var w = randn([outF, inF], generator: g).to_type(ScalarType.BFloat16);
        var b = withBias ? randn([outF], generator: g).to_type(ScalarType.BFloat16) : null;
        AssertMatchesFloat64(BFloat16Kernels.LinearBlocked(x, w, b, blockElements: 3 * inF), x, w, b);
    }

    /// <summary>
    /// result = x Wᵀ + b against a float64 sum over the same (bfloat16-rounded where stored so) values. Float32
    /// accumulation of n products errs by at most about n·2⁻²⁴·Σ|x·w|; the bound, 1e-5·Σ|x·w| + 1e-6, is that for
    /// n ≤ 160 and far below one bfloat16 rounding step (2⁻⁸ relative), so a wrong widening or a dropped tail fails.
    /// <paramref name="outputRounding"/> adds the relative error of a rounded result (2⁻⁸ for a bfloat16 output).
    /// </summary>
    internal static void AssertMatchesFloat64(Tensor result, Tensor x, Tensor w, Tensor? b, double outputRounding = 0)
    {
        int rows = (int)x.shape[0], inF = (int)x.shape[1], outF = (int)w.shape[0];
        Assert.Equal(new long[] { rows, outF }, result.shape);
        var y = TestUtil.ToArray(result);
        var xd = x.to_type(ScalarType.Float64).data<double>().ToArray();
        var wd = w.to_type(ScalarType.Float64).data<double>().ToArray();
        var bd = b?.to_type(ScalarType.Float64).data<double>().ToArray();
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < outF; o++)
            {
                double sum = bd?[o] ?? 0, mag = Math.Abs(bd?[o] ?? 0);
                for (int k = 0; k < inF; k++) { sum += xd[r * inF + k] * wd[o * inF + k]; mag += Math.Abs(xd[r * inF + k] * wd[o * inF + k]); }
                double got = y[r * outF + o];
                double bound = 1e-5 * mag + 1e-6 + outputRounding * Math.Abs(sum);
                Assert.True(Math.Abs(got - sum) <= bound, $"y[{r}, {o}] = {got:R}, float64 reference {sum:R} (bound {bound:G3})");
            }
    }

    [Theory]
    [InlineData("flags : fpu sse2 avx avx2 fma bmi2", BFloat16Compute.Auto, BFloat16Compute.Float32)]            // AVX2-only: float32 compute
    [InlineData("flags : avx2 fma avx512f avx512bw avx512_bf16", BFloat16Compute.Auto, BFloat16Compute.Native)]   // AVX-512 BF16: native
    [InlineData("flags : avx2 fma avx512f amx_bf16 avx512_bf16", BFloat16Compute.Auto, BFloat16Compute.Native)]
    [InlineData("flags : fpu sse2 avx", BFloat16Compute.Auto, BFloat16Compute.Native)]                          // no AVX2: the kernel cannot run
    [InlineData("flags : avx2 fma", BFloat16Compute.Native, BFloat16Compute.Native)]                             // forced values are kept
    [InlineData("flags : avx2 fma avx512_bf16", BFloat16Compute.Float32, BFloat16Compute.Float32)]
    public void PolicyFollowsTheCpuFeatures(string flags, BFloat16Compute requested, BFloat16Compute expected)
        => Assert.Equal(expected, BFloat16ComputePolicy.Resolve(requested, CpuFeatures.FromFlags(flags)));

    [Fact]
    public void PolicyOnANonX86CpuIsNative()
    {
        var arm = new CpuFeatures(IsX86: false, Avx2: false, Avx512BF16: false, AmxBF16: false);
        Assert.Equal(BFloat16Compute.Native, BFloat16ComputePolicy.Resolve(BFloat16Compute.Auto, arm));
        Assert.Equal(BFloat16Compute.Float32, BFloat16ComputePolicy.Resolve(BFloat16Compute.Float32, arm));
    }

    [Fact]
    public void PolicyValuesAreValidated()
    {
        Assert.Equal(BFloat16Compute.Float32, BFloat16ComputePolicy.Parse(" Float32 "));
        Assert.Equal(BFloat16Compute.Native, BFloat16ComputePolicy.Parse("native"));
        Assert.Equal(BFloat16Compute.Auto, BFloat16ComputePolicy.Parse("AUTO"));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => BFloat16ComputePolicy.Parse("fp16"));
        Assert.Contains("auto, native or float32", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => BFloat16ComputePolicy.Resolve((BFloat16Compute)7, CpuFeatures.FromFlags("avx2 fma")));
        using var lm = TestUtil.TinyModel();
        Assert.Throws<ArgumentOutOfRangeException>(() => lm.BFloat16Compute = (BFloat16Compute)(-1));
    }

    /// <summary>
    /// Float32 compute from bfloat16 storage against a float32 model holding the same (bfloat16-rounded) weights: the same
    /// products in float32, only summed in another order, so logits agree to 1e-4 (they are O(1)). Two shapes: 6 rows run
    /// the kernel, 32 rows the widened-weight product.
    /// </summary>
    [Avx2Theory]
    [InlineData(1, 6)]
    [InlineData(2, 16)]
    public void Float32ComputeMatchesTheUpcastModel(long batch, long seq)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var bf16 = Bf16Model(BFloat16Compute.Float32);
        using var upcast = UpcastCopy(bf16);
        var ids = TestUtil.RandomIds(batch, seq, 64, seed: 3);
        Assert.Equal(ScalarType.Float32, bf16.ComputeType);

        var a = bf16.forward(ids);
        var b = upcast.forward(ids);

        Assert.Equal(ScalarType.Float32, a.dtype);
        double diff = (a - b).abs().max().item<float>();
        Assert.True(diff <= 1e-4, $"max |logit difference| {diff:G3} (tolerance 1e-4; logits up to {b.abs().max().item<float>():G3})");
    }

    [Avx2Fact]
    public void DecodingInFloat32ComputeMatchesTheUpcastModel()
    {
        // Decode runs one row per step through the kernel, with the KV cache in float32: greedy tokens and the loops each
        // token used must equal the upcast model's (only a near-tie of logits, below 1e-4, could flip one).
        using var bf16 = Bf16Model(BFloat16Compute.Float32);
        using var upcast = UpcastCopy(bf16);
        var options = new GenerationOptions { MaxNewTokens = 6, Exit = ExitMode.Q(0.5), Temperature = 0, StopTokens = [] };
        var a = new LoopedGenerator(bf16).Generate([3, 17, 42, 8], options);
        var b = new LoopedGenerator(upcast).Generate([3, 17, 42, 8], options);
        Assert.Equal(b.Tokens, a.Tokens);
        Assert.Equal(b.LoopsUsed, a.LoopsUsed);
    }

    [Fact]
    public void ForcingNativeComputesInBFloat16()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var native = Bf16Model(BFloat16Compute.Native);
        using var upcast = UpcastCopy(native);
        Assert.Equal(BFloat16Compute.Native, native.EffectiveBFloat16Compute);
        Assert.Equal(ScalarType.BFloat16, native.ComputeType);
        var ids = TestUtil.RandomIds(1, 6, 64, seed: 3);
        var a = native.forward(ids);
        Assert.Equal(ScalarType.BFloat16, a.dtype);
        // Same weights, bfloat16 activations: close to the float32 logits, but not within float32 rounding.
        double diff = (a.to_type(ScalarType.Float32) - upcast.forward(ids)).abs().max().item<float>();
        Assert.InRange(diff, 1e-6, 0.1);
    }

    [Fact]
    public void Float32WeightsIgnoreThePolicy()
    {
        using var lm = TestUtil.TinyModel();
        lm.BFloat16Compute = BFloat16Compute.Float32;
        Assert.Equal(BFloat16Compute.Native, lm.EffectiveBFloat16Compute);
        Assert.Equal(ScalarType.Float32, lm.ComputeType);
        lm.BFloat16Compute = BFloat16Compute.Auto;
        Assert.Equal(ScalarType.Float32, lm.ComputeType);
    }

    [Fact]
    public void InitializationIsTheModelsOwnDrawNotTheConstructors()
    {
        // The first parameter drawn is the embedding: normal(0, initializer_range) from the caller's generator, nothing else.
        using var scope = NewDisposeScope();
        using var lm = TestUtil.TinyModel(seed: 11);
        using var g = new Generator(11);
        var expected = empty([64, 32]).normal_(0.0, lm.Config.InitializerRange, g);
        Assert.True(TestUtil.BitEqual(expected, lm.Backbone.embed_tokens.weight), "embedding differs from the generator's first draw");
        // bitwise: zero-initialized bias: a sum of zeros
        Assert.Equal(0, lm.Backbone.early_exit_gate.bias!.abs().sum().item<float>());
    }

    private static OuroForCausalLM Bf16Model(BFloat16Compute compute)
    {
        var c = TestUtil.TinyModel().Config;
        using var g = new Generator(5);
        var lm = new OuroForCausalLM(c, dtype: ScalarType.BFloat16, generator: g) { BFloat16Compute = compute };
        using (no_grad()) lm.Backbone.early_exit_gate.weight.mul_(40);
        lm.eval();
        return lm;
    }

    /// <summary>A float32 model whose parameters are the bfloat16 model's values, widened by libtorch.</summary>
    private static OuroForCausalLM UpcastCopy(OuroForCausalLM bf16)
    {
        var lm = new OuroForCausalLM(bf16.Config, initialize: false);
        using var noGrad = no_grad();
        var source = bf16.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in lm.named_parameters()) p.copy_(source[name].to_type(ScalarType.Float32));
        lm.eval();
        return lm;
    }
}

/// <summary>A [Theory] that needs AVX2 and FMA (see <see cref="Avx2FactAttribute"/>).</summary>
public sealed class Avx2TheoryAttribute : TheoryAttribute
{
    public override string? Skip
    {
        get => base.Skip ?? (BFloat16Kernels.IsSupported ? null : "no AVX2/FMA: the bfloat16 kernel cannot run on this CPU");
        set => base.Skip = value;
    }
}
