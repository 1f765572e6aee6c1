using LoopRpt.Model.Kernels;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Model;

/// <summary>
/// The decode kernels' own bfloat16 conversions (<see cref="Bf16Convert"/>) against libtorch's, on values chosen to hit
/// each case of the rounding rule. Exact equality: both sides apply the same rule (round to nearest, ties to even) to
/// the same float32 values, so any difference is a bug, not a rounding difference; a NaN only has to stay a NaN.
/// </summary>
public class Bf16ConvertTests
{
    static Bf16ConvertTests() => LoopRpt.Native.TorchNative.EnsureLoaded();

    // Hand-picked float32 bit patterns: ties below and above an even and an odd bfloat16, just below and above a tie,
    // a value that rounds up into the next exponent, one that rounds to infinity, ±0, ±infinity, NaNs (quiet, signalling,
    // negative), the smallest and largest subnormals, a subnormal tie.
    private static readonly uint[] Cases =
    [
        0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001, 0x3F81FFFF, 0x3FFFFFFF, 0x7F7FFFFF, 0x7F7F8000, 0x00000000,
        0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFC12345, 0x00000001, 0x007FFFFF, 0x00008000,
        0x00018000, 0xBF808000, 0xC0490FDB, 0x3EAAAAAB,
    ];

    [Theory]
    [InlineData(0)]      // the hand-picked cases only (scalar path: fewer than one vector)
    [InlineData(1000)]   // and random ones after them: vectors of 16, then a tail of 6
    public void NarrowRoundsAsLibTorchDoes(int random)
    {
        var rng = new Random(11);
        var bits = Cases.Concat(Enumerable.Range(0, random).Select(_ => (uint)rng.NextInt64(0, 1L << 32))).ToArray();
        var values = bits.Select(BitConverter.UInt32BitsToSingle).ToArray();
        using var scope = NewDisposeScope();
        // libtorch's bfloat16 read back through float32 (exact), its bits shifted down: the bfloat16 bits.
        var expected = tensor(values).to_type(ScalarType.BFloat16).to_type(ScalarType.Float32).data<float>().ToArray()
            .Select(f => (ushort)(BitConverter.SingleToUInt32Bits(f) >> 16)).ToArray();
        var actual = new ushort[values.Length];
        Bf16Convert.Narrow(values, actual);
        for (int i = 0; i < values.Length; i++)
        {
            if (float.IsNaN(values[i]))
            {
                // libtorch's own NaN differs by path (0x7FC0 scalar, 0xFFFF vectorized): any NaN matches.
                Assert.True(float.IsNaN(Bf16Convert.Widen(actual[i])) && float.IsNaN(Bf16Convert.Widen(expected[i])), $"0x{bits[i]:X8}: Narrow 0x{actual[i]:X4}");
                continue;
            }
            Assert.True(expected[i] == actual[i], $"0x{bits[i]:X8}: libtorch 0x{expected[i]:X4}, Narrow 0x{actual[i]:X4}");
        }
        // The scalar form agrees with the vector form.
        for (int i = 0; i < values.Length; i++) Assert.Equal(actual[i], Bf16Convert.Narrow(values[i]));
    }

    [Fact]
    public void WidenIsExact()
    {
        var bits = Enumerable.Range(0, 1 << 16).Select(i => (ushort)i).ToArray();   // every bfloat16, NaNs included
        var actual = new float[bits.Length];
        Bf16Convert.Widen(bits, actual);
        for (int i = 0; i < bits.Length; i++) Assert.Equal((uint)bits[i] << 16, BitConverter.SingleToUInt32Bits(actual[i]));
    }

    /// <summary>
    /// A bfloat16 product from the kernels is its float32 product rounded by libtorch's rule: the workers' rounding of
    /// their slices gives exactly what libtorch's conversion of the whole float32 result gives (same values, same rule).
    /// </summary>
    [Theory]
    [InlineData(8, 96, 70, 2)]
    [InlineData(3, 64, 13, 1)]
    public void BFloat16OutputIsTheFloat32ProductRounded(int rows, int inF, int outF, int threads)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(5);
        var x = randn([rows, inF], generator: g).to_type(ScalarType.BFloat16);
        var w = randn([outF, inF], generator: g).to_type(ScalarType.BFloat16);
        var b = randn([outF], generator: g).to_type(ScalarType.BFloat16);
        foreach (var isa in new[] { KernelIsa.Vector512, KernelIsa.Vector256 })
        {
            // float32 x gives the float32 product of the same (exactly widened) values through the same tiles.
            var wide = FewRowsKernel.Linear(x.to_type(ScalarType.Float32), w, b, isa, threads, fourRowTiles: true);
            var narrow = FewRowsKernel.Linear(x, w, b, isa, threads, fourRowTiles: true);
            Assert.Equal(ScalarType.BFloat16, narrow.dtype);
            Assert.True(wide.to_type(ScalarType.BFloat16).eq(narrow).all().item<bool>(), $"{isa}: the bfloat16 output is not the float32 product rounded");
        }
    }
}
