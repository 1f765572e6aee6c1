using LoopRpt.Native;

namespace LoopRpt.Tests.Native;

public class TorchNativeTests
{
    public const string SystemLib = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6";

    public static string? PackageCopy()
    {
        var root = Environment.GetEnvironmentVariable("NUGET_PACKAGES") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var p = Path.Combine(root, "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        return File.Exists(p) ? p : null;
    }

    [LinuxLibstdcxxFact(NeedsTorchSharpPackage = true)]
    public void DiagnosisNamesTheMissingLibstdcxxVersionOfTheShippedLibrary()
    {
        var shipped = PackageCopy()!;
        bool systemHas332 = File.ReadAllText(SystemLib, System.Text.Encoding.Latin1).Contains("GLIBCXX_3.4.32");
        // The library as shipped requires GLIBCXX_3.4.32 (built with GCC 13), not weakly.
        Assert.Contains("GLIBCXX_3.4.32", TorchNative.RequiredVersions(File.ReadAllBytes(shipped), "libstdc++"));
        var missing = TorchNative.MissingLibstdcxxVersions(shipped, SystemLib);
        Assert.Equal(!systemHas332, missing.Contains("GLIBCXX_3.4.32"));
        if (!systemHas332)
        {
            var message = TorchNative.Diagnose(new DllNotFoundException("doesn't contain a reference to libtorch-cpu-linux-x64"), shipped);
            Assert.Contains("GLIBCXX_3.4.32", message);
            Assert.Contains("Directory.Build.targets", message);
        }
    }

    [LinuxLibstdcxxFact]
    public void ThePatchedCopyUnderBinRequiresNothingTheSystemLacks()
    {
        // On Linux x64 the build copies the library there (this test process loaded it); missing is a failure.
        var copy = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        Assert.True(File.Exists(copy), $"{copy} not found");
        Assert.Empty(TorchNative.MissingLibstdcxxVersions(copy, SystemLib));
    }

    [Fact]
    public void MissingLibraryDiagnosisNamesThePackage()
    {
        var message = TorchNative.Diagnose(new DllNotFoundException("x"), lib: null);
        Assert.Contains("libtorch-cpu-linux-x64", message);
        Assert.Contains("Original error: x", message);
    }

    [Fact]
    public void DeviceResolutionDefaultsToCpuAndRejectsUnknownDevices()
    {
        Assert.Equal(TorchSharp.DeviceType.CPU, TorchNative.ResolveDevice(null, fallbackToCpu: false).type);
        Assert.Throws<ArgumentOutOfRangeException>(() => TorchNative.ResolveDevice("tpu", fallbackToCpu: true));
    }

    [NoCudaFact]
    public void DeviceResolutionFallsBackToCpuOnlyWhenAllowed()
    {
        Assert.Equal(TorchSharp.DeviceType.CPU, TorchNative.ResolveDevice("cuda", fallbackToCpu: true).type);
        Assert.Contains("CUDA is not available", Assert.Throws<InvalidOperationException>(() => TorchNative.ResolveDevice("cuda:0", fallbackToCpu: false)).Message);
    }
}
