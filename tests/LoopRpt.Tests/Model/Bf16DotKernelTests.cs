using System.Diagnostics;
using LoopRpt.Model.Kernels;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Model;

/// <summary>
/// The BF16 dot-product decode kernel (<see cref="Bf16DotKernel"/>): machine code that runs only on avx512_bf16 CPUs,
/// so its numeric tests skip visibly elsewhere; the check that the bytes are the assembler's output of the source runs
/// wherever GNU binutils are installed.
/// </summary>
public class Bf16DotKernelTests
{
    static Bf16DotKernelTests() => LoopRpt.Native.TorchNative.EnsureLoaded();

    /// <summary>
    /// y = x Wᵀ + b against a float64 reference. A block is 32 values: in = 45 leaves a 13-value tail, in = 7 is all tail;
    /// out = 13, 129 or 6 leave output rows after the groups of four; 3, 5 and 8 rows leave passes where the last x row is
    /// repeated (its sums dropped). The products of two bfloat16 values are exact in float32, the sums float32; the
    /// result is rounded to bfloat16 (2⁻⁸ relative).
    /// </summary>
    [Avx512Bf16Theory]
    [InlineData(1, 64, 8, false, 1)]     // one row against two whole blocks
    [InlineData(3, 45, 13, true, 1)]     // a block and a tail; a tail output row
    [InlineData(8, 160, 129, true, 2)]   // decode batch 8, two workers
    [InlineData(5, 96, 44, false, 2)]    // a four-row pass and a one-row pass; eleven groups
    [InlineData(2, 7, 6, true, 1)]       // shorter than a block: all scalar
    [InlineData(1, 360, 37, true, 2)]    // one row streamed: two four-block steps, three single blocks, an 8-value tail; two workers
    [InlineData(1, 100, 5, false, 1)]    // one row: no four-block step, three single blocks and a tail
    [InlineData(6, 48, 12, true, 1)]     // 256-bit tile: three 16-value blocks, no tail (512-bit: one block and a 16-value tail)
    public void KernelMatchesAFloat64Reference(int rows, int inF, int outF, bool withBias, int threads)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(13);
        var x = randn([rows, inF], generator: g).to_type(ScalarType.BFloat16);
        var w = randn([outF, inF], generator: g).to_type(ScalarType.BFloat16);
        var b = withBias ? randn([outF], generator: g).to_type(ScalarType.BFloat16) : null;
        foreach (var isa in new[] { KernelIsa.Vector512, KernelIsa.Vector256 })   // the tile at both widths
        {
            var y = Bf16DotKernel.Linear(x, w, b, threads, isa);
            Assert.Equal(ScalarType.BFloat16, y.dtype);
            BFloat16ComputeTests.AssertMatchesFloat64(y, x, w, b, outputRounding: 1.0 / 256);
        }
    }

    /// <summary>A non-contiguous x (a transposed view) gives the same result as its contiguous copy: exactly, since the
    /// kernel multiplies the same values in the same order.</summary>
    [Avx512Bf16Fact]
    public void AViewOfXGivesWhatItsCopyGives()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(17);
        var xt = randn([96, 4], generator: g).to_type(ScalarType.BFloat16).t();   // (4, 96), not contiguous
        var w = randn([40, 96], generator: g).to_type(ScalarType.BFloat16);
        Assert.False(xt.is_contiguous());
        Assert.True(Bf16DotKernel.Linear(xt, w, null, 1).allclose(Bf16DotKernel.Linear(xt.contiguous(), w, null, 1), rtol: 0, atol: 0));
    }

    /// <summary>Where the kernel cannot run it says so; where it can, it refuses float32 operands.</summary>
    [Fact]
    public void KernelRefusesWhatItCannotRun()
    {
        using var scope = NewDisposeScope();
        var x = ones([2, 64], ScalarType.BFloat16);
        var w = ones([8, 64], ScalarType.BFloat16);
        if (!Bf16DotKernel.IsSupported)
            Assert.Throws<PlatformNotSupportedException>(() => Bf16DotKernel.Linear(x, w, null, 1));
        else
        {
            Assert.Throws<ArgumentException>(() => Bf16DotKernel.Linear(x.to_type(ScalarType.Float32), w, null, 1));
            Assert.Throws<ArgumentException>(() => Bf16DotKernel.Linear(x, w.to_type(ScalarType.Float32), null, 1));
            Assert.Throws<ArgumentException>(() => Bf16DotKernel.Linear(x, ones([8, 32], ScalarType.BFloat16), null, 1));
        }
    }

    /// <summary>The bytes the kernel runs are what GNU as makes of bf16-dot-tile.s (assemble-bf16-dot.sh): the source
    /// in the repository is the code that runs.</summary>
    [GnuAssemblerFact]
    public void CodeIsWhatTheAssemblerMakesOfTheSource()
    {
        string script = Path.Combine(DocCitationTests.RepositoryRoot(), "src", "LoopRpt", "Model", "Kernels", "assemble-bf16-dot.sh");
        var psi = new ProcessStartInfo("bash", [script]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd(), error = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"assemble-bf16-dot.sh failed: {error}");
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var assembled = lines.Where(l => !l.TrimStart().StartsWith("//", StringComparison.Ordinal))
            .SelectMany(l => l.Split([',', ' '], StringSplitOptions.RemoveEmptyEntries)).Select(h => Convert.ToByte(h, 16)).ToArray();
        Assert.True(assembled.Length > 100, $"only {assembled.Length} bytes assembled");
        Assert.Equal(assembled, Bf16DotKernel.Code.ToArray());
        // The later routines' entry points, as the assembler placed them.
        Assert.Contains($"// looprpt_bf16_rows at {Bf16DotKernel.RowsOffset}", lines.Select(l => l.Trim()));
        Assert.Contains($"// looprpt_bf16_tile4x4_ymm at {Bf16DotKernel.TileYmmOffset}", lines.Select(l => l.Trim()));
    }

    /// <summary>On an avx512_bf16 CPU the automatic policy times the dot-product kernel among its candidates for bfloat16
    /// products (this test's own shape: 3 × 1031 → 2053, bfloat16, over the 4 MiB threshold), and every output is right.</summary>
    [Avx512Bf16Fact]
    public void AutoTimesTheDotKernelForBFloat16Products()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(19);
        var x = randn([3, 1031], generator: g).to_type(ScalarType.BFloat16);
        var w = randn([2053, 1031], generator: g).to_type(ScalarType.BFloat16);
        Assert.True(w.numel() * 2 >= DecodeKernelPolicy.MinAutoWeightBytes);
        string product = $"3 x 1031 -> 2053, BFloat16 weights, BFloat16 x, {get_num_threads()} thread(s)";
        for (int call = 0; call < 60 && !DecodeKernelPolicy.Choices.Any(c => c.Product == product); call++)
        {
            var y = DecodeKernelPolicy.TryLinear(x, w, null, DecodeKernel.Auto) ?? nn.functional.linear(x, w);
            if (call % 7 == 0) BFloat16ComputeTests.AssertMatchesFloat64(y, x, w, null, outputRounding: 1.0 / 128);
        }
        var choice = Assert.Single(DecodeKernelPolicy.Choices, c => c.Product == product);
        Assert.Contains(choice.Milliseconds.Keys, k => k.StartsWith("own bf16-dot x", StringComparison.Ordinal));
        Assert.Equal(choice.Milliseconds.MinBy(m => m.Value).Key, choice.Chosen);
    }
}
