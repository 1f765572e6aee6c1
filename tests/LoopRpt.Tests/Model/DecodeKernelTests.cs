using System.Runtime.Intrinsics;
using LoopRpt.Model;
using LoopRpt.Model.Kernels;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Model;

/// <summary>
/// The decode kernel (<see cref="FewRowsKernel"/>) and its policy (<see cref="DecodeKernelPolicy"/>). Both vector widths
/// run on every x86-64 machine: the portable Vector512/Vector256 code is emulated where the hardware lacks it, so the
/// AVX-512 path is tested on AVX2 machines too (slowly; the shapes are small).
/// </summary>
public class DecodeKernelTests
{
    static DecodeKernelTests() => LoopRpt.Native.TorchNative.EnsureLoaded();

    /// <summary>
    /// y = x Wᵀ + b against a float64 reference, per vector width, weight dtype and activation dtype. The shapes leave
    /// remainders everywhere: in = 45 or 37 is no multiple of a vector block (32 values at 512 bits, 16 at 256), out = 13,
    /// 70, 129, 44 or 9 no multiple of the four-row group, and the row counts leave pairs and single rows after the four-row
    /// tiles (each tiling is forced at each width, so the AVX2 machine runs the four-row tiles too). Two workers
    /// split the output rows where threads = 2.
    /// </summary>
    [Theory]
    [InlineData(1, 45, 13, true, 1)]      // one row: one block and a scalar tail; a single output row after three tiles
    [InlineData(2, 64, 33, false, 1)]     // one pair of rows, whole blocks
    [InlineData(3, 37, 70, true, 2)]      // a pair and a single row; two workers
    [InlineData(8, 160, 129, true, 2)]    // decode batch 8
    [InlineData(5, 7, 6, false, 1)]       // in shorter than one vector: all tail
    [InlineData(7, 96, 44, true, 1)]      // four-row tile, a pair and a single row; eleven groups, so the next group is prefetched
    [InlineData(4, 33, 9, false, 2)]      // one four-row tile with a one-value tail; two workers
    [InlineData(1, 232, 21, true, 2)]     // one row streamed: four-vector steps, then a two-vector step (512-bit), then a scalar tail
    public void KernelMatchesAFloat64Reference(int rows, int inF, int outF, bool withBias, int threads)
    {
        foreach (var isa in new[] { KernelIsa.Vector512, KernelIsa.Vector256 })
            foreach (bool fourRowTiles in new[] { false, true })   // both tilings at both widths, whatever this CPU would pick
                foreach (bool stream in rows == 1 ? new[] { false, true } : [false])   // one row: through the tiles, and streamed
                foreach (var (wType, xType) in new[] { (ScalarType.Float32, ScalarType.Float32), (ScalarType.BFloat16, ScalarType.Float32), (ScalarType.BFloat16, ScalarType.BFloat16) })
                {
                    using var scope = NewDisposeScope();
                    using var g = new Generator(7);
                    var x = randn([rows, inF], generator: g).to_type(xType);
                    var w = randn([outF, inF], generator: g).to_type(wType);
                    var b = withBias ? randn([outF], generator: g).to_type(wType) : null;
                    var y = FewRowsKernel.Linear(x, w, b, isa, threads, fourRowTiles, stream);
                    Assert.Equal(xType, y.dtype);
                    // A bfloat16 result is the float32 sum rounded to 8 significant bits: 2⁻⁸ relative on top.
                    BFloat16ComputeTests.AssertMatchesFloat64(y, x, w, b, outputRounding: xType == ScalarType.BFloat16 ? 1.0 / 256 : 0);
                }
    }

