using System.Runtime.Intrinsics.X86;
using System.Runtime.InteropServices;

namespace LoopRpt.Model;

/// <summary>How a model whose weights are stored in bfloat16 computes on a CPU.</summary>
public enum BFloat16Compute
{
    /// <summary>Chosen from the CPU (<see cref="BFloat16ComputePolicy.Resolve"/>): native bfloat16 where the CPU has
    /// AVX-512 BF16 (or is not an AVX2 x86-64), float32 compute otherwise. The default.</summary>
    Auto = 0,

    /// <summary>libtorch's bfloat16 kernels: activations, norms and attention in bfloat16 too.</summary>
    Native = 1,

    /// <summary>bfloat16 storage, float32 compute: weights stay 2 bytes each; activations, norms, attention and softmax
    /// are float32, and every product accumulates in float32 (<see cref="OuroLinear"/>).</summary>
    Float32 = 2,
}

/// <summary>The CPU features that decide <see cref="BFloat16Compute.Auto"/>.</summary>
/// <param name="IsX86">x86-64 (the float32-compute kernel is written for it).</param>
/// <param name="Avx2">AVX2 and FMA (the kernel's instructions).</param>
/// <param name="Avx512BF16">AVX-512 BF16 (bfloat16 dot products in hardware: libtorch's bfloat16 kernels are fast).</param>
/// <param name="AmxBF16">AMX BF16 (reported only).</param>
public sealed record CpuFeatures(bool IsX86, bool Avx2, bool Avx512BF16, bool AmxBF16)
{
    private static readonly Lazy<CpuFeatures> _current = new(Detect);

    /// <summary>This machine's features, detected once.</summary>
    public static CpuFeatures Current => _current.Value;

    /// <summary>Features from a /proc/cpuinfo <c>flags</c> line (or the flags alone, space separated) of an x86-64 CPU.</summary>
    public static CpuFeatures FromFlags(string flags)
    {
        var set = flags.Split([' ', '\t', ':'], StringSplitOptions.RemoveEmptyEntries).ToHashSet(StringComparer.Ordinal);
        return new CpuFeatures(true, set.Contains("avx2") && set.Contains("fma"), set.Contains("avx512_bf16"), set.Contains("amx_bf16"));
    }

    /// <summary>Reads the features through CPUID (leaf 7 sub-leaf 1, EAX bit 5: AVX512_BF16; leaf 7, EDX bit 22: AMX-BF16),
    /// and the runtime's own checks that the OS enables the AVX registers.</summary>
    public static CpuFeatures Detect()
    {
        if (RuntimeInformation.ProcessArchitecture is not (Architecture.X64 or Architecture.X86) || !X86Base.IsSupported)
            return new CpuFeatures(false, false, false, false);
        bool avx512bf16 = false, amx = false;
        if (X86Base.CpuId(0, 0).Eax >= 7)
        {
            amx = (X86Base.CpuId(7, 0).Edx & (1 << 22)) != 0;
            avx512bf16 = Avx512F.IsSupported && (X86Base.CpuId(7, 1).Eax & (1 << 5)) != 0;
        }
        return new CpuFeatures(true, System.Runtime.Intrinsics.X86.Avx2.IsSupported && Fma.IsSupported, avx512bf16, amx);
    }

    /// <summary>The features as /proc/cpuinfo names them, for reports.</summary>
    public override string ToString()
        => !IsX86 ? "not x86-64" : string.Join(' ', new[] { Avx2 ? "avx2 fma" : "no-avx2", Avx512BF16 ? "avx512_bf16" : "", AmxBF16 ? "amx_bf16" : "" }.Where(s => s.Length > 0));
}

/// <summary>Resolves <see cref="BFloat16Compute.Auto"/> for a CPU.</summary>
public static class BFloat16ComputePolicy
{
    /// <summary>
    /// <see cref="BFloat16Compute.Native"/> where libtorch's bfloat16 products are fast (AVX-512 BF16) or the float32
    /// decode kernel cannot run (not x86-64, or no AVX2/FMA); <see cref="BFloat16Compute.Float32"/> on other x86-64 CPUs, where libtorch's
    /// bfloat16 products were measured 1.9× (decode) to 4.5× (scoring) slower than float32 (docs/benchmarks.md).
    /// A forced value (Native or Float32) is returned as it is.
    /// </summary>
    public static BFloat16Compute Resolve(BFloat16Compute requested, CpuFeatures features)
    {
        if (!Enum.IsDefined(requested)) throw new ArgumentOutOfRangeException(nameof(requested), requested, "Expected Auto, Native or Float32.");
        if (requested != BFloat16Compute.Auto) return requested;
        return !features.IsX86 || !features.Avx2 || features.Avx512BF16 ? BFloat16Compute.Native : BFloat16Compute.Float32;
    }

    /// <summary>Parses auto, native or float32 (case-insensitive); anything else throws with the accepted values.</summary>
    public static BFloat16Compute Parse(string value) => value.Trim().ToLowerInvariant() switch
    {
        "auto" => BFloat16Compute.Auto,
        "native" or "bfloat16" or "bf16" => BFloat16Compute.Native,
        "float32" or "f32" => BFloat16Compute.Float32,
        _ => throw new ArgumentOutOfRangeException(nameof(value), value, "bfloat16 compute must be auto, native or float32."),
    };
}
