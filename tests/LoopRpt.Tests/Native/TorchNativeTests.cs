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
    [Fact]
    public void OpenMpSpinningIsCutOnlyWhereNobodyChoseAndLibgompIsNotLoadedYet()
    {
        // Nothing set, libgomp not loaded: LoopRpt sets its spin count.
        var (set, description) = TorchNative.ChooseSpinning(linux: true, waitPolicy: null, spinCount: null, libGompLoaded: false);
        Assert.Equal("1000", set);
        Assert.Equal(1000, TorchNative.DefaultSpinCount);
        Assert.StartsWith("GOMP_SPINCOUNT=1000 (set by LoopRpt", description);
        // The user's choice wins, either variable, and is reported as theirs.
        (set, description) = TorchNative.ChooseSpinning(true, "ACTIVE", null, false);
        Assert.Null(set);
        Assert.Contains("OMP_WAIT_POLICY=ACTIVE", description);
        (set, description) = TorchNative.ChooseSpinning(true, null, "300000", false);
        Assert.Null(set);
        Assert.Contains("GOMP_SPINCOUNT=300000", description);
        // Too late (libgomp read its environment when it was loaded) or not Linux: nothing is set, and the text says why.
        (set, description) = TorchNative.ChooseSpinning(true, null, null, libGompLoaded: true);
        Assert.Null(set);
        Assert.Contains("loaded before LoopRpt", description);
        (set, _) = TorchNative.ChooseSpinning(false, null, null, false);
        Assert.Null(set);
    }

    [Fact]
    public void WhereLoopRptSetTheSpinCountTheNativeEnvironmentHasIt()
    {
        TorchNative.EnsureLoaded();
        if (!OperatingSystem.IsLinux()) { Assert.StartsWith("not Linux", TorchNative.OpenMpSpinning); return; }
        Assert.True(TorchNative.LibGompLoaded());   // libtorch's OpenMP runtime is mapped once torch is loaded
        var native = System.Runtime.InteropServices.Marshal.PtrToStringAnsi(GetEnv(TorchNative.SpinCountVariable));
        if (TorchNative.OpenMpSpinning.Contains("set by LoopRpt"))
            Assert.Equal("1000", native);             // what libgomp read when libtorch was loaded after EnsureLoaded set it
        else if (TorchNative.OpenMpSpinning.StartsWith("as the environment sets it"))
            Assert.Equal(Environment.GetEnvironmentVariable(TorchNative.SpinCountVariable), native);
        else
            Assert.Contains("loaded before LoopRpt", TorchNative.OpenMpSpinning);
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "getenv")]
    private static extern IntPtr GetEnv(string name);
}