    /// <summary>
    /// The next group of four weight rows is asked for in shares, one per tile the group goes through, each spread over
    /// that tile's steps: over all tiles and steps the requests cover the next group from its first byte with no gap and
    /// no overlap, to its last line, and never reach past it. Counted by hand for the tilings: 8 rows in four-row tiles = 2 tiles, 7 = 3
    /// (four, pair, single), 8 in pairs = 4, 1 row = 1.
    /// </summary>
    [Theory]
    [InlineData(8, true, 2)]
    [InlineData(7, true, 3)]
    [InlineData(8, false, 4)]
    [InlineData(3, true, 2)]
    [InlineData(1, false, 1)]
    public void EachTileAsksForItsShareOfTheNextGroup(int rows, bool four, int passes)
    {
        Assert.Equal(passes, FewRowsKernel.Passes(rows, four));
        foreach (var (n, step, bytes) in new[] { (2048, 32, 4), (2048, 32, 2), (5632, 16, 4), (96, 16, 2) })
        {
            long group = 4L * n * bytes, share = group / passes, covered = 0;
            for (int pass = 0; pass < passes; pass++)
                for (int k = 0; k + step <= n; k += step)
                {
                    var (from, to) = FewRowsKernel.ShareAt(pass * share, passes, k, step, bytes);
                    Assert.Equal(covered, from);                 // each request starts where the last ended
                    Assert.True(to > from);
                    covered = to;
                }
            // Whole steps: the next group to its last 64-byte line (a share rounds down by less than a byte per tile).
            Assert.InRange(covered, group - passes, group);
        }
    }

