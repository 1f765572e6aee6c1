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
