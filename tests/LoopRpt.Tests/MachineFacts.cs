using LoopRpt.Tests.Native;

namespace LoopRpt.Tests;

/// <summary>
/// [Fact]s that check something only some machines have. The skip is decided at discovery, so where the machine lacks
/// it the test counts as skipped, with the reason; an early return inside the test would pass there while checking
/// nothing.
/// </summary>
public sealed class NoCudaFactAttribute : FactAttribute
{
    public override string? Skip
    {
        get => base.Skip ?? (TorchAvailability.Cuda() ? "CUDA is available: this test checks the CPU fallback of a machine without CUDA" : null);
        set => base.Skip = value;
    }
}

/// <summary>A Linux x64 machine with the system libstdc++ (and, with NeedsTorchSharpPackage, TorchSharp in the NuGet cache).</summary>
public sealed class LinuxLibstdcxxFactAttribute : FactAttribute
{
    public bool NeedsTorchSharpPackage { get; set; }

    public override string? Skip
    {
        get => base.Skip
            ?? (!File.Exists(TorchNativeTests.SystemLib) ? $"{TorchNativeTests.SystemLib} not found: not a Linux x64 machine with the system libstdc++"
            : NeedsTorchSharpPackage && TorchNativeTests.PackageCopy() is null ? "TorchSharp 0.107.0's libLibTorchSharp.so not found in the NuGet package cache"
            : null);
        set => base.Skip = value;
    }
}

internal static class TorchAvailability
{
    // Evaluated at discovery. Where libtorch does not load, the answer is "no CUDA": the test then runs and fails with
    // the loader's diagnosis instead of hiding it behind a skip.
    private static readonly Lazy<bool> cuda = new(() =>
    {
        try
        {
            LoopRpt.Native.TorchNative.EnsureLoaded();
            return TorchSharp.torch.cuda.is_available();
        }
        catch (Exception)
        {
            return false;
        }
    });

    public static bool Cuda() => cuda.Value;
}

/// <summary>A CPU (and OS) on which the BF16 dot-product decode kernel runs: x86-64 Linux with avx512_bf16.</summary>
public sealed class Avx512Bf16TheoryAttribute : TheoryAttribute
{
    public override string? Skip
    {
        get => base.Skip ?? (!LoopRpt.Model.Kernels.Bf16DotKernel.IsSupported ? "no avx512_bf16 here (or not x86-64 Linux): the BF16 dot-product kernel does not run on this machine" : null);
        set => base.Skip = value;
    }
}

/// <summary>As <see cref="Avx512Bf16TheoryAttribute"/>, for a [Fact].</summary>
public sealed class Avx512Bf16FactAttribute : FactAttribute
{
    public override string? Skip
    {
        get => base.Skip ?? (!LoopRpt.Model.Kernels.Bf16DotKernel.IsSupported ? "no avx512_bf16 here (or not x86-64 Linux): the BF16 dot-product kernel does not run on this machine" : null);
        set => base.Skip = value;
    }
}

/// <summary>GNU binutils on the PATH (as, objcopy) and od: what regenerates machine code from assembly source.</summary>
public sealed class GnuAssemblerFactAttribute : FactAttribute
{
    public override string? Skip
    {
        get => base.Skip ?? (new[] { "as", "objcopy", "od", "bash" }.FirstOrDefault(t => !OnPath(t)) is { } missing ? $"'{missing}' is not on the PATH: the machine code cannot be rebuilt from its source here" : null);
        set => base.Skip = value;
    }

    private static bool OnPath(string tool)
        => (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
           .Any(d => File.Exists(Path.Combine(d, tool)));
}

/// <summary>A Linux kernel that gives transparent huge pages to memory marked for them (mode madvise or always).</summary>
public sealed class HugePagesFactAttribute : FactAttribute
{
    public override string? Skip
    {
        get => base.Skip ?? (!LoopRpt.Model.HugePages.Available ? "the kernel gives no transparent huge pages here (not Linux, or mode never): nothing is marked" : null);
        set => base.Skip = value;
    }
}