    /// <summary>bfloat16 weights are widened as (even, odd) halves of each block, so x is packed the same way: hand-built.</summary>
    [Fact]
    public void PackingPutsEachBlocksEvenValuesFirstAndKeepsTheTail()
    {
        // width 2: blocks of 4 values; in = 10 → two blocks and a 2-value tail; two rows.
        float[] x = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19];
        var packed = new float[x.Length];
        FewRowsKernel.PackEvenOdd(x, packed, rows: 2, inF: 10, width: 2);
        float[] expected = [0, 2, 1, 3, 4, 6, 5, 7, 8, 9, 10, 12, 11, 13, 14, 16, 15, 17, 18, 19];
        Assert.Equal(expected, packed);   // bitwise: values are moved, not computed
    }

    [Fact]
    public void KernelRejectsMismatchedShapesAndTypes()
    {
        using var scope = NewDisposeScope();
        var w = zeros([3, 4], ScalarType.BFloat16);
        Assert.Throws<ArgumentException>(() => FewRowsKernel.Linear(zeros([2, 5]), w, null, KernelIsa.Vector256, 1));
        Assert.Throws<ArgumentException>(() => FewRowsKernel.Linear(zeros([2, 4], ScalarType.Float16), w, null, KernelIsa.Vector256, 1));
        Assert.Throws<ArgumentException>(() => FewRowsKernel.Linear(zeros([2, 4]), w, zeros([3]), KernelIsa.Vector256, 1));
        Assert.Throws<ArgumentException>(() => FewRowsKernel.Linear(zeros([2, 4]), w, zeros([2], ScalarType.BFloat16), KernelIsa.Vector256, 1));
    }

    [Fact]
    public void ModesParseAndUnknownOnesAreRejected()
    {
        Assert.Equal(DecodeKernel.Auto, DecodeKernelPolicy.Parse(" AUTO "));
        Assert.Equal(DecodeKernel.Torch, DecodeKernelPolicy.Parse("torch"));
        Assert.Equal(DecodeKernel.Own, DecodeKernelPolicy.Parse("Own"));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => DecodeKernelPolicy.Parse("fast"));
        Assert.Contains(DecodeKernelPolicy.EnvironmentVariable, e.Message);
    }

    /// <summary>Torch leaves float32 products to libtorch; Auto does the same for a weight under the size threshold
    /// (small models keep libtorch's results); Own takes both. bfloat16 weights with float32 x always take the kernel.</summary>
    [Fact]
    public void ModesRouteTheProduct()
    {
        using var scope = NewDisposeScope();
        var x = randn([2, 16]);
        var w = randn([8, 16]);
        Assert.Null(DecodeKernelPolicy.TryLinear(x, w, null, DecodeKernel.Torch));
        Assert.Null(DecodeKernelPolicy.TryLinear(x, w, null, DecodeKernel.Auto));
        BFloat16ComputeTests.AssertMatchesFloat64(DecodeKernelPolicy.TryLinear(x, w, null, DecodeKernel.Own)!, x, w, null);
        var wb = w.to_type(ScalarType.BFloat16);
        BFloat16ComputeTests.AssertMatchesFloat64(DecodeKernelPolicy.TryLinear(x, wb, null, DecodeKernel.Torch)!, x, wb, null);
    }

    /// <summary>
    /// Auto on a weight over the threshold: the first calls take the candidates in turn (every output correct), then one
    /// choice is recorded with every candidate timed, libtorch among them. The shape is this test's own (3 × 1031 → 1021).
    /// </summary>
    [Fact]
    public void AutoCalibratesOnTheFirstCallsAndKeepsTheFastest()
    {
        var choice = CalibrateUnderAuto(rows: 3, inF: 1031, outF: 1021, seed: 11);
        Assert.Contains("torch", choice.Milliseconds.Keys);
        Assert.True(choice.Milliseconds.Count >= 2, choice.ToString());
        Assert.All(choice.Milliseconds.Values, ms => Assert.True(ms is > 0 and < double.MaxValue, choice.ToString()));
        Assert.Contains(choice.Chosen, choice.Milliseconds.Keys);
        Assert.Equal(choice.Milliseconds.MinBy(m => m.Value).Key, choice.Chosen);
    }

    /// <summary>
    /// Runs a float32 product of this test class's own shape under <see cref="DecodeKernel.Auto"/> until its calibration
    /// is recorded, checking every call's output against float64, and returns the recorded choice.
    /// </summary>
    private static DecodeKernelChoice CalibrateUnderAuto(int rows, int inF, int outF, int seed)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator((ulong)seed);
        var x = randn([rows, inF], generator: g);
        var w = randn([outF, inF], generator: g);
        Assert.True(w.numel() * 4 >= DecodeKernelPolicy.MinAutoWeightBytes);
        var reference = x.to_type(ScalarType.Float64).matmul(w.to_type(ScalarType.Float64).t());
        string product = $"{rows} x {inF} -> {outF}, Float32 weights, Float32 x, {get_num_threads()} thread(s)";
        // Enough calls for every candidate's warm-up and timed rounds (at most 11 candidates).
        for (int call = 0; call < 100 && !DecodeKernelPolicy.Choices.Any(c => c.Product == product); call++)
        {
            var y = DecodeKernelPolicy.TryLinear(x, w, null, DecodeKernel.Auto) ?? nn.functional.linear(x, w);
            // Sums of ~1,000 products of N(0, 1) values: float32 summation-order error is far below 1e-3 here.
            Assert.True(y.to_type(ScalarType.Float64).allclose(reference, rtol: 1e-4, atol: 1e-3), $"call {call}: output differs from the float64 reference");
        }
        return Assert.Single(DecodeKernelPolicy.Choices, c => c.Product == product);
    }

    /// <summary>One row of x: the kernel is timed both through the four-row tiles and streaming the rows (neither is
    /// faster everywhere), at each width; every output of the calibration calls is correct.</summary>
    [Fact]
    public void AutoTimesOneRowStreamedAndThroughTheTiles()
    {
        var choice = CalibrateUnderAuto(rows: 1, inF: 1033, outF: 1019, seed: 12);
        foreach (var isa in FewRowsKernel.IsAccelerated ? (Vector512.IsHardwareAccelerated ? new[] { 512, 256 } : [256]) : [])
        {
            Assert.Contains(choice.Milliseconds.Keys, k => k.StartsWith($"own {isa}-bit x", StringComparison.Ordinal));
            Assert.Contains(choice.Milliseconds.Keys, k => k.StartsWith($"own {isa}-bit stream x", StringComparison.Ordinal));
        }
    }

    /// <summary>
    /// A decoding-size forward (one row) through a model whose projections all run the own kernel, against the same
    /// model on libtorch: logits agree to 1e-4 (O(1) values, float32 sums in another order).
    /// </summary>
    [Fact]
    public void ModelForcedOntoTheKernelMatchesLibtorch()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var lm = TestUtil.TinyModel();
        var ids = TestUtil.RandomIds(1, 1, 64, seed: 5);
        var linears = lm.modules().OfType<OuroLinear>().ToList();
        foreach (var l in linears) l.DecodeKernel = DecodeKernel.Torch;
        var viaTorch = lm.forward(ids);
        foreach (var l in linears) l.DecodeKernel = DecodeKernel.Own;
        var viaKernel = lm.forward(ids);
        Assert.True(viaKernel.allclose(viaTorch, rtol: 1e-4, atol: 1e-4), $"max |difference| {(viaKernel - viaTorch).abs().max().item<float>()}");
    }
}
